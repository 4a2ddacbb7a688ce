"""Replay benchmark: rebuild the read models from a log of N events, against raw rates.

    python bench/replay.py [--events 1000000] [--runs 1] [--profile [TOP]]
    python bench/replay.py --events 50000          # quick mode, ~10 s

Setup (not measured): a private nats-server and Postgres in a temp dir, ``prepare()``
(streams, migrations, default org), then ~N events decided by the real domain
(:class:`HistoryMaker`: submissions, assignments, run starts, metric events batched
``--per-message`` to a message, completions/failures/cancellations) appended with raw
pipelined publishes.

Measured in every run, in this order:
  (a)  raw read: an ordered push consumer over the whole stream whose callback only
       counts (LIMITS.md §1b(a)) -> msgs/s, and events/s of the same log;
  (a') the same with ``openweights.events.decode`` in the callback (informative);
  (a'') the same log through ``openweights.adapters.nats.bulk.bulk_read``, the reader
       replay uses, with a callback that only counts (informative);
  replay: ``openweights.replay.rebuild()`` into a fresh schema (after a CHECKPOINT), split
       into its fold and COPY phases by its progress callback;
  ``fold_log()`` + ``ReadModel.all_rows()`` alone, which also yield the rows for
  (b)  raw COPY: ``copy_records_to_table`` of exactly those rows into a fresh migrated
       schema (after a CHECKPOINT), one transaction, synchronous_commit off, as rebuild().
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    CpuMeter,
    CpuSample,
    PipelinedPublisher,
    cpu_rows,
    drop_schema,
    fmt_mmm,
    human,
    mmm,
    ordered_read,
    pg_execute,
    print_table,
    servers,
)

from openweights.adapters.nats.bulk import bulk_read
from openweights.adapters.nats.reader import StoredMessage
from openweights.adapters.postgres.db import connect, migrate
from openweights.bootstrap import prepare
from openweights.config import Settings
from openweights.events import decode, encode
from openweights.projection.rows import COLUMNS, Row
from openweights.replay import ReplayResult, fold_log, rebuild, table_digests
from openweights.services.testing.history import HistoryMaker
from openweights.subjects import Subjects

GOAL_EVENTS_PER_S = 100_000
GOAL_RATIO = 0.5
LIMITS_RAW_PUBLISH = 89_600  # LIMITS.md §1a raw pipelined publish, asyncio median (msg/s)
LIMITS_ORDERED_READ = 139_800  # LIMITS.md §1b(a) ordered push + counting cb, asyncio median
REPLAY_SCHEMA, COPY_SCHEMA = "bench_replay", "bench_copy"


@dataclass
class Loaded:
    messages: int = 0
    events: int = 0
    jobs: int = 0
    bytes: int = 0
    seconds: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)


@dataclass
class Run:
    read_s: float = 0.0
    decode_s: float = 0.0
    bulk_read_s: float = 0.0
    replay: ReplayResult | None = None
    replay_fold_s: float = 0.0  # rebuild() start -> last batch folded
    fold_alone_s: float = 0.0
    all_rows_s: float = 0.0
    copy_s: float = 0.0
    copy_rows: dict[str, int] = field(default_factory=dict)
    copy_table_s: dict[str, float] = field(default_factory=dict)

    @property
    def replay_s(self) -> float:
        """rebuild()'s own clock: it stops before the table digests it adds."""
        assert self.replay is not None
        return self.replay.seconds

    @property
    def replay_copy_s(self) -> float:
        return self.replay_s - self.replay_fold_s


# -- setup ---------------------------------------------------------------------------------
async def load(settings: Settings, target_events: int, metrics: int, per_message: int,
               chunk: int = 5_000) -> Loaded:
    """Append decisions of the real domain until ``target_events`` events are stored."""
    out = Loaded()
    maker = HistoryMaker(Subjects(settings.namespace), seed=1)
    decisions = maker.mixed(jobs=10**9, metrics=metrics, per_message=per_message)
    nc = await nats.connect(settings.nats_url)
    started = time.perf_counter()
    try:
        async with PipelinedPublisher(nc) as pub:
            while out.events < target_events:
                batch = []  # made between publishes, so acks arrive while we make more
                for subject, events in decisions:
                    batch.append((subject, encode(events)))
                    out.events += len(events)
                    out.kinds.update(type(e).__name__ for e in events)
                    if out.events >= target_events or len(batch) >= chunk:
                        break
                for subject, payload in batch:
                    await pub.publish(subject, payload)
                    out.bytes += len(payload)
                out.messages += len(batch)
        out.seconds = time.perf_counter() - started
        out.jobs = len(maker.jobs)
    finally:
        await nc.close()
    return out


# -- the measured phases -------------------------------------------------------------------
async def timed_bulk_read(nats_url: str, stream: str, expected: int) -> float:
    """Seconds for :func:`bulk_read` to hand over the whole stream to a counting callback."""
    count = 0

    async def on_batch(batch: list[StoredMessage]) -> None:
        nonlocal count
        count += len(batch)

    started = time.perf_counter()
    await bulk_read(nats_url, stream, on_batch)
    seconds = time.perf_counter() - started
    if count != expected:
        raise AssertionError(f"bulk read {count:,} messages, expected {expected:,}")
    return seconds


async def timed_rebuild(settings: Settings, run: Run, meter: CpuMeter, i: int) -> None:
    """``rebuild()``, with its fold and COPY phases (CPU too) recorded apart.

    rebuild() digests every table after stopping its clock; the CPU of a second digest
    pass is subtracted from its COPY phase (an estimate: the cache is warm by then).
    """
    fold_end: list[CpuSample] = []

    def progress(seq: int, target: int) -> None:
        if seq >= target:
            fold_end.append(meter.snap())

    before = meter.snap()
    run.replay = await rebuild(settings, REPLAY_SCHEMA, progress=progress)
    after = meter.snap()
    with meter.measure(f"digest{i}"):
        conn = await connect(settings.database_url)
        try:
            await table_digests(conn, REPLAY_SCHEMA)
        finally:
            await conn.close()
    digest = meter.samples[f"digest{i}"]
    run.replay_fold_s = fold_end[0].wall - before.wall
    meter.samples[f"replay-fold{i}"] = fold_end[0] - before
    meter.samples[f"replay-copy{i}"] = after - fold_end[0] - digest
    meter.samples[f"replay{i}"] = after - before - digest


async def fold_rows(settings: Settings, run: Run) -> dict[str, list[Row]]:
    started = time.perf_counter()
    model, *_ = await fold_log(settings)
    run.fold_alone_s = time.perf_counter() - started
    started = time.perf_counter()
    rows = {table: list(rs) for table, rs in model.all_rows().items()}
    run.all_rows_s = time.perf_counter() - started
    return rows


async def raw_copy(database_url: str, rows: dict[str, list[Row]], run: Run,
                   meter: CpuMeter, i: int) -> None:
    conn = await connect(database_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{COPY_SCHEMA}" CASCADE')
        await migrate(conn, COPY_SCHEMA)
        await conn.execute(f'SET search_path TO "{COPY_SCHEMA}"')
        await conn.execute("CHECKPOINT")
        started = time.perf_counter()
        with meter.measure(f"copy{i}"):
            async with conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit TO off")
                for table, records in rows.items():
                    t0 = time.perf_counter()
                    if records:
                        await conn.copy_records_to_table(table, records=records,
                                                         columns=COLUMNS[table])
                    run.copy_table_s[table] = time.perf_counter() - t0
                    run.copy_rows[table] = len(records)
        run.copy_s = time.perf_counter() - started
    finally:
        await conn.close()


async def one_run(settings: Settings, meter: CpuMeter, expected: int, i: int) -> Run:
    run, db = Run(), settings.database_url
    assert db is not None
    stream = Subjects(settings.namespace).events_stream

    async def decoding(msg: object) -> None:
        decode(msg.data)  # type: ignore[attr-defined]

    gc.collect()
    with meter.measure(f"read{i}"):
        run.read_s = await ordered_read(settings.nats_url, stream, expected)
    gc.collect()
    with meter.measure(f"decode{i}"):
        run.decode_s = await ordered_read(settings.nats_url, stream, expected, decoding)
    gc.collect()
    with meter.measure(f"bulk{i}"):
        run.bulk_read_s = await timed_bulk_read(settings.nats_url, stream, expected)
    gc.collect()
    await pg_execute(db, "CHECKPOINT")
    await timed_rebuild(settings, run, meter, i)
    await drop_schema(db, REPLAY_SCHEMA)
    gc.collect()
    with meter.measure(f"fold{i}"):
        rows = await fold_rows(settings, run)
    await raw_copy(db, rows, run, meter, i)
    del rows
    await drop_schema(db, COPY_SCHEMA)
    rebuilt = {t: n for t, (n, _) in run.replay.digests.items()}  # type: ignore[union-attr]
    if rebuilt != run.copy_rows:
        raise AssertionError(f"replay rows {rebuilt} != raw COPY rows {run.copy_rows}")
    return run


# -- report --------------------------------------------------------------------------------
Table = list[tuple[str, str, str]]


def rate_rows(runs: list[Run], events: int, messages: int) -> Table:
    written = [sum(n for n, _ in r.replay.digests.values()) for r in runs]  # type: ignore[union-attr]
    copied = [sum(r.copy_rows.values()) for r in runs]
    return [
        ("**replay**: `rebuild()` = fold + COPY into a fresh schema",
         fmt_mmm(events / r.replay_s for r in runs), "events/s"),
        ("  same, in messages", fmt_mmm(messages / r.replay_s for r in runs), "msgs/s"),
        ("  same, in rows written", fmt_mmm(
            n / r.replay_s for n, r in zip(written, runs, strict=True)), "rows/s"),
        ("(a) raw read: ordered push consumer, counting callback",
         fmt_mmm(messages / r.read_s for r in runs), "msgs/s"),
        ("  same, in events of those messages", fmt_mmm(events / r.read_s for r in runs),
         "events/s"),
        ("(a') read + `events.decode` in the callback (informative)",
         fmt_mmm(events / r.decode_s for r in runs), "events/s"),
        ("(a'') read through `bulk_read` (replay's reader), counting (informative)",
         fmt_mmm(messages / r.bulk_read_s for r in runs), "msgs/s"),
        ("(b) raw COPY of the replay's rows (all tables, 1 txn)",
         fmt_mmm(n / r.copy_s for n, r in zip(copied, runs, strict=True)), "rows/s"),
        ("  same, in events of the log", fmt_mmm(events / r.copy_s for r in runs),
         "events-equiv/s"),
    ]


def ratios(runs: list[Run], events: int, messages: int) -> dict[str, list[float]]:
    rep = [events / r.replay_s for r in runs]
    read_ev = [events / r.read_s for r in runs]
    read_msg = [messages / r.read_s for r in runs]
    copy_ev = [events / r.copy_s for r in runs]
    copy_rows = [sum(r.copy_rows.values()) / r.copy_s for r in runs]
    z = zip
    return {
        "r1": [p / min(a, b) for p, a, b in z(rep, read_ev, copy_ev, strict=True)],
        "r2": [p / min(a, b) for p, a, b in z(rep, read_msg, copy_rows, strict=True)],
        "read": [p / a for p, a in z(rep, read_ev, strict=True)],
        "copy": [p / a for p, a in z(rep, copy_ev, strict=True)],
        "limits": [p / LIMITS_ORDERED_READ for p in rep],
    }


def ratio_rows(runs: list[Run], events: int, messages: int) -> Table:
    r = ratios(runs, events, messages)
    return [
        ("**R1** replay events/s ÷ min(raw read events/s, raw COPY events-equiv/s): like for "
         "like, = slower raw time ÷ replay time; in msgs/s it is the same number",
         fmt_mmm(r["r1"], ".2f"), f"goal ≥ {GOAL_RATIO}"),
        ("R2 replay events/s ÷ min(raw read **msgs**/s, raw COPY **rows**/s): native units, "
         "mixed; flatters replay by events/msg", fmt_mmm(r["r2"], ".2f"), "informative"),
        ("replay ÷ raw read, events/s ÷ events/s", fmt_mmm(r["read"], ".2f"), ""),
        ("replay ÷ raw COPY, events/s ÷ events-equiv/s", fmt_mmm(r["copy"], ".2f"), ""),
        (f"replay events/s ÷ LIMITS §1b(a) {human(LIMITS_ORDERED_READ)} msgs/s",
         fmt_mmm(r["limits"], ".2f"), "informative"),
    ]


def split_rows(runs: list[Run], events: int) -> Table:
    def s(values: object) -> str:
        return fmt_mmm(values, ".2f")  # type: ignore[arg-type]

    out = [
        ("replay (rebuild()'s clock, digests excluded)", s(r.replay_s for r in runs), "s"),
        ("  fold phase: start → last batch folded (connect, migrate, read, decode, apply)",
         s(r.replay_fold_s for r in runs), "s"),
        ("  COPY phase: last batch → staging schema swapped in (every table's COPY, "
         "keys and indexes, commits, swap)", s(r.replay_copy_s for r in runs), "s"),
        ("  fold phase rate", fmt_mmm(events / r.replay_fold_s for r in runs), "events/s"),
        ("`fold_log()` alone", s(r.fold_alone_s for r in runs), "s"),
        ("`ReadModel.all_rows()` alone", s(r.all_rows_s for r in runs), "s"),
        ("(a) raw read", s(r.read_s for r in runs), "s"),
        ("(a'') bulk read", s(r.bulk_read_s for r in runs), "s"),
        ("(b) raw COPY", s(r.copy_s for r in runs), "s"),
    ]
    out += [(f"  `{t}`: {n:,} rows", s(r.copy_table_s[t] for r in runs), "s")
            for t, n in runs[0].copy_rows.items() if n]
    return out


PHASES = {
    "read": "(a) raw read", "decode": "(a') read + decode", "bulk": "(a'') bulk read",
    "replay": "replay, all",
    "replay-fold": "replay, fold phase", "replay-copy": "replay, COPY phase",
    "fold": "`fold_log()` + `all_rows()` alone", "copy": "(b) raw COPY",
}


def report(loaded: Loaded, runs: list[Run], meter: CpuMeter) -> None:
    rep = runs[0].replay
    assert rep is not None
    events, messages, metric = rep.events, rep.messages, loaded.kinds["RunEventLogged"]
    print(f"\nlog: {events:,} events in {messages:,} messages ({events / messages:.2f} "
          f"events/msg, {loaded.bytes / loaded.messages:.0f} B/msg), {loaded.jobs:,} jobs; "
          f"metric events {metric:,} ({metric / loaded.events:.0%})")
    print("kinds: " + ", ".join(f"{k} {v:,}" for k, v in loaded.kinds.most_common()))
    print("rows: " + ", ".join(f"{t} {n:,}" for t, (n, _) in rep.digests.items() if n))
    print(f"setup, raw pipelined publish (not measured): {loaded.seconds:.1f} s, "
          f"{human(loaded.messages / loaded.seconds)} msgs/s = "
          f"{loaded.messages / loaded.seconds / LIMITS_RAW_PUBLISH:.2f}× LIMITS §1a "
          f"({human(LIMITS_RAW_PUBLISH)} msgs/s of 200 B)")
    print_table(f"Rates ({len(runs)} run(s))", rate_rows(runs, events, messages))
    print_table("Ratios", ratio_rows(runs, events, messages))
    print_table("Time split", split_rows(runs, events))
    print_table("CPU µs per event: bench process / nats-server / postgres / rest of the box "
                "(other users, kernel); box busy; this process's cyclic-GC time",
                cpu_rows(meter, PHASES, len(runs), events))
    rate = mmm(events / r.replay_s for r in runs)[1]
    r1 = mmm(ratios(runs, events, messages)["r1"])[1]
    print(f"\ngoal replay ≥ {human(GOAL_EVENTS_PER_S)} events/s: "
          f"{'MET' if rate >= GOAL_EVENTS_PER_S else 'NOT MET'} (median {human(rate)})")
    print(f"goal R1 ≥ {GOAL_RATIO}: {'MET' if r1 >= GOAL_RATIO else 'NOT MET'} "
          f"(median {r1:.2f})")


# -- main ----------------------------------------------------------------------------------
async def profile_rebuild(settings: Settings, top: int) -> None:
    prof = cProfile.Profile()
    prof.enable()
    await rebuild(settings, "bench_profile")
    prof.disable()
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(top)
        print(f"\n--- cProfile of one rebuild() by {key} (profiling slows it ~2×) ---")
        print(buf.getvalue().split("\n\n", 1)[-1])


async def main(args: argparse.Namespace) -> None:
    async with servers() as (srv, database_url):
        settings = Settings(nats_url=srv.nats.url, database_url=database_url,
                            namespace="bench", home=srv.root / "home")
        await prepare(settings)
        loaded = await load(settings, args.events, args.metrics, args.per_message)
        nc = await nats.connect(settings.nats_url)
        info = await nc.jetstream().stream_info(Subjects(settings.namespace).events_stream)
        await nc.close()
        print(f"loaded {loaded.events:,} events in {loaded.messages:,} messages "
              f"(+1 org message) in {loaded.seconds:.1f} s", flush=True)
        meter, runs = CpuMeter(srv), []
        with meter.gc_clock:
            for i in range(args.runs):
                runs.append(await one_run(settings, meter, info.state.messages, i))
                r = runs[-1]
                print(f"run {i + 1}: replay {human(r.replay.events / r.replay_s)} events/s "  # type: ignore[union-attr]
                      f"({r.replay_s:.2f} s), raw read {r.read_s:.2f} s, "
                      f"raw COPY {r.copy_s:.2f} s", flush=True)
        report(loaded, runs, meter)
        if args.profile:
            await profile_rebuild(settings, args.profile)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--events", type=int, default=1_000_000, help="events to append (≈)")
    p.add_argument("--runs", type=int, default=1, help="measured runs (min/median/max)")
    p.add_argument("--metrics", type=int, default=8, help="metric events per run of a job")
    p.add_argument("--per-message", type=int, default=4,
                   help="metric events batched in one message (as the SDK batches ow.run.log)")
    p.add_argument("--profile", type=int, nargs="?", const=25, default=0, metavar="TOP",
                   help="after the runs, cProfile one rebuild() and print the TOP functions")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
