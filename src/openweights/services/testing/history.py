"""Realistic event histories made with the real domain (``decide``), for tests and benches.

Every decision is one stored message: ``(subject, events)``. Histories are legal by
construction, because each event comes out of ``decide`` on the folded state.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from openweights.domain import job, worker
from openweights.domain.aggregates import JOB
from openweights.domain.commands import (
    AssignJob,
    CancelJob,
    CompleteRun,
    FailRun,
    RegisterWorker,
    StartRun,
    SubmitJob,
)
from openweights.events import Actor, Event, JobSpec, RunEventLogged
from openweights.subjects import Subjects

Decision = tuple[str, list[Event]]


class HistoryMaker:
    """Makes decisions for many jobs on a few workers, with a clock that moves forward."""

    def __init__(self, subjects: Subjects, org: str = "default", seed: int = 0,
                 workers: int = 4, start: datetime | None = None) -> None:
        self.s, self.org, self.rng = subjects, org, random.Random(seed)
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self.jobs: dict[str, job.JobState] = {}
        self.workers = [f"w{i}" for i in range(workers)]
        self._n = 0

    def tick(self) -> datetime:
        self.now += timedelta(milliseconds=self.rng.randint(1, 50))
        return self.now

    def register_workers(self) -> Iterator[Decision]:
        for wid in self.workers:
            cmd = RegisterWorker(worker_id=wid, org=self.org, docker_image="img",
                                 hardware_type="1x H100S", gpu_type="H100S", gpu_count=1,
                                 vram_gb=80, managed=False)
            yield self.s.worker(self.org, wid), worker.decide(
                None, cmd, self.tick(), Actor("agent", wid))

    def _job(self, job_id: str, cmd: object, by: Actor) -> Decision:
        events = job.decide(self.jobs.get(job_id), cmd, self.tick(), by)  # type: ignore[arg-type]
        self.jobs[job_id] = JOB.fold(events, self.jobs.get(job_id))  # type: ignore[assignment]
        return self.s.job(self.org, job_id), events

    def submit(self) -> tuple[str, Decision]:
        self._n += 1
        job_id = f"customjob-{self._n:012x}"
        spec = JobSpec(type="custom", model="org/model-1b", params={"a": self._n, "lr": 1e-4},
                       script="python train.py", docker_image="img",
                       requires_vram_gb=self.rng.choice([0, 24, None]), allowed_hardware=None)
        cmd = SubmitJob(job_id=job_id, org=self.org, spec=spec)
        return job_id, self._job(job_id, cmd, Actor("client", "token-1"))

    def lifecycle(self, job_id: str, metrics: int, per_message: int = 10,
                  outcome: str = "completed") -> Iterator[Decision]:
        """Assign, start, log ``metrics`` run events, then end the run."""
        wid = self.rng.choice(self.workers)
        run_id = f"run-{job_id[-12:]}-{len(self.jobs[job_id].runs) + 1}"
        agent = Actor("agent", wid)
        yield self._job(job_id, AssignJob(worker_id=wid, run_id=run_id), Actor("scheduler"))
        yield self._job(job_id, StartRun(run_id=run_id, worker_id=wid), agent)
        for first in range(0, metrics, per_message):
            yield self.s.run(self.org, job_id), [
                RunEventLogged(at=self.tick(), by=agent, job_id=job_id, run_id=run_id,
                               data={"step": i, "loss": round(1 / (i + 1), 4)})
                for i in range(first, min(metrics, first + per_message))]
        if outcome == "completed":
            yield self._job(job_id, CompleteRun(run_id=run_id, worker_id=wid), agent)
        elif outcome == "failed":
            yield self._job(job_id, FailRun(run_id=run_id, worker_id=wid, error="exit 1",
                                            exit_code=1), agent)
        else:
            yield self._job(job_id, CancelJob(), Actor("client", "token-1"))

    def mixed(self, jobs: int, metrics: int = 20, per_message: int = 10) -> Iterator[Decision]:
        yield from self.register_workers()
        for _ in range(jobs):
            job_id, decision = self.submit()
            yield decision
            outcome = self.rng.choice(["completed"] * 6 + ["failed", "canceled", "pending"])
            if outcome != "pending":
                yield from self.lifecycle(job_id, metrics, per_message, outcome)
