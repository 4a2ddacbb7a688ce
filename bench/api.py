"""api benchmark: `jobs.retrieve` round trips and job submissions/s through the real SDK and
api service, beside a bare NATS request/reply measured in the same run.

    python bench/api.py                       # N=2000 retrieves, 8000 submissions, 3 runs
    python bench/api.py --runs 1 --profile    # and cProfile the services and the clients

Setup (not measured): a private nats-server and Postgres in a temp dir (`_common.servers`),
the projector and the api service started by `services_thread` (their own thread and
event loop in this process, as the e2e tests run them), one job to retrieve.

Measured in every run, each after a warm-up:
  echo:        a raw `nc.subscribe` responder (`m.respond(m.data)`, 200 B) on its own
               connection in this process (LIMITS.md §2 "same process, raw subscribe");
               N sequential `nc.request` -> p50/p99, then C clients (one connection each)
               in parallel -> req/s;
  retrieve:    N sequential `await aow.jobs.retrieve(job_id)` on one `AsyncOpenWeights`
               -> p50/p99 (SDK encode, NATS, api dispatch, Postgres query, pydantic `Job`);
  submissions: C `AsyncOpenWeights` clients, each `create()`-ing distinct jobs of a
               registered custom job type (no mounts) in a loop -> jobs/s; every job is
               checked afterwards (the stream holds exactly one new message per job).

Goals (issue 3): retrieve p50 <= 2 ms; submissions >= 2,000/s with 16 clients.
Everything shares one box: the client, both services, nats-server and Postgres; the CPU
table says who used the cores. With `--services process` the projector and the api run
as their own programs (`python -m openweights.services.projector`,
`python -m openweights.services.api`), as deployed, instead of sharing this process's
GIL with the clients.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import nats
from anyio.abc import TaskStatus
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    CpuMeter,
    fmt_mmm,
    human,
    mmm,
    percentile,
    print_table,
    process_tree_cpu,
    servers,
)

from openweights import AsyncOpenWeights, Jobs, register
from openweights.adapters.projected import projected_subject
from openweights.bootstrap import prepare
from openweights.config import Settings
from openweights.logs import configure_logging
from openweights.services.testing.stack import services_thread
from openweights.subjects import Subjects

GOAL_RETRIEVE_P50_S = 0.002
GOAL_SUBMISSIONS_PER_S = 2_000
LIMITS_ECHO_P50_US = 371  # LIMITS.md §2 same process, raw subscribe, asyncio: p50 median
LIMITS_ECHO_16_PER_S = 13_236  # … 16 concurrent req/s median
PAYLOAD = b"x" * 200
ECHO = "bench.echo"


class BenchParams(BaseModel):
    run: int
    client: int
    i: int


@register("bench")
class BenchJob(Jobs):
    params = BenchParams
    requires_vram_gb = 0
    base_image = "python:3.11-slim"

    def get_entrypoint(self, p: BenchParams) -> str:  # type: ignore[override]
        return f"python -c 'print({p.i})'"


@dataclass
class Run:
    echo_lat: list[float] = field(default_factory=list)
    echo_par_s: float = 0.0
    retrieve_lat: list[float] = field(default_factory=list)
    submit_s: float = 0.0
    commits: int = 0  # projector transactions while the submissions ran


# -- measurements ---------------------------------------------------------------------------
async def sequential(call: Callable[[], Awaitable[Any]], n: int, warm: int) -> list[float]:
    for _ in range(warm):
        await call()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t0)
    return out


async def parallel(workers: list[Callable[[], Awaitable[None]]]) -> float:
    """Start every worker at once; seconds until the last one is done."""
    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for w in workers:
            tg.start_soon(w)
    return time.perf_counter() - t0


async def echo_runs(url: str, n: int, warm: int, clients: int, total: int,
                    meter: Meter, i: int) -> tuple[list[float], float]:
    conns = [await nats.connect(url) for _ in range(clients)]
    try:
        def request() -> Awaitable[Any]:
            return conns[0].request(ECHO, PAYLOAD, timeout=5)

        def worker(nc: Any, count: int) -> Callable[[], Awaitable[None]]:
            async def go() -> None:
                for _ in range(count):
                    await nc.request(ECHO, PAYLOAD, timeout=5)
            return go

        await sequential(request, 0, warm)
        with meter.measure(f"echo{i}"):
            latencies = await sequential(request, n, 0)
        await parallel([worker(nc, warm // clients + 1) for nc in conns])
        with meter.measure(f"echo-par{i}"):
            seconds = await parallel([worker(nc, total // clients) for nc in conns])
        return latencies, seconds
    finally:
        for nc in conns:
            await nc.close()


async def submissions(settings: Settings, run: int, clients: int, total: int,
                      meter: Meter | None = None) -> float:
    aows = [AsyncOpenWeights(settings=settings, retry_for_s=30) for _ in range(clients)]
    try:
        per = total // clients
        for c, aow in enumerate(aows):  # connect and warm every client (not measured)
            await aow.bench.create(run=run, client=c, i=-1)

        def worker(aow: AsyncOpenWeights, c: int) -> Callable[[], Awaitable[None]]:
            async def go() -> None:
                for i in range(per):
                    await aow.bench.create(run=run, client=c, i=i)
            return go

        workers = [worker(aow, c) for c, aow in enumerate(aows)]
        if meter is None:
            return await parallel(workers)
        with meter.measure(f"submit{run}"):
            return await parallel(workers)
    finally:
        for aow in aows:
            await aow.close()


async def stream_last_seq(settings: Settings) -> int:
    nc = await nats.connect(settings.nats_url)
    try:
        info = await nc.jetstream().stream_info(Subjects(settings.namespace).events_stream)
        return int(info.state.last_seq)
    finally:
        await nc.close()


# -- where the services run ---------------------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def service_processes(settings: Settings, profile_to: Path | None,
                            ) -> AsyncIterator[list[int]]:
    """The projector and the api as their own programs; yields their pids once the api
    answers. Stopped with SIGTERM (their clean shutdown, which also lets cProfile write
    ``profile_to``) on exit."""
    await prepare(settings)
    env = {**os.environ, "OW_NATS_URL": settings.nats_url or "",
           "OW_DATABASE_URL": settings.database_url or "", "OW_NAMESPACE": settings.namespace,
           "OW_HOME": str(settings.home), "PYTHONPATH": str(ROOT)}
    profiled = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
    procs = [await anyio.open_process(
        [sys.executable, *(profiled if name == "api" else []), "-m",
         f"openweights.services.{name}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name in ("projector", "api")]
    try:
        async with AsyncOpenWeights(settings=settings, retry_for_s=60) as aow:
            await aow.jobs.list()  # retried until the api answers
        yield [p.pid for p in procs]
    finally:
        with anyio.CancelScope(shield=True):
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                with anyio.move_on_after(15) as scope:
                    await p.wait()
                if scope.cancelled_caught:
                    p.kill()


@contextmanager
def services_in_thread(settings: Settings, profile: bool) -> Iterator[list[int]]:
    with services_thread(settings, extra=ServicesProfiler.compose if profile else None):
        yield []


@dataclass
class Meter:
    """`CpuMeter` (this process, nats-server, Postgres, the box) plus the CPU seconds of
    the service processes (process mode; empty ``pids`` in thread mode)."""

    cpu: CpuMeter
    pids: list[int]  # projector, api
    services: dict[str, list[float]] = field(default_factory=dict)

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        before = [process_tree_cpu(p) for p in self.pids]
        with self.cpu.measure(name):
            yield
        self.services[name] = [process_tree_cpu(p) - b
                               for p, b in zip(self.pids, before, strict=True)]


class _AsyncOf:
    """A blocking context manager used in ``async with`` (it only starts/stops threads)."""

    def __init__(self, cm: Any) -> None:
        self.cm = cm

    async def __aenter__(self) -> Any:
        return self.cm.__enter__()

    async def __aexit__(self, *exc: Any) -> Any:
        return self.cm.__exit__(*exc)


# -- profiling the services' thread ----------------------------------------------------------
class ServicesProfiler:
    """Runs inside `services_thread` (an ``extra`` service) so that cProfile, which only
    sees the thread that enables it, can be switched on in the services' thread."""

    instance: ServicesProfiler | None = None

    def __init__(self) -> None:
        self.prof = cProfile.Profile()
        self.loop: asyncio.AbstractEventLoop | None = None
        ServicesProfiler.instance = self

    @classmethod
    async def compose(cls, settings: Settings, stack: Any, nc: Any, js: Any,
                      clock: Any) -> ServicesProfiler:
        return cls()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.loop = asyncio.get_running_loop()
        task_status.started()
        await anyio.sleep_forever()

    def _in_thread(self, fn: Callable[[], None]) -> None:
        assert self.loop is not None
        done = threading.Event()
        self.loop.call_soon_threadsafe(lambda: (fn(), done.set()))
        done.wait(5)

    def enable(self) -> None:
        self._in_thread(self.prof.enable)

    def disable(self) -> None:
        self._in_thread(self.prof.disable)


def print_profile(title: str, prof: cProfile.Profile | str, top: int) -> None:
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(top)
        print(f"\n--- cProfile, {title}, by {key} (profiling slows it down) ---")
        print(buf.getvalue().split("\n\n", 1)[-1])


async def profile_phases(settings: Settings, job_id: str, args: argparse.Namespace) -> None:
    sp = ServicesProfiler.instance
    assert sp is not None
    for name, phase in (
        ("retrieve", lambda aow: sequential(lambda: aow.jobs.retrieve(job_id), args.n, 0)),
        ("submissions", lambda aow: submissions(settings, 99, args.clients,
                                                args.submissions // 2)),
    ):
        async with AsyncOpenWeights(settings=settings, retry_for_s=30) as aow:
            await aow.jobs.retrieve(job_id)
            client = cProfile.Profile()
            sp.prof = cProfile.Profile()
            sp.enable()
            client.enable()
            await phase(aow)
            client.disable()
            sp.disable()
        print_profile(f"{name}: services thread (api + projector)", sp.prof, args.profile)
        print_profile(f"{name}: client thread (SDK)", client, args.profile)


# -- report -----------------------------------------------------------------------------------
def us(values: Any) -> str:
    return fmt_mmm([v * 1e6 for v in values], ".0f")


def report(runs: list[Run], args: argparse.Namespace, meter: Meter) -> None:
    def p(r: list[float], q: float) -> float:
        return percentile(r, q)

    echo50 = [p(r.echo_lat, 50) for r in runs]
    echo99 = [p(r.echo_lat, 99) for r in runs]
    ret50 = [p(r.retrieve_lat, 50) for r in runs]
    ret99 = [p(r.retrieve_lat, 99) for r in runs]
    echo_par = [args.echo_total / r.echo_par_s for r in runs]
    subs = [args.submissions / r.submit_s for r in runs]
    ret_seq = [len(r.retrieve_lat) / sum(r.retrieve_lat) for r in runs]
    echo_seq = [len(r.echo_lat) / sum(r.echo_lat) for r in runs]
    print_table(f"Results ({len(runs)} run(s); min / median / max over runs)", [
        ("bare NATS echo, sequential: p50", us(echo50), "µs"),
        ("bare NATS echo, sequential: p99", us(echo99), "µs"),
        ("bare NATS echo, sequential", fmt_mmm(echo_seq), "req/s"),
        (f"bare NATS echo, {args.clients} clients in parallel", fmt_mmm(echo_par), "req/s"),
        ("**`jobs.retrieve`**, sequential: p50", us(ret50), "µs"),
        ("`jobs.retrieve`, sequential: p99", us(ret99), "µs"),
        ("`jobs.retrieve`, sequential", fmt_mmm(ret_seq), "req/s"),
        (f"**job submissions**, {args.clients} `AsyncOpenWeights` clients", fmt_mmm(subs),
         "jobs/s"),
        ("  projector commits meanwhile, jobs per commit",
         fmt_mmm([(args.submissions + args.clients) / max(r.commits, 1) for r in runs],
                 ".1f"), "jobs"),
    ])
    print_table("Ratios", [
        ("retrieve p50 ÷ echo p50 (same run)",
         fmt_mmm([a / b for a, b in zip(ret50, echo50, strict=True)], ".2f"), "×"),
        ("retrieve p99 ÷ echo p99 (same run)",
         fmt_mmm([a / b for a, b in zip(ret99, echo99, strict=True)], ".2f"), "×"),
        ("submissions/s ÷ echo req/s with as many clients (same run)",
         fmt_mmm([a / b for a, b in zip(subs, echo_par, strict=True)], ".3f"), "×"),
        (f"echo p50 ÷ LIMITS §2 ({LIMITS_ECHO_P50_US} µs): this box now vs then",
         fmt_mmm([e * 1e6 / LIMITS_ECHO_P50_US for e in echo50], ".2f"), "×"),
        (f"echo parallel ÷ LIMITS §2 16-concurrent ({human(LIMITS_ECHO_16_PER_S)} req/s)",
         fmt_mmm([e / LIMITS_ECHO_16_PER_S for e in echo_par], ".2f"), "×"),
        (f"retrieve p50 ÷ goal {GOAL_RETRIEVE_P50_S * 1e3:.0f} ms",
         fmt_mmm([r / GOAL_RETRIEVE_P50_S for r in ret50], ".2f"), "≤ 1 meets it"),
        (f"submissions/s ÷ goal {human(GOAL_SUBMISSIONS_PER_S)}/s",
         fmt_mmm([s / GOAL_SUBMISSIONS_PER_S for s in subs], ".2f"), "≥ 1 meets it"),
    ])
    phases = {"echo": ("echo, sequential", args.n),
              "echo-par": (f"echo, {args.clients} clients", args.echo_total),
              "retrieve": ("retrieve, sequential", args.n),
              "submit": ("submissions, parallel", args.submissions)}
    rows = []
    for key, (label, per) in phases.items():
        names = [f"{key}{i}" for i in range(len(runs))]
        samples = [meter.cpu.samples[n] for n in names]

        def med(attr: str, samples: list[Any] = samples) -> float:
            return mmm(getattr(x, attr) for x in samples)[1]

        split = [mmm(meter.services[n][k] for n in names)[1] for k in range(len(meter.pids))]
        svc = sum(split)
        others = max(0.0, med("others") - svc)  # the box's "others" include the services
        cpu = " / ".join(f"{v / per * 1e6:.0f}" for v in (
            med("client"), svc, med("nats"), med("postgres"), others))
        if meter.pids:
            cpu += " (api {1:.0f} + projector {0:.0f})".format(*(v / per * 1e6 for v in split))
        rows.append((label, f"{cpu}; box {med('busy'):.0%} busy", "µs/request"))
    where = ("this process (clients + services, one GIL) / - " if not meter.pids else
             "this process (clients) / service processes")
    print_table(f"CPU per request: {where} / nats-server / postgres / rest of the box "
                f"({os.cpu_count()} cores)", rows)
    r50, s = mmm(ret50)[1], mmm(subs)[1]
    print(f"\ngoal retrieve p50 ≤ {GOAL_RETRIEVE_P50_S * 1e3:.0f} ms: "
          f"{'MET' if r50 <= GOAL_RETRIEVE_P50_S else 'NOT MET'} (median {r50 * 1e6:.0f} µs)")
    print(f"goal submissions ≥ {human(GOAL_SUBMISSIONS_PER_S)}/s: "
          f"{'MET' if s >= GOAL_SUBMISSIONS_PER_S else 'NOT MET'} (median {human(s)}/s)")


def plot(runs: list[Run], args: argparse.Namespace) -> None:
    from plots import latency_cdf

    latency_cdf(args.plot_dir / "api_latency.png",
                f"Sequential round trips ({len(runs)} run(s) pooled, {args.n} per run)",
                {"": {"jobs.retrieve (SDK, api, Postgres)":
                      [x for r in runs for x in r.retrieve_lat],
                      "bare NATS request/reply (200 B echo)":
                      [x for r in runs for x in r.echo_lat]}},
                unit="µs", goal=("goal p50 ≤", GOAL_RETRIEVE_P50_S))


# -- main -------------------------------------------------------------------------------------
async def one_run(settings: Settings, job_id: str, i: int, args: argparse.Namespace,
                  meter: Meter) -> Run:
    run = Run()
    run.echo_lat, run.echo_par_s = await echo_runs(
        settings.nats_url or "", args.n, args.warm, args.clients, args.echo_total, meter, i)
    async with AsyncOpenWeights(settings=settings, retry_for_s=30) as aow:
        await sequential(lambda: aow.jobs.retrieve(job_id), 0, args.warm)
        with meter.measure(f"retrieve{i}"):
            run.retrieve_lat = await sequential(lambda: aow.jobs.retrieve(job_id), args.n, 0)
    before = await stream_last_seq(settings)
    commits = await nats.connect(settings.nats_url or "")
    counted: list[int] = []

    async def count(msg: Any) -> None:
        counted.append(1)

    # The projector announces every commit; the api waits on them for read-your-writes.
    await commits.subscribe(projected_subject(Subjects(settings.namespace)), cb=count)
    try:
        run.submit_s = await submissions(settings, i, args.clients, args.submissions, meter)
    finally:
        await commits.close()
    run.commits = len(counted)
    appended = await stream_last_seq(settings) - before
    expected = args.submissions + args.clients  # + one warm-up job per client
    if appended != expected:
        raise AssertionError(f"{appended} messages appended for {expected} new jobs")
    return run


async def main(args: argparse.Namespace) -> None:
    configure_logging(json=True)  # as deployed (JSON lines, on stderr): tables own stdout
    async with servers() as (srv, database_url):
        settings = Settings(nats_url=srv.nats.url, database_url=database_url,
                            namespace="bench", home=srv.root / "home")
        echo_nc = await nats.connect(srv.nats.url)

        async def echo(msg: Any) -> None:
            await msg.respond(msg.data)

        await echo_nc.subscribe(ECHO, cb=echo)
        api_profile = srv.root / "api.prof" if args.profile else None
        if args.services == "process":
            where: Any = service_processes(settings, api_profile)
        else:
            where = _AsyncOf(services_in_thread(settings, bool(args.profile)))
        async with where as pids:
            async with AsyncOpenWeights(settings=settings, retry_for_s=30) as aow:
                job_id = (await aow.bench.create(run=-1, client=-1, i=-1)).id
            meter, runs = Meter(CpuMeter(srv), pids), []
            print(f"services: {args.services}; {args.clients} clients; N={args.n}",
                  flush=True)
            with meter.cpu.gc_clock:
                for i in range(args.runs):
                    runs.append(await one_run(settings, job_id, i, args, meter))
                    r = runs[-1]
                    print(f"run {i + 1}: echo p50 {percentile(r.echo_lat, 50) * 1e6:.0f} µs, "
                          f"retrieve p50 {percentile(r.retrieve_lat, 50) * 1e6:.0f} µs "
                          f"p99 {percentile(r.retrieve_lat, 99) * 1e6:.0f} µs, "
                          f"submissions {human(args.submissions / r.submit_s)}/s",
                          flush=True)
            report(runs, args, meter)
            if args.plot_dir:
                plot(runs, args)
            if args.profile and args.services == "thread":
                await profile_phases(settings, job_id, args)
        if api_profile is not None and api_profile.exists():
            print_profile("the api process over the whole bench", str(api_profile),
                          args.profile)
        await echo_nc.close()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--n", type=int, default=2000, help="sequential round trips measured")
    p.add_argument("--warm", type=int, default=300, help="warm-up round trips")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients")
    p.add_argument("--submissions", type=int, default=8000, help="jobs submitted per run")
    p.add_argument("--echo-total", type=int, default=20_000,
                   help="echo requests across the parallel clients")
    p.add_argument("--runs", type=int, default=3, help="measured runs (min/median/max)")
    p.add_argument("--services", choices=("thread", "process"), default="thread",
                   help="services in a thread of this process (as the e2e tests) or as "
                        "their own programs (as deployed)")
    p.add_argument("--profile", type=int, nargs="?", const=25, default=0, metavar="TOP",
                   help="cProfile and print the TOP functions: both threads after the runs "
                        "(thread mode), or the api process throughout (process mode)")
    p.add_argument("--plot-dir", type=Path, default=None,
                   help="write api_latency.png (round-trip latency distributions) here")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
