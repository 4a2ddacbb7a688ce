"""Runs, run events, logs, and script runs (``ow.run`` outside a job)."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from openweights.adapters.nats.reader import StoredMessage, read_stream
from openweights.adapters.postgres.db import query
from openweights.api import protocol
from openweights.domain import job
from openweights.domain.commands import (
    AssignJob,
    CancelJob,
    CompleteRun,
    FailRun,
    StartRun,
    SubmitJob,
)
from openweights.domain.job import JobState
from openweights.errors import Fenced, InvalidRequest, NotFound
from openweights.events import Actor, Event, JobAssigned, RunEventLogged
from openweights.services.api import views
from openweights.services.api.service import ApiService, Context, Seq
from openweights.subjects import check_token

MAX_EVENTS_PER_LOG = 10_000


def install(api: ApiService) -> None:
    run_index: dict[tuple[str, str], str] = {}  # (org, run_id) -> job_id

    def index_runs(seq: int, org: str, event: Event, before: Any, after: Any) -> None:
        if isinstance(event, JobAssigned):
            run_index[(org, event.run_id)] = event.job_id

    api.fold.listeners.append(index_runs)

    def job_of_run(org: str, run_id: str) -> JobState:
        job_id = run_index.get((org, check_token(run_id, "run id")))
        state = api.fold.get(org, "job", job_id) if job_id else None
        if state is None:
            raise NotFound(f"run {run_id!r} not found")
        return state  # type: ignore[no-any-return]

    @api.route("runs.list")
    async def list_runs(ctx: Context, req: protocol.RunList) -> list[dict[str, Any]]:
        rows = await api.pool.fetch(query("api_runs_list"), ctx.org, req.job_id, req.worker_id,
                                    req.status, min(max(req.limit, 1), 10_000))
        return [views.run_from_row(r) for r in rows]

    @api.route("runs.get")
    async def get_run(ctx: Context, req: protocol.RunRef) -> dict[str, Any]:
        row = await api.pool.fetchrow(query("api_run"), ctx.org, req.run_id)
        if row is None:
            raise NotFound(f"run {req.run_id!r} not found")
        return views.run_from_row(row)

    @api.route("events.list")
    async def list_events(ctx: Context, req: protocol.EventList) -> list[dict[str, Any]]:
        if req.job_id is None and req.run_id is None:
            raise InvalidRequest("events.list needs job_id or run_id")
        rows = await api.pool.fetch(query("api_events_list"), ctx.org, req.job_id, req.run_id,
                                    req.after_seq, min(max(req.limit, 1), 100_000))
        return [views.event_from_row(r) for r in rows]

    @api.route("events.latest")
    async def latest(ctx: Context, req: protocol.EventLatest) -> dict[str, Any]:
        if req.job_id is None and req.run_id is None:
            raise InvalidRequest("events.latest needs job_id or run_id")
        rows = await api.pool.fetch(query("api_events_latest"), ctx.org, req.job_id, req.run_id)
        values = {r["key"]: r["value"] for r in rows}
        if req.keys is None:
            return values
        return {k: values.get(k) for k in req.keys}

    @api.route("run.log")
    async def log_events(ctx: Context, req: protocol.RunLog) -> Seq:
        if not req.events or len(req.events) > MAX_EVENTS_PER_LOG:
            raise InvalidRequest(f"run.log takes 1 to {MAX_EVENTS_PER_LOG} events")
        state = job_of_run(ctx.org, req.run_id)
        run = state.open_run
        if run is None or run.id != req.run_id:
            raise Fenced(f"run {req.run_id!r} has ended; its events are no longer accepted")
        if ctx.principal.role == "worker" and run.worker_id != ctx.principal.worker_id:
            raise NotFound(f"run {req.run_id!r} not found")
        if req.file is not None and api.fold.get(ctx.org, "file", req.file) is None:
            raise InvalidRequest(f"file {req.file!r} not found: upload it first")
        by = Actor("agent", run.worker_id)
        now = datetime.now().astimezone()
        events = [RunEventLogged(at=now, by=by, job_id=state.id, run_id=req.run_id, data=d,
                                 file=req.file) for d in req.events]
        seq = await api.executor.append_unconditional(
            api.subjects.run(ctx.org, state.id), events,
            f"{ctx.org}:{req.request_id}" if req.request_id else None)
        return Seq({"logged": len(events)}, seq)

    @api.route("logs.read")
    async def read_logs(ctx: Context, req: protocol.LogRead) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if ctx.principal.role == "worker":  # a worker reads only its own runs' output
            job_id = run_index.get((ctx.org, req.run_id))
            state = api.fold.get(ctx.org, "job", job_id) if job_id else None
            run = state.run(req.run_id) if state is not None else None
            if run is None or run.worker_id != ctx.principal.worker_id:
                return out  # as for a run that does not exist

        async def on_batch(batch: list[StoredMessage]) -> None:
            for m in batch:
                if len(out) < req.limit:
                    out.append({"seq": m.seq, "data": m.data.decode(errors="replace")})

        await read_stream(api.nc, api.js, api.subjects.logs_stream, on_batch,
                          filter_subjects=[api.subjects.log_filter(ctx.org, req.run_id)],
                          start_seq=req.after_seq + 1)
        return out

    @api.route("run.script.start")
    async def start_script(ctx: Context, req: protocol.ScriptRunStart) -> Seq:
        job_id = f"sjob-{secrets.token_hex(6)}"
        run_id = f"run-{secrets.token_hex(8)}"
        worker_id = f"script-{req.host or 'client'}"[:200].replace(".", "-").replace(" ", "-")
        submit = SubmitJob(job_id=job_id, org=ctx.org, type="script", model=None, params={},
                           script=req.script, docker_image="script", requires_vram_gb=None,
                           allowed_hardware=None)

        def decide(state: Any, now: datetime, by: Actor) -> list[Event]:
            events: list[Event] = []
            for cmd in (submit, AssignJob(worker_id=worker_id, run_id=run_id),
                        StartRun(run_id=run_id, worker_id=worker_id)):
                step = job.decide(state, cmd, now, by)
                state = job.fold(step, state)
                events += step
            return events

        _, seq, _ = await api.executor.execute(ctx.org, "job", job_id, decide, ctx.actor,
                                               req.request_id)
        return Seq({"job_id": job_id, "run_id": run_id}, seq)

    @api.route("run.script.end")
    async def end_script(ctx: Context, req: protocol.ScriptRunEnd) -> Seq:
        state = job_of_run(ctx.org, req.run_id)
        if state.type != "script":
            raise InvalidRequest(f"run {req.run_id!r} is not a script run")
        worker_id = state.runs[-1].worker_id
        cmd: Any = {
            "completed": CompleteRun(run_id=req.run_id, worker_id=worker_id),
            "failed": FailRun(run_id=req.run_id, worker_id=worker_id,
                              error=req.error or "script failed"),
            "canceled": CancelJob(reason=req.error or "script interrupted"),
        }[req.status]
        _, seq, after = await api.executor.execute(
            ctx.org, "job", state.id, lambda s, now, by: job.decide(s, cmd, now, by),
            ctx.actor, req.request_id)
        return Seq({"job_id": state.id, "status": after.status}, seq)
