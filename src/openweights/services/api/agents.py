"""What agents tell the api service. Every status change is fenced by its run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from openweights.api import protocol
from openweights.domain import job, worker
from openweights.domain.commands import (
    CancelJob,
    CompleteRun,
    ExtendWorkerTTL,
    FailRun,
    RegisterWorker,
    ReportStopped,
    RequeueJob,
    StartRun,
    StoreRunLog,
)
from openweights.domain.job import JobState
from openweights.errors import Conflict, Fenced, InvalidRequest, NotFound
from openweights.events import Actor, Event, RunFileUploaded
from openweights.services.api.auth import check_worker
from openweights.services.api.service import ApiService, Context, Seq
from openweights.subjects import check_token


def install(api: ApiService) -> None:
    # Worker ids are one namespace across organizations (the read models key workers by
    # id): a registration claims its id here before the append is awaited, so that two
    # organizations racing for one new id cannot both get it from this instance.
    claims: dict[str, str] = {}

    def claim_worker_id(org: str, worker_id: str) -> None:
        owner = claims.get(worker_id) or next(
            (w.org for w in api.fold.of_kind("worker") if w.id == worker_id), None)
        if owner is not None and owner != org:
            raise Conflict(f"worker id {worker_id!r} is taken by another organization; "
                           "start the agent with another worker id")
        claims[worker_id] = org

    def _job(org: str, job_id: str) -> JobState:
        state = api.fold.get(org, "job", check_token(job_id, "job id"))
        if state is None:
            raise NotFound(f"job {job_id!r} not found")
        return state  # type: ignore[no-any-return]

    async def _job_command(ctx: Context, req: protocol.AgentRun, *cmds: Any) -> int:
        """Decides ``cmds`` in order on the job and appends their events in one message."""
        check_worker(ctx.principal, req.worker_id)
        _job(ctx.org, req.job_id)
        by = Actor("agent", req.worker_id)

        def decide(state: JobState | None, now: datetime, _by: Actor) -> list[Event]:
            events: list[Event] = []
            for cmd in cmds:
                step = job.decide(state, cmd, now, by)
                state = job.fold(step, state)
                events += step
            return events

        _, seq, _ = await api.executor.execute(ctx.org, "job", req.job_id, decide, by,
                                               req.request_id)
        return seq

    @api.route("agent.register")
    async def register(ctx: Context, req: protocol.AgentRegister) -> Seq:
        check_token(req.worker_id, "worker id")
        check_worker(ctx.principal, req.worker_id)
        claim_worker_id(ctx.org, req.worker_id)
        by = Actor("agent", req.worker_id)
        cmd = RegisterWorker(worker_id=req.worker_id, org=ctx.org, docker_image=req.docker_image,
                             hardware_type=req.hardware_type, gpu_type=req.gpu_type,
                             gpu_count=req.gpu_count, vram_gb=req.vram_gb, managed=req.managed,
                             ttl_until=req.ttl_until)
        # A restart under the same id: the runs it held before registering are orphans.
        # Taken before the registration is appended: a job the scheduler assigns to the
        # fresh registration is new work, not an orphan.
        orphans = [(state.id, state.open_run.id) for state in api.fold.of_kind("job")
                   if state.org == ctx.org and state.open_run is not None
                   and state.open_run.worker_id == req.worker_id]
        _, seq, _ = await api.executor.execute(
            ctx.org, "worker", req.worker_id,
            lambda s, now, _by: worker.decide(s, cmd, now, by), by, req.request_id)
        requeued = []
        for job_id, run_id in orphans:  # back to pending, fenced by the orphaned run
            requeue = RequeueJob(run_id=run_id, worker_id=req.worker_id, run_status="failed",
                                 reason="worker restarted")
            try:
                _, s2, _ = await api.executor.execute(
                    ctx.org, "job", job_id,
                    lambda s, now, _by, c=requeue: job.decide(s, c, now, by), by)
            except Conflict:  # that run ended meanwhile (declared lost, canceled)
                continue
            seq = max(seq, s2)
            requeued.append(job_id)
        return Seq({"requeued": requeued}, seq)

    @api.route("agent.run.start")
    async def start(ctx: Context, req: protocol.AgentStart) -> Seq:
        """Starts the run. The reply carries the version of the org's secrets, which the
        agent compares with the next assignment's to know whether its copy is current,
        and the secrets themselves (for the job's environment) unless the agent already
        holds that version: no decryption per job while they do not change."""
        cmd = StartRun(run_id=req.run_id, worker_id=req.worker_id)
        seq = await _job_command(ctx, req, cmd)
        version = api.fold.kind_seq.get((ctx.org, "secret"), 0)
        reply: dict[str, Any] = {"started": req.run_id, "secrets_seq": version}
        if req.secrets_seq != version:
            reply["secrets"] = api.org_secrets(ctx.org)
        return Seq(reply, seq)

    @api.route("agent.run.end")
    async def end(ctx: Context, req: protocol.AgentRunEnd) -> Seq:
        state = _job(ctx.org, req.job_id)
        w, r = req.worker_id, req.run_id
        # A quick job's start is reported with its end: one append, not two.
        start = [StartRun(run_id=r, worker_id=w)] if req.with_start else []
        if start and req.outcome not in ("completed", "failed"):
            raise InvalidRequest(f"with_start is for a run that completed or failed, not "
                                 f"{req.outcome!r}: report the start with agent.run.start")
        seq = 0
        match req.outcome:
            case "completed":
                seq = await _job_command(ctx, req, *start, CompleteRun(
                    run_id=r, worker_id=w, log_file=req.log_file))
            case "failed":
                seq = await _job_command(ctx, req, *start, FailRun(
                    run_id=r, worker_id=w, error=req.error or "failed",
                    exit_code=req.exit_code, log_file=req.log_file))
            case "timeout":
                try:
                    seq = await _job_command(ctx, req, CancelJob(reason="timeout", run_id=r,
                                                                 worker_id=w))
                except Fenced:
                    # The scheduler's deadline check canceled it first: the run is over
                    # either way, and its partial log is still kept below.
                    if _job(ctx.org, req.job_id).status != "canceled" or state.run(r) is None:
                        raise
            case "requeue":
                seq = await _job_command(ctx, req, RequeueJob(
                    run_id=r, worker_id=w, run_status="canceled",
                    reason=req.reason or "worker shut down", log_file=req.log_file))
            case "canceled":
                if state.run(r) is None:
                    raise Fenced(f"run {r!r} is not a run of job {req.job_id}")
        if req.log_file and req.outcome in ("timeout", "canceled"):
            seq = max(seq, await _job_command(ctx, req, StoreRunLog(
                run_id=r, worker_id=w, log_file=req.log_file)))
        after = api.fold.get(ctx.org, "job", req.job_id)
        return Seq({"status": after.status}, seq)

    @api.route("agent.run.uploaded")
    async def uploaded(ctx: Context, req: protocol.AgentUploaded) -> Seq:
        check_worker(ctx.principal, req.worker_id)
        state = _job(ctx.org, req.job_id)
        run = state.run(req.run_id)
        if run is None or run.worker_id != req.worker_id:
            raise Fenced(f"run {req.run_id!r} is not held by worker {req.worker_id!r}")
        by, now = Actor("agent", req.worker_id), datetime.now(UTC)
        events: list[Event] = []
        for item in req.files:
            path, file_id = item.get("path"), item.get("file")
            if not path or not file_id or api.fold.get(ctx.org, "file", file_id) is None:
                raise InvalidRequest(f"uploaded file entry {item!r} needs a path and a "
                                     "stored file id")
            events.append(RunFileUploaded(at=now, by=by, job_id=state.id, run_id=run.id,
                                          path=path, file=file_id))
        if not events:
            return Seq({"uploaded": 0}, 0)
        seq = await api.executor.append_unconditional(api.subjects.run(ctx.org, state.id),
                                                      events)
        return Seq({"uploaded": len(events)}, seq)

    async def _worker_command(ctx: Context, worker_id: str, cmd: Any,
                              request_id: str | None) -> Seq:
        check_worker(ctx.principal, worker_id)
        if api.fold.get(ctx.org, "worker", check_token(worker_id, "worker id")) is None:
            raise NotFound(f"worker {worker_id!r} not found")
        by = Actor("agent", worker_id)
        _, seq, state = await api.executor.execute(
            ctx.org, "worker", worker_id, lambda s, now, _by: worker.decide(s, cmd, now, by),
            by, request_id)
        return Seq({"status": state.status}, seq)

    @api.route("agent.stopped")
    async def stopped(ctx: Context, req: protocol.AgentStopped) -> Seq:
        cmd = ReportStopped(reason=req.reason, log_file=req.log_file)
        return await _worker_command(ctx, req.worker_id, cmd, req.request_id)

    @api.route("agent.ttl")
    async def ttl(ctx: Context, req: protocol.AgentTTL) -> Seq:
        cmd = ExtendWorkerTTL(ttl_until=req.ttl_until)
        return await _worker_command(ctx, req.worker_id, cmd, req.request_id)
