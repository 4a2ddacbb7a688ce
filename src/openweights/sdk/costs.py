"""``aow.costs`` / ``ow.costs``: what your organization's work cost, and its spending
limits (what `ow cost` shows and `ow cost limit set` changes).

A machine costs its price per hour (recorded when it started) times its lifetime; a
run, its share of its machine's time; a job, the sum of its runs. Every method may
raise ``StackUnavailable`` / ``Unavailable`` when the service cannot be reached.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, TypedDict

from openweights.sdk.loop import LoopThread, twin
from openweights.sdk.transport import Transport

By = Literal["job", "worker", "token", "org"]


class CostRow(TypedDict):
    key: str  # the job, worker, token id or organization
    usd: float


class CostReport(TypedDict):
    by: By
    since: str | None
    at: str  # the time the costs were computed at (running work costs until now)
    total_usd: float
    rows: list[CostRow]  # largest first
    truncated: bool  # more groups than ``limit``
    org_limit_usd: float | None
    token_limit_usd: float | None  # the calling token's


class SpendingLimit(TypedDict):
    organization: str
    token_id: str | None  # None: the organization's limit
    limit_usd: float | None  # None: no limit


class AsyncCosts:
    def __init__(self, transport: Transport) -> None:
        self._t = transport

    async def report(self, by: By = "job", since: datetime | None = None,
                     job_id: str | None = None, limit: int = 1000) -> CostReport:
        """USD per job, worker, token or org (``by``), counted from ``since`` (a
        time-zone aware datetime) when given. ``by`` worker or org counts machines'
        whole lifetimes, idle time included; ``by`` job or token the runs' shares.
        Raises ``InvalidRequest`` for a bad ``by``, ``since`` or ``limit``."""
        result: CostReport = await self._t.call(
            "costs.report", read=True, by=by, since=since, job_id=job_id, limit=limit)
        return result

    async def job(self, job_id: str) -> float:
        """What one job cost so far (USD): the sum of its runs' shares of their machines."""
        return (await self.report("job", job_id=job_id))["total_usd"]

    async def set_limit(self, limit_usd: float | None,
                        token_id: str | None = None) -> SpendingLimit:
        """Set the organization's lifetime spending limit (or ``token_id``'s); ``None``
        removes it. Once spend reaches it, submissions are refused and running work
        canceled. Admin only: raises ``Forbidden``; ``NotFound`` for an unknown token."""
        result: SpendingLimit = await self._t.call("costs.limit.set", limit_usd=limit_usd,
                                                   token_id=token_id)
        return result


class Costs:
    """The blocking twin of :class:`AsyncCosts`."""

    def __init__(self, costs: AsyncCosts, loop: LoopThread) -> None:
        self._a, self._loop = costs, loop

    @twin(AsyncCosts.report)
    def report(self, by: By = "job", since: datetime | None = None,
               job_id: str | None = None, limit: int = 1000) -> CostReport:
        return self._loop.run(self._a.report(by, since, job_id, limit))

    @twin(AsyncCosts.job)
    def job(self, job_id: str) -> float:
        return self._loop.run(self._a.job(job_id))

    @twin(AsyncCosts.set_limit)
    def set_limit(self, limit_usd: float | None, token_id: str | None = None) -> SpendingLimit:
        return self._loop.run(self._a.set_limit(limit_usd, token_id))
