"""Evaluation results: the newest score of each model and evaluation, read from the run
events that report them (``openweights.jobs.evals.scores``), so a replay of the event
log rebuilds them."""

from __future__ import annotations

import json
from typing import Any

from openweights.adapters.postgres.db import query
from openweights.api import protocol
from openweights.services.api import paging
from openweights.services.api.context import Context, Deps, Page

__all__ = ["eval_results", "result_from_row"]


def result_from_row(row: Any) -> dict[str, Any]:
    """A result as the SDK shows it: the score, where it came from, when."""
    data = row["data"]
    data = json.loads(data) if isinstance(data, str) else dict(data)
    return {"model": data["model"], "eval": data["eval"], "metrics": data["metrics"],
            "samples": data.get("samples"), "job_id": row["job_id"], "run_id": row["run_id"],
            "created_at": row["created_at"]}


async def eval_results(d: Deps, ctx: Context, req: protocol.EvalResults) -> Page:
    after = paging.parse_cursor(req.cursor, tuple[int, int]) or (None, None)
    return await paging.rows_page(
        d, query("api_evals_results"), (ctx.org, req.model), min(max(req.limit, 1), 10_000),
        after, lambda row: protocol.encoder.encode(result_from_row(row)),
        lambda row: (row["seq"], row["idx"]))
