"""Runs, run events, logs, and script runs (``ow.run`` outside a job)."""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from typing import Any

import anyio

from openweights.adapters.nats.reader import StoredMessage, read_stream
from openweights.adapters.postgres.db import query
from openweights.api import protocol
from openweights.domain.aggregates import FILE, JOB
from openweights.domain.commands import (
    AssignJob,
    CancelJob,
    CompleteRun,
    FailRun,
    JobCommand,
    StartRun,
    SubmitJob,
)
from openweights.errors import Fenced, InvalidRequest, NotFound, RateLimited
from openweights.events import Actor, JobSpec, RunEventLogged
from openweights.services.api import paging, views
from openweights.services.api.context import Context, Deps, Page, Seq
from openweights.subjects import check_token

MAX_EVENTS_PER_LOG = 10_000


async def list_runs(d: Deps, ctx: Context, req: protocol.RunList) -> Page:
    after = paging.parse_cursor(req.cursor, tuple[datetime, int, str]) or (None, None, None)
    return await paging.rows_page(
        d, query("api_runs_list"), (ctx.org, req.job_id, req.worker_id, req.status),
        min(max(req.limit, 1), 10_000), after, paging.encode_run,
        lambda row: (row["created_at"], row["attempt"], row["id"]))


async def get_run(d: Deps, ctx: Context, req: protocol.RunRef) -> dict[str, Any]:
    row = await d.reads.pool.fetchrow(query("api_run"), ctx.org, req.run_id)
    if row is None:
        raise NotFound(f"run {req.run_id!r} not found")
    return views.run_from_row(row)


async def list_events(d: Deps, ctx: Context, req: protocol.EventList) -> Page:
    """A page of events; ``next`` (after a full page) reads on after its last one."""
    if req.job_id is None and req.run_id is None:
        raise InvalidRequest("events.list needs job_id or run_id")
    limit = min(max(req.limit, 1), 100_000)
    after_idx = 2**31 - 1 if req.after_idx is None else req.after_idx  # None: the message's all
    page = paging.Filler(paging.budget(d), limit)
    last, more = await paging.fill_rows(
        d.reads.pool, query("api_events_list"),
        (ctx.org, req.job_id, req.run_id, req.after_seq, limit, after_idx), page,
        paging.encode_event)
    if last is None or not (more or page.count == limit):
        return Page(page.array())
    return Page(page.array(), {"after_seq": last["seq"], "after_idx": last["idx"]})


async def latest_events(d: Deps, ctx: Context, req: protocol.EventLatest) -> Page:
    """The newest value of each key (of ``keys``: None for a key never logged), in key
    order; ``next`` reads on after the page's last key."""
    if req.job_id is None and req.run_id is None:
        raise InvalidRequest("events.latest needs job_id or run_id")
    page, found = paging.Filler(paging.budget(d), 2**31), []

    def encode(row: Any) -> bytes:
        found.append(row["key"])
        return paging.encode_value(row)

    last, more = await paging.fill_rows(
        d.reads.pool, query("api_events_latest"),
        (ctx.org, req.job_id, req.run_id, req.after_key, req.keys), page, encode)
    if more:
        found.pop()  # encoded, but left for the next page
    if req.keys is not None:  # asked for, never logged, and before where this page ends
        have = set(found)
        page.parts += [paging.encode_missing(k) for k in sorted(set(req.keys) - have)
                       if (req.after_key is None or k > req.after_key)
                       and (not more or k < last["key"])]
    return Page(page.object(), {"after_key": last["key"]} if more else None)


async def log_run_events(d: Deps, ctx: Context, req: protocol.RunLog) -> Seq:
    if not req.events or len(req.events) > MAX_EVENTS_PER_LOG:
        raise InvalidRequest(f"run.log takes 1 to {MAX_EVENTS_PER_LOG} events")
    state = d.runs.job(ctx.org, req.run_id)
    run = state.open_run
    if run is None or run.id != req.run_id:
        raise Fenced(f"run {req.run_id!r} has ended; its events are no longer accepted")
    if ctx.principal.role == "worker" and run.worker_id != ctx.principal.worker_id:
        raise NotFound(f"run {req.run_id!r} not found")
    if req.file is not None and d.fold.get(ctx.org, FILE, req.file) is None:
        raise InvalidRequest(f"file {req.file!r} not found: upload it first")
    size = len(ctx.raw.data) if ctx.raw is not None else 0  # what this call adds, about
    if (why := d.event_rates.refusal(ctx.org, req.run_id, size, time.monotonic())):
        raise RateLimited(f"run.log for run {req.run_id!r}: {why}")
    by, now = Actor("agent", run.worker_id), d.clock()
    events = [RunEventLogged(at=now, by=by, job_id=state.id, run_id=req.run_id, data=data,
                             file=req.file) for data in req.events]
    seq = await d.executor.append(d.subjects.run(ctx.org, state.id), events,
                                  f"{ctx.org}:{req.request_id}" if req.request_id else None)
    return Seq({"logged": len(events)}, seq)


async def read_logs(d: Deps, ctx: Context, req: protocol.LogRead) -> Page:
    """The run's stored lines: only those its own worker published (any worker may
    publish under its own id with another's run id). A page; ``next`` reads on."""
    out = paging.Filler(paging.budget(d), max(1, min(req.limit, 100_000)))
    try:
        run = d.runs.job(ctx.org, req.run_id).run(req.run_id)
    except NotFound:
        run = None
    if run is None:
        return Page(out.array())
    if ctx.principal.role == "worker" and run.worker_id != ctx.principal.worker_id:
        return Page(out.array())  # a worker reads only its own runs' output: as for no such run
    last = req.after_seq

    async def on_batch(batch: list[StoredMessage]) -> None:
        nonlocal last
        for m in batch:
            if not out.add(paging.encode_line(m.seq, m.data)):
                scope.cancel()  # a page's worth: read no further
                return
            last = m.seq

    with anyio.CancelScope() as scope:
        await read_stream(d.nc, d.js, d.subjects.logs_stream, on_batch,
                          filter_subjects=[d.subjects.kept_log(ctx.org, req.run_id,
                                                               run.worker_id)],
                          start_seq=req.after_seq + 1)
    full = scope.cancel_called or out.count == out.limit
    return Page(out.array(), {"after_seq": last} if full and out.count else None)


def script_worker_id(host: str) -> str:
    """``script-<host>``, the worker a script run is recorded under: a host name's dots
    and spaces become dashes; anything else a subject token cannot hold is refused."""
    name = (host or "client").replace(".", "-").replace(" ", "-")
    return "script-" + check_token(name[:193], "host")


async def start_script_run(d: Deps, ctx: Context, req: protocol.ScriptRunStart) -> Seq:
    """A job and a started run for a script that logs outside any job (``ow.run``)."""
    job_id = f"sjob-{secrets.token_hex(6)}"
    run_id = f"run-{secrets.token_hex(8)}"
    worker_id = script_worker_id(req.host)
    spec = JobSpec(type="script", model=None, params={}, script=req.script,
                   docker_image="script", requires_vram_gb=None, allowed_hardware=None)
    cmds: list[JobCommand] = [SubmitJob(job_id=job_id, org=ctx.org, spec=spec),
            AssignJob(worker_id=worker_id, run_id=run_id),
            StartRun(run_id=run_id, worker_id=worker_id)]
    done = await d.executor.execute(ctx.org, JOB, job_id, cmds, ctx.actor, req.request_id)
    return Seq({"job_id": job_id, "run_id": run_id}, done.seq)


async def end_script_run(d: Deps, ctx: Context, req: protocol.ScriptRunEnd) -> Seq:
    state = d.runs.job(ctx.org, req.run_id)
    if state.spec.type != "script":
        raise InvalidRequest(f"run {req.run_id!r} is not a script run")
    worker_id = state.runs[-1].worker_id
    cmds: dict[str, JobCommand] = {
        "completed": CompleteRun(run_id=req.run_id, worker_id=worker_id),
        "failed": FailRun(run_id=req.run_id, worker_id=worker_id,
                          error=req.error or "script failed"),
        "canceled": CancelJob(reason=req.error or "script interrupted"),
    }
    done = await d.executor.execute(ctx.org, JOB, state.id, cmds[req.status], ctx.actor,
                                    req.request_id)
    assert done.state is not None
    return Seq({"job_id": state.id, "status": done.state.status}, done.seq)
