"""SIGKILL the projector at random points while 50,000 events are appended: after
restarts the read models equal a replay exactly and no event was applied twice.

Two projector processes run at once, so the test also shows the lease at work: only the
holder of the advisory lock applies, the other takes over when the holder dies.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

import anyio
import nats
import pytest

from openweights.adapters.nats.eventlog import JetStreamEventLog
from openweights.adapters.postgres.db import connect
from openweights.adapters.projected import ProjectionWatcher
from openweights.bootstrap import prepare
from openweights.config import Settings, settings_env
from openweights.events import RunEventLogged
from openweights.replay import verify
from openweights.services.testing.history import HistoryMaker
from openweights.subjects import Subjects

pytestmark = pytest.mark.anyio

EVENTS = 50_000


def start_projector(settings: Settings) -> subprocess.Popen[bytes]:
    env = dict(os.environ, **settings_env(settings), OW_LOG_JSON="true")
    return subprocess.Popen([sys.executable, "-m", "openweights.services.projector"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_sigkilled_projectors_end_equal_to_replay(settings: Settings) -> None:
    await prepare(settings)
    subjects = Subjects(settings.namespace)
    rng = random.Random(7)
    decisions = []
    maker = HistoryMaker(subjects, seed=7)
    total = 0
    for decision in maker.mixed(jobs=3_000, metrics=18, per_message=6):
        decisions.append(decision)
        total += len(decision[1])
        if total >= EVENTS:
            break
    assert total >= EVENTS
    kill_points = sorted(rng.sample(range(100, len(decisions) - 100), 6))
    procs = [start_projector(settings), start_projector(settings)]
    nc = await nats.connect(settings.nats_url)
    conn = await connect(settings.database_url)  # type: ignore[arg-type]
    kills = 0
    try:
        log = JetStreamEventLog(nc, nc.jetstream(), subjects)
        last = 0
        for i, (subject, events) in enumerate(decisions):
            last = (await log.append(subject, events, expected_last_subject_seq=None)).seq
            if kill_points and i == kill_points[0]:
                kill_points.pop(0)
                victim = rng.randrange(len(procs))
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait()
                procs[victim] = start_projector(settings)
                kills += 1
        watcher = ProjectionWatcher(nc, subjects)
        await watcher.start(conn)
        with anyio.fail_after(120):
            await watcher.wait_projected(last)
        await watcher.stop()
        assert kills == 6
        _, diffs = await verify(settings)
        assert diffs == []
        metric_events = sum(1 for _, evs in decisions for e in evs
                            if isinstance(e, RunEventLogged))
        # (seq, idx) is the primary key: an event applied twice could not be stored.
        assert await conn.fetchval("SELECT count(*) FROM events") == metric_events
        assert await conn.fetchval(
            "SELECT last_seq FROM projection_checkpoint WHERE name = 'read_models'") == last
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        await conn.close()
        await nc.close()
