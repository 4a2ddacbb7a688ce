"""Live data without polling: JetStream republishes every stored message to
``<ns>live.<org>.<kind>.<id>`` with its stream sequence in ``Nats-Sequence``. A live view
subscribes first, then takes history from the api service, and merges by sequence, so
nothing is missed or repeated.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

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
from openweights.sdk.models import Job

if TYPE_CHECKING:
    from openweights.sdk.client import _Client

_ENDS = (JobCompleted, JobFailed, JobCanceled)


def _seq(msg: Msg) -> int:
    return int((msg.headers or {}).get("Nats-Sequence", "0"))


async def _subscribe(client: _Client, job_id: str) -> tuple[Any, Any, Any]:
    t = client.transport
    nc = await t.connect()
    send, receive = anyio.create_memory_object_stream[Msg](math.inf)

    async def on_msg(msg: Msg) -> None:
        send.send_nowait(msg)

    sub = await nc.subscribe(t.subjects.live(t.org, "*", job_id), cb=on_msg)
    return sub, send, receive


async def _retrieve_now(client: _Client, job_id: str) -> Job:
    """The job as of every message stored before this call (``min_seq=-1``): a change
    stored before the subscription but not yet projected would otherwise be missed by
    both the read and the subscription. The reply advances ``seen_seq`` accordingly."""
    return client.jobs._job(await client.transport.call("jobs.get", job_id=job_id,
                                                        min_seq=-1))


async def wait_job(client: _Client, job_id: str, limit_s: float | None) -> Job:
    sub, send, receive = await _subscribe(client, job_id)
    try:
        with anyio.fail_after(limit_s):
            job: Job = await _retrieve_now(client, job_id)
            while not job.terminal:
                msg = await receive.receive()
                if msg.subject.split(".")[2] == "job":
                    # Read the job as of this message: the read models may lag the log.
                    t = client.transport
                    t.seen_seq = max(t.seen_seq, _seq(msg))
                    job = await client.jobs._retrieve(job_id)
            return job
    finally:
        with anyio.CancelScope(shield=True):
            await sub.unsubscribe()
            send.close()


def _event_dict(seq: int, idx: int, e: RunEventLogged | RunFileUploaded) -> dict[str, Any]:
    data = e.data if isinstance(e, RunEventLogged) else {"path": e.path, "file": e.file}
    return {"id": f"{seq}.{idx}", "seq": seq, "job_id": e.job_id, "run_id": e.run_id,
            # the same shape as the history's events (an ISO 8601 string), not a datetime
            "data": data, "file": e.file, "created_at": msgspec.to_builtins(e.at)}


async def follow_job_events(client: _Client, job_id: str,
                            after_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
    """Run events of ``job_id`` after ``after_seq``: history, then live, until it ends."""
    sub, send, receive = await _subscribe(client, job_id)
    last = after_seq
    try:
        job = await _retrieve_now(client, job_id)  # and so the history below is complete
        for event in await client.events._list(job_id=job_id, after_seq=after_seq):
            last = event["seq"]
            yield event
        ended_at = None
        if job.terminal:
            # History is projected up to the job's end; anything later belongs to a new run.
            return
        while ended_at is None:
            msg = await receive.receive()
            seq = _seq(msg)
            if seq <= last:
                continue  # already delivered from history
            last = seq
            for idx, e in enumerate(decode(msg.data)):
                if isinstance(e, RunEventLogged | RunFileUploaded):
                    yield _event_dict(seq, idx, e)
                elif isinstance(e, _ENDS):
                    ended_at = seq
    finally:
        with anyio.CancelScope(shield=True):
            await sub.unsubscribe()
            send.close()
