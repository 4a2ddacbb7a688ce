"""Job commands and queries."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

from openweights import ids
from openweights.adapters.postgres.db import query
from openweights.api import protocol
from openweights.domain.aggregates import FILE, JOB, WORKER
from openweights.domain.commands import (
    CancelJob,
    ExtendJobTimeout,
    JobCommand,
    RestartJob,
    SubmitJob,
)
from openweights.domain.mounts import mount_targets
from openweights.errors import IllegalTransition, InvalidRequest, NotFound
from openweights.events import JobReset, JobSpec, JobSubmitted
from openweights.hardware import local_hardware, offers, validate_allowed_hardware
from openweights.services.api import paging, views
from openweights.services.api.context import Context, Deps, Page, Seq
from openweights.services.provisioner.catalog import Catalog
from openweights.spending import check_submission
from openweights.subjects import check_token

API_LEASE_S = 15 * 60
_CATALOG = Catalog()  # the built-in table: what OW_BACKEND=runpod can rent
MAX_LEASE_S = 24 * 3600
JOB_TYPES = frozenset({"fine-tuning", "inference", "script", "api", "custom"})
_JOB_STATUSES = frozenset({"pending", "in_progress", "completed", "failed", "canceled"})
MAX_SEARCH = 200  # characters of a jobs.list search: an id or a model name fits


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


def fill_job_id(params: dict[str, Any], paths: list[str], job_id: str) -> dict[str, Any]:
    """``params`` with ``{job_id}`` in the string at each dotted path replaced by
    ``job_id`` (copied on the way down; ``params`` is left as it was). Raises
    ``InvalidRequest`` for a path that names no string."""
    if not paths:
        return params
    out = copy.deepcopy(params)
    for path in paths:
        *parents, leaf = path.split(".")
        node: Any = out
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or not isinstance(node.get(leaf), str):
            raise InvalidRequest(f"fill_job_id: params has no string at {path!r}")
        node[leaf] = node[leaf].replace("{job_id}", job_id)
    return out


def check_mounts(d: Deps, org: str, mounted: Any) -> None:
    """Every mount's target is a path the agent can fill (``domain.mounts``) and its file
    a file of ``org``: a job its agent cannot set up is refused here, not on a machine."""
    for parts, file_id in mount_targets(mounted).items():
        if not ids.FILE_ID.match(file_id) or d.fold.get(org, FILE, file_id) is None:
            raise InvalidRequest(
                f"params.mounted_files[{'/'.join(parts)!r}]: {file_id[:80]!r} is not a file "
                "of this organization; upload it first (ow.files.upload) and mount the id "
                "that returns, like 'conversations:file-0123456789ab'")


def check_servable(d: Deps, org: str, req: protocol.JobSubmit) -> None:
    """A VRAM need nobody chose (the ``Jobs`` default) must fit the machines the local
    backend starts, or a worker of ``org`` that has joined; else the job would wait
    forever on a CPU-only stack. Raises :class:`InvalidRequest` saying what to set."""
    s = d.settings
    machine = local_hardware(s.local_fake_gpus, s.local_fake_gpu_type)
    need = req.requires_vram_gb
    if s.backend == "runpod":  # the catalog's machines, up to 8 GPUs each
        machine = next(iter(_CATALOG.options(need, None)), machine)
    if offers(machine, need, None) or any(
            w.org == org and w.status in ("starting", "active") and (need or 0) <= w.vram_gb
            for w in d.fold.of_kind(WORKER)):
        return
    raise InvalidRequest(
        f"{req.id_prefix} needs {need} GB of VRAM (the Jobs default, requires_vram_gb = "
        f"{need}, which it does not set), and no machine here can have that: this stack "
        f"starts {machine} machines (OW_LOCAL_FAKE_GPUS={s.local_fake_gpus}) and no worker "
        "with that VRAM has joined; set `requires_vram_gb = 0` on the job class (or pass "
        "requires_vram_gb=0 to create()) for a job without a GPU, or the VRAM it needs "
        "on a stack with GPU machines")


MAX_TIMEOUT_S = 365 * 86400.0  # beyond, a deadline means "never" (and may overflow)


def _deadline(d: Deps, req: protocol.JobSubmit) -> datetime | None:
    """The job's timeout: given as an instant, or as seconds from now (the services'
    clock, not the client's). Past it the scheduler cancels the job (reason "timeout")."""
    if req.timeout_s is None:
        return req.timeout
    if not 0 < req.timeout_s <= MAX_TIMEOUT_S or req.timeout is not None:
        raise InvalidRequest(f"timeout must be seconds in (0, {MAX_TIMEOUT_S:.0f}] (and "
                             f"not given twice), not {req.timeout_s}")
    return d.clock() + timedelta(seconds=req.timeout_s)


def validate_submit(d: Deps, org: str, req: protocol.JobSubmit) -> SubmitJob:
    """The command a submission asks for. Raises :class:`InvalidRequest` naming the
    field at fault."""
    if req.type not in JOB_TYPES:
        raise InvalidRequest(f"job type {req.type!r} is not one of {sorted(JOB_TYPES)}")
    if req.requires_vram_gb is not None and req.requires_vram_gb < 0:
        raise InvalidRequest(f"requires_vram_gb must be >= 0, not {req.requires_vram_gb}")
    if not req.script.strip():
        raise InvalidRequest("script (the command the job runs) is empty")
    if not req.docker_image.strip():
        raise InvalidRequest("docker_image is empty")
    hardware = validate_allowed_hardware(req.allowed_hardware) if req.allowed_hardware else None
    if req.vram_defaulted and not hardware:
        check_servable(d, org, req)
    if req.params.get("mounted_files") is not None:  # None: nothing mounted, as {}
        check_mounts(d, org, req.params["mounted_files"])
    missing = sorted(f for f in referenced_file_ids(req.params)
                     if d.fold.get(org, FILE, f) is None)
    if missing:
        raise InvalidRequest(f"params reference unknown file(s) {', '.join(missing)}: upload "
                             "them first (ow.files.upload)")
    # The id hashes what the job *is* (type, model, params incl. mounted files); what can
    # change in place on resubmission (script, image, hardware, VRAM) is left out.
    job_id = ids.job_id(req.id_prefix, {"type": req.type, "model": req.model,
                                        "params": req.params}, org, req.job_id_suffix)
    params = fill_job_id(req.params, req.fill_job_id, job_id)
    timeout = _deadline(d, req)
    if req.type == "api" and timeout is None:
        # An API deployment lives on a lease its client renews (jobs.lease).
        timeout = d.clock() + timedelta(seconds=API_LEASE_S)
    spec = JobSpec(type=req.type, model=req.model, params=params, script=req.script,
                   docker_image=req.docker_image, requires_vram_gb=req.requires_vram_gb,
                   allowed_hardware=hardware, timeout=timeout)
    return SubmitJob(job_id=check_token(job_id, "job id"), org=org, spec=spec)


async def _outputs(d: Deps, org: str, job_id: str) -> dict[str, Any]:
    # As of the job's last decision (a reset clears them, a completion ends them): the
    # read models may not have caught up with it yet.
    await d.reads.wait_projected(d.fold.last_subject_seq(d.subjects.job(org, job_id)))
    row = await d.reads.pool.fetchrow(query("api_job"), org, job_id)
    return dict(row["outputs"]) if row is not None else {}


async def submit_job(d: Deps, ctx: Context, req: protocol.JobSubmit) -> Seq:
    cmd = validate_submit(d, ctx.org, req)
    check_submission(d.fold, ctx.org, ctx.principal.id, d.clock())  # before any append
    done = await d.executor.execute(ctx.org, JOB, cmd.job_id, cmd, ctx.actor, req.request_id)
    fresh = bool(done.events) and isinstance(done.events[0], JobSubmitted | JobReset)
    outputs = {} if fresh else await _outputs(d, ctx.org, cmd.job_id)
    assert done.state is not None
    return Seq(views.job_from_state(done.state, outputs), done.seq)


async def _change(d: Deps, ctx: Context, job_id: str, cmd: JobCommand,
                  request_id: str | None) -> Seq:
    check_token(job_id, "job id")
    if d.fold.get(ctx.org, JOB, job_id) is None:
        raise NotFound(f"job {job_id!r} not found")
    try:
        done = await d.executor.execute(ctx.org, JOB, job_id, cmd, ctx.actor, request_id)
    except IllegalTransition as exc:
        raise _explained(exc, job_id) from None
    assert done.state is not None
    return Seq(views.job_from_state(done.state, await _outputs(d, ctx.org, job_id)), done.seq)


def _explained(exc: IllegalTransition, job_id: str) -> IllegalTransition:
    """``exc`` in a client's words: the job, its state and the command that helps."""
    why = {
        "RestartJob": f"job {job_id} is {exc.state}: only an ended job can be restarted; "
                      f"cancel it first (`ow cancel {job_id}`) or wait for its end "
                      f"(`ow logs {job_id} --follow`)",
        "CancelJob": f"job {job_id} has already ended ({exc.state}); nothing to cancel "
                     f"(`ow restart {job_id}` runs it again)",
    }.get(exc.command)
    if why is None:
        return exc
    return IllegalTransition(exc.aggregate, exc.state, exc.command, message=why)


async def cancel_job(d: Deps, ctx: Context, req: protocol.JobRef) -> Seq:
    return await _change(d, ctx, req.job_id, CancelJob(), req.request_id)


async def restart_job(d: Deps, ctx: Context, req: protocol.JobRef) -> Seq:
    check_submission(d.fold, ctx.org, ctx.principal.id, d.clock())
    return await _change(d, ctx, req.job_id, RestartJob(), req.request_id)


async def renew_job_lease(d: Deps, ctx: Context, req: protocol.JobLease) -> Seq:
    if not 0 < req.seconds <= MAX_LEASE_S:
        raise InvalidRequest(f"a lease lasts between 0 and {MAX_LEASE_S} seconds")
    until = d.clock() + timedelta(seconds=req.seconds)
    return await _change(d, ctx, req.job_id, ExtendJobTimeout(timeout=until), req.request_id)


async def get_job(d: Deps, ctx: Context, req: protocol.JobRef) -> dict[str, Any]:
    row = await d.reads.pool.fetchrow(query("api_job"), ctx.org, req.job_id)
    if ctx.principal.role == "worker":
        state = d.fold.get(ctx.org, JOB, req.job_id)
        if state is None or all(r.worker_id != ctx.principal.worker_id for r in state.runs):
            row = None  # a worker sees only the jobs it was given
    if row is None:
        raise NotFound(f"job {req.job_id!r} not found")
    return views.job_from_row(row)


async def list_jobs(d: Deps, ctx: Context, req: protocol.JobList) -> Page:
    if req.status is not None and req.status not in _JOB_STATUSES:
        raise InvalidRequest(f"status {req.status!r} is not one of {sorted(_JOB_STATUSES)}")
    if not 1 <= req.limit <= 10_000:
        raise InvalidRequest("limit must be between 1 and 10000")
    if req.search is not None and len(req.search) > MAX_SEARCH:
        raise InvalidRequest(f"search is at most {MAX_SEARCH} characters")
    return await paging.job_page(d, query("api_jobs_list"),
                                 (ctx.org, req.status, req.type, req.search or None),
                                 req.limit, req.cursor)


async def find_jobs(d: Deps, ctx: Context, req: protocol.JobFind) -> Page:
    return await paging.job_page(d, query("api_jobs_find"), (ctx.org, req.params),
                                 min(max(req.limit, 1), 10_000), req.cursor)
