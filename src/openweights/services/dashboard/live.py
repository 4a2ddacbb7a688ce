"""The organization's live subjects, bridged to the browser as server-sent events.

Each stream subscribes first, then reads what is stored after the position the browser
last got (its ``Last-Event-ID``, which ``EventSource`` sends by itself when it
reconnects), then forwards live messages newer than that, so a reconnect loses and
repeats nothing (as the SDK's own followers do, with the same token's subjects):

- ``/live/jobs``: every job change of the organization (the list's status cells);
- ``/live/jobs/<id>/events``: the job's audit entries and its runs' events (metric
  points, returned files), ids ``<stream seq>.<index>`` in the events stream;
- ``/live/jobs/<id>/logs``: its latest run's output, ids ``<run id>:<log seq>``;
  when the run ends, the next run's (a restart, a requeue) as it begins.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream
from nats.aio.msg import Msg
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from openweights.errors import AuthenticationError, OpenWeightsError
from openweights.events import RunEventLogged, RunFileUploaded, decode
from openweights.sdk.client import AsyncOpenWeights
from openweights.sdk.live import list_events
from openweights.sdk.logs import follow_chunks
from openweights.services.dashboard.web import SignedOut, closing, web

KEEPALIVE_S = 15.0


def sse(event: str, data: Any, id: str | None = None) -> bytes:
    head = f"id: {id}\n" if id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def _seq(msg: Msg) -> int:
    return int((msg.headers or {}).get("Nats-Sequence", "0"))


class Subscription:
    """Messages of ``subject`` on the client's connection, queued until read."""

    def __init__(self, aow: AsyncOpenWeights, subject: str) -> None:
        self.aow, self.subject = aow, subject
        self.receive: MemoryObjectReceiveStream[Msg] | None = None

    async def __aenter__(self) -> MemoryObjectReceiveStream[Msg]:
        nc = await self.aow.transport.connect()
        send, self.receive = anyio.create_memory_object_stream[Msg](math.inf)

        async def on_msg(msg: Msg) -> None:
            send.send_nowait(msg)

        self._send = send
        self._sub = await nc.subscribe(self.subject, cb=on_msg)
        return self.receive

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            # The connection may be gone (the token was cut): then there is nothing to undo.
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._send.close()


async def _with_keepalive(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``body``'s events, a comment every ``KEEPALIVE_S`` while it is quiet (proxies end
    idle responses), and a last ``signedout``/``failed`` event instead of an exception."""
    send, receive = anyio.create_memory_object_stream[bytes](16)

    async def pump() -> None:
        async with send:
            try:
                async with closing(body) as events:
                    async for item in events:
                        await send.send(item)
            except (AuthenticationError, SignedOut):
                await send.send(sse("signedout", {"why": "token refused"}))
            except OpenWeightsError as exc:
                await send.send(sse("failed", {"why": str(exc)}))

    async with anyio.create_task_group() as tg:
        tg.start_soon(pump)
        async with receive:
            while True:
                with anyio.move_on_after(KEEPALIVE_S):
                    try:
                        item = await receive.receive()
                    except anyio.EndOfStream:
                        break
                    yield item
                    continue
                yield b": keepalive\n\n"
        tg.cancel_scope.cancel()


def stream(body: AsyncIterator[bytes]) -> Response:
    return StreamingResponse(_with_keepalive(body), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _last_id(request: Request) -> str:
    return request.headers.get("last-event-id") or request.query_params.get("after") or ""


# -- the job list -----------------------------------------------------------------------
async def jobs_stream(request: Request) -> Response:
    aow = await web(request).signed_in(request)
    t = aow.transport

    async def body() -> AsyncIterator[bytes]:
        async with Subscription(aow, t.subjects.live(t.org, "job", "*")) as messages:
            yield sse("ready", {})
            async for msg in messages:
                job_id = msg.subject.rsplit(".", 1)[-1]
                job = await t.call("jobs.get", job_id=job_id, min_seq=_seq(msg))
                yield sse("job", {k: job.get(k) for k in (
                    "id", "status", "type", "model", "updated_at", "wait_reason")})

    return stream(body())


# -- one job's audit entries and run events ---------------------------------------------
def _position(last: str) -> tuple[int, int]:
    seq, _, idx = last.partition(".")
    try:
        return int(seq or 0), int(idx or 0) if idx else -1
    except ValueError:
        return 0, -1


def _entry(seq: int, idx: int, e: Any) -> dict[str, Any]:
    return {"seq": seq, "index": idx, "at": e.at, "event": e.tag,
            "by": {"kind": e.by.kind, "id": e.by.id},
            "changes": msgspec.to_builtins(e.changes())}


def _run_event(seq: int, idx: int, e: RunEventLogged | RunFileUploaded) -> dict[str, Any]:
    data = e.data if isinstance(e, RunEventLogged) else {"path": e.path, "file": e.file}
    return {"seq": seq, "run_id": e.run_id, "data": data, "file": e.file,
            "created_at": e.at}


async def _job_history(aow: AsyncOpenWeights, job_id: str, after: int) -> list[dict[str, Any]]:
    return [e async for page in aow.transport.pages("jobs.history", job_id=job_id,
                                                    after_seq=after) for e in page]


async def job_events_stream(request: Request) -> Response:
    aow = await web(request).signed_in(request)
    t, job_id = aow.transport, request.path_params["job_id"]
    after = _position(_last_id(request))
    await t.call("jobs.get", job_id=job_id, min_seq=-1)  # NotFound before the stream begins

    async def body() -> AsyncIterator[bytes]:
        last = after
        async with Subscription(aow, t.subjects.live(t.org, "*", job_id)) as messages:
            job = await t.call("jobs.get", job_id=job_id, min_seq=-1)  # read models caught up
            yield sse("status", _status(job))
            stored: list[tuple[tuple[int, int], str, Any]] = [
                ((e["seq"], e["index"]), "audit", e)
                for e in await _job_history(aow, job_id, max(0, last[0] - 1))]
            for point in await list_events(t, job_id, None, max(0, last[0] - 1)):
                at, _, index = point["id"].partition(".")
                stored.append(((int(at), int(index or 0)), "point", point))
            for pos, what, item in sorted(stored, key=lambda s: s[0]):
                if pos > last:
                    last = pos
                    yield sse(what, item, id=f"{pos[0]}.{pos[1]}")
            async for msg in messages:
                seq = _seq(msg)
                kind = msg.subject.split(".")[-2]
                for idx, e in enumerate(decode(msg.data)):
                    if (seq, idx) <= last:
                        continue
                    last = (seq, idx)
                    if kind == "job":
                        yield sse("audit", _entry(seq, idx, e), id=f"{seq}.{idx}")
                    elif isinstance(e, RunEventLogged | RunFileUploaded):
                        yield sse("point", _run_event(seq, idx, e), id=f"{seq}.{idx}")
                if kind == "job":
                    yield sse("status", _status(await t.call("jobs.get", job_id=job_id,
                                                             min_seq=seq)))

    return stream(body())


def _status(job: dict[str, Any]) -> dict[str, Any]:
    return {k: job.get(k) for k in ("id", "status", "error", "wait_reason", "worker_id",
                                    "updated_at", "outputs")}


def _drain(messages: MemoryObjectReceiveStream[Msg]) -> None:
    while True:
        try:
            messages.receive_nowait()
        except anyio.WouldBlock:
            return


# -- one job's log lines ----------------------------------------------------------------
async def job_logs_stream(request: Request) -> Response:
    aow = await web(request).signed_in(request)
    t, job_id = aow.transport, request.path_params["job_id"]
    last_run, _, last_seq = _last_id(request).partition(":")
    await t.call("jobs.get", read=True, job_id=job_id)  # NotFound before the stream begins

    async def body() -> AsyncIterator[bytes]:
        run_id, after = last_run or None, int(last_seq) if last_seq.isdigit() else 0
        ended: str | None = None
        async with Subscription(aow, t.subjects.live(t.org, "job", job_id)) as changes:
            while True:
                _drain(changes)  # what it said is in the read below (as of now)
                runs = await t.call("runs.list", job_id=job_id, limit=1000, min_seq=-1)
                latest = runs[-1] if runs else None
                if latest is not None and latest["id"] != run_id:
                    run_id, after = latest["id"], 0
                    yield sse("run", {"id": run_id, "attempt": latest["attempt"]})
                if latest is not None and ended != run_id:
                    async with closing(follow_chunks(t, latest["id"], after)) as chunks:
                        async for chunk in chunks:
                            after = chunk.seq
                            yield sse("line", chunk.text, id=f"{run_id}:{chunk.seq}")
                    ended = run_id  # follow_chunks returns once the run has ended
                    yield sse("run_ended", {"id": run_id})
                await changes.receive()  # a new run begins with a job change: look again

    return stream(body())
