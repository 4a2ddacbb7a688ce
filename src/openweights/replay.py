"""``ow replay``: rebuild every read model from sequence 1 into a fresh schema.

The rebuild folds the log through the same :class:`ReadModel` as the live projector,
then COPYs the rows. ``--verify`` rebuilds up to the live projector's checkpoint and
compares table by table; ``--to-seq``/``--as-of`` stop earlier (audits: the state as
it was then).
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio
import asyncpg
import nats

from openweights.adapters.nats.bulk import bulk_read
from openweights.adapters.nats.reader import StoredMessage
from openweights.adapters.nats.servers import connect_options, first_url
from openweights.adapters.postgres.db import check_schema_name, connect, migrate, query
from openweights.adapters.postgres.readmodels import get_checkpoint
from openweights.adapters.projected import CHECKPOINT
from openweights.config import Settings
from openweights.events import decode
from openweights.projection.model import ReadModel
from openweights.projection.rows import COLUMNS, TABLES, Row
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
# Run-event rows held while folding before they are handed over (~500 B each, so at
# most ~0.5 GB). Encoding rows for a COPY is Python work: done while folding it delays
# the fold, the critical path, while at the end it overlaps Postgres building the other
# tables (1M events, quiet box: 4.2-4.3 s against 4.6-4.7 s handing over chunks of 10k).
EVENT_ROWS_HELD = 1_000_000


async def fold_log(settings: Settings, *, to_seq: int | None = None,
                   as_of: datetime | None = None, progress: Progress | None = None,
                   event_rows: EventRowsSink | None = None,
                   ) -> tuple[ReadModel, int, int, int]:
    """Fold the log into a fresh :class:`ReadModel`: ``(model, last_seq, msgs, events)``.

    With ``event_rows``, run-event rows (final as soon as folded) are handed over
    whenever :data:`EVENT_ROWS_HELD` of them are held (the rest stay in
    ``model.new_events``), so that memory stays bounded on any log.
    """
    subjects = Subjects(settings.namespace)
    assert settings.nats_url is not None
    nc = await nats.connect(**connect_options(settings.nats_url), allow_reconnect=False,
                            connect_timeout=5)
    model = ReadModel()
    counts = [0, 0]
    try:
        js = nc.jetstream()
        info = await js.stream_info(subjects.events_stream)
        target = info.state.last_seq if to_seq is None else min(to_seq, info.state.last_seq)

        async def on_batch(batch: list[StoredMessage]) -> None:
            apply, n = model.apply, 0
            for m in batch:
                events = decode(m.data)
                apply(m.seq, events, m.subject)
                n += len(events)
            counts[0] += len(batch)
            counts[1] += n
            if event_rows is not None and len(model.new_events) >= EVENT_ROWS_HELD:
                event_rows(model.new_events)
                model.new_events = []
            if progress is not None:
                progress(batch[-1].seq, target)

        stop_ns = int(as_of.timestamp() * 1e9) if as_of is not None else None
        with gc_paused():
            stats = await bulk_read(first_url(settings.nats_url),
                                    subjects.events_stream, on_batch,
                                    stop_seq=target, stop_time_ns=stop_ns)
        return model, stats.last_seq, counts[0], counts[1]
    finally:
        await nc.close()


@contextmanager
def gc_paused() -> Iterator[None]:
    """Folding keeps every state alive; the cyclic GC would rescan them all for nothing.

    On the way out the survivors go straight to the oldest generation (freeze, then
    unfreeze): re-enabled as they were, the next young collection would walk all of
    them (0.15 s for 1M events), and they die by reference counting anyway.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.freeze()
            gc.enable()
            gc.unfreeze()


_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _timestamptz_to_pg(value: datetime) -> tuple[int]:
    if value.tzinfo is None:  # as asyncpg's own encoder: a naive time is local time
        value = value.astimezone(UTC)
    return ((value - _PG_EPOCH) // _MICROSECOND,)


def _timestamptz_from_pg(value: tuple[int]) -> datetime:
    return _PG_EPOCH + timedelta(microseconds=value[0])


async def _lean_timestamps(conn: asyncpg.Connection) -> None:
    """Encode timestamptz as microseconds since 2000 in Python (0.25 µs) instead of
    asyncpg's encoder (0.47 µs: astimezone, then timedelta arithmetic). A replay of 1M
    events writes 1.1M of them."""
    await conn.set_type_codec("timestamptz", schema="pg_catalog", format="tuple",
                              encoder=_timestamptz_to_pg, decoder=_timestamptz_from_pg)


async def rebuild(settings: Settings, schema: str, *, to_seq: int | None = None,
                  as_of: datetime | None = None, progress: Progress | None = None,
                  ) -> ReplayResult:
    """Replay into ``schema`` (replaced if it exists) and digest its tables.

    The rows go into a staging schema that then replaces ``schema`` in one transaction:
    readers see the old tables or the new ones, and a rebuild that fails leaves
    ``schema`` as it was. See :func:`_load` for how the rows are written.
    """
    assert settings.database_url is not None
    schema = check_schema_name(schema)
    staging = staging_schema(schema)
    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        conns = [await connect(settings.database_url) for _ in _WRITERS]
        for conn in conns:
            stack.push_async_callback(conn.close)
        first = conns[0]
        try:
            await first.execute(f'DROP SCHEMA IF EXISTS "{staging}" CASCADE')
            await migrate(first, staging)
            indexes = await _defer_indexes(first, staging)
            for conn in conns:
                await conn.execute(f'SET search_path TO "{staging}"')
                await _lean_timestamps(conn)
            with gc_paused():
                async with contextlib.AsyncExitStack() as transactions:
                    for conn in conns:
                        await transactions.enter_async_context(conn.transaction())
                    folded = await _load(conns, indexes, settings, to_seq=to_seq,
                                         as_of=as_of, progress=progress)
            async with first.transaction():
                await first.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                await first.execute(f'ALTER SCHEMA "{staging}" RENAME TO "{schema}"')
            seconds = time.perf_counter() - started
            digests = await table_digests(first, schema)
        except BaseException:
            with anyio.CancelScope(shield=True), contextlib.suppress(
                    asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await first.execute(f'DROP SCHEMA IF EXISTS "{staging}" CASCADE')
            raise
    _, last_seq, messages, events = folded
    return ReplayResult(schema, last_seq, messages, events, seconds, digests)


def staging_schema(schema: str) -> str:
    """Where :func:`rebuild` writes before the swap (one per target schema)."""
    return check_schema_name(f"{schema[:54]}__rebuild")


# Tables whose primary key is added back after their rows: maintaining the events' key
# row by row costs Postgres a third of their COPY (0.80 against 0.53 s of CPU for 660k
# rows); building it after takes 0.15 s.
_KEYS_AFTER = ("events",)


async def _defer_indexes(conn: asyncpg.Connection, schema: str) -> list[tuple[str, str]]:
    """Drop what a bulk load should not maintain row by row: every secondary index and
    the primary keys of :data:`_KEYS_AFTER`. Returns ``(table, DDL)`` to build them again
    (the same definitions), a table's key first."""
    out = []
    for key in await conn.fetch(query("primary_keys"), schema):
        if key["tablename"] in _KEYS_AFTER:
            table = f'"{schema}"."{key["tablename"]}"'
            await conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{key["conname"]}"')
            out.append((key["tablename"],
                        f'ALTER TABLE {table} ADD CONSTRAINT "{key["conname"]}" {key["condef"]}'))
    for ix in await conn.fetch(query("secondary_indexes"), schema):
        await conn.execute(f'DROP INDEX "{schema}"."{ix["indexname"]}"')
        out.append((ix["tablename"], ix["indexdef"]))
    return out


# Which connection writes which tables: see _load.
_WRITERS = (("events",),
            ("organizations", "api_tokens", "organization_secrets", "files", "workers", "jobs"),
            ("runs",))
assert sorted(t for ts in _WRITERS for t in ts) == sorted(TABLES)


async def _load(conns: list[asyncpg.Connection], indexes: list[tuple[str, str]],
                settings: Settings, *, to_seq: int | None, as_of: datetime | None,
                progress: Progress | None) -> tuple[ReadModel, int, int, int]:
    """Fold the log and write every row, each table before its secondary indexes (and
    some primary keys) exist (built after, the same definitions), in one transaction per
    connection of
    :data:`_WRITERS`, so that the end of a rebuild keeps both cores busy.

    When the fold is done, the first connection COPYs the run-event rows (those not
    already handed over while folding, see :data:`EVENT_ROWS_HELD`) and indexes them,
    the second COPYs the job tables (rows made as the COPY consumes them) and indexes
    them while the third COPYs and indexes the runs. Tried and measured worse: COPYing
    event rows in chunks of 10k while folding, and keeping their indexes meanwhile.
    """
    events_conn = conns[0]
    send, receive = anyio.create_memory_object_stream[list[Row]](math.inf)

    async def build_indexes(conn: asyncpg.Connection, tables: tuple[str, ...]) -> None:
        await conn.execute("SET LOCAL maintenance_work_mem TO '128MB'")
        for table, ddl in indexes:
            if table in tables:
                await conn.execute(ddl)

    async def load_events() -> None:
        async for chunk in receive:
            await events_conn.copy_records_to_table("events", records=chunk,
                                                    columns=COLUMNS["events"])
        await build_indexes(events_conn, ("events",))

    try:
        async with anyio.create_task_group() as tg:
            for conn in conns:
                await conn.execute("SET LOCAL synchronous_commit TO off")
            tg.start_soon(load_events)
            with send:
                folded = await fold_log(settings, to_seq=to_seq, as_of=as_of,
                                        progress=progress, event_rows=send.send_nowait)
                model = folded[0]
                if model.new_events:
                    send.send_nowait(model.new_events)
                    model.new_events = []
            await conns[1].execute(query("set_checkpoint"), CHECKPOINT, folded[1],
                                   datetime.now(UTC))
            for conn, tables in zip(conns[1:], _WRITERS[1:], strict=True):
                for table in tables:
                    await conn.copy_records_to_table(table, records=model.iter_rows(table),
                                                     columns=COLUMNS[table])
                tg.start_soon(build_indexes, conn, tables)  # while the next COPYs
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:  # the caller gets the error, not a group of one
            raise group.exceptions[0] from None
        raise
    return folded


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
