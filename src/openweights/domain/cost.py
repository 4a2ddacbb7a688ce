"""What machines cost, who spent it, and when a spending limit stops work.

The one definition of cost, used by ``ow cost`` (over the read models' rows), by the
api (refusing a submission) and by the scheduler (canceling work over its limit):

- a machine costs its price per hour (recorded by ``worker.machine_started/2``) times
  its lifetime, from its start to ``worker.terminated`` (or ``now`` while it lives);
  a worker that joined by hand (``ow worker``) has no start event and costs nothing;
- a run costs its share of its machine's time: its span (assigned .. ended, or ``now``)
  within the machine's lifetime, at the machine's price;
- a job costs the sum of its runs; a token spends what its jobs cost; an organization
  spends what its machines cost (idle time included: it paid for it).

``since`` cuts every span to the part after it. ``now`` is always an argument.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from openweights.errors import SpendingLimitReached


class Machine(msgspec.Struct, frozen=True):
    """What cost needs of a worker: its price and its machine's lifetime."""

    org: str
    worker_id: str
    price_per_hour: float
    started_at: datetime | None  # None: never started by a backend (costs nothing)
    ended_at: datetime | None = None


class RunSpan(msgspec.Struct, frozen=True):
    """What cost needs of a run: its worker, its span and whose job it was."""

    org: str
    job_id: str
    run_id: str
    worker_id: str
    created_at: datetime
    ended_at: datetime | None = None
    submitted_by: str | None = None


def _hours(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds()) / 3600.0


def machine_cost(m: Machine, now: datetime, since: datetime | None = None) -> float:
    if m.started_at is None or m.price_per_hour <= 0:
        return 0.0
    start = m.started_at if since is None else max(m.started_at, since)
    return m.price_per_hour * _hours(start, min(m.ended_at or now, now))


def run_cost(r: RunSpan, m: Machine | None, now: datetime,
             since: datetime | None = None) -> float:
    """The run's share of its machine: the overlap of the two spans, at its price."""
    if m is None or m.started_at is None or m.price_per_hour <= 0:
        return 0.0
    start = max(r.created_at, m.started_at, since or m.started_at)
    end = min(r.ended_at or now, m.ended_at or now, now)
    return m.price_per_hour * _hours(start, end)


def key_of(by: str, r: RunSpan) -> str:
    """The group a run's cost is counted under in a report ``by`` job, worker or token."""
    if by == "job":
        return r.job_id
    if by == "worker":
        return r.worker_id
    if by == "token":
        return r.submitted_by or "(none)"
    return r.org


def report(by: str, machines: Iterable[Machine], runs: Iterable[RunSpan], now: datetime,
           since: datetime | None = None) -> dict[str, float]:
    """USD per group. ``by`` worker or org counts machines' whole lifetimes (idle time
    too); ``by`` job or token counts runs' shares."""
    out: dict[str, float] = {}
    if by in ("worker", "org"):
        for m in machines:
            key = m.worker_id if by == "worker" else m.org
            out[key] = out.get(key, 0.0) + machine_cost(m, now, since)
        return {k: v for k, v in out.items() if v > 0 or by == "org"}
    index = {(m.org, m.worker_id): m for m in machines}
    for r in runs:
        key = key_of(by, r)
        out[key] = out.get(key, 0.0) + run_cost(r, index.get((r.org, r.worker_id)), now, since)
    return out


def over_limit(spent: float, limit: float | None) -> bool:
    """Spending reached the limit: new work is refused and running work canceled."""
    return limit is not None and spent >= limit


def check_spending(who: str, spent: float, limit: float | None) -> None:
    """Raise :class:`SpendingLimitReached` (saying spend and limit) when ``who`` (an
    organization or a token) reached its limit."""
    if over_limit(spent, limit):
        assert limit is not None
        raise SpendingLimitReached(
            f"{who} reached its spending limit: spent ${spent:.2f} of ${limit:.2f}; nothing "
            "new is accepted until an admin raises it (`ow cost limit set`)")


def limit_reason(who: str, spent: float, limit: float) -> str:
    """Why its work was canceled, in the job's ``job.canceled`` event."""
    return f"spending limit reached: {who} spent ${spent:.2f} of its ${limit:.2f} limit"
