"""``costs.report`` (what work cost, from the read models) and ``costs.limit.set`` (an
admin's lifetime spending limit for a token or the organization)."""

from __future__ import annotations

from typing import Any

from openweights.adapters.postgres.db import query
from openweights.api import protocol
from openweights.domain import cost
from openweights.domain.aggregates import ORG, TOKEN
from openweights.domain.commands import SetSpendingLimit
from openweights.errors import InvalidRequest, NotFound
from openweights.services.api.context import Context, Deps, Seq
from openweights.subjects import check_token

MAX_LIMIT = 1000  # rows of a report: a row is well under a hundred bytes
MAX_SPENDING_LIMIT = 1e9  # USD; beyond it a limit means nothing


async def cost_report(d: Deps, ctx: Context, req: protocol.CostReport) -> dict[str, Any]:
    """USD per group, largest first, with the total, the time it was computed at and
    the organization's and this caller's limits."""
    if not 1 <= req.limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}")
    if req.job_id is not None:
        check_token(req.job_id, "job id")
    now = d.clock()
    if req.since is not None and req.since.tzinfo is None:
        raise InvalidRequest("since must carry a time zone (e.g. 2026-03-01T00:00:00Z)")
    async with d.reads.pool.acquire() as conn:
        machines = [cost.Machine(**dict(r)) for r in
                    await conn.fetch(query("api_cost_machines"), ctx.org, req.since)]
        runs = [cost.RunSpan(**dict(r)) for r in
                await conn.fetch(query("api_cost_runs"), ctx.org, req.since, req.job_id)]
    groups = cost.report(req.by, machines, runs, now, req.since)
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))
    org_state = d.fold.get(ctx.org, ORG, ctx.org)
    tok = d.fold.get(ctx.org, TOKEN, ctx.principal.id)
    return {"by": req.by, "since": req.since, "at": now,
            "total_usd": sum(groups.values()),
            "rows": [{"key": k, "usd": v} for k, v in ordered[:req.limit]],
            "truncated": len(ordered) > req.limit,
            "org_limit_usd": org_state.spending_limit if org_state else None,
            "token_limit_usd": tok.spending_limit if tok else None}


async def set_spending_limit(d: Deps, ctx: Context, req: protocol.SpendingLimitSetReq) -> Seq:
    limit = req.limit_usd
    if limit is not None and not 0 <= limit <= MAX_SPENDING_LIMIT:
        raise InvalidRequest(f"a spending limit is between 0 and {MAX_SPENDING_LIMIT:.0f} USD "
                             f"(got {limit}); `ow cost limit clear` removes one")
    cmd = SetSpendingLimit(limit_usd=limit)
    if req.token_id is None:
        if d.fold.get(ctx.org, ORG, ctx.org) is None:
            raise NotFound(f"organization {ctx.org!r} not found")
        done = await d.executor.execute(ctx.org, ORG, ctx.org, cmd, ctx.actor, req.request_id)
        return Seq({"organization": ctx.org, "token_id": None, "limit_usd": limit}, done.seq)
    check_token(req.token_id, "token id")
    if d.fold.get(ctx.org, TOKEN, req.token_id) is None:
        raise NotFound(f"token {req.token_id!r} not found")
    set_t = await d.executor.execute(ctx.org, TOKEN, req.token_id, cmd, ctx.actor,
                                     req.request_id)
    return Seq({"organization": ctx.org, "token_id": req.token_id, "limit_usd": limit},
               set_t.seq)
