"""Shared helpers of the benchmarks: private servers, statistics, CPU meters, loading.

Every bench starts its own ``nats-server`` and Postgres in a temporary directory (see
:func:`servers`) so that a run never touches a developer's stack and leaves nothing
behind. Numbers are ceilings for "everything on one box": client, servers and the
kernel share the same cores, which is why :class:`CpuMeter` reports who used them.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import astuple, dataclass, field
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.nuid import NUID

from openweights.adapters.embedded import EmbeddedNats, EmbeddedPostgres
from openweights.adapters.postgres.db import check_schema_name, connect
from openweights.bootstrap import ensure_database

_TICKS = os.sysconf("SC_CLK_TCK")
READ_LIMIT_S = 600.0


# -- servers ---------------------------------------------------------------------------
@dataclass
class Servers:
    nats: EmbeddedNats
    postgres: EmbeddedPostgres
    root: Path

    def postgres_pid(self) -> int:
        return int((self.postgres.data_dir / "postmaster.pid").read_text().split()[0])

    def nats_pid(self) -> int:
        assert self.nats.proc is not None
        return self.nats.proc.pid


@asynccontextmanager
async def servers(dbname: str = "bench") -> AsyncIterator[tuple[Servers, str]]:
    """A private nats-server and Postgres in a temp dir: ``(servers, database_url)``.

    Both are stopped and the directory removed on exit, whatever happened inside.
    """
    root = Path(tempfile.mkdtemp(prefix="ow-bench-"))
    # pgserver may recreate its runtime dir (under root, see EmbeddedPostgres) after we
    # removed root; its own atexit hooks are registered later, so this one runs after them.
    atexit.register(shutil.rmtree, root, True)
    nats_server = pg = None
    try:
        nats_server = EmbeddedNats(root / "nats").start()
        pg = EmbeddedPostgres(root / "pg" / "data").start()
        await ensure_database(pg.url, dbname)
        yield Servers(nats_server, pg, root), pg.database_url(dbname)
    finally:
        if pg is not None:
            pg.stop()
        if nats_server is not None:
            nats_server.stop()
        shutil.rmtree(root, ignore_errors=True)


async def pg_execute(database_url: str, *statements: str) -> None:
    """Run statements on a fresh connection (``CHECKPOINT`` before a timed block...)."""
    conn = await connect(database_url)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


async def drop_schema(database_url: str, schema: str) -> None:
    await pg_execute(database_url,
                     f'DROP SCHEMA IF EXISTS "{check_schema_name(schema)}" CASCADE')


# -- statistics -------------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    """Linearly interpolated percentile, ``p`` in [0, 100] (numpy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def mmm(values: Iterable[float]) -> tuple[float, float, float]:
    """``(min, median, max)``."""
    vals = list(values)
    return min(vals), statistics.median(vals), max(vals)


def human(x: float, digits: int = 1) -> str:
    """``1234567 -> '1.23M'``, ``123456 -> '123.5k'``, ``12.3 -> '12.3'``."""
    if abs(x) >= 1e6:
        return f"{x / 1e6:.2f}M"
    if abs(x) >= 1e3:
        return f"{x / 1e3:.{digits}f}k"
    return f"{x:.{digits}f}"


def fmt_mmm(values: Iterable[float], fmt: str = "human") -> str:
    """``min / **median** / max`` (the LIMITS.md cell format); one value prints alone."""
    vals = list(values)
    show = human if fmt == "human" else (lambda v: format(v, fmt))
    if len(vals) == 1:
        return show(vals[0])
    lo, mid, hi = mmm(vals)
    return f"{show(lo)} / **{show(mid)}** / {show(hi)}"


def print_table(title: str, rows: Iterable[tuple[str, str, str]]) -> None:
    """A markdown table of ``(measure, min / median / max, unit)`` rows."""
    print(f"\n{title}\n\n| measure | min / **median** / max | unit |\n|---|---|---|")
    for name, value, unit in rows:
        print(f"| {name} | {value} | {unit} |")


# -- CPU accounting -----------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields from #3 (state) on


def process_tree_cpu(root_pid: int, children: bool = False) -> float:
    """CPU seconds of ``root_pid`` (with its reaped children), plus, if ``children``,
    of its live direct children (Postgres backends are children of the postmaster)."""
    f = _stat_fields(root_pid)
    if f is None:
        return 0.0
    ticks = sum(int(x) for x in f[11:15])  # utime stime cutime cstime
    if children:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                c = _stat_fields(int(entry.name))
                if c is not None and int(c[1]) == root_pid:
                    ticks += int(c[11]) + int(c[12])
    return ticks / _TICKS


def box_busy() -> tuple[int, int]:
    """``(busy, total)`` clock ticks of all CPUs since boot (``/proc/stat``)."""
    vals = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = vals[3] + vals[4]  # idle + iowait
    total = sum(vals[:8])
    return total - idle, total


class GcClock:
    """Time this process spends in cyclic-GC collections (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._t0
            self.collections[info["generation"]] += 1

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


@dataclass(frozen=True)
class CpuSample:
    """Wall and CPU seconds over a block (or a difference of two such samples)."""

    wall: float
    client: float
    nats: float
    postgres: float
    busy_cpu: float  # CPU seconds the whole box was busy (all cores)
    gc: float  # seconds this process spent in cyclic-GC collections
    full_gcs: int  # generation-2 collections

    def __sub__(self, other: CpuSample) -> CpuSample:
        return CpuSample(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @property
    def busy(self) -> float:
        """Fraction of all the box's cores that were busy (0..1)."""
        return self.busy_cpu / ((os.cpu_count() or 1) * self.wall) if self.wall else 0.0

    @property
    def others(self) -> float:
        """CPU seconds of everything else on the box (other users, the kernel's own)."""
        return max(0.0, self.busy_cpu - self.client - self.nats - self.postgres)


@dataclass
class CpuMeter:
    """Wall time and CPU seconds of this process, nats-server and Postgres over blocks."""

    srv: Servers
    gc_clock: GcClock = field(default_factory=GcClock)
    samples: dict[str, CpuSample] = field(default_factory=dict)

    def snap(self) -> CpuSample:
        """Counters since an arbitrary origin; subtract two snaps to get a block."""
        busy, _ = box_busy()
        return CpuSample(time.perf_counter(), time.process_time(),
                         process_tree_cpu(self.srv.nats_pid()),
                         process_tree_cpu(self.srv.postgres_pid(), children=True),
                         busy / _TICKS, self.gc_clock.seconds, self.gc_clock.collections[2])

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        before = self.snap()
        yield
        self.samples[name] = self.snap() - before


def per_job_cpu(d: CpuSample, parts: dict[str, float], jobs: int) -> dict[str, float]:
    """µs of CPU per job: this process (``bench``), each of ``parts`` (CPU seconds of
    other processes), nats-server, Postgres and the rest of the box; plus ``busy``."""
    row = {"bench": d.client, **parts, "nats": d.nats, "postgres": d.postgres}
    row["rest"] = max(0.0, d.busy_cpu - sum(row.values()))
    return {k: v / jobs * 1e6 for k, v in row.items()} | {"busy": d.busy}


def cpu_rows(meter: CpuMeter, phases: dict[str, str], runs: int, per: int,
             ) -> list[tuple[str, str, str]]:
    """Median CPU µs per unit (``per`` units in a phase) of phases named ``<key><run>``."""
    out = []
    for key, label in phases.items():
        samples = [meter.samples[f"{key}{i}"] for i in range(runs)]

        def med(attr: str, samples: list[CpuSample] = samples) -> float:
            return mmm(getattr(x, attr) for x in samples)[1]

        us = " / ".join(f"{med(k) / per * 1e6:.2f}"
                        for k in ("client", "nats", "postgres", "others"))
        out.append((label, f"{us}; box {med('busy'):.0%} busy; GC {med('gc'):.2f} s "
                           f"({med('full_gcs'):.0f} full)", "median"))
    return out


# -- loading a stream fast (setup, not what is measured) ---------------------------------
class PipelinedPublisher:
    """Raw JetStream appends: core publishes with a reply inbox, acks counted in one
    callback (LIMITS.md §1a, the box's append ceiling). At most ``window`` unacked."""

    def __init__(self, nc: Client, window: int = 20_000) -> None:
        self.nc, self.window = nc, window
        self.inbox = f"_BENCHACK.{NUID().next().decode()}"
        self.sent = self.acked = 0
        self.errors: list[bytes] = []
        self._target = 0
        self._wake = asyncio.Event()
        self._sub: Subscription | None = None

    async def __aenter__(self) -> PipelinedPublisher:
        self._sub = await self.nc.subscribe(f"{self.inbox}.*", cb=self._on_ack,
                                            pending_msgs_limit=-1, pending_bytes_limit=-1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if exc[0] is None:
            await self.wait_acked(self.sent)
        assert self._sub is not None
        await self._sub.unsubscribe()

    async def _on_ack(self, msg: Msg) -> None:
        self.acked += 1
        if msg.data[:9] == b'{"error":' and len(self.errors) < 10:
            self.errors.append(msg.data)
        if self.acked >= self._target:
            self._wake.set()

    async def wait_acked(self, n: int) -> None:
        while self.acked < n:
            self._target = n
            self._wake.clear()
            await self._wake.wait()
        if self.errors:
            raise RuntimeError(f"JetStream refused appends: {self.errors[:3]}")

    async def publish(self, subject: str, payload: bytes) -> None:
        await self.nc.publish(subject, payload, reply=f"{self.inbox}.{self.sent}")
        self.sent += 1
        if self.sent - self.acked > self.window:
            await self.wait_acked(self.sent - self.window // 2)


# -- reading a stream at the client's ceiling ----------------------------------------------
async def ordered_read(nats_url: str, stream: str, expected: int,
                       on_msg: Callable[[Msg], Awaitable[None]] | None = None) -> float:
    """Seconds to receive ``expected`` messages of ``stream`` from sequence 1 through an
    ordered push consumer whose callback only counts (and awaits ``on_msg``, if given):
    LIMITS.md §1b(a), the fastest nats-py read path."""
    nc = await nats.connect(nats_url)
    done = asyncio.Event()
    count = 0

    async def cb(msg: Msg) -> None:
        nonlocal count
        if on_msg is not None:
            await on_msg(msg)
        count += 1
        if count >= expected:
            done.set()

    try:
        started = time.perf_counter()
        sub = await nc.jetstream().subscribe(
            ">", stream=stream, cb=cb, ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            pending_msgs_limit=-1, pending_bytes_limit=-1)
        async with asyncio.timeout(READ_LIMIT_S):  # a lost message must not hang a bench
            await done.wait()
        seconds = time.perf_counter() - started
        await sub.unsubscribe()
    finally:
        await nc.close()
    return seconds
