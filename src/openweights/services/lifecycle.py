"""Decisions more than one service takes: declaring a worker lost (the scheduler, on a
missed heartbeat deadline; the provisioner, when a machine is gone) and giving its
jobs back. Fenced and optimistic, so both may race safely."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog

from openweights.adapters.nats.eventlog import EventLog
from openweights.adapters.nats.fold import LiveFold
from openweights.domain import job, worker
from openweights.domain.commands import DeclareLost, RequeueJob
from openweights.domain.job import JobState
from openweights.domain.worker import WorkerState
from openweights.errors import ConcurrencyConflict, OpenWeightsError
from openweights.events import Actor

log = structlog.get_logger("lifecycle")


async def decide_and_append(fold: LiveFold, elog: EventLog, org: str, kind: str, agg_id: str,
                            decide: Any, cmd: Any, by: Actor) -> int:
    """One optimistic decision on the fold's state: the appended sequence, or 0 if it lost
    a race or no longer applies (someone else already acted)."""
    subject = elog.subjects.aggregate(org, kind, agg_id)
    try:
        events = decide(fold.get(org, kind, agg_id), cmd, datetime.now(UTC), by)
        if not events:
            return 0
        ack = await elog.append(subject, events,
                                expected_last_subject_seq=fold.last_subject_seq(subject))
    except (ConcurrencyConflict, OpenWeightsError) as exc:
        log.info("decision.skipped", kind=kind, id=agg_id, command=type(cmd).__name__,
                 reason=str(exc))
        return 0
    return ack.seq


async def declare_lost(fold: LiveFold, elog: EventLog, w: WorkerState, open_jobs: list[JobState],
                       last_seen: datetime | None, reason: str, by: Actor) -> None:
    if not await decide_and_append(fold, elog, w.org, "worker", w.id, worker.decide,
                                   DeclareLost(last_seen=last_seen, reason=reason), by):
        return
    log.warning("worker.lost", worker=w.id, reason=reason)
    for j in open_jobs:
        run = j.open_run
        if run is not None and run.worker_id == w.id and j.org == w.org:
            cmd = RequeueJob(run_id=run.id, worker_id=w.id, run_status="failed",
                             reason=f"worker lost: {reason}")
            await decide_and_append(fold, elog, j.org, "job", j.id, job.decide, cmd, by)
