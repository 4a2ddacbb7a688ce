"""A run's output lines, stored and live.

Agents publish output to ``<ns>log.<org>.<worker_id>.<run_id>``; the api's log gate keeps
it, within its limits, in stream ``<NS>_LOGS`` (as ``<ns>logkept...``), and JetStream
republishes every stored chunk to ``<ns>livelog.<org>.<worker_id>.<run_id>`` with its
stream sequence in ``Nats-Sequence``. A run's lines are those under the worker
that holds it. A follower subscribes first, then reads the stored chunks from the api
service, and merges by sequence (as :mod:`openweights.sdk.live` does for events), so no
chunk is missed or repeated. It watches the job's own subject to know when to stop.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import anyio
from nats.aio.msg import Msg

from openweights.events import JobCanceled, JobCompleted, JobFailed, JobRequeued, decode
from openweights.sdk.transport import Transport
from openweights.sdk.types import TERMINAL, LogChunk
from openweights.subjects import check_token

PAGE = 10_000


async def read_logs(t: Transport, run_id: str, after_seq: int = 0) -> AsyncIterator[LogChunk]:
    """Stored ``(seq, text)`` chunks of ``run_id`` after ``after_seq``, oldest first.

    Chunks older than the logs' retention are gone; a finished run's full log is its
    ``log_file``. Raises ``InvalidRequest`` for a malformed run id."""
    async for page in t.pages("logs.read", run_id=run_id, after_seq=after_seq, limit=PAGE):
        for chunk in page:
            yield LogChunk(chunk["seq"], chunk["data"])


def _ends(msg: Msg, run_id: str) -> bool:
    """Whether a job message ends ``run_id``: the run ended, or the whole job did."""
    for event in decode(msg.data):
        if isinstance(event, JobCompleted | JobFailed | JobCanceled) or (
                isinstance(event, JobRequeued) and event.run_id == run_id):
            return True
    return False


async def follow_logs(t: Transport, run_id: str, after_seq: int = 0) -> AsyncIterator[str]:
    """Text chunks of ``run_id`` after ``after_seq``: stored ones, then live ones as the
    job prints them, until the run ends (its job ended, or was requeued to another run).

    Raises ``NotFound`` for an unknown run."""
    async with aclosing(follow_chunks(t, run_id, after_seq)) as chunks:
        async for chunk in chunks:  # closed with this one: it unsubscribes at once
            yield chunk.text


async def follow_chunks(t: Transport, run_id: str,
                        after_seq: int = 0) -> AsyncGenerator[LogChunk, None]:
    """:func:`follow_logs` with each chunk's log position, so that a follower that
    reconnects (the dashboard's browser) resumes after the last one it got."""
    run = await t.call("runs.get", read=True, run_id=run_id)
    nc = await t.connect()
    send, receive = anyio.create_memory_object_stream[Msg](math.inf)

    async def on_msg(msg: Msg) -> None:
        send.send_nowait(msg)

    # Its own worker's lines only: another worker may use this run id under its own.
    live_log = t.subjects.live_log(t.org, check_token(run_id, "run id"), run["worker_id"])
    subs: list[Any] = [await nc.subscribe(live_log, cb=on_msg),
                       await nc.subscribe(t.subjects.live(t.org, "job", run["job_id"]), cb=on_msg)]
    last = after_seq
    try:
        # As of every message stored before this read (min_seq=-1): a run that ended
        # just before we subscribed, not yet projected, would otherwise be followed forever.
        now = await t.call("runs.get", run_id=run_id, min_seq=-1)
        over = now["status"] in TERMINAL
        async for chunk in read_logs(t, run_id, last):
            last = chunk.seq
            yield chunk
        if over:
            return
        while not over:
            msg = await receive.receive()
            if not msg.subject.startswith(f"{t.subjects.live_prefix}."):  # a log chunk
                seq = int((msg.headers or {}).get("Nats-Sequence", "0"))
                if seq > last:  # not yet delivered from the stored chunks
                    last = seq
                    yield LogChunk(seq, msg.data.decode(errors="replace"))
            else:
                over = _ends(msg, run_id)
        # Chunks stored before the end whose live copy had not arrived yet.
        async for chunk in read_logs(t, run_id, last):
            last = chunk.seq
            yield chunk
    finally:
        with anyio.CancelScope(shield=True):
            for sub in subs:
                await sub.unsubscribe()
            send.close()
