"""The chaos soak: many short jobs while agents, services and servers are killed.

Used by ``bench/chaos.py`` (1,000 jobs, 16 agents) and by the short version in the
test suite. Every check is made against the real stack afterwards; the report is a
table of (check, expected, observed, ok). With an agent killed every few seconds, a
longer job can be on the killed agent three times in a row: the job aggregate then fails
it for losing its machine ``MAX_LOST_RUNS`` times (domain/job.py), which is an outcome
the soak expects of a few jobs (at most one in ten), checked by that reason.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio
import asyncpg

from openweights.config import Settings
from openweights.domain.job import MAX_LOST_RUNS
from openweights.errors import OpenWeightsError
from openweights.events import JobFailed, decode
from openweights.replay import verify
from openweights.sdk.client import AsyncOpenWeights
from openweights.services.testing.processes import ProcessStack
from openweights.subjects import Subjects

KINDS = ("success", "success", "metrics", "fail", "cancel")
EXPECTED = {"success": "completed", "metrics": "completed", "fail": "failed",
            "cancel": "canceled"}


@dataclass
class ChaosPlan:
    jobs: int = 1000
    agents: int = 16
    agent_kill_every_s: float = 2.0
    service_kills: int = 2  # each of scheduler, projector, api
    restart_nats: bool = True
    restart_postgres: bool = True
    cancel_after_s: tuple[float, float] = (5.0, 20.0)
    metrics_per_job: int = 100
    seed: int = 1
    deadline_s: float = 1800.0


@dataclass
class ChaosReport:
    rows: list[tuple[str, str, str, bool]] = field(default_factory=list)
    seconds: float = 0.0
    kills: Counter[str] = field(default_factory=Counter)

    def check(self, name: str, expected: Any, observed: Any, ok: bool | None = None) -> None:
        self.rows.append((name, str(expected), str(observed),
                          (expected == observed) if ok is None else ok))

    @property
    def ok(self) -> bool:
        return all(r[3] for r in self.rows)

    def table(self) -> str:
        width = max(len(r[0]) for r in self.rows)
        lines = [f"{'check':<{width}}  expected  observed  ok"]
        lines += [f"{n:<{width}}  {e:>8}  {o:>8}  {'yes' if k else 'NO'}"
                  for n, e, o, k in self.rows]
        kills = ", ".join(f"{k} {v}" for k, v in sorted(self.kills.items()))
        lines.append(f"kills: {kills}; {self.seconds:.0f} s")
        return "\n".join(lines)


def _what(exc: BaseException) -> str:
    """An error as the report counts it: its class and what it said."""
    return f"{type(exc).__name__}: {exc}"[:300]


def script_for(kind: str, metrics: int) -> str:
    if kind == "success":
        return "true"
    if kind == "fail":
        return "exit 3"
    if kind == "cancel":
        return "sleep 600"
    return ("python -c 'from openweights import OpenWeights\n"
            f"ow = OpenWeights()\n[ow.run.log({{\"i\": i}}) for i in range({metrics})]'")


async def run_chaos(home: Path, plan: ChaosPlan) -> ChaosReport:
    stack = ProcessStack(
        home, max_workers=plan.agents, heartbeat_s=1.0, worker_lost_s=8.0,
        worker_lost_starting_s=60.0, run_start_timeout_s=20.0, scheduler_check_s=1.0,
        provisioner_check_s=0.5, cancel_grace_s=2.0, idle_shutdown_s=3600.0)
    await anyio.to_thread.run_sync(stack.start)
    stack.supervise()
    report = ChaosReport()
    started = time.monotonic()
    try:
        await soak_under(stack, plan, report)
    finally:
        report.seconds = time.monotonic() - started
        await anyio.to_thread.run_sync(stack.stop)
    return report


class Soaked(Protocol):
    """What the soak needs of a stack: the services' settings (its checks read the log and
    the read models with them)."""

    settings: Settings


# (stack, plan, rng, report, scope, done): cause the outages, set done after the last.
Outages = Callable[..., Coroutine[Any, Any, None]]


async def soak_under(stack: Soaked, plan: ChaosPlan, report: ChaosReport, *,
                aow: AsyncOpenWeights | None = None, ops: AsyncOpenWeights | None = None,
                outages: Outages | None = None) -> None:
    """Run the plan's jobs while ``outages`` (default: the chaos schedule below) happen.

    ``aow`` submits and waits (default: a client without a token), ``ops`` reads the log
    for the checks (default: ``aow``; with auth on, a client with the services' NATS user,
    since tokens have no JetStream rights)."""
    settings = stack.settings
    rng = random.Random(plan.seed)
    aow = aow or AsyncOpenWeights(settings=settings, retry_for_s=300)
    errors: Counter[str] = Counter()
    acks: list[tuple[str, int]] = []
    kinds = {i: KINDS[i % len(KINDS)] for i in range(plan.jobs)}
    ids: dict[int, str] = {}
    outcome: dict[int, Any] = {}

    async def submit(i: int) -> None:
        try:
            job = await aow.jobs.submit(
                id_prefix="chaos", script=script_for(kinds[i], plan.metrics_per_job),
                docker_image="chaos", params={"i": i, "kind": kinds[i]}, requires_vram_gb=0)
        except OpenWeightsError as exc:
            errors[_what(exc)] += 1
            return
        if aow.transport.last_reply_seq:
            acks.append((job.id, aow.transport.last_reply_seq))
        ids[i] = job.id
        if kinds[i] == "cancel":
            await _cancel_later(aow, job.id, rng.uniform(*plan.cancel_after_s), acks, errors)
        try:
            outcome[i] = await aow.jobs.wait(job.id, plan.deadline_s)
        except (OpenWeightsError, TimeoutError) as exc:
            errors[_what(exc)] += 1

    async with anyio.create_task_group() as tg:
        chaos, steps_done = anyio.CancelScope(), anyio.Event()
        cause: Outages = outages or _chaos
        tg.start_soon(cause, stack, plan, rng, report, chaos, steps_done)
        async with anyio.create_task_group() as jobs:
            limiter = anyio.Semaphore(64)

            async def one(i: int) -> None:
                async with limiter:
                    await submit(i)

            for i in range(plan.jobs):
                jobs.start_soon(one, i)
        await steps_done.wait()  # every planned outage happened, and was recovered from
        chaos.cancel()
    await _checks(stack, plan, report, ops or aow, kinds, ids, outcome, acks, errors)
    await aow.close()


async def _cancel_later(aow: AsyncOpenWeights, job_id: str, after: float,
                        acks: list[tuple[str, int]], errors: Counter[str]) -> None:
    """Cancel once the job has run ``after`` seconds (whatever happened to it meanwhile)."""
    t, nc = aow.transport, await aow.transport.connect()
    started = anyio.Event()

    async def on_msg(msg: Any) -> None:
        if b"run.started" in msg.data:
            started.set()

    sub = await nc.subscribe(t.subjects.live(t.org, "job", job_id), cb=on_msg)
    try:
        with anyio.move_on_after(120):
            await started.wait()
        await anyio.sleep(after)  # the job's intended run time before its cancel
        try:
            await aow.jobs.cancel(job_id)
            acks.append((job_id, t.last_reply_seq))
        except OpenWeightsError as exc:
            errors[_what(exc)] += 1
    finally:
        await sub.unsubscribe()


async def _chaos(stack: ProcessStack, plan: ChaosPlan, rng: random.Random,
                 report: ChaosReport, scope: anyio.CancelScope, done: anyio.Event) -> None:
    """Kill an agent every few seconds; services, nats and Postgres at planned moments."""
    services = [s for s in ("scheduler", "projector", "api") for _ in range(plan.service_kills)]
    rng.shuffle(services)
    steps: list[str] = services + (["nats"] if plan.restart_nats else []) + (
        ["postgres"] if plan.restart_postgres else [])
    rng.shuffle(steps)
    with scope:
        tick = 0
        while True:
            await anyio.sleep(plan.agent_kill_every_s)  # the chaos schedule itself
            tick += 1
            if _kill_an_agent(stack, rng):
                report.kills["agent"] += 1
            if not steps:
                done.set()
            elif tick % 2 == 0:
                step = steps.pop()
                report.kills[step] += 1
                if step == "nats":
                    await anyio.to_thread.run_sync(stack.stop_nats)
                    await anyio.sleep(2.0)  # the outage
                    await anyio.to_thread.run_sync(stack.start_nats)
                elif step == "postgres":
                    await anyio.to_thread.run_sync(stack.stop_postgres)
                    await anyio.sleep(2.0)
                    await anyio.to_thread.run_sync(stack.start_postgres)
                else:
                    stack.kill(step)  # the supervisor restarts it


def _kill_an_agent(stack: ProcessStack, rng: random.Random) -> bool:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            env = (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"openweights.services.agent" in cmd and str(stack.home).encode() in env:
            pids.append(int(proc.name))
    if not pids:
        return False
    try:
        os.kill(rng.choice(pids), signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


async def _checks(stack: Soaked, plan: ChaosPlan, report: ChaosReport,
                  aow: AsyncOpenWeights, kinds: dict[int, str], ids: dict[int, str],
                  outcome: dict[int, Any], acks: list[tuple[str, int]],
                  errors: Counter[str]) -> None:
    settings = stack.settings
    wrong = [i for i, k in kinds.items() if i not in outcome
             or outcome[i].status != EXPECTED[k]]
    lost = await _failed_losing_machines(aow, [ids[i] for i in wrong if i in ids])
    wrong = [i for i in wrong if ids.get(i) not in lost]
    report.check("jobs submitted", plan.jobs, len(ids))
    report.check("jobs in the expected terminal state", plan.jobs - len(lost),
                 plan.jobs - len(lost) - len(wrong))
    report.check(f"jobs failed losing {MAX_LOST_RUNS} machines in a row",
                 f"<={plan.jobs // 10}", len(lost), ok=len(lost) <= plan.jobs // 10)
    metric_jobs = [i for i, k in kinds.items()
                   if k == "metrics" and i in outcome and ids.get(i) not in lost]
    full = sum(1 for i in metric_jobs
               if outcome[i].outputs.get("i") == plan.metrics_per_job - 1)
    report.check("metric jobs with every event", len(metric_jobs), full)
    conn = await asyncpg.connect(settings.database_url)
    try:
        twice = await conn.fetchval("SELECT count(*) FROM (SELECT job_id FROM runs WHERE "
                                    "status = 'completed' GROUP BY job_id HAVING count(*) > 1) t")
        report.check("jobs with more than one completed run", 0, twice)
        # The last agent killed may not be noticed yet: give the provisioner its deadline.
        dead: list[str] = []
        with anyio.move_on_after(settings.worker_lost_s + 10):
            while True:
                live = await conn.fetch("SELECT id, pod_id FROM workers WHERE status IN "
                                        "('active', 'starting') AND pod_id LIKE 'local-%'")
                dead = [w["id"] for w in live
                        if not _alive(int(w["pod_id"].removeprefix("local-")))]
                if not dead:
                    break
                await anyio.sleep(0.5)  # polling the read model: no event says "settled"
    finally:
        await conn.close()
    report.check("active/starting workers without a live process", 0, len(dead))
    nc = await aow.transport.connect()
    js = nc.jetstream()
    stream, missing = Subjects(settings.namespace).events_stream, 0
    for job_id, seq in acks:
        msg = await js.get_msg(stream, seq)
        if not msg.subject or not msg.subject.endswith(f".job.{job_id}"):
            missing += 1
    report.check("acknowledged appends missing from the stream", 0, missing)
    _, diffs = await verify(settings)
    report.check("ow replay --verify differences", 0, len(diffs))
    report.check("SDK errors raised to the caller", 0, sum(errors.values()),
                 ok=not errors)
    if errors:
        for what, count in errors.most_common():
            report.rows.append((f"  {what}", "", str(count), False))


async def _failed_losing_machines(aow: AsyncOpenWeights, job_ids: list[str]) -> set[str]:
    """The jobs among ``job_ids`` whose last event fails them for their lost machines."""
    t = aow.transport
    js = (await t.connect()).jetstream()
    reason = f"lost their machine {MAX_LOST_RUNS} times in a row"
    out: set[str] = set()
    for job_id in job_ids:
        msg = await js.get_last_msg(t.subjects.events_stream, t.subjects.job(t.org, job_id))
        events = decode(msg.data or b"")
        if any(isinstance(e, JobFailed) and reason in e.error for e in events):
            out.add(job_id)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
