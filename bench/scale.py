"""Scheduler at scale: 10,000 pending jobs, 200 simulated workers.

    python bench/scale.py [--jobs 10000] [--workers 200] [--orgs 1,100]

Simulated workers complete each assignment at once (their start and completion are
appended through the domain, like an agent's), so the queue drains from 10,000 to 0.
Prints, per 1,000 jobs of queue length, the scheduler's decision time per assignment
(time in its assignment passes / assignments) and its resident memory: both should stay
flat as the queue grows. With several ``--orgs`` counts the same jobs and workers are
spread over that many organizations (job i and worker w in org i % N, w % N), one run
each, and the decision time of each is compared with the first's: flat in organizations.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import nats

sys.path.insert(0, str(Path(__file__).parent))
from _common import servers

from openweights.adapters.nats.eventlog import JetStreamEventLog
from openweights.adapters.nats.streams import ensure_streams
from openweights.api.protocol import Assignment
from openweights.clock import utc_now
from openweights.config import Settings
from openweights.domain import job, worker
from openweights.domain.aggregates import JOB
from openweights.domain.commands import CompleteRun, RegisterWorker, StartRun, SubmitJob
from openweights.events import Actor, JobSpec, encode
from openweights.logs import configure_logging
from openweights.services.scheduler.bootstrap import compose
from openweights.services.scheduler.scheduler import Scheduler
from openweights.subjects import Subjects


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class TimedScheduler(Scheduler):
    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.samples: list[tuple[int, float, int]] = []  # (queue length, seconds, assigned)
        self.rss: dict[int, float] = {}  # queue length // 1000 -> MB at its first pass

    async def assign_pass(self) -> int:
        queue = len(self._pending)
        started = time.perf_counter()
        n = await super().assign_pass()
        if n:
            self.samples.append((queue, time.perf_counter() - started, n))
            if queue // 1000 not in self.rss:  # after the timing: not part of the decision
                self.rss[queue // 1000] = rss_mb()
        return n


async def run(jobs: int, workers: int, orgs: int = 1, plot_dir: Path | None = None) -> float:
    """One drain; returns the scheduler's mean µs per assignment."""
    async with servers("scale") as (srv, database_url):
        settings = Settings(nats_url=srv.nats.url, database_url=database_url,
                            namespace=f"s{uuid.uuid4().hex[:8]}", scheduler_check_s=3600)
        s = Subjects(settings.namespace)
        nc = await nats.connect(srv.nats.url)
        js = nc.jetstream()
        await ensure_streams(js, settings, s)
        now = datetime.now(UTC)
        names = ["default"] if orgs == 1 else [f"org{k:03d}" for k in range(orgs)]
        for i in range(jobs):  # the backlog, pipelined
            org = names[i % orgs]
            cmd = SubmitJob(job_id=f"scale-{i:06d}", org=org, spec=JobSpec(
                type="custom", model=None, params={"i": i}, script="true", docker_image="img",
                requires_vram_gb=i % 3 * 8, allowed_hardware=None))
            await js.publish_async(s.job(org, cmd.job_id), encode(
                job.decide(None, cmd, now, Actor("client"))))
        await js.publish_async_completed()
        log = JetStreamEventLog(nc, js, s)
        states: dict[str, job.JobState] = {}
        done = asyncio.Event()
        completed = [0]

        async def on_assignment(msg: nats.aio.msg.Msg) -> None:
            a = msgspec.json.decode(msg.data, type=Assignment)
            org = msg.subject.split(".")[-2]  # <ns>agent.<org>.<worker id>
            by = Actor("agent", a.worker_id)
            st = states.get(a.job_id)
            # The simulated agent starts and completes at once (fenced like the real one).
            for c in (StartRun(run_id=a.run_id, worker_id=a.worker_id),
                      CompleteRun(run_id=a.run_id, worker_id=a.worker_id)):
                st = sched.fold.get(org, JOB, a.job_id) if st is None else st
                events = job.decide(st, c, datetime.now(UTC), by)
                st = JOB.fold(events, st)
                await log.append(s.job(org, a.job_id), events, expected_last_subject_seq=None)
            completed[0] += 1
            if completed[0] == jobs:
                done.set()

        await nc.subscribe(f"{s.ns}agent.>", cb=on_assignment)
        sched = await compose(settings, contextlib.AsyncExitStack(), nc, js, utc_now,
                              cls=TimedScheduler)
        rss_before = rss_mb()
        task = asyncio.create_task(sched.run())
        for w in range(workers):
            org = names[w % orgs]
            cmd = RegisterWorker(worker_id=f"w{w:03d}", org=org, docker_image="img",
                                 hardware_type="1x H100S", gpu_type="H100S", gpu_count=1,
                                 vram_gb=80, managed=False)
            await log.append(s.worker(org, cmd.worker_id),
                             worker.decide(None, cmd, datetime.now(UTC), Actor("agent")),
                             expected_last_subject_seq=0)
        started = time.perf_counter()
        await asyncio.wait_for(done.wait(), timeout=1800)
        took = time.perf_counter() - started
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        buckets: dict[int, list[tuple[float, int]]] = defaultdict(list)
        for queue, secs, n in sched.samples:
            buckets[queue // 1000].append((secs, n))
        print(f"{jobs:,} jobs on {workers} simulated workers in {orgs} organization(s) "
              f"drained in {took:.1f} s "
              f"({jobs / took:,.0f} assignments/s end to end)")
        print(f"{'queue length':>14}{'passes':>8}{'assignments':>13}{'µs/assignment':>15}")
        for b in sorted(buckets, reverse=True):
            secs = sum(x for x, _ in buckets[b])
            n = sum(y for _, y in buckets[b])
            print(f"{b * 1000:>8,}-{b * 1000 + 999:<5,}{len(buckets[b]):>8}{n:>13}"
                  f"{secs / n * 1e6:>15,.0f}")
        print(f"scheduler process RSS: {rss_before:,.0f} MB before, {rss_mb():,.0f} MB "
              f"after folding {jobs:,} jobs")
        if plot_dir:
            plot(plot_dir, jobs, workers, sched.samples, sched.rss)
        await nc.close()
        return sum(t for _, t, _ in sched.samples) * 1e6 / max(1, sum(
            n for _, _, n in sched.samples))


def plot(plot_dir: Path, jobs: int, workers: int, samples: list[tuple[int, float, int]],
         rss: dict[int, float]) -> None:
    from plots import curve

    by: dict[int, list[tuple[int, float, int]]] = defaultdict(list)
    for sample in samples:
        by[sample[0] // 1000].append(sample)
    bs = sorted(by)
    curve(plot_dir / "scale_curve.png",
          f"Scheduler as {jobs:,} pending jobs drain on {workers} simulated workers",
          [sum(q for q, _, _ in by[b]) / len(by[b]) for b in bs],
          {"decision time (µs/assignment)": [sum(t for _, t, _ in by[b]) * 1e6
                                             / sum(n for _, _, n in by[b]) for b in bs],
           "process RSS (MB)": [rss[b] for b in bs]},
          "queue length (pending jobs; mean of each 1,000-job bucket's passes)")


def main() -> int:
    configure_logging(json=True, level=logging.WARNING)  # the services' logs: stderr only
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=200)
    ap.add_argument("--plot-dir", type=Path, default=None,
                    help="write scale_curve.png (µs/assignment and RSS vs queue length) here")
    ap.add_argument("--orgs", default="1", help="organization counts, comma-separated "
                    "(e.g. 1,100: one run each, compared)")
    args = ap.parse_args()
    counts = [int(n) for n in args.orgs.split(",")]
    means = {}
    for n in counts:
        means[n] = asyncio.run(run(args.jobs, args.workers, n,
                                   args.plot_dir if n == counts[0] else None))
    for n in counts[1:]:
        print(f"µs/assignment with {n} organizations ÷ with {counts[0]}: "
              f"{means[n]:,.0f} / {means[counts[0]]:,.0f} = {means[n] / means[counts[0]]:.2f}"
              " (goal: flat, about 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
