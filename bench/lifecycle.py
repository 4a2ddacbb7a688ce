"""Job lifecycles through the real agent: pickup latency and no-op lifecycles/s with N warm
local agents, beside procrastinate (worker concurrency C = N) on the same Postgres, in the
same run.

    python bench/lifecycle.py --quick                # 1 run per N, small samples (~1.5 min)
    python bench/lifecycle.py                        # N = 1, 4, 16; 3 runs each (~15 min)
    python bench/lifecycle.py --services process     # projector, api, scheduler as programs
    python bench/lifecycle.py --profile 25 --n 16    # cProfile every process (process mode)

Setup (not measured): a private nats-server and Postgres (`_common.servers`). For each N a
fresh namespace and database; the projector, the api and the scheduler (no provisioner)
in a thread of this process (`services_thread`, as the e2e tests) or as their own
programs; N agents as `python -m openweights.services.agent` processes, unmanaged, image `bench`,
waited for until the read model shows all N `active`. procrastinate 3.x gets its own
database `pq` on the same server; its worker is `python bench/lifecycle.py --pq-worker`
(`run_worker_async(concurrency=C, listen_notify=True, delete_jobs="never")`, pool
max C+4, default asyncio loop), started fresh for every measurement, as LIMITS.md §4.

Measured in every run, for each N:
  ours pickup:  S sequential jobs, each after a random 20-50 ms idle pause. The command
                is `echo "$OPENWEIGHTS_JOB_ID"` (a shell builtin: no process beyond the
                job's own `sh`, which the agent spawned ahead of the assignment, as it
                does for every job: `WarmShell`; procrastinate's task spawns its `sh`
                when it runs). Latency = client clock before `jobs.submit` -> the
                bench receives that output line (agent reads the pipe, publishes on
                `<ns>log.<org>.…`): an upper bound of "submit -> process started"
                by one NATS hop. Also shown, where the time goes: -> the `at` of
                `JobSubmitted` (api), `JobAssigned` (scheduler) and `RunStarted` (api;
                a job done within 50 ms reports its start with its end, so for these
                jobs it lands after the output line).
  ours e2e:     K jobs with command `true`, 16 submitters (one `AsyncOpenWeights` each)
                submitting K/16 each, while the agents run them. Time = client clock
                before the first submit -> the read models include the last
                `JobCompleted` (its stream sequence, awaited with `ProjectionWatcher`).
                Afterwards every job is checked `completed` in the `jobs` table.
  pq pickup:    LIMITS §4c: the same pauses; `defer_async(t=...)`; the task sends a UDP
                datagram with its own clock. Two tasks: `noop` (stamped at task start,
                LIMITS' figure) and `spawn` (runs `sh -c 'echo go'` with a pipe like the
                agent, stamped when the first line is read: the like-for-like figure).
  pq e2e:       LIMITS §4b e2e: 16 deferrers defer K jobs while the worker runs; time =
                client clock before the first defer -> last `succeeded` event. Tasks
                `noop` and `spawn` (`sh -c true`, stdout piped and read to the end, as
                the agent does).
The "ratio" columns are procrastinate / ours for latency and ours / procrastinate for
rates: above 1 means ours is ahead. Goals (issue 4): pickup p99 <= 50 ms, >= 1,000
lifecycles/s, ahead of procrastinate on both. Everything shares the box's cores; the
CPU table says who used them (µs of CPU per job).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pstats
import random
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import nats
from nats.aio.msg import Msg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import skeleton
from _common import (
    CpuMeter,
    Servers,
    mmm,
    per_job_cpu,
    percentile,
    process_tree_cpu,
    servers,
)

from openweights import AsyncOpenWeights
from openweights.adapters.embedded import die_with_parent
from openweights.adapters.projected import ProjectionWatcher
from openweights.bootstrap import ensure_database, prepare
from openweights.config import Settings, settings_env
from openweights.events import (
    JobAssigned,
    JobCompleted,
    JobFailed,
    JobSubmitted,
    RunStarted,
    decode,
)
from openweights.logs import configure_logging
from openweights.services.testing.stack import services_thread
from openweights.subjects import Subjects

ROOT = Path(__file__).resolve().parent.parent
ORG = "default"
IMAGE = "bench"
GOAL_P99_S = 0.050
GOAL_RATE = 1_000.0
HOPS = ("JobSubmitted", "JobAssigned", "RunStarted")  # the pickup's events, in order
WAIT_S = 30.0  # one job's pickup, or a stalled e2e run: beyond this the bench fails


# -- procrastinate: the app, its worker process, the driver's side --------------------------
def make_app(conninfo: str, max_size: int) -> tuple[Any, Any, Any]:
    from procrastinate import App, PsycopgConnector

    app = App(connector=PsycopgConnector(conninfo=conninfo, min_size=min(max_size, 4),
                                         max_size=max_size))

    def stamp(t: float, port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(f"{t!r} {time.time()!r}".encode(), ("127.0.0.1", port))

    @app.task(name="noop")
    async def noop(t: float = 0.0, port: int = 0) -> None:
        if port:
            stamp(t, port)

    @app.task(name="spawn")
    async def spawn(t: float = 0.0, port: int = 0, cmd: str = "true") -> None:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        assert proc.stdout is not None
        if port:
            await proc.stdout.readline()
            stamp(t, port)
        await proc.stdout.read()
        await proc.wait()

    return app, noop, spawn


def pq_worker_main(conninfo: str, concurrency: int) -> None:
    app, _, _ = make_app(conninfo, concurrency + 4)

    async def main() -> None:
        async with app.open_async():
            await app.run_worker_async(
                concurrency=concurrency, wait=True, listen_notify=True, delete_jobs="never",
                fetch_job_polling_interval=5.0, abort_job_polling_interval=5.0,
                install_signal_handlers=True)

    asyncio.run(main())


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[float, float]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        t, stamp = data.split()
        self.queue.put_nowait((float(t), float(stamp)))


PQ_TABLES = ("procrastinate_events, procrastinate_periodic_defers, procrastinate_jobs, "
             "procrastinate_workers")


class Procrastinate:
    def __init__(self, srv: Servers, log_dir: Path) -> None:
        self.srv, self.log_dir = srv, log_dir
        self.worker: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> Procrastinate:
        await ensure_database(self.srv.postgres.url, "pq")
        url = self.conninfo = self.srv.postgres.database_url("pq")  # a libpq URI
        self.app, self.noop, self.spawn = make_app(self.conninfo, 20)
        await self.app.open_async()
        self.db = await asyncpg.connect(url)
        if not await self.db.fetchval("SELECT to_regclass('procrastinate_jobs') IS NOT NULL"):
            await self.app.schema_manager.apply_schema_async()
        loop = asyncio.get_running_loop()
        self.udp, self.dg = await loop.create_datagram_endpoint(
            Datagrams, local_addr=("127.0.0.1", 0))
        self.port = self.udp.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop_worker()
        self.udp.close()
        await self.db.close()
        await self.app.close_async()

    @asynccontextmanager
    async def worker_running(self, concurrency: int) -> AsyncIterator[int]:
        await self.db.execute(f"TRUNCATE {PQ_TABLES} RESTART IDENTITY")
        await self.db.execute("VACUUM ANALYZE procrastinate_jobs")
        await self.db.execute("VACUUM ANALYZE procrastinate_events")
        with open(self.log_dir / f"pq-worker-c{concurrency}.log", "ab") as out:
            self.worker = subprocess.Popen(  # noqa: ASYNC220 (a fork: no await worth it)
                [sys.executable, __file__, "--pq-worker", self.conninfo, str(concurrency)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent)
        try:
            deadline = time.monotonic() + WAIT_S  # registration is a row: polled (setup)
            while not await self.db.fetchval("SELECT count(*) FROM procrastinate_workers"):
                if self.worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the procrastinate worker did not register")
                await asyncio.sleep(0.05)
            yield self.worker.pid
        finally:
            self.stop_worker()

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(15)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
        self.worker = None

    async def pickup(self, task: Any, samples: int, warm: int, **kw: Any) -> list[float]:
        out = []
        for i in range(warm + samples):
            await asyncio.sleep(random.uniform(0.02, 0.05))
            t = time.time()
            await task.defer_async(t=t, port=self.port, **kw)
            sent, stamp = await asyncio.wait_for(self.dg.queue.get(), WAIT_S)
            assert sent == t, "a datagram of another job"
            if i >= warm:
                out.append(stamp - t)
        return out

    async def e2e(self, task: Any, jobs: int, deferrers: int) -> float:
        per = jobs // deferrers

        async def defer_many() -> None:
            for _ in range(per):
                await task.defer_async()

        t0 = time.time()
        await asyncio.gather(*(defer_many() for _ in range(deferrers)))
        total, seen = per * deferrers, -1
        while True:  # LIMITS §4b polls too; the end time is the event's own timestamp
            done, failed, last = await self.db.fetchrow(
                "SELECT count(*) FILTER (WHERE type = 'succeeded'), "
                "count(*) FILTER (WHERE type = 'failed'), "
                "extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded'))::float8 "
                "FROM procrastinate_events")
            if failed:
                raise RuntimeError(f"{failed} procrastinate jobs failed")
            if done >= total:
                return total / (last - t0)
            if done > seen:
                seen, deadline = done, time.monotonic() + WAIT_S
            elif time.monotonic() > deadline:
                raise RuntimeError(f"procrastinate stalled at {done}/{total}")
            await asyncio.sleep(0.2)


# -- openweights: one stack with N agents ------------------------------------------------------
class Observer:
    """What the bench sees of the jobs: output lines and job events, as clients do."""

    def __init__(self, settings: Settings) -> None:
        self.subjects = Subjects(settings.namespace)
        self.lines: dict[str, float] = {}  # job id (the line's text) -> received at
        self.line_seen = asyncio.Event()
        self.marks: dict[str, dict[str, float]] = defaultdict(dict)  # job -> event -> at
        self.completed: dict[str, int] = {}  # job id -> stream sequence
        self.failed: list[str] = []
        self.counts: dict[str, int] = defaultdict(int)  # completed jobs per id prefix
        self.prefix, self.target = "", 0
        self.all_done = asyncio.Event()

    async def start(self, url: str) -> None:
        self.nc = await nats.connect(url)
        ns = self.subjects.ns
        await self.nc.subscribe(f"{ns}log.{ORG}.>", cb=self._on_line)
        await self.nc.subscribe(self.subjects.live(ORG, "job", "*"), cb=self._on_job)
        await self.nc.flush()

    async def _on_line(self, msg: Msg) -> None:
        self.lines.setdefault(msg.data.strip().decode(), time.time())
        self.line_seen.set()

    async def _on_job(self, msg: Msg) -> None:
        seq = int((msg.headers or {}).get("Nats-Sequence", "0"))
        for e in decode(msg.data):
            if isinstance(e, JobSubmitted | JobAssigned | RunStarted):
                self.marks[e.job_id][type(e).__name__] = e.at.timestamp()
            elif isinstance(e, JobCompleted):
                self.completed[e.job_id] = seq
                prefix = e.job_id.rsplit("-", 1)[0]
                self.counts[prefix] += 1
                if prefix == self.prefix and self.counts[prefix] >= self.target:
                    self.all_done.set()
            elif isinstance(e, JobFailed):
                self.failed.append(e.job_id)
                self.all_done.set()

    def expect(self, prefix: str, count: int) -> None:
        self.prefix, self.target = prefix, count
        self.all_done = asyncio.Event()
        if self.counts[prefix] >= count:
            self.all_done.set()

    async def wait_all_done(self, stall_s: float) -> None:
        """Until the expected jobs completed; raises if none completes for ``stall_s``."""
        while not self.all_done.is_set():
            before = self.counts[self.prefix]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_done.wait(), stall_s)
            if self.counts[self.prefix] == before and not self.all_done.is_set():
                raise TimeoutError(f"stalled at {before}/{self.target} {self.prefix} jobs "
                                   f"completed")

    async def wait_line(self, job_id: str) -> float:
        while job_id not in self.lines:
            self.line_seen.clear()
            await self.line_seen.wait()
        return self.lines[job_id]


class Ours:
    def __init__(self, srv: Servers, n: int, args: argparse.Namespace) -> None:
        self.srv, self.n, self.args = srv, n, args
        self.exits = AsyncExitStack()
        self.agents: list[subprocess.Popen[bytes]] = []
        self.service_procs: list[subprocess.Popen[bytes]] = []
        self.log_dir = args.logs or srv.root / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.prof_dir = srv.root / "prof"
        self.prof_dir.mkdir(exist_ok=True)

    async def __aenter__(self) -> Ours:
        dbname = f"ow_n{self.n}"
        await ensure_database(self.srv.postgres.url, dbname)
        self.settings = Settings(nats_url=self.srv.nats.url,
                                 database_url=self.srv.postgres.database_url(dbname),
                                 namespace=f"bench{self.n}", home=self.srv.root / f"h{self.n}")
        try:
            if self.args.services == "thread":
                self.exits.enter_context(services_thread(
                    self.settings, ("projector", "api", "scheduler")))
            else:
                await prepare(self.settings)
                for name in ("projector", "api", "scheduler"):
                    self.service_procs.append(
                        self._spawn(["-m", f"openweights.services.{name}"], name, {}))
                self.exits.callback(self._stop, self.service_procs)
            self.exits.callback(self._stop, self.agents)
            for i in range(self.n):
                self.agents.append(self._spawn(["-m", "openweights.services.agent"], f"agent{i}", {
                    "OW_WORKER_ID": f"bench-{i}", "OW_DOCKER_IMAGE": IMAGE,
                    "OW_LOCAL_FAKE_GPUS": "0", "OW_MANAGED": "0"}))
            self.db = await asyncpg.connect(self.settings.database_url)
            self.exits.push_async_callback(self.db.close)
            self.observer = Observer(self.settings)
            await self.observer.start(self.srv.nats.url)
            self.exits.push_async_callback(self.observer.nc.close)
            self.watcher = ProjectionWatcher(self.observer.nc, self.observer.subjects)
            await self.watcher.start(self.db)
            self.clients = [AsyncOpenWeights(settings=self.settings, retry_for_s=30)
                            for _ in range(self.args.submitters)]
            for c in self.clients:
                self.exits.push_async_callback(c.close)
            await self._wait_agents()
        except BaseException:
            await self.exits.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.exits.aclose()

    def _spawn(self, argv: list[str], name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        profile = ["-m", "cProfile", "-o", str(self.prof_dir / f"{name}.prof")] \
            if self.args.profile else []
        with open(self.log_dir / f"{name}-n{self.n}.log", "ab") as out:
            return subprocess.Popen(
                [sys.executable, *profile, *argv], cwd=ROOT, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
                env={**os.environ, **settings_env(self.settings), "PYTHONPATH": str(ROOT),
                     **env})

    @staticmethod
    def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    async def _wait_agents(self) -> None:
        deadline = time.monotonic() + 120  # N interpreters starting on 2 cores
        ids = [f"bench-{i}" for i in range(self.n)]
        while await self.db.fetchval("SELECT count(*) FROM workers WHERE status = 'active' "
                                     "AND id = ANY($1)", ids) < self.n:  # setup: polled
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.agents):
                raise RuntimeError(f"agents did not register; see {self.log_dir}")
            await asyncio.sleep(0.1)

    def pids(self) -> dict[str, list[int]]:
        out = {"agents": [p.pid for p in self.agents]}
        if self.service_procs:
            out["services"] = [p.pid for p in self.service_procs]
        return out

    async def submit(self, client: AsyncOpenWeights, prefix: str, i: int, script: str) -> str:
        job = await client.jobs.submit(id_prefix=prefix, script=script, docker_image=IMAGE,
                                       params={"i": i}, requires_vram_gb=0)
        return str(job.id)

    async def pickup(self, run: int, samples: int, warm: int,
                     ) -> tuple[list[float], list[tuple[float, ...]]]:
        """Per job: submit -> first output line received; and submit -> each of HOPS."""
        obs, lines, submitted = self.observer, [], []
        prefix = f"lat{run}"
        for i in range(warm + samples):
            await asyncio.sleep(random.uniform(0.02, 0.05))
            t = time.time()
            job_id = await self.submit(self.clients[0], prefix, i, 'echo "$OPENWEIGHTS_JOB_ID"')
            seen = await asyncio.wait_for(obs.wait_line(job_id), WAIT_S)
            if i >= warm:
                lines.append(seen - t)
                submitted.append((job_id, t))
        obs.expect(prefix, warm + samples)  # let the last ones end before the e2e run
        await obs.wait_all_done(WAIT_S)
        return lines, [tuple(obs.marks[j][h] - t for h in HOPS) for j, t in submitted]

    async def e2e(self, run: int, jobs: int) -> float:
        obs, prefix = self.observer, f"e2e{run}"
        per = jobs // len(self.clients)
        total = per * len(self.clients)
        obs.expect(prefix, total)

        async def submit_many(c: int) -> None:
            for i in range(per):
                await self.submit(self.clients[c], prefix, c * per + i, "true")

        t0 = time.time()
        await asyncio.gather(*(submit_many(c) for c in range(len(self.clients))))
        await obs.wait_all_done(WAIT_S)
        if obs.failed:
            raise RuntimeError(f"{len(obs.failed)} jobs failed, e.g. {obs.failed[:3]}")
        last = max(s for j, s in obs.completed.items() if j.startswith(prefix))
        await asyncio.wait_for(self.watcher.wait_projected(last), WAIT_S)
        seconds = time.time() - t0
        done = await self.db.fetchval("SELECT count(*) FROM jobs WHERE status = 'completed' "
                                      "AND id LIKE $1", f"{prefix}-%")
        assert done == total, f"read model shows {done}/{total} completed"
        return total / seconds


# -- measuring ---------------------------------------------------------------------------
@dataclass
class Results:
    """Every figure, keyed by (what, n): one value (or list of samples) per run."""

    values: dict[tuple[str, int], list[Any]] = field(default_factory=lambda: defaultdict(list))
    cpu: dict[tuple[str, int], list[dict[str, float]]] = field(
        default_factory=lambda: defaultdict(list))

    def add(self, what: str, n: int, value: Any) -> None:
        self.values[(what, n)].append(value)


@contextmanager
def cpu_phase(res: Results, meter: CpuMeter, what: str, n: int, jobs: int,
              groups: dict[str, list[int]]) -> Iterator[None]:
    """µs of CPU per job of this process, each pid group, nats-server, Postgres, the rest."""
    before, g0 = meter.snap(), {k: sum(process_tree_cpu(p) for p in v) for k, v in groups.items()}
    yield
    d = meter.snap() - before
    g = {k: sum(process_tree_cpu(p) for p in v) - g0[k] for k, v in groups.items()}
    res.cpu[(what, n)].append(per_job_cpu(d, g, jobs))


async def spawn_reference(count: int = 1000, concurrency: int = 16) -> float:
    """asyncio `create_subprocess_exec("true")` with 16 in flight (LIMITS §4d: 1,784/s)."""
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            p = await asyncio.create_subprocess_exec("true")
            await p.wait()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return count / (time.perf_counter() - t0)


async def measure_n(srv: Servers, db_url: str, pq: Procrastinate, n: int,
                    args: argparse.Namespace, res: Results, meter: CpuMeter) -> None:
    async with Ours(srv, n, args) as ours:
        await ours.pickup(99, 0, args.warm)  # warm the whole path once
        for run in range(args.runs):
            res.add("spawn16", n, await spawn_reference())
            lat, hops = await ours.pickup(run, args.samples, args.warm)
            res.add("ours.pickup", n, lat)
            for i, hop in enumerate(HOPS):
                res.add(f"ours.{hop}", n, [h[i] for h in hops])
            with cpu_phase(res, meter, "ours.e2e", n, args.jobs, ours.pids()):
                res.add("ours.e2e", n, await ours.e2e(run, args.jobs))
            for name, task, kw in (("noop", pq.noop, {}), ("spawn", pq.spawn,
                                                           {"cmd": "echo go"})):
                async with pq.worker_running(n):
                    res.add(f"pq.{name}.pickup", n, await pq.pickup(
                        task, args.samples, args.warm, **kw))
            for name, task in (("noop", pq.noop), ("spawn", pq.spawn)):
                async with pq.worker_running(n) as pid:
                    with cpu_phase(res, meter, f"pq.{name}.e2e", n, args.jobs,
                                   {"worker": [pid]}):
                        res.add(f"pq.{name}.e2e", n, await pq.e2e(
                            task, args.jobs, args.submitters))
            rate, cpu = await skeleton.measure(srv.nats.url, db_url, n, args.jobs, meter, run)
            res.add("skeleton.e2e", n, rate)
            res.cpu[("skeleton.e2e", n)].append(cpu)
            print(progress(res, n, run), flush=True)
    if args.profile:
        print_profiles(ours.prof_dir, args.profile, n)


def progress(res: Results, n: int, run: int) -> str:
    v = res.values

    def lat(key: str) -> str:
        s = v[(key, n)][run]
        return f"{percentile(s, 50) * 1e3:.1f}/{percentile(s, 99) * 1e3:.1f}"

    return (f"N={n} run {run + 1}: pickup p50/p99 ms ours {lat('ours.pickup')}, "
            f"pq noop {lat('pq.noop.pickup')}, pq spawn {lat('pq.spawn.pickup')}; "
            f"e2e/s ours {v[('ours.e2e', n)][run]:.0f}, pq noop "
            f"{v[('pq.noop.e2e', n)][run]:.0f}, pq spawn {v[('pq.spawn.e2e', n)][run]:.0f}, "
            f"skeleton {v[('skeleton.e2e', n)][run]:.0f}; "
            f"spawn ref {v[('spawn16', n)][run]:.0f}/s")


def print_profiles(prof_dir: Path, top: int, n: int) -> None:
    for kind in ("agent", "api", "scheduler", "projector"):
        files = [str(p) for p in prof_dir.glob(f"{kind}*.prof")]
        if not files:
            continue
        print(f"\n### cProfile: {kind} ({len(files)} process(es), N={n}), by tottime\n```")
        stats = pstats.Stats(*files)
        stats.sort_stats("tottime").print_stats(top)
        print("```")
        for f in files:
            os.unlink(f)


# -- reporting ---------------------------------------------------------------------------
def cell(values: list[float], fmt: str = ".1f") -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    lo, mid, hi = mmm(values)
    return f"{lo:{fmt}} / **{mid:{fmt}}** / {hi:{fmt}}"


def report(res: Results, args: argparse.Namespace) -> None:
    v = res.values

    def pct(key: str, n: int, p: float) -> list[float]:
        return [percentile(s, p) * 1e3 for s in v[(key, n)]]

    def med(values: list[float]) -> float:
        return mmm(values)[1]

    print(f"\n## Lifecycle bench: services in a {args.services}, {args.runs} run(s), "
          f"{args.samples} pickups and {args.jobs} e2e jobs per run, {args.submitters} "
          f"submitters/deferrers; cells min / **median** / max over runs\n")
    print("| N=C | measure | ours | procrastinate noop | procrastinate spawn | ratio vs noop "
          "| ratio vs spawn | goal |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.n:
        for p, goal in ((50, None), (99, GOAL_P99_S * 1e3)):
            o, a, b = pct("ours.pickup", n, p), pct("pq.noop.pickup", n, p), \
                pct("pq.spawn.pickup", n, p)
            ok = "" if goal is None else (
                f"<= {goal:.0f} ms: {'met' if med(o) <= goal else 'MISSED'}; ahead: "
                f"{'yes' if med(o) < min(med(a), med(b)) else 'NO'}")
            print(f"| {n} | pickup p{p} ms | {cell(o)} | {cell(a)} | {cell(b)} | "
                  f"{med(a) / med(o):.2f} | {med(b) / med(o):.2f} | {ok} |")
        o, a, b = v[("ours.e2e", n)], v[("pq.noop.e2e", n)], v[("pq.spawn.e2e", n)]
        ok = (f">= {GOAL_RATE:.0f}/s: {'met' if med(o) >= GOAL_RATE else 'MISSED'}; ahead: "
              f"{'yes' if med(o) > max(med(a), med(b)) else 'NO'}")
        print(f"| {n} | lifecycles/s | {cell(o, '.0f')} | {cell(a, '.0f')} | {cell(b, '.0f')} "
              f"| {med(o) / med(a):.2f} | {med(o) / med(b):.2f} | {ok} |")
    print("\nThe design's bare skeleton (`bench/skeleton.py`: the same messages, appends, "
          "consumers, spawn and COPY per job, none of our logic), in the same run: the "
          "most this architecture gives on this box.\n")
    print("| N | skeleton lifecycles/s | ours | ours / skeleton | skeleton vs goal |\n"
          "|---|---|---|---|---|")
    for n in args.n:
        o, k = v[("ours.e2e", n)], v[("skeleton.e2e", n)]
        print(f"| {n} | {cell(k, '.0f')} | {cell(o, '.0f')} | {med(o) / med(k):.2f} | "
              f"{med(k) / GOAL_RATE:.2f} of {GOAL_RATE:.0f}/s |")
    print("\nOurs, where the pickup time goes: ms from the client's submit to each event's "
          "`at` (the deciding service's clock), then to the output line; p50 / p99, median "
          "over runs. Spawn reference: asyncio `true`, 16 in flight (LIMITS §4d: 1,784/s).\n")
    print(f"| N | {' | '.join(HOPS)} | output line | spawn reference /s |\n"
          f"|---|{'---|' * (len(HOPS) + 2)}")
    for n in args.n:
        cols = [f"{med(pct(k, n, 50)):.1f} / {med(pct(k, n, 99)):.1f}"
                for k in [f"ours.{h}" for h in HOPS] + ["ours.pickup"]]
        print(f"| {n} | {' | '.join(cols)} | {cell(v[('spawn16', n)], '.0f')} |")
    print("\nCPU µs per job during e2e (median over runs; `rest` = kernel and other users):\n")
    print("| N | system | bench proc | agents / worker | services procs | nats | postgres "
          "| rest | box busy |\n|---|---|---|---|---|---|---|---|---|")
    for n in args.n:
        for what in ("ours.e2e", "pq.noop.e2e", "pq.spawn.e2e", "skeleton.e2e"):
            rows = res.cpu[(what, n)]

            def m(k: str, rows: list[dict[str, float]] = rows) -> str:
                vals = [r[k] for r in rows if k in r]
                return f"{med(vals):.0f}" if vals else "-"

            busy = med([r["busy"] for r in rows])
            worker = m("worker") if what.startswith("pq") else m("agents")
            print(f"| {n} | {what} | {m('bench')} | {worker} | {m('services')} | {m('nats')} "
                  f"| {m('postgres')} | {m('rest')} | {busy:.0%} |")


def plot(res: Results, args: argparse.Namespace) -> None:
    """Pickup latency CDFs per N (runs pooled) and lifecycles/s vs N, ours beside pq."""
    from plots import latency_cdf, throughput_vs_agents

    names = {"ours": "ours", "pq.noop": "procrastinate noop", "pq.spawn": "procrastinate spawn"}
    v = res.values
    latency_cdf(args.plot_dir / "lifecycle_pickup.png",
                f"Pickup latency, submit -> job running ({args.runs} run(s) pooled)",
                {f"N = C = {n}": {label: [x for run in v[(f"{key}.pickup", n)] for x in run]
                                  for key, label in names.items()} for n in args.n},
                goal=("goal p99 ≤", GOAL_P99_S))
    throughput_vs_agents(args.plot_dir / "lifecycle_throughput.png",
                         f"No-op job lifecycles/s ({args.jobs} jobs per run)",
                         {label: {n: v[(f"{key}.e2e", n)] for n in args.n}
                          for key, label in {**names, "skeleton": "bare skeleton"}.items()},
                         goal=("goal ≥", GOAL_RATE))


async def main(args: argparse.Namespace) -> None:
    res = Results()
    configure_logging(json=True)  # as deployed (JSON lines, on stderr): tables own stdout
    async with servers() as (srv, db_url):
        meter = CpuMeter(srv)
        async with Procrastinate(srv, srv.root) as pq:
            for n in args.n:
                await measure_n(srv, db_url, pq, n, args, res, meter)
    report(res, args)
    if args.plot_dir:
        plot(res, args)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--n", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16],
                   help="agents (and procrastinate worker concurrency), comma-separated")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--samples", type=int, default=200, help="pickups measured per run")
    p.add_argument("--warm", type=int, default=10, help="pickups before measuring")
    p.add_argument("--jobs", type=int, default=2000, help="e2e jobs per run")
    p.add_argument("--submitters", type=int, default=16)
    p.add_argument("--services", choices=("thread", "process"), default="thread")
    p.add_argument("--profile", type=int, nargs="?", const=25, default=0, metavar="TOP",
                   help="run every openweights process under cProfile (implies "
                        "--services process) and print the TOP functions of each kind")
    p.add_argument("--logs", type=Path, default=None,
                   help="keep the agents' and services' output here (default: the temp dir)")
    p.add_argument("--quick", action="store_true",
                   help="1 run, 40 pickups, 400 e2e jobs per N: a smoke run")
    p.add_argument("--plot-dir", type=Path, default=None,
                   help="write lifecycle_pickup.png and lifecycle_throughput.png here")
    args = p.parse_args()
    if args.quick:
        args.runs, args.samples, args.warm, args.jobs = 1, 40, 5, 400
    if args.profile:
        args.services = "process"
    return args


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--pq-worker":
        pq_worker_main(sys.argv[2], int(sys.argv[3]))
    else:
        asyncio.run(main(parse_args()))
