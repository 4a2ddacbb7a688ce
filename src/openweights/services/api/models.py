"""The model registry: models jobs produced, read from the run events that announce
them (``openweights.jobs.models``), so a replay of the event log rebuilds it."""

from __future__ import annotations

import json
from typing import Any

from openweights.adapters.postgres.db import query
from openweights.api import protocol
from openweights.errors import NotFound
from openweights.services.api import paging
from openweights.services.api.context import Context, Deps, Page

__all__ = ["get_model", "list_models", "model_from_row"]


def model_from_row(row: Any) -> dict[str, Any]:
    """A model as the SDK shows it: the announcement, where it came from, when."""
    data = row["data"]
    data = json.loads(data) if isinstance(data, str) else dict(data)
    data.pop("type", None)
    return {"id": data.pop("model_id"), "object": "model", **data, "job_id": row["job_id"],
            "run_id": row["run_id"], "created_at": row["created_at"]}


async def list_models(d: Deps, ctx: Context, req: protocol.ModelList) -> Page:
    after = paging.parse_cursor(req.cursor, tuple[int, int]) or (None, None)
    return await paging.rows_page(
        d, query("api_models_list"), (ctx.org, req.job_id, None), min(max(req.limit, 1),
                                                                       10_000),
        after, lambda row: protocol.encoder.encode(model_from_row(row)),
        lambda row: (row["seq"], row["idx"]))


async def get_model(d: Deps, ctx: Context, req: protocol.ModelRef) -> dict[str, Any]:
    row = await d.reads.pool.fetchrow(query("api_models_list"), ctx.org, None, req.model_id,
                                      1, None, None)
    if row is None:
        raise NotFound(f"model {req.model_id!r} not found: `ow models ls` lists the models "
                       "your jobs produced")
    return model_from_row(row)
