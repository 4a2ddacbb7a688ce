"""Job commands and queries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from openweights import ids
from openweights.api import protocol
from openweights.domain import job
from openweights.domain.commands import CancelJob, ExtendJobTimeout, RestartJob, SubmitJob
from openweights.errors import InvalidRequest, NotFound
from openweights.hardware import validate_allowed_hardware
from openweights.services.api import views
from openweights.services.api.service import ApiService, Context, Seq
from openweights.subjects import check_token

API_LEASE_S = 15 * 60
JOB_TYPES = frozenset({"fine-tuning", "inference", "script", "api", "custom"})
_JOB_STATUSES = frozenset({"pending", "in_progress", "completed", "failed", "canceled"})


def referenced_file_ids(value: Any) -> set[str]:
    """Every string in ``value`` (nested) that is a file id: each must exist."""
    found: set[str] = set()
    if isinstance(value, str):
        if ids.FILE_ID.match(value):
            found.add(value)
    elif isinstance(value, dict):
        for v in value.values():
            found |= referenced_file_ids(v)
    elif isinstance(value, list):
        for v in value:
            found |= referenced_file_ids(v)
    return found


def validate_submit(api: ApiService, org: str, req: protocol.JobSubmit) -> SubmitJob:
    if req.type not in JOB_TYPES:
        raise InvalidRequest(f"job type {req.type!r} is not one of {sorted(JOB_TYPES)}")
    if req.requires_vram_gb is not None and req.requires_vram_gb < 0:
        raise InvalidRequest(f"requires_vram_gb must be >= 0, not {req.requires_vram_gb}")
    if not req.script.strip():
        raise InvalidRequest("script (the command the job runs) is empty")
    if not req.docker_image.strip():
        raise InvalidRequest("docker_image is empty")
    hardware = validate_allowed_hardware(req.allowed_hardware) if req.allowed_hardware else None
    missing = sorted(f for f in referenced_file_ids(req.params)
                     if api.fold.get(org, "file", f) is None)
    if missing:
        raise InvalidRequest(f"params reference unknown file(s) {', '.join(missing)}: upload "
                             "them first (ow.files.upload)")
    # The id hashes what the job *is* (type, model, params incl. mounted files); what can
    # change in place on resubmission (script, image, hardware, VRAM) is left out.
    spec = {"type": req.type, "model": req.model, "params": req.params}
    job_id = ids.job_id(req.id_prefix, spec, org, req.job_id_suffix)
    timeout = req.timeout
    if req.type == "api" and timeout is None:
        # An API deployment lives on a lease its client renews (jobs.lease).
        timeout = datetime.now(UTC) + timedelta(seconds=API_LEASE_S)
    return SubmitJob(job_id=check_token(job_id, "job id"), org=org, type=req.type,
                     model=req.model, params=req.params, script=req.script,
                     docker_image=req.docker_image, requires_vram_gb=req.requires_vram_gb,
                     allowed_hardware=hardware, timeout=timeout)


async def _outputs(api: ApiService, org: str, job_id: str) -> dict[str, Any]:
    # As of the job's last decision (a reset clears them, a completion ends them): the
    # read models may not have caught up with it yet.
    await api._wait_projected(api.fold.last_subject_seq(api.subjects.job(org, job_id)))
    row = await api.pool.fetchrow(_q("api_job"), org, job_id)
    return dict(row["outputs"]) if row is not None else {}


def _q(name: str) -> str:
    from openweights.adapters.postgres.db import query

    return query(name)


def install(api: ApiService) -> None:
    @api.route("jobs.submit")
    async def submit(ctx: Context, req: protocol.JobSubmit) -> Seq:
        cmd = validate_submit(api, ctx.org, req)
        events, seq, state = await api.executor.execute(
            ctx.org, "job", cmd.job_id, lambda s, now, by: job.decide(s, cmd, now, by),
            ctx.actor, req.request_id)
        fresh = bool(events) and events[0].tag in ("job.submitted/1", "job.reset/1")
        outputs = {} if fresh else await _outputs(api, ctx.org, cmd.job_id)
        return Seq(views.job_from_state(state, outputs), seq)

    async def _change(ctx: Context, req: protocol.JobRef, cmd: Any) -> Seq:
        check_token(req.job_id, "job id")
        if api.fold.get(ctx.org, "job", req.job_id) is None:
            raise NotFound(f"job {req.job_id!r} not found")
        _, seq, state = await api.executor.execute(
            ctx.org, "job", req.job_id, lambda s, now, by: job.decide(s, cmd, now, by),
            ctx.actor, req.request_id)
        return Seq(views.job_from_state(state, await _outputs(api, ctx.org, req.job_id)), seq)

    @api.route("jobs.cancel")
    async def cancel(ctx: Context, req: protocol.JobRef) -> Seq:
        return await _change(ctx, req, CancelJob())

    @api.route("jobs.lease")
    async def lease(ctx: Context, req: protocol.JobLease) -> Seq:
        if not 0 < req.seconds <= 24 * 3600:
            raise InvalidRequest("a lease lasts between 0 and 86400 seconds")
        until = datetime.now(UTC) + timedelta(seconds=req.seconds)
        return await _change(ctx, protocol.JobRef(job_id=req.job_id, request_id=req.request_id),
                             ExtendJobTimeout(timeout=until))

    @api.route("jobs.restart")
    async def restart(ctx: Context, req: protocol.JobRef) -> Seq:
        return await _change(ctx, req, RestartJob())

    @api.route("jobs.get")
    async def get(ctx: Context, req: protocol.JobRef) -> dict[str, Any]:
        row = await api.pool.fetchrow(_q("api_job"), ctx.org, req.job_id)
        if ctx.principal.role == "worker":
            state = api.fold.get(ctx.org, "job", req.job_id)
            if state is None or all(r.worker_id != ctx.principal.worker_id for r in state.runs):
                row = None  # a worker sees only the jobs it was given
        if row is None:
            raise NotFound(f"job {req.job_id!r} not found")
        return views.job_from_row(row)

    @api.route("jobs.list")
    async def list_(ctx: Context, req: protocol.JobList) -> list[dict[str, Any]]:
        if req.status is not None and req.status not in _JOB_STATUSES:
            raise InvalidRequest(f"status {req.status!r} is not one of {sorted(_JOB_STATUSES)}")
        if not 1 <= req.limit <= 10_000:
            raise InvalidRequest("limit must be between 1 and 10000")
        rows = await api.pool.fetch(_q("api_jobs_list"), ctx.org, req.status, req.limit)
        return [views.job_from_row(r) for r in rows]

    @api.route("jobs.find")
    async def find(ctx: Context, req: protocol.JobFind) -> list[dict[str, Any]]:
        rows = await api.pool.fetch(_q("api_jobs_find"), ctx.org, req.params,
                                    min(max(req.limit, 1), 10_000))
        return [views.job_from_row(r) for r in rows]
