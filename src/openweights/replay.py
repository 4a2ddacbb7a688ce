"""``ow replay``: rebuild every read model from sequence 1 into a fresh schema.

The rebuild folds the log through the same :class:`ReadModel` as the live projector,
then COPYs the rows. ``--verify`` rebuilds up to the live projector's checkpoint and
compares table by table; ``--to-seq``/``--as-of`` stop earlier (audits: the state as
it was then).
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio
import asyncpg
import nats

from openweights.adapters.nats.bulk import bulk_read
from openweights.adapters.nats.reader import StoredMessage
from openweights.adapters.postgres.db import check_schema_name, connect, migrate, query
from openweights.adapters.postgres.readmodels import bulk_load, get_checkpoint
from openweights.adapters.projected import CHECKPOINT
from openweights.config import Settings
from openweights.events import decode
from openweights.projection.model import ReadModel
from openweights.projection.rows import TABLES, Row
from openweights.subjects import Subjects

Progress = Callable[[int, int], None]  # (last seq applied, target seq)


@dataclass
class ReplayResult:
    schema: str
    last_seq: int
    messages: int
    events: int
    seconds: float
    digests: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


@dataclass
class Difference:
    table: str
    side: str  # "live" or "rebuild": where this row text is found
    row: str


EventRowsSink = Callable[[list[Row]], None]
EVENT_ROWS_CHUNK = 50_000


async def fold_log(settings: Settings, *, to_seq: int | None = None,
                   as_of: datetime | None = None, progress: Progress | None = None,
                   event_rows: EventRowsSink | None = None,
                   ) -> tuple[ReadModel, int, int, int]:
    """Fold the log into a fresh :class:`ReadModel`: ``(model, last_seq, msgs, events)``.

    With ``event_rows``, run-event rows (final as soon as folded) are handed over in
    chunks while folding, so a writer can COPY them on the other core meanwhile.
    """
    subjects = Subjects(settings.namespace)
    nc = await nats.connect(settings.nats_url, allow_reconnect=False,  # type: ignore[arg-type]
                             connect_timeout=5)
    model = ReadModel()
    counts = [0, 0]
    try:
        js = nc.jetstream()
        info = await js.stream_info(subjects.events_stream)
        target = info.state.last_seq if to_seq is None else min(to_seq, info.state.last_seq)

        async def on_batch(batch: list[StoredMessage]) -> None:
            for m in batch:
                events = decode(m.data)
                model.apply(m.seq, events)
                counts[1] += len(events)
            counts[0] += len(batch)
            if event_rows is not None and len(model.new_events) >= EVENT_ROWS_CHUNK:
                event_rows(model.new_events)
                model.new_events = []
            if progress is not None:
                progress(batch[-1].seq, target)

        stop_ns = int(as_of.timestamp() * 1e9) if as_of is not None else None
        with gc_paused():
            stats = await bulk_read(settings.nats_url or "nats://127.0.0.1:4222",
                                    subjects.events_stream, on_batch,
                                    stop_seq=target, stop_time_ns=stop_ns)
        return model, stats.last_seq, counts[0], counts[1]
    finally:
        await nc.close()


@contextmanager
def gc_paused() -> Iterator[None]:
    """Folding keeps every state alive; the cyclic GC would rescan them all for nothing."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def rebuild(settings: Settings, schema: str, *, to_seq: int | None = None,
                  as_of: datetime | None = None, progress: Progress | None = None,
                  ) -> ReplayResult:
    """Replay into ``schema`` (dropped first if it exists) and digest its tables.

    Rows are loaded before the secondary indexes exist (they are rebuilt after, the
    same definitions), and run-event rows are COPYed while the log is still folding.
    """
    assert settings.database_url is not None
    schema = check_schema_name(schema)
    started = time.perf_counter()
    conn = await connect(settings.database_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await migrate(conn, schema)
        await conn.execute(f'SET search_path TO "{schema}"')
        with gc_paused():
            async with conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit TO off")
                indexes = await conn.fetch(query("secondary_indexes"), schema)
                for ix in indexes:
                    await conn.execute(f'DROP INDEX "{schema}"."{ix["indexname"]}"')
                send, receive = anyio.create_memory_object_stream[list[Row]](math.inf)

                async def copy_event_rows() -> None:
                    async for chunk in receive:
                        await bulk_load(conn, {"events": chunk})

                async with anyio.create_task_group() as tg:
                    tg.start_soon(copy_event_rows)
                    with send:
                        model, last_seq, messages, events = await fold_log(
                            settings, to_seq=to_seq, as_of=as_of, progress=progress,
                            event_rows=send.send_nowait)
                await bulk_load(conn, model.all_rows())
                await conn.execute("SET LOCAL maintenance_work_mem TO '256MB'")
                for ix in indexes:
                    await conn.execute(ix["indexdef"])
                await conn.execute(query("set_checkpoint"), CHECKPOINT, last_seq,
                                   datetime.now(UTC))
        seconds = time.perf_counter() - started
        digests = await table_digests(conn, schema)
    finally:
        await conn.close()
    return ReplayResult(schema, last_seq, messages, events, seconds, digests)


async def table_digests(conn: asyncpg.Connection, schema: str) -> dict[str, tuple[int, str]]:
    out = {}
    for table in TABLES:
        sql = query("digest_table").format(schema=check_schema_name(schema), table=table)
        row = await conn.fetchrow(sql)
        out[table] = (int(row["rows"]), str(row["digest"]))
    return out


async def verify(settings: Settings, *, live_schema: str = "public",
                 rebuild_schema: str = "ow_verify", limit: int = 20,
                 progress: Progress | None = None,
                 attempts: int = 5) -> tuple[ReplayResult, list[Difference]]:
    """Rebuild up to the live checkpoint and list every row that differs (up to ``limit``
    per table). An empty list means the live read models equal the replay exactly.

    A running stack keeps projecting: the live tables are read in one snapshot together
    with their checkpoint, and if that moved past the rebuild, the rebuild is redone up
    to it (``attempts`` times), so only a real difference is ever reported.
    """
    assert settings.database_url is not None
    conn = await connect(settings.database_url, schema=live_schema)
    try:
        checkpoint = await get_checkpoint(conn, CHECKPOINT)
    finally:
        await conn.close()
    for attempt in range(attempts):
        result = await rebuild(settings, rebuild_schema, to_seq=checkpoint, progress=progress)
        conn = await connect(settings.database_url, schema=live_schema)
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                now_at = await get_checkpoint(conn, CHECKPOINT)
                if now_at != result.last_seq and attempt + 1 < attempts:
                    checkpoint = now_at
                    continue
                live = await table_digests(conn, live_schema)
                diffs: list[Difference] = []
                for table in TABLES:
                    if live[table] == result.digests[table]:
                        continue
                    sql = query("diff_table").format(left=check_schema_name(live_schema),
                                                     right=rebuild_schema, table=table)
                    diffs += [Difference(table, r["side"], r["row"])
                              for r in await conn.fetch(sql, limit)]
                return result, diffs
        finally:
            await conn.close()
    raise AssertionError("unreachable: the last attempt always compares")
