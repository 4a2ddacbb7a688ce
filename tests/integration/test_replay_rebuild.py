"""``rebuild()`` replaces its schema all at once, or not at all."""

from __future__ import annotations

import asyncpg
import nats
import pytest

from openweights import replay
from openweights.adapters.nats.eventlog import JetStreamEventLog
from openweights.adapters.nats.streams import ensure_streams
from openweights.adapters.postgres.db import connect, migrate, query
from openweights.config import Settings
from openweights.events.codec import UndecodableEvent
from openweights.replay import rebuild, staging_schema, table_digests
from openweights.services.testing.history import HistoryMaker
from openweights.subjects import Subjects

pytestmark = pytest.mark.anyio


async def _append(settings: Settings, maker: HistoryMaker, jobs: int) -> int:
    subjects = Subjects(settings.namespace)
    nc = await nats.connect(settings.nats_url)
    try:
        await ensure_streams(nc.jetstream(), settings, subjects)
        log = JetStreamEventLog(nc, nc.jetstream(), subjects)
        last = 0
        for subject, events in maker.mixed(jobs=jobs, metrics=30, per_message=4):
            last = (await log.append(subject, events, expected_last_subject_seq=None)).seq
        return last
    finally:
        await nc.close()


async def _schemas(conn: asyncpg.Connection) -> set[str]:
    return {r["nspname"] for r in await conn.fetch("SELECT nspname FROM pg_namespace")}


async def _keys_and_indexes(conn: asyncpg.Connection, schema: str) -> set[tuple[str, ...]]:
    keys = {("key", r["tablename"], r["conname"], r["condef"])
            for r in await conn.fetch(query("primary_keys"), schema)}
    indexes = {("index", r["tablename"], r["indexname"],
                r["indexdef"].replace(f"{schema}.", "<schema>."))
               for r in await conn.fetch(query("secondary_indexes"), schema)}
    return keys | indexes


async def test_the_rebuilt_schema_has_the_keys_and_indexes_of_a_migrated_one(
        settings: Settings) -> None:
    await _append(settings, HistoryMaker(Subjects(settings.namespace), seed=6), jobs=5)
    await rebuild(settings, "ow_replay")
    conn = await connect(settings.database_url)  # type: ignore[arg-type]
    try:
        await migrate(conn, "fresh")
        rebuilt = await _keys_and_indexes(conn, "ow_replay")
        assert rebuilt == await _keys_and_indexes(conn, "fresh")
        assert ("key", "events", "events_pkey", "PRIMARY KEY (seq, idx)") in rebuilt
    finally:
        await conn.close()


async def test_rebuild_replaces_the_schema_and_a_failed_one_leaves_it_as_it_was(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # Event rows handed over (and COPYed) every 50 while folding, as on a long log.
    monkeypatch.setattr(replay, "EVENT_ROWS_HELD", 50)
    maker = HistoryMaker(Subjects(settings.namespace), seed=5)
    first = await _append(settings, maker, jobs=40)
    before = await rebuild(settings, "ow_replay")
    assert before.last_seq == first and before.digests["events"][0] > 0

    second = await _append(settings, maker, jobs=10)
    again = await rebuild(settings, "ow_replay")
    assert again.last_seq == second
    assert again.digests["jobs"][0] == before.digests["jobs"][0] + 10

    # A message no decoder knows, after the good ones: the fold fails midway, once
    # event rows were already COPYed into the staging schema.
    nc = await nats.connect(settings.nats_url)
    try:
        await nc.jetstream().publish(Subjects(settings.namespace).job("default", "bad"),
                                     b"not json")
    finally:
        await nc.close()
    with pytest.raises(UndecodableEvent):
        await rebuild(settings, "ow_replay")

    conn = await asyncpg.connect(settings.database_url)
    try:
        assert await table_digests(conn, "ow_replay") == again.digests
        assert await conn.fetchval("SELECT last_seq FROM ow_replay.projection_checkpoint") \
            == second
        assert staging_schema("ow_replay") not in await _schemas(conn)
    finally:
        await conn.close()
