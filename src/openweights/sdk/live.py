"""Live data without polling: JetStream republishes every stored message to
``<ns>live.<org>.<kind>.<id>`` with its stream sequence in ``Nats-Sequence``. A live view
subscribes first, then takes history from the api service, and merges by sequence, so
nothing is missed or repeated.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec
from nats.aio.msg import Msg

from openweights.events import (
    JobCanceled,
    JobCompleted,
    JobFailed,
    RunEventLogged,
    RunFileUploaded,
    decode,
)
from openweights.sdk.transport import Transport
from openweights.sdk.types import TERMINAL, Event

_ENDS = (JobCanceled, JobCompleted, JobFailed)
PAGE = 10_000


def _seq(msg: Msg) -> int:
    return int((msg.headers or {}).get("Nats-Sequence", "0"))


async def _subscribe(t: Transport, job_id: str) -> tuple[Any, Any, Any]:
    nc = await t.connect()
    send, receive = anyio.create_memory_object_stream[Msg](math.inf)

    async def on_msg(msg: Msg) -> None:
        send.send_nowait(msg)

    sub = await nc.subscribe(t.subjects.live(t.org, "*", job_id), cb=on_msg)
    return sub, send, receive


async def _job_now(t: Transport, job_id: str) -> dict[str, Any]:
    """The job as of every message stored before this call (``min_seq=-1``): a change
    stored before the subscription but not yet projected would otherwise be missed by
    both the read and the subscription. The reply advances ``seen_seq`` accordingly."""
    job: dict[str, Any] = await t.call("jobs.get", job_id=job_id, min_seq=-1)
    return job


async def wait_for_job(t: Transport, job_id: str, limit_s: float | None) -> dict[str, Any]:
    """The job once it has ended (its row). Raises ``TimeoutError`` after ``limit_s``,
    naming the job and the state it is still in."""
    sub, send, receive = await _subscribe(t, job_id)
    job: dict[str, Any] = {}
    try:
        with anyio.move_on_after(limit_s) as scope:
            job = await _job_now(t, job_id)
            while job["status"] not in TERMINAL:
                msg = await receive.receive()
                if msg.subject.split(".")[2] == "job":
                    # Read the job as of this message: the read models may lag the log.
                    t.seen_seq = max(t.seen_seq, _seq(msg))
                    job = await t.call("jobs.get", read=True, job_id=job_id)
        if scope.cancelled_caught:
            state = f"is still {job['status']}" if job else "has not ended"
            raise TimeoutError(f"job {job_id} {state} after {limit_s:g} s; wait longer (a "
                               f"larger timeout=), or see why with `ow show {job_id}`")
        return job
    finally:
        with anyio.CancelScope(shield=True):
            await sub.unsubscribe()
            send.close()


async def list_events(t: Transport, job_id: str | None, run_id: str | None,
                      after_seq: int = 0) -> list[Event]:
    """Every event after ``after_seq``, oldest first (pages of up to 10,000 and of a
    bounded size, each reply naming where the next begins: the original silently capped
    at 1,000)."""
    out: list[Event] = []
    async for page in t.pages("events.list", read=True, job_id=job_id, run_id=run_id,
                              after_seq=after_seq, limit=PAGE):
        out += page
    return out


def _event(seq: int, idx: int, e: RunEventLogged | RunFileUploaded) -> Event:
    data = e.data if isinstance(e, RunEventLogged) else {"path": e.path, "file": e.file}
    return {"id": f"{seq}.{idx}", "seq": seq, "job_id": e.job_id, "run_id": e.run_id,
            # the same shape as the history's events (an ISO 8601 string), not a datetime
            "data": data, "file": e.file, "created_at": msgspec.to_builtins(e.at)}


async def follow_job_events(t: Transport, job_id: str,
                            after_seq: int = 0) -> AsyncIterator[Event]:
    """Run events of ``job_id`` after ``after_seq``: history, then live, until it ends."""
    sub, send, receive = await _subscribe(t, job_id)
    last = after_seq
    try:
        job = await _job_now(t, job_id)  # and so the history below is complete
        for event in await list_events(t, job_id, None, after_seq):
            last = event["seq"]
            yield event
        if job["status"] in TERMINAL:
            # History is projected up to the job's end; anything later belongs to a new run.
            return
        ended = False
        while not ended:
            msg = await receive.receive()
            seq = _seq(msg)
            if seq <= last:
                continue  # already delivered from history
            last = seq
            for idx, e in enumerate(decode(msg.data)):
                if isinstance(e, RunEventLogged | RunFileUploaded):
                    yield _event(seq, idx, e)
                elif isinstance(e, _ENDS):
                    ended = True
    finally:
        with anyio.CancelScope(shield=True):
            await sub.unsubscribe()
            send.close()
