"""The projector and replay on real JetStream and Postgres agree row for row."""

from __future__ import annotations

import contextlib

import anyio
import nats
import pytest

from openweights.adapters.nats.eventlog import JetStreamEventLog
from openweights.adapters.nats.streams import ensure_streams
from openweights.adapters.postgres.db import connect, migrate
from openweights.adapters.projected import ProjectionWatcher
from openweights.clock import utc_now
from openweights.config import Settings
from openweights.replay import verify
from openweights.services.projector.bootstrap import compose
from openweights.services.testing.history import HistoryMaker
from openweights.subjects import Subjects

pytestmark = pytest.mark.anyio


async def test_live_projection_equals_replay(settings: Settings) -> None:
    subjects = Subjects(settings.namespace)
    nc = await nats.connect(settings.nats_url)
    conn = await connect(settings.database_url)  # type: ignore[arg-type]
    try:
        await ensure_streams(nc.jetstream(), settings, subjects)
        await migrate(conn)
        log = JetStreamEventLog(nc, nc.jetstream(), subjects)
        last = 0
        for subject, events in HistoryMaker(subjects).mixed(jobs=40, metrics=15):
            last = (await log.append(subject, events, expected_last_subject_seq=None)).seq
        watcher = ProjectionWatcher(nc, subjects)
        await watcher.start(conn)
        async with contextlib.AsyncExitStack() as stack, anyio.create_task_group() as tg:
            projector = await compose(settings, stack, nc, nc.jetstream(), utc_now)
            await tg.start(projector.run)
            await watcher.wait_projected(last)
            tg.cancel_scope.cancel()
        result, diffs = await verify(settings)
        assert diffs == []
        assert result.last_seq == last
        jobs = await conn.fetch("SELECT status, outputs FROM jobs")
        assert len(jobs) == 40
        completed = [j for j in jobs if j["status"] == "completed"]
        assert completed and all(j["outputs"]["step"] == 14 for j in completed)
        assert await conn.fetchval("SELECT count(*) FROM runs") > 0
    finally:
        await conn.close()
        await nc.close()
