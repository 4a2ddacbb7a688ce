"""The event log on a real JetStream: OCC and deduplication."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import nats
import pytest

from openweights.adapters.nats.eventlog import JetStreamEventLog
from openweights.adapters.nats.streams import ensure_streams
from openweights.config import Settings
from openweights.errors import ConcurrencyConflict
from openweights.events import Actor, JobCanceled, decode
from openweights.subjects import Subjects

pytestmark = pytest.mark.anyio


def _cancel(job_id: str, reason: str) -> JobCanceled:
    return JobCanceled(at=datetime.now(UTC), by=Actor("client"), job_id=job_id, reason=reason)


async def test_two_writers_racing_on_one_job_exactly_one_wins(settings: Settings) -> None:
    nc = await nats.connect(settings.nats_url)
    try:
        subjects = Subjects(settings.namespace)
        await ensure_streams(nc.jetstream(), settings, subjects)
        log = JetStreamEventLog(nc, nc.jetstream(), subjects)
        subject = subjects.job("default", "j1")
        results: list[object] = []

        async def write(reason: str) -> None:
            try:
                results.append(await log.append(subject, [_cancel("j1", reason)],
                                                expected_last_subject_seq=0))
            except ConcurrencyConflict as exc:
                results.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(write, "a")
            tg.start_soon(write, "b")
        conflicts = [r for r in results if isinstance(r, ConcurrencyConflict)]
        assert len(conflicts) == 1
        assert await log.last_subject_seq(subject) == 1
        msg = await nc.jetstream().get_last_msg(subjects.events_stream, subject)
        assert len(decode(msg.data)) == 1
    finally:
        await nc.close()


async def test_retried_append_with_same_msg_id_appends_nothing(settings: Settings) -> None:
    nc = await nats.connect(settings.nats_url)
    try:
        subjects = Subjects(settings.namespace)
        await ensure_streams(nc.jetstream(), settings, subjects)
        log = JetStreamEventLog(nc, nc.jetstream(), subjects)
        subject = subjects.job("default", "j2")
        first = await log.append(subject, [_cancel("j2", "x")], expected_last_subject_seq=None,
                                 msg_id="cmd-1")
        again = await log.append(subject, [_cancel("j2", "x")], expected_last_subject_seq=None,
                                 msg_id="cmd-1")
        assert (first.duplicate, again.duplicate) == (False, True)
        assert again.seq == first.seq
        assert await log.last_seq() == 1
    finally:
        await nc.close()
