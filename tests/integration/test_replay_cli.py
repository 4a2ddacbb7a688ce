"""`ow replay` (--verify, --to-seq, --as-of) and `ow audit` through the real CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import anyio
import asyncpg
import nats
import pytest
from typer.testing import CliRunner

from openweights.adapters.nats.eventlog import JetStreamEventLog
from openweights.adapters.postgres.db import connect
from openweights.adapters.projected import ProjectionWatcher
from openweights.cli.main import app
from openweights.config import Settings, settings_env
from openweights.services.testing.history import HistoryMaker
from openweights.services.testing.stack import services_thread
from openweights.subjects import Subjects

runner = CliRunner()


async def _append(settings: Settings, decisions: list) -> int:
    nc = await nats.connect(settings.nats_url)
    try:
        log = JetStreamEventLog(nc, nc.jetstream(), Subjects(settings.namespace))
        last = 0
        for subject, events in decisions:
            last = (await log.append(subject, events, expected_last_subject_seq=None)).seq
        return last
    finally:
        await nc.close()


async def _wait_projected(settings: Settings, seq: int) -> None:
    nc = await nats.connect(settings.nats_url)
    conn = await connect(settings.database_url)  # type: ignore[arg-type]
    try:
        watcher = ProjectionWatcher(nc, Subjects(settings.namespace))
        await watcher.start(conn)
        with anyio.fail_after(30):
            await watcher.wait_projected(seq)
    finally:
        await conn.close()
        await nc.close()


def _ow(settings: Settings, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=settings_env(settings))
    return result.exit_code, result.output


@pytest.fixture
def projected(settings: Settings) -> tuple[Settings, HistoryMaker, int, datetime, int]:
    """Two batches of history, projected; returns the seq and time between them."""
    maker = HistoryMaker(Subjects(settings.namespace), seed=3)
    decisions = list(maker.mixed(jobs=30, metrics=12))
    half = len(decisions) // 2
    with services_thread(settings, ("projector",)):
        first = anyio.run(_append, settings, decisions[:half])
        between = datetime.now(UTC)
        last = anyio.run(_append, settings, decisions[half:])
        anyio.run(_wait_projected, settings, last)
    return settings, maker, first, between, last


def test_replay_verify_passes_then_names_a_tampered_row(projected) -> None:
    settings, maker, _, _, _ = projected
    code, out = _ow(settings, "replay", "--verify")
    assert code == 0, out
    assert "equal the replay" in out
    job_id = next(iter(maker.jobs))

    async def tamper() -> None:
        conn = await asyncpg.connect(settings.database_url)
        await conn.execute("UPDATE jobs SET script = 'tampered' WHERE id = $1", job_id)
        await conn.close()

    anyio.run(tamper)
    code, out = _ow(settings, "replay", "--verify")
    assert code == 1
    assert "tampered" in out and job_id in out


def test_replay_to_seq_and_as_of_rebuild_the_past(projected) -> None:
    settings, _, first, between, last = projected

    async def checkpoint(schema: str) -> int:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return int(await conn.fetchval(
                f'SELECT last_seq FROM "{schema}".projection_checkpoint'))
        finally:
            await conn.close()

    code, out = _ow(settings, "replay", "--to-seq", str(first), "--schema", "past")
    assert code == 0, out
    assert anyio.run(checkpoint, "past") == first
    code, out = _ow(settings, "replay", "--as-of", between.isoformat(timespec="seconds")
                    .replace("+00:00", "+0000"), "--schema", "asof")
    assert code == 0, out
    assert anyio.run(checkpoint, "asof") <= first
    code, out = _ow(settings, "replay", "--schema", "now")
    assert code == 0 and anyio.run(checkpoint, "now") == last


def test_audit_job_lists_every_event_with_who_and_what(projected) -> None:
    settings, maker, _, _, _ = projected
    job_id, state = next((k, s) for k, s in maker.jobs.items() if s.status == "completed")
    code, out = _ow(settings, "audit", "job", job_id, "--json")
    assert code == 0, out
    rows = json.loads(out)
    assert [r["event"] for r in rows][:3] == ["job.submitted/2", "job.assigned/1",
                                              "run.started/1"]
    assert rows[-1]["event"] == "job.completed/1"
    assert rows[0]["by"]["kind"] == "client" and rows[1]["by"]["kind"] == "scheduler"
    assert rows[1]["changes"]["worker_id"] == state.worker_id
    assert all(r["seq"] > 0 for r in rows)
    code, out = _ow(settings, "audit", "job", "no-such-job")
    assert code == 1 and "no job" in out
