"""What an organization and its tokens have spent, from a service's fold of the log.

The api (refusing a submission over a limit) and the scheduler (canceling work over a
limit) both ask this; ``ow cost`` computes the same with :mod:`openweights.domain.cost`
from the read models' rows. Limits are lifetime limits, so spend is counted from the
beginning (no ``since``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from openweights.domain import cost
from openweights.domain.aggregates import JOB, ORG, TOKEN, WORKER
from openweights.domain.job import JobState
from openweights.domain.worker import WorkerState
from openweights.fold import Fold


def machine_of(w: WorkerState) -> cost.Machine:
    return cost.Machine(org=w.org, worker_id=w.id, price_per_hour=w.price_per_hour,
                        started_at=w.machine_started_at, ended_at=w.machine_ended_at)


def spans_of(j: JobState) -> Iterable[cost.RunSpan]:
    for r in j.runs:
        yield cost.RunSpan(org=j.org, job_id=j.id, run_id=r.id, worker_id=r.worker_id,
                           created_at=r.created_at, ended_at=r.ended_at,
                           submitted_by=j.submitted_by)


@dataclass
class Spending:
    """An organization's spend and its tokens', in USD, at ``now``."""

    org: str
    now: datetime
    org_spent: float = 0.0
    by_token: dict[str, float] = field(default_factory=dict)


def limited_orgs(fold: Fold) -> dict[str, tuple[float | None, dict[str, float]]]:
    """Organizations with any spending limit: ``{org: (its limit, {token: limit})}``."""
    out: dict[str, tuple[float | None, dict[str, float]]] = {}
    for o in fold.of_kind(ORG):
        if o.spending_limit is not None:
            out[o.id] = (o.spending_limit, {})
    for t in fold.of_kind(TOKEN):
        if t.spending_limit is not None:
            limit = fold.get(t.org, ORG, t.org)
            entry = out.setdefault(t.org, (limit.spending_limit if limit else None, {}))
            entry[1][t.id] = t.spending_limit
    return out


def spending(fold: Fold, org: str, now: datetime) -> Spending:
    """What ``org`` and each of its tokens spent up to ``now``."""
    out = Spending(org=org, now=now)
    machines = {w.id: machine_of(w) for w in fold.of_kind(WORKER) if w.org == org}
    out.org_spent = sum(cost.machine_cost(m, now) for m in machines.values())
    for j in fold.of_kind(JOB):
        if j.org != org or j.submitted_by is None:
            continue
        spent = sum(cost.run_cost(s, machines.get(s.worker_id), now) for s in spans_of(j))
        out.by_token[j.submitted_by] = out.by_token.get(j.submitted_by, 0.0) + spent
    return out


def check_submission(fold: Fold, org: str, token_id: str | None, now: datetime) -> None:
    """Raise :class:`~openweights.errors.SpendingLimitReached` when ``org`` or the token
    reached its limit. Costs nothing when neither has one."""
    org_state = fold.get(org, ORG, org)
    org_limit = org_state.spending_limit if org_state is not None else None
    tok = fold.get(org, TOKEN, token_id) if token_id else None
    token_limit = tok.spending_limit if tok is not None else None
    if org_limit is None and token_limit is None:
        return
    s = spending(fold, org, now)
    cost.check_spending(f"organization {org}", s.org_spent, org_limit)
    if token_id is not None:
        cost.check_spending(f"token {token_id}", s.by_token.get(token_id, 0.0), token_limit)
