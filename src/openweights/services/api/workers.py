"""``workers.list``: an organization's machines, as `ow workers` shows them."""

from __future__ import annotations

from typing import Any

from openweights.adapters.postgres.db import query
from openweights.api import protocol
from openweights.errors import InvalidRequest
from openweights.services.api.context import Context, Deps

MAX_LIMIT = 1000  # a row is a few hundred bytes: a full reply stays far below a page


async def list_workers(d: Deps, ctx: Context, req: protocol.WorkerList) -> list[dict[str, Any]]:
    if not 1 <= req.limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}")
    rows = await d.reads.pool.fetch(query("api_workers_list"), ctx.org, req.ended, req.limit)
    return [dict(r) for r in rows]
