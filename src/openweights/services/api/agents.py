"""What agents tell the api service. Every status change is fenced by its run."""

from __future__ import annotations

from typing import Any

from openweights.api import protocol
from openweights.domain.aggregates import FILE, JOB, SECRET, WORKER
from openweights.domain.commands import (
    CancelJob,
    CompleteRun,
    ExtendWorkerTTL,
    FailRun,
    JobCommand,
    RegisterWorker,
    ReportStopped,
    RequeueJob,
    StartRun,
    StoreRunLog,
    WorkerCommand,
)
from openweights.domain.job import JobState
from openweights.errors import Conflict, Fenced, InvalidRequest, NotFound
from openweights.events import Actor, RunFileUploaded
from openweights.services.api.auth import check_worker
from openweights.services.api.context import Context, Deps, Seq
from openweights.subjects import check_token


def _job(d: Deps, org: str, job_id: str) -> JobState:
    state = d.fold.get(org, JOB, check_token(job_id, "job id"))
    if state is None:
        raise NotFound(f"job {job_id!r} not found")
    return state


async def _job_command(d: Deps, ctx: Context, req: protocol.AgentRun, *cmds: JobCommand) -> int:
    """Decides ``cmds`` in order on the job, as the worker, and appends their events in
    one message; returns its log position."""
    check_worker(ctx.principal, req.worker_id)
    _job(d, ctx.org, req.job_id)
    done = await d.executor.execute(ctx.org, JOB, req.job_id, list(cmds),
                                    Actor("agent", req.worker_id), req.request_id)
    return done.seq


async def register_worker(d: Deps, ctx: Context, req: protocol.AgentRegister) -> Seq:
    check_token(req.worker_id, "worker id")
    check_worker(ctx.principal, req.worker_id)
    # Workers are the organization's: another's of the same id is none of its business.
    by = Actor("agent", req.worker_id)
    cmd = RegisterWorker(worker_id=req.worker_id, org=ctx.org, docker_image=req.docker_image,
                         hardware_type=req.hardware_type, gpu_type=req.gpu_type,
                         gpu_count=req.gpu_count, vram_gb=req.vram_gb, managed=req.managed,
                         ttl_until=req.ttl_until)
    # A restart under the same id: the runs it held before registering are orphans.
    # Taken before the registration is appended: a job the scheduler assigns to the
    # fresh registration is new work, not an orphan.
    orphans = [(state.id, state.open_run.id) for state in d.fold.of_kind(JOB)
               if state.org == ctx.org and state.open_run is not None
               and state.open_run.worker_id == req.worker_id]
    seq = (await d.executor.execute(ctx.org, WORKER, req.worker_id, cmd, by,
                                    req.request_id)).seq
    requeued = []
    for job_id, run_id in orphans:  # back to pending, fenced by the orphaned run
        requeue = RequeueJob(run_id=run_id, worker_id=req.worker_id, run_status="failed",
                             reason="worker restarted")
        try:
            done = await d.executor.execute(ctx.org, JOB, job_id, requeue, by)
        except Conflict:  # that run ended meanwhile (declared lost, canceled)
            continue
        seq = max(seq, done.seq)
        requeued.append(job_id)
    return Seq({"requeued": requeued}, seq)


async def start_run(d: Deps, ctx: Context, req: protocol.AgentStart) -> Seq:
    """Starts the run. The reply carries the version of the org's secrets, which the
    agent compares with the next assignment's to know whether its copy is current,
    and the secrets themselves (for the job's environment) unless the agent already
    holds that version: no decryption per job while they do not change."""
    seq = await _job_command(d, ctx, req, StartRun(run_id=req.run_id, worker_id=req.worker_id))
    version = d.fold.version(ctx.org, SECRET)
    reply: dict[str, Any] = {"started": req.run_id, "secrets_seq": version}
    if req.secrets_seq != version:
        reply["secrets"] = d.secrets.for_jobs(ctx.org)
    return Seq(reply, seq)


async def end_run(d: Deps, ctx: Context, req: protocol.AgentRunEnd) -> Seq:
    state = _job(d, ctx.org, req.job_id)
    w, r = req.worker_id, req.run_id
    # A quick job's start is reported with its end: one append, not two.
    start = [StartRun(run_id=r, worker_id=w)] if req.with_start else []
    if start and req.outcome not in ("completed", "failed"):
        raise InvalidRequest(f"with_start is for a run that completed or failed, not "
                             f"{req.outcome!r}: report the start with agent.run.start")
    seq = 0
    match req.outcome:
        case "completed":
            seq = await _job_command(d, ctx, req, *start, CompleteRun(
                run_id=r, worker_id=w, log_file=req.log_file))
        case "failed":
            seq = await _job_command(d, ctx, req, *start, FailRun(
                run_id=r, worker_id=w, error=req.error or "failed", exit_code=req.exit_code,
                log_file=req.log_file))
        case "timeout":
            seq = await _timed_out(d, ctx, req, state)
        case "requeue":
            seq = await _job_command(d, ctx, req, RequeueJob(
                run_id=r, worker_id=w, run_status="canceled",
                reason=req.reason or "worker shut down", log_file=req.log_file))
        case "canceled":
            if state.run(r) is None:
                raise Fenced(f"run {r!r} is not a run of job {req.job_id}")
    if req.log_file and req.outcome in ("timeout", "canceled"):
        seq = max(seq, await _job_command(d, ctx, req, StoreRunLog(
            run_id=r, worker_id=w, log_file=req.log_file)))
    return Seq({"status": _job(d, ctx.org, req.job_id).status}, seq)


async def _timed_out(d: Deps, ctx: Context, req: protocol.AgentRunEnd, state: JobState) -> int:
    try:
        return await _job_command(d, ctx, req, CancelJob(
            reason="timeout", run_id=req.run_id, worker_id=req.worker_id))
    except Fenced:
        # The scheduler's deadline check canceled it first: the run is over either way,
        # and its partial log is still kept (end_run stores it).
        if _job(d, ctx.org, req.job_id).status != "canceled" or state.run(req.run_id) is None:
            raise
        return 0


async def record_uploads(d: Deps, ctx: Context, req: protocol.AgentUploaded) -> Seq:
    check_worker(ctx.principal, req.worker_id)
    state = _job(d, ctx.org, req.job_id)
    run = state.run(req.run_id)
    if run is None or run.worker_id != req.worker_id:
        raise Fenced(f"run {req.run_id!r} is not held by worker {req.worker_id!r}")
    by, now = Actor("agent", req.worker_id), d.clock()
    events = []
    for item in req.files:
        path, file_id = item.get("path"), item.get("file")
        if not path or not file_id or d.fold.get(ctx.org, FILE, file_id) is None:
            raise InvalidRequest(f"uploaded file entry {item!r} needs a path and a "
                                 "stored file id")
        events.append(RunFileUploaded(at=now, by=by, job_id=state.id, run_id=run.id,
                                      path=path, file=file_id))
    if not events:
        return Seq({"uploaded": 0}, 0)
    seq = await d.executor.append(d.subjects.run(ctx.org, state.id), events)
    return Seq({"uploaded": len(events)}, seq)


async def _worker_command(d: Deps, ctx: Context, worker_id: str, cmd: WorkerCommand,
                          request_id: str | None) -> Seq:
    check_worker(ctx.principal, worker_id)
    if d.fold.get(ctx.org, WORKER, check_token(worker_id, "worker id")) is None:
        raise NotFound(f"worker {worker_id!r} not found")
    done = await d.executor.execute(ctx.org, WORKER, worker_id, cmd, Actor("agent", worker_id),
                                    request_id)
    assert done.state is not None
    return Seq({"status": done.state.status}, done.seq)


async def report_stopped(d: Deps, ctx: Context, req: protocol.AgentStopped) -> Seq:
    cmd = ReportStopped(reason=req.reason, log_file=req.log_file)
    return await _worker_command(d, ctx, req.worker_id, cmd, req.request_id)


async def extend_worker_ttl(d: Deps, ctx: Context, req: protocol.AgentTTL) -> Seq:
    cmd = ExtendWorkerTTL(ttl_until=req.ttl_until)
    return await _worker_command(d, ctx, req.worker_id, cmd, req.request_id)


async def give_worker_secrets(d: Deps, ctx: Context, req: protocol.AgentSecrets
                              ) -> dict[str, str]:
    check_worker(ctx.principal, req.worker_id)
    if not d.holdings.holds_any(ctx.org, req.worker_id):
        raise Conflict("secrets are given to a worker only while it runs a job: start "
                       "the run first (the reply to agent.run.start carries them)")
    return d.secrets.for_jobs(ctx.org)
