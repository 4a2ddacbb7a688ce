"""The design's bare skeleton: what a no-op job lifecycle costs on this box when it is
built from the parts openweights is built from, with none of openweights' logic.

    python bench/skeleton.py                  # N = 4, 16 agents; 3 runs of 2,000 jobs
    python bench/skeleton.py --n 16 --runs 1  # one quick figure

Issue 4 asks for >= 1,000 lifecycles/s on this machine. This bench answers how close
the architecture itself (DESIGN.md: an event log on JetStream, a scheduler and a
projector folding it, agents as processes that spawn each job's shell, Postgres read
models) can come, measured the way ``lifecycle.py`` measures ours. Per job, exactly the
messages our lifecycle needs and nothing else:

  submitter --request--> api: append ``submitted`` (JetStream, with a message id for
      dedupe, ack awaited) --> reply. 16 submitters, one connection each, as ours.
  scheduler (ordered push consumer of the log): append ``assigned`` (with the expected
      last subject sequence: the optimistic concurrency of two schedulers) --> publish
      the assignment to the agent (core NATS).
  agent (N processes): posix_spawn ``/bin/sh -c true`` in its own session, stdout piped
      and read to its end, exit seen through a pidfd --request--> api: append ``ended``
      --> reply. The agent is then idle again (the scheduler folds ``ended``).
  projector (ordered push consumer of the log): per batch, one transaction with an
      upsert of the jobs' rows and a COPY of the event rows, ``synchronous_commit``
      off. A job counts once the projector committed its end.

No validation, aggregates, tenancy, read-model lookups, live subjects, retries or
logging: what is left is nats-server, Postgres, process spawning, and the asyncio,
nats-py, msgspec and asyncpg code they need. The api, scheduler and projector share one
process (ours run them in one thread of the bench process, or as programs).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CpuMeter, mmm, per_job_cpu, pg_execute, process_tree_cpu, servers

ROOT = Path(__file__).resolve().parent.parent
SUBMITTERS = 16
WAIT_S = 60.0


class Event(msgspec.Struct, array_like=True):
    type: str
    job: str
    at: float
    worker: int = -1


enc, dec = msgspec.json.Encoder(), msgspec.json.Decoder(Event)


def keep(tasks: set[asyncio.Future[Any]], coro: Any) -> None:
    """A task per request, as a service that answers requests concurrently needs."""
    task = asyncio.ensure_future(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


# -- the services process: api, scheduler, projector --------------------------------------
async def services(url: str, db_url: str, n_agents: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="SK", subjects=["sk.ev.>"], storage=StorageType.FILE,
                                     duplicate_window=120.0, allow_direct=True))
    tasks: set[asyncio.Future[Any]] = set()

    async def append(event: Event, **headers: str) -> None:
        await js.publish(f"sk.ev.job.{event.job}", enc.encode(event),
                         headers={"Nats-Msg-Id": f"{event.job}.{event.type}", **headers})

    async def api(msg: Msg, kind: str) -> None:
        job, _, worker = msg.data.decode().partition(" ")
        await append(Event(kind, job, time.time(), int(worker or -1)))
        await msg.respond(b"ok")

    async def on_submit(msg: Msg) -> None:
        keep(tasks, api(msg, "submitted"))

    async def on_end(msg: Msg) -> None:
        keep(tasks, api(msg, "ended"))

    pending: collections.deque[tuple[str, int]] = collections.deque()
    idle = collections.deque(range(n_agents))
    assigning = False

    async def assign() -> None:
        nonlocal assigning
        assigning = True
        try:
            while pending and idle:
                (job, seq), worker = pending.popleft(), idle.popleft()
                await append(Event("assigned", job, time.time(), worker),
                             **{"Nats-Expected-Last-Subject-Sequence": str(seq)})
                await nc.publish(f"sk.agent.{worker}", job.encode())
        finally:
            assigning = False

    async def scheduler(msg: Msg) -> None:
        e = dec.decode(msg.data)
        if e.type == "submitted":
            pending.append((e.job, msg.metadata.sequence.stream))
        elif e.type == "ended":
            idle.append(e.worker)
        if pending and idle and not assigning:
            keep(tasks, assign())

    conn = await asyncpg.connect(db_url)
    await conn.execute("SET synchronous_commit TO off")
    await conn.execute("CREATE TABLE IF NOT EXISTS sk_jobs (id text PRIMARY KEY, "
                       "status text NOT NULL, updated_at double precision NOT NULL)")
    await conn.execute("CREATE TABLE IF NOT EXISTS sk_events (seq bigint PRIMARY KEY, "
                       "job text NOT NULL, type text NOT NULL, data bytea NOT NULL)")
    batch: list[tuple[int, Event, bytes]] = []
    arrived = asyncio.Event()

    async def projector_in(msg: Msg) -> None:
        batch.append((msg.metadata.sequence.stream, dec.decode(msg.data), msg.data))
        arrived.set()

    async def projector() -> None:
        ended = 0
        while True:
            await arrived.wait()
            arrived.clear()
            rows = batch.copy()
            batch.clear()
            jobs = {e.job: (e.job, e.type, e.at) for _, e, _ in rows}
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO sk_jobs VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE "
                    "SET status = excluded.status, updated_at = excluded.updated_at",
                    list(jobs.values()))
                await conn.copy_records_to_table(
                    "sk_events", records=[(s, e.job, e.type, d) for s, e, d in rows])
            ended += sum(e.type == "ended" for _, e, _ in rows)
            await nc.publish("sk.projected", str(ended).encode())

    await js.subscribe("sk.ev.>", stream="SK", ordered_consumer=True, cb=scheduler)
    await js.subscribe("sk.ev.>", stream="SK", ordered_consumer=True, cb=projector_in)
    await nc.subscribe("sk.api.submit", cb=on_submit)
    await nc.subscribe("sk.api.end", cb=on_end)
    await nc.flush()
    print("ready", flush=True)
    await projector()


# -- an agent process ---------------------------------------------------------------------
async def run_true(loop: asyncio.AbstractEventLoop) -> int:
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    try:
        # As the agent's warm shell: posix_spawn returns once the child exec'd (vfork).
        pid = os.posix_spawn(  # noqa: ASYNC221
            "/bin/sh", ["/bin/sh", "-c", "true"], os.environ, setsid=True,
            file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                          (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, out_w, 2)])
    finally:
        os.close(out_w)
    pidfd = os.pidfd_open(pid)
    eof, exited = loop.create_future(), loop.create_future()

    def on_output() -> None:
        if not os.read(out_r, 65536):
            loop.remove_reader(out_r)
            eof.set_result(None)

    def on_exit() -> None:
        loop.remove_reader(pidfd)
        exited.set_result(os.waitpid(pid, 0)[1])

    os.set_blocking(out_r, False)
    loop.add_reader(out_r, on_output)
    loop.add_reader(pidfd, on_exit)
    try:
        await eof
        return os.waitstatus_to_exitcode(await exited)
    finally:
        os.close(out_r)
        os.close(pidfd)


async def agent(url: str, worker: int) -> None:
    loop = asyncio.get_running_loop()
    nc = await nats.connect(url)
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_assignment(msg: Msg) -> None:
        queue.put_nowait(msg.data)

    await nc.subscribe(f"sk.agent.{worker}", cb=on_assignment)
    await nc.flush()
    print("ready", flush=True)
    while True:
        job = (await queue.get()).decode()
        code = await run_true(loop)
        assert code == 0, code
        await nc.request("sk.api.end", f"{job} {worker}".encode(), timeout=WAIT_S)


# -- the driver ---------------------------------------------------------------------------
def start(role: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, __file__, *role], cwd=ROOT,
                            stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    if proc.stdout.readline() != b"ready\n":
        raise RuntimeError(f"{role[0]} did not start")
    return proc


async def reset(url: str, db_url: str) -> None:
    await pg_execute(db_url, "DROP TABLE IF EXISTS sk_jobs, sk_events")
    nc = await nats.connect(url)
    with contextlib.suppress(NotFoundError):
        await nc.jetstream().delete_stream("SK")
    await nc.close()


async def measure(url: str, db_url: str, n: int, jobs: int, meter: CpuMeter,
                  run: int) -> tuple[float, dict[str, float]]:
    """One run on fresh tables and stream: lifecycles/s, and CPU µs per job by part
    (the keys of ``lifecycle.py``'s CPU table)."""
    await reset(url, db_url)
    procs = [start(["--role", "services", "--url", url, "--db", db_url, "--n", str(n)])]
    procs += [start(["--role", "agent", "--url", url, "--worker", str(w)]) for w in range(n)]
    clients: list[Client] = [await nats.connect(url) for _ in range(SUBMITTERS)]
    done = asyncio.Event()
    per = jobs // SUBMITTERS
    total = per * SUBMITTERS

    async def on_projected(msg: Msg) -> None:
        if int(msg.data) >= total:
            done.set()

    await clients[0].subscribe("sk.projected", cb=on_projected)
    await clients[0].flush()

    async def submit_many(c: int) -> None:
        for i in range(per):
            await clients[c].request("sk.api.submit", f"r{run}-{c}-{i}".encode(),
                                     timeout=WAIT_S)

    try:
        cpu0 = {p.pid: process_tree_cpu(p.pid) for p in procs}
        before = meter.snap()
        await asyncio.gather(*(submit_many(c) for c in range(SUBMITTERS)))
        await asyncio.wait_for(done.wait(), WAIT_S)
        d = meter.snap() - before
        cpu = {p.pid: process_tree_cpu(p.pid) - cpu0[p.pid] for p in procs}
    finally:
        for c in clients:
            await c.close()
        for p in procs:
            p.kill()
            p.wait()
    parts = {"services": cpu[procs[0].pid], "agents": sum(cpu[p.pid] for p in procs[1:])}
    return total / d.wall, per_job_cpu(d, parts, total)


async def main(args: argparse.Namespace) -> None:
    async with servers("skeleton") as (srv, db_url):
        meter = CpuMeter(srv)
        print(f"## Skeleton lifecycle: {args.runs} run(s) x {args.jobs} jobs, "
              f"{SUBMITTERS} submitters; cells min / **median** / max\n")
        print("| N | lifecycles/s | CPU µs per job: bench / services / agents (with their "
              "shells) / nats / postgres | box busy |")
        print("|---|---|---|---|")
        for n in args.n:
            rates, rows = [], []
            for run in range(args.runs):
                rate, row = await measure(srv.nats.url, db_url, n, args.jobs, meter, run)
                rates.append(rate)
                rows.append(row)
            lo, mid, hi = mmm(rates)
            med = {k: mmm(r[k] for r in rows)[1] for k in rows[0]}
            print(f"| {n} | {lo:.0f} / **{mid:.0f}** / {hi:.0f} | {med['bench']:.0f} / "
                  f"{med['services']:.0f} / {med['agents']:.0f} / {med['nats']:.0f} / "
                  f"{med['postgres']:.0f} | {med['busy']:.0%} |", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=lambda s: [int(x) for x in s.split(",")], default=[4, 16])
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--role", choices=("driver", "services", "agent"), default="driver")
    p.add_argument("--url")
    p.add_argument("--db")
    p.add_argument("--worker", type=int)
    a = p.parse_args()
    if a.role == "services":
        asyncio.run(services(a.url, a.db, a.n[0]))
    elif a.role == "agent":
        asyncio.run(agent(a.url, a.worker))
    else:
        asyncio.run(main(a))
