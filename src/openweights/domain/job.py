"""The job aggregate and its runs.

Job states (the five users of the original OpenWeights know):

- ``pending``: waiting for a worker; the scheduler may assign it.
- ``in_progress``: assigned to a worker; its current run is open.
- ``completed``: the current run's process exited 0. Resubmitting returns it unchanged.
- ``failed``: the process exited non-zero (or could not start). Resubmitting resets it.
- ``canceled``: stopped by a client or by its timeout. Resubmitting resets it.

A run is one execution of the job by one worker: ``in_progress`` then ``completed``,
``failed`` or ``canceled``. Fencing: a worker's status change names its run, and is
accepted only while that run is the job's open run on that worker.

A run *loses its machine* when it is given back as failed (``job.requeued``, run status
``failed``: its worker was declared lost, restarted under it, or never started it). The
job goes back to pending, but the :data:`MAX_LOST_RUNS`-th such run in a row fails it
instead, saying so: a job that crashes its agent is not requeued forever. Any other end
of a run (completed, failed, canceled, handed back by a worker shutting down) or a reset
ends the row; a started run counts too, as a job can kill its machine after starting.
``JobState.lost_in_a_row`` is folded from the events, so a replay rebuilds it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from openweights.domain.commands import (
    AssignJob,
    CancelJob,
    CompleteRun,
    ExtendJobTimeout,
    FailRun,
    JobCommand,
    NoteWaitReason,
    RequeueJob,
    RestartJob,
    StartRun,
    StoreRunLog,
    SubmitJob,
)
from openweights.errors import Fenced, IllegalTransition
from openweights.events import (
    Actor,
    Event,
    JobAssigned,
    JobCanceled,
    JobCompleted,
    JobFailed,
    JobRequeued,
    JobRequirementsChanged,
    JobReset,
    JobSpec,
    JobSubmitted,
    JobTimeoutExtended,
    JobWaitReasonChanged,
    RunLogStored,
    RunStarted,
)
from openweights.events.job import PLACEMENT

JobStatus = Literal["pending", "in_progress", "completed", "failed", "canceled"]
RunStatus = Literal["in_progress", "completed", "failed", "canceled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "canceled"})
MAX_LOST_RUNS = 3

# (state before, event) -> state after. ``None`` is "no such job yet"; ``"*"`` keeps it.
TRANSITIONS: dict[tuple[str | None, type[Event]], str] = {
    (None, JobSubmitted): "pending",
    ("failed", JobReset): "pending",
    ("canceled", JobReset): "pending",
    ("completed", JobReset): "pending",  # an explicit restart only
    ("pending", JobRequirementsChanged): "*",
    ("in_progress", JobRequirementsChanged): "*",
    ("completed", JobRequirementsChanged): "*",
    ("pending", JobAssigned): "in_progress",
    ("in_progress", RunStarted): "*",
    ("in_progress", JobCompleted): "completed",
    ("in_progress", JobFailed): "failed",
    ("pending", JobCanceled): "canceled",
    ("in_progress", JobCanceled): "canceled",
    ("in_progress", JobRequeued): "pending",
    ("completed", RunLogStored): "*",
    ("failed", RunLogStored): "*",
    ("canceled", RunLogStored): "*",
    ("pending", RunLogStored): "*",
    ("in_progress", RunLogStored): "*",
    ("pending", JobTimeoutExtended): "*",
    ("in_progress", JobTimeoutExtended): "*",
    ("pending", JobWaitReasonChanged): "*",
}


class RunState(msgspec.Struct, frozen=True, gc=False):
    id: str
    job_id: str
    attempt: int  # 1 for the job's first run, 2 for the next...
    worker_id: str
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    log_file: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None  # when it left in_progress: its machine time ends


class JobState(msgspec.Struct, frozen=True, gc=False):
    id: str
    org: str
    spec: JobSpec  # as submitted, with the placement and deadline changed since
    status: JobStatus
    created_at: datetime
    updated_at: datetime
    worker_id: str | None = None
    runs: tuple[RunState, ...] = ()
    lost_in_a_row: int = 0  # its last runs that lost their machine, since any other end
    error: str | None = None  # why it failed (its ``job.failed``); None unless failed
    # Why it is pending and not placed (None: not pending, or a worker is there or
    # coming); cleared by every change of its status.
    wait_reason: str | None = None
    # The token whose client submitted (or last reset) it: its spending is that token's.
    submitted_by: str | None = None

    @property
    def open_run(self) -> RunState | None:
        run = self.runs[-1] if self.runs else None
        return run if run is not None and run.status == "in_progress" else None

    def run(self, run_id: str) -> RunState | None:
        for run in reversed(self.runs):
            if run.id == run_id:
                return run
        return None


def _status(state: JobState | None) -> str | None:
    return None if state is None else state.status


def _check(state: JobState | None, event_type: type[Event], command: str) -> None:
    if (_status(state), event_type) not in TRANSITIONS:
        raise IllegalTransition("job", str(_status(state) or "absent"), command)


def _fence(state: JobState, run_id: str, worker_id: str, command: str) -> RunState:
    """The run must be the job's open run, held by this worker; else the worker is stale."""
    run = state.open_run
    if state.status != "in_progress" or run is None or run.id != run_id or (
        run.worker_id != worker_id
    ):
        raise Fenced(
            f"{command} from worker {worker_id!r} for run {run_id!r} ignored: job "
            f"{state.id} is {state.status} with open run "
            f"{run.id if run else None!r}"
        )
    return run


def decide(state: JobState | None, cmd: JobCommand, now: datetime, by: Actor) -> list[Event]:
    """Events that ``cmd`` causes for a job in ``state`` (``[]`` if it changes nothing)."""
    name = type(cmd).__name__
    meta: dict[str, Any] = {"at": now, "by": by}
    match cmd:
        case SubmitJob():
            return _decide_submit(state, cmd, meta)
        case RestartJob():
            if state is None:
                raise IllegalTransition("job", "absent", name)
            _check(state, JobReset, name)
            return [JobReset(**meta, job_id=state.id, org=state.org, spec=state.spec)]
    if state is None:
        raise IllegalTransition("job", "absent", name)
    match cmd:
        case AssignJob(worker_id=worker_id, run_id=run_id):
            _check(state, JobAssigned, name)
            if state.run(run_id) is not None:
                raise IllegalTransition("job", state.status, name,
                                        f"run id {run_id!r} was already used")
            return [JobAssigned(**meta, job_id=state.id, worker_id=worker_id, run_id=run_id)]
        case StartRun(run_id=run_id, worker_id=worker_id):
            run = _fence(state, run_id, worker_id, name)
            if run.started_at is not None:
                return []  # a retried start changes nothing
            return [RunStarted(**meta, job_id=state.id, run_id=run_id, worker_id=worker_id)]
        case CompleteRun(run_id=run_id, worker_id=worker_id, log_file=log_file):
            _fence(state, run_id, worker_id, name)
            return [JobCompleted(**meta, job_id=state.id, run_id=run_id, worker_id=worker_id,
                                 log_file=log_file)]
        case FailRun():
            _fence(state, cmd.run_id, cmd.worker_id, name)
            return [JobFailed(**meta, job_id=state.id, run_id=cmd.run_id,
                              worker_id=cmd.worker_id, error=cmd.error,
                              exit_code=cmd.exit_code, log_file=cmd.log_file)]
        case RequeueJob():
            _fence(state, cmd.run_id, cmd.worker_id, name)
            return [_decide_requeue(state, cmd, meta)]
        case CancelJob():
            return _decide_cancel(state, cmd, meta)
        case StoreRunLog(run_id=run_id, worker_id=worker_id, log_file=log_file):
            ended = state.run(run_id)
            if ended is None or ended.worker_id != worker_id:
                raise Fenced(f"run {run_id!r} of job {state.id} is not held by {worker_id!r}")
            return [RunLogStored(**meta, job_id=state.id, run_id=run_id, worker_id=worker_id,
                                 log_file=log_file)]
        case ExtendJobTimeout(timeout=timeout):
            _check(state, JobTimeoutExtended, name)
            if timeout == state.spec.timeout:
                return []
            return [JobTimeoutExtended(**meta, job_id=state.id, timeout=timeout)]
        case NoteWaitReason(reason=reason):
            _check(state, JobWaitReasonChanged, name)
            if reason == state.wait_reason:
                return []  # only a change is an event
            return [JobWaitReasonChanged(**meta, job_id=state.id, reason=reason)]
    raise TypeError(f"not a job command: {cmd!r}")


def _decide_submit(state: JobState | None, cmd: SubmitJob, meta: dict[str, Any]) -> list[Event]:
    if state is None:
        return [JobSubmitted(**meta, job_id=cmd.job_id, org=cmd.org, spec=cmd.spec)]
    if state.status in ("failed", "canceled"):
        return [JobReset(**meta, job_id=cmd.job_id, org=cmd.org, spec=cmd.spec)]
    if all(getattr(state.spec, f) == getattr(cmd.spec, f) for f in PLACEMENT):
        return []  # the same job again: it runs once
    return [JobRequirementsChanged(**meta, job_id=state.id,
                                   **{f: getattr(cmd.spec, f) for f in PLACEMENT})]


def _decide_requeue(state: JobState, cmd: RequeueJob, meta: dict[str, Any]) -> Event:
    if cmd.run_status == "failed" and state.lost_in_a_row + 1 >= MAX_LOST_RUNS:
        error = (f"its runs lost their machine {MAX_LOST_RUNS} times in a row (last: "
                 f"{cmd.reason}), so it is not requeued again: a job that crashes or "
                 "exhausts its machine does this; check its logs, fix it and submit it again")
        return JobFailed(**meta, job_id=state.id, run_id=cmd.run_id, worker_id=cmd.worker_id,
                         error=error, log_file=cmd.log_file)
    return JobRequeued(**meta, job_id=state.id, run_id=cmd.run_id, worker_id=cmd.worker_id,
                       run_status=cmd.run_status, reason=cmd.reason, log_file=cmd.log_file)


def _decide_cancel(state: JobState, cmd: CancelJob, meta: dict[str, Any]) -> list[Event]:
    name = "CancelJob"
    if state.status == "canceled" and cmd.worker_id is None:
        return []  # canceled already: a retried cancel (lost reply) is not an error
    if cmd.worker_id is not None:
        # A worker cancels only its own open run (its timeout passed).
        assert cmd.run_id is not None, "a worker cancels a named run"
        _fence(state, cmd.run_id, cmd.worker_id, name)
    _check(state, JobCanceled, name)
    run = state.open_run
    return [JobCanceled(**meta, job_id=state.id, run_id=run.id if run else None,
                        reason=cmd.reason)]


def evolve(state: JobState | None, event: Event) -> JobState:
    """The job after ``event``; raises :class:`IllegalTransition` for an impossible history."""
    after = TRANSITIONS.get((_status(state), type(event)))
    if after is None:
        raise IllegalTransition("job", str(_status(state) or "absent"), event.tag)
    if isinstance(event, JobSubmitted):
        return JobState(id=event.job_id, org=event.org, spec=event.spec, status="pending",
                        created_at=event.at, updated_at=event.at,
                        submitted_by=_client_of(event))
    assert state is not None
    status = state.status if after == "*" else after
    if isinstance(event, JobWaitReasonChanged):
        # Not ``updated_at``: a job's place in the queue (``matching.priority``) keeps.
        return msgspec.structs.replace(state, wait_reason=event.reason)
    new = _apply(state, event, status)  # type: ignore[arg-type]
    if state.wait_reason is not None and (status != state.status or isinstance(event, JobReset)):
        new = msgspec.structs.replace(new, wait_reason=None)  # it waits anew, if at all
    return new


def _client_of(event: Event, before: str | None = None) -> str | None:
    return event.by.id if event.by.kind == "client" and event.by.id else before


def _with_run(state: JobState, run_id: str, **changes: Any) -> tuple[RunState, ...]:
    return tuple(msgspec.structs.replace(r, **changes) if r.id == run_id else r
                 for r in state.runs)


def _apply(state: JobState, event: Event, status: JobStatus) -> JobState:
    at = event.at
    r = msgspec.structs.replace
    match event:
        case JobReset():
            return r(state, spec=event.spec, status=status, worker_id=None, updated_at=at,
                     lost_in_a_row=0, error=None,
                     submitted_by=_client_of(event, state.submitted_by))
        case JobRequirementsChanged():
            spec = r(state.spec, script=event.script, docker_image=event.docker_image,
                     requires_vram_gb=event.requires_vram_gb,
                     allowed_hardware=event.allowed_hardware)
            return r(state, spec=spec, updated_at=at)
        case JobAssigned():
            run = RunState(id=event.run_id, job_id=state.id, attempt=len(state.runs) + 1,
                           worker_id=event.worker_id,
                           status="in_progress", created_at=at, updated_at=at)
            return r(state, status=status, worker_id=event.worker_id, updated_at=at,
                     runs=(*state.runs, run))
        case RunStarted():
            return r(state, runs=_with_run(state, event.run_id, started_at=at, updated_at=at))
        case JobCompleted() | JobFailed():
            runs = _with_run(state, event.run_id, status=status, updated_at=at,
                             log_file=event.log_file, ended_at=at)
            error = event.error if isinstance(event, JobFailed) else None
            return r(state, status=status, updated_at=at, runs=runs, lost_in_a_row=0,
                     error=error)
        case JobCanceled():
            runs = state.runs
            if event.run_id is not None:
                runs = _with_run(state, event.run_id, status="canceled", updated_at=at,
                                 ended_at=at)
            return r(state, status=status, updated_at=at, runs=runs, lost_in_a_row=0)
        case JobRequeued():
            runs = _with_run(state, event.run_id, status=event.run_status, updated_at=at,
                             log_file=event.log_file, ended_at=at)
            lost = state.lost_in_a_row + 1 if event.run_status == "failed" else 0
            return r(state, status=status, worker_id=None, updated_at=at, runs=runs,
                     lost_in_a_row=lost)
        case RunLogStored():
            return r(state, runs=_with_run(state, event.run_id, log_file=event.log_file,
                                           updated_at=at))
        case JobTimeoutExtended():
            return r(state, spec=r(state.spec, timeout=event.timeout), updated_at=at)
    raise TypeError(f"not a job event: {event!r}")
