"""The job pages: the list (filters, search, keyset pages) and one job's detail.

The list reads ``jobs.list`` a page at a time through the api's keyset cursor (the
newest ``updated_at, id`` of the rows shown), so its cost does not grow with the
organization's jobs: the 10,000th page costs what the first does. Live parts (status
changes, log lines, metric points, the audit timeline) come over SSE (:mod:`.live`).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from openweights.errors import InvalidRequest
from openweights.sdk.client import AsyncOpenWeights
from openweights.services.dashboard.web import web

PAGE = 50
STATUSES = ("pending", "in_progress", "completed", "failed", "canceled")
TYPES = ("custom", "script", "fine-tuning", "inference", "api")


async def job_rows(aow: AsyncOpenWeights, *, status: str | None, type: str | None,
                   search: str | None, cursor: str | None,
                   size: int = PAGE) -> tuple[list[dict[str, Any]], str | None]:
    """One page of jobs and the cursor of the next (None: this is the last)."""
    rows: list[dict[str, Any]] = []
    # As of every change stored before this page was asked for (min_seq=-1), whoever made
    # it: the page shows what the log holds now, not only what this client did.
    async for page in aow.transport.pages("jobs.list", min_seq=-1, limit=size + 1,
                                          status=status, type=type, search=search,
                                          cursor=cursor):
        for r in page:
            rows.append(await aow.transport.call("jobs.get", read=True, job_id=r["id"])
                        if "$ref" in r else r)
    if len(rows) <= size:
        return rows, None
    rows = rows[:size]
    return rows, json.dumps([rows[-1]["updated_at"], rows[-1]["id"]])


def _choice(value: str | None, allowed: tuple[str, ...], what: str) -> str | None:
    if not value:
        return None
    if value not in allowed:
        raise InvalidRequest(f"{what} {value!r} is not one of {', '.join(allowed)}")
    return value


async def job_list(request: Request) -> Response:
    w = web(request)
    aow = await w.signed_in(request)
    q = request.query_params
    status = _choice(q.get("status"), STATUSES, "status")
    kind = _choice(q.get("type"), TYPES, "type")
    search = (q.get("q") or "").strip() or None
    rows, next_cursor = await job_rows(aow, status=status, type=kind, search=search,
                                       cursor=q.get("cursor") or None)
    name = "jobs_table.html" if request.headers.get("hx-request") else "jobs.html"
    return w.page(request, name, aow=aow, jobs=rows, next_cursor=next_cursor,
                  status=status or "", type=kind or "", q=search or "",
                  first=not q.get("cursor"), statuses=STATUSES, types=TYPES)


async def job_detail(request: Request) -> Response:
    w = web(request)
    aow = await w.signed_in(request)
    job_id = request.path_params["job_id"]
    # As of now (min_seq=-1; the later reads follow it); NotFound for another org's job too.
    await aow.transport.call("jobs.get", job_id=job_id, min_seq=-1)
    job = await aow.jobs.retrieve(job_id)
    runs = await job.runs
    return w.page(request, "job.html", aow=aow, job=job, runs=runs,
                  params=json.dumps(job.params, indent=2, default=str),
                  outputs=job.outputs, terminal=job.terminal)


async def job_runs(request: Request) -> Response:
    """The runs table's rows (the detail page reloads them when the job changes)."""
    w = web(request)
    aow = await w.signed_in(request)
    job_id = request.path_params["job_id"]
    await aow.transport.call("jobs.get", job_id=job_id, min_seq=-1)  # NotFound, and as of now
    return w.page(request, "job_runs.html", aow=aow, runs=await aow.runs.list(job_id=job_id))


async def job_action(request: Request) -> Response:
    w = web(request)
    aow = await w.signed_in(request)
    await w.form(request)
    job_id = request.path_params["job_id"]
    if request.path_params["action"] == "cancel":
        await aow.jobs.cancel(job_id)
    else:
        await aow.jobs.restart(job_id)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)
