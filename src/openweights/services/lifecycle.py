"""Decisions more than one service takes: declaring a worker lost (the scheduler, on a
missed heartbeat deadline; the provisioner, when a machine is gone) and giving its
jobs back. Fenced and optimistic, so both may race safely: the one that loses finds the
worker or the run already ended, and says so. A job whose runs lost their machine too
often in a row is failed rather than given back (the job aggregate decides)."""

from __future__ import annotations

from datetime import datetime

import structlog

from openweights.domain.aggregates import JOB, WORKER
from openweights.domain.commands import DeclareLost, RequeueJob
from openweights.domain.job import JobState
from openweights.domain.worker import WorkerState
from openweights.errors import Conflict
from openweights.events import Actor, JobFailed
from openweights.execute import Executor

log = structlog.get_logger("lifecycle")


async def declare_lost(executor: Executor, w: WorkerState, open_jobs: list[JobState],
                       last_seen: datetime | None, reason: str, by: Actor) -> bool:
    """Declare ``w`` lost and requeue the runs it held; False if someone else already
    ended it (nothing is requeued then: they did)."""
    try:
        done = await executor.execute(w.org, WORKER, w.id,
                                      DeclareLost(last_seen=last_seen, reason=reason), by)
    except Conflict as exc:
        log.info("worker.lost_already", worker=w.id, reason=str(exc))
        return False
    if not done.events:
        return False
    log.warning("worker.lost", worker=w.id, reason=reason)
    for j in open_jobs:
        run = j.open_run
        if run is not None and run.worker_id == w.id and j.org == w.org:
            cmd = RequeueJob(run_id=run.id, worker_id=w.id, run_status="failed",
                             reason=f"worker lost: {reason}")
            try:
                given_back = await executor.execute(j.org, JOB, j.id, cmd, by)
            except Conflict as exc:  # the run ended meanwhile
                log.info("job.requeue_skipped", job=j.id, run=run.id, reason=str(exc))
                continue
            if any(isinstance(e, JobFailed) for e in given_back.events):  # MAX_LOST_RUNS
                log.warning("job.failed_machines_lost", job=j.id, run=run.id, worker=w.id)
    return True
