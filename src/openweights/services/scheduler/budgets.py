"""Spending limits on running work: an organization or token whose accrued spend
reached its limit has its pending and running jobs canceled, each ``job.canceled``
saying whose limit, what was spent and what the limit is.

Run by the scheduler on its deadline check (it folds jobs, workers, organizations and
tokens already); the api refuses new submissions with the same numbers
(:func:`openweights.spending.check_submission`).
"""

from __future__ import annotations

from datetime import datetime

import structlog

from openweights.domain import cost
from openweights.domain.aggregates import JOB
from openweights.domain.commands import CancelJob
from openweights.domain.job import JobState
from openweights.errors import Conflict
from openweights.events import Actor
from openweights.execute import Executor
from openweights.fold import Fold
from openweights.spending import limited_orgs, spending

log = structlog.get_logger("scheduler")


def over_limit_jobs(fold: Fold, now: datetime) -> list[tuple[JobState, str]]:
    """Every pending or running job whose organization or submitting token reached its
    limit, with the reason its cancel records."""
    out: list[tuple[JobState, str]] = []
    limited = limited_orgs(fold)
    if not limited:
        return out
    live = [j for j in fold.of_kind(JOB) if j.org in limited
            and j.status in ("pending", "in_progress")]
    for org, (org_limit, token_limits) in limited.items():
        s = spending(fold, org, now)
        org_over = cost.over_limit(s.org_spent, org_limit)
        for j in live:
            if j.org != org:
                continue
            if org_over:
                assert org_limit is not None
                out.append((j, cost.limit_reason(f"organization {org}", s.org_spent,
                                                 org_limit)))
                continue
            limit = token_limits.get(j.submitted_by or "")
            spent = s.by_token.get(j.submitted_by or "", 0.0)
            if limit is not None and cost.over_limit(spent, limit):
                out.append((j, cost.limit_reason(f"token {j.submitted_by}", spent, limit)))
    return out


async def enforce_limits(fold: Fold, executor: Executor, now: datetime, by: Actor) -> int:
    """Cancel the work over its limits; how many jobs were canceled."""
    canceled = 0
    for j, reason in over_limit_jobs(fold, now):
        try:
            done = await executor.execute(j.org, JOB, j.id, CancelJob(reason=reason), by)
        except Conflict as exc:  # it ended or was canceled meanwhile
            log.info("scheduler.limit_cancel_skipped", job=j.id, reason=str(exc))
            continue
        if done.events:
            canceled += 1
            log.info("scheduler.canceled_over_limit", org=j.org, job=j.id, reason=reason)
    return canceled
