"""The job aggregate: given events, when a command, then events (or a typed refusal)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import msgspec
import pytest

from openweights.domain import aggregates, job
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
from openweights.domain.job import JobState
from openweights.errors import Conflict, Fenced, IllegalTransition
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

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
CLIENT, SCHEDULER = Actor("client", "tok-1"), Actor("scheduler")
JOB, W1, W2 = "ftjob-1", "w1", "w2"
SPEC: dict[str, Any] = {
    "job_id": JOB, "org": "org-a", "type": "fine-tuning", "model": "unsloth/Qwen3-8B",
    "params": {"epochs": 3}, "script": "python train.py", "docker_image": "img:v1",
    "requires_vram_gb": 48, "allowed_hardware": ["1x H100S"], "timeout": None,
}


def nested(fields: dict[str, Any]) -> dict[str, Any]:
    """``SPEC``-like flat fields as a command's or event's ``job_id, org, spec``."""
    rest = {k: v for k, v in fields.items() if k not in ("job_id", "org")}
    return {"job_id": fields["job_id"], "org": fields["org"], "spec": JobSpec(**rest)}


def agent(worker_id: str) -> Actor:
    return Actor("agent", worker_id)


# -- histories -------------------------------------------------------------------------
def submitted(**changes: Any) -> JobSubmitted:
    return JobSubmitted(at=T0, by=CLIENT, **nested({**SPEC, **changes}))


def assigned(run: str = "r1", worker: str = W1) -> JobAssigned:
    return JobAssigned(at=T0, by=SCHEDULER, job_id=JOB, worker_id=worker, run_id=run)


def started(run: str = "r1", worker: str = W1) -> RunStarted:
    return RunStarted(at=T0, by=agent(worker), job_id=JOB, run_id=run, worker_id=worker)


def completed(run: str = "r1", worker: str = W1) -> JobCompleted:
    return JobCompleted(at=T0, by=agent(worker), job_id=JOB, run_id=run, worker_id=worker)


def failed(run: str = "r1", worker: str = W1) -> JobFailed:
    return JobFailed(at=T0, by=agent(worker), job_id=JOB, run_id=run, worker_id=worker,
                     error="exit 1", exit_code=1)


def canceled(run: str | None = "r1") -> JobCanceled:
    return JobCanceled(at=T0, by=CLIENT, job_id=JOB, run_id=run)


def requeued(run: str = "r1", worker: str = W1) -> JobRequeued:
    return JobRequeued(at=T0, by=Actor("provisioner"), job_id=JOB, run_id=run,
                       worker_id=worker, run_status="failed", reason="worker lost")


HISTORY: dict[str | None, list[Event]] = {
    None: [],
    "pending": [submitted()],
    "in_progress": [submitted(), assigned()],
    "completed": [submitted(), assigned(), started(), completed()],
    "failed": [submitted(), assigned(), started(), failed()],
    "canceled": [submitted(), assigned(), canceled()],
}


def given(*events: Event) -> JobState | None:
    return aggregates.JOB.fold(list(events))


def when(state: JobState | None, cmd: JobCommand, by: Actor = CLIENT) -> list[Event]:
    return job.decide(state, cmd, NOW, by)


def submit(**changes: Any) -> SubmitJob:
    return SubmitJob(**nested({**SPEC, **changes}))


def status(state: JobState | None) -> str | None:
    return None if state is None else state.status


# -- every transition of the table -----------------------------------------------------
@dataclass(frozen=True)
class Case:
    given: list[Event]
    when: JobCommand
    by: Actor
    then: Event
    status_after: str


def meta(by: Actor = CLIENT) -> dict[str, Any]:
    return {"at": NOW, "by": by}


A1, A2 = agent(W1), agent(W2)
STORE = StoreRunLog(run_id="r1", worker_id=W1, log_file="file-log-1")
STORED = RunLogStored(**meta(A1), job_id=JOB, run_id="r1", worker_id=W1, log_file="file-log-1")
PLACEMENT = {k: SPEC[k] for k in ("script", "docker_image", "requires_vram_gb",
                                  "allowed_hardware")}

PROVISIONER = Actor("provisioner")
NO_GPU = "no machine here can have 48 GB of VRAM"
CASES = [
    Case([], submit(), CLIENT, JobSubmitted(**meta(), **nested(SPEC)), "pending"),
    Case(HISTORY["failed"], submit(requires_vram_gb=80), CLIENT,
         JobReset(**meta(), **nested({**SPEC, "requires_vram_gb": 80})), "pending"),
    Case(HISTORY["canceled"], submit(), CLIENT, JobReset(**meta(), **nested(SPEC)), "pending"),
    Case(HISTORY["completed"], RestartJob(), CLIENT, JobReset(**meta(), **nested(SPEC)), "pending"),
    Case(HISTORY["pending"], submit(docker_image="img:v2"), CLIENT,
         JobRequirementsChanged(**meta(), job_id=JOB, **{**PLACEMENT, "docker_image": "img:v2"}),
         "pending"),
    Case(HISTORY["in_progress"], submit(allowed_hardware=["1x H200"]), CLIENT,
         JobRequirementsChanged(**meta(), job_id=JOB,
                                **{**PLACEMENT, "allowed_hardware": ["1x H200"]}),
         "in_progress"),
    Case(HISTORY["completed"], submit(script="python train.py --v2"), CLIENT,
         JobRequirementsChanged(**meta(), job_id=JOB,
                                **{**PLACEMENT, "script": "python train.py --v2"}),
         "completed"),
    Case(HISTORY["pending"], AssignJob(worker_id=W2, run_id="r9"), SCHEDULER,
         JobAssigned(**meta(SCHEDULER), job_id=JOB, worker_id=W2, run_id="r9"), "in_progress"),
    Case(HISTORY["in_progress"], StartRun(run_id="r1", worker_id=W1), A1,
         RunStarted(**meta(A1), job_id=JOB, run_id="r1", worker_id=W1), "in_progress"),
    Case(HISTORY["in_progress"], CompleteRun(run_id="r1", worker_id=W1, log_file="f-log"), A1,
         JobCompleted(**meta(A1), job_id=JOB, run_id="r1", worker_id=W1, log_file="f-log"),
         "completed"),
    Case(HISTORY["in_progress"], FailRun(run_id="r1", worker_id=W1, error="OOM", exit_code=137),
         A1, JobFailed(**meta(A1), job_id=JOB, run_id="r1", worker_id=W1, error="OOM",
                       exit_code=137), "failed"),
    Case(HISTORY["pending"], CancelJob(), CLIENT,
         JobCanceled(**meta(), job_id=JOB, run_id=None, reason="requested"), "canceled"),
    Case(HISTORY["in_progress"], CancelJob(reason="no longer needed"), CLIENT,
         JobCanceled(**meta(), job_id=JOB, run_id="r1", reason="no longer needed"), "canceled"),
    Case(HISTORY["in_progress"], RequeueJob(run_id="r1", worker_id=W1, run_status="canceled",
                                            reason="worker restarted"), A1,
         JobRequeued(**meta(A1), job_id=JOB, run_id="r1", worker_id=W1, run_status="canceled",
                     reason="worker restarted"), "pending"),
    Case(HISTORY["completed"], STORE, A1, STORED, "completed"),
    Case(HISTORY["failed"], STORE, A1, STORED, "failed"),
    Case(HISTORY["canceled"], STORE, A1, STORED, "canceled"),
    Case([submitted(), assigned(), requeued()], STORE, A1, STORED, "pending"),
    Case(HISTORY["in_progress"], STORE, A1, STORED, "in_progress"),
    Case(HISTORY["pending"], ExtendJobTimeout(timeout=LATER), CLIENT,
         JobTimeoutExtended(**meta(), job_id=JOB, timeout=LATER), "pending"),
    Case(HISTORY["in_progress"], ExtendJobTimeout(timeout=LATER), CLIENT,
         JobTimeoutExtended(**meta(), job_id=JOB, timeout=LATER), "in_progress"),
    Case(HISTORY["pending"], NoteWaitReason(reason=NO_GPU), PROVISIONER,
         JobWaitReasonChanged(**meta(PROVISIONER), job_id=JOB, reason=NO_GPU), "pending"),
]


def key(case: Case) -> tuple[str | None, type[Event]]:
    return status(given(*case.given)), type(case.then)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{key(c)[0]}-{key(c)[1].__name__}")
def test_transition(case: Case) -> None:
    state = given(*case.given)
    events = when(state, case.when, case.by)
    assert events == [case.then]
    assert status(job.evolve(state, case.then)) == case.status_after
    after = job.TRANSITIONS[key(case)]
    assert case.status_after == (status(state) if after == "*" else after)


def test_every_transition_of_the_table_has_a_case() -> None:
    assert {key(c) for c in CASES} == set(job.TRANSITIONS)


# -- every command in every state ------------------------------------------------------
# ``event``: accepted (its event is checked above); ``noop``: []; ``illegal``:
# IllegalTransition naming state and command; ``fenced``: a stale worker, Fenced.
STATES = list(HISTORY)
MATRIX: list[tuple[JobCommand, Actor, str]] = [
    # absent   pending  in_progress completed failed canceled
    (submit(), CLIENT, "event noop noop noop event event"),
    (RestartJob(), CLIENT, "illegal illegal illegal event event event"),
    # Canceling a canceled job again (a retried request) changes nothing.
    (CancelJob(), CLIENT, "illegal event event illegal illegal noop"),
    (CancelJob(reason="timeout", run_id="r1", worker_id=W1), A1,
     "illegal fenced event fenced fenced fenced"),
    (AssignJob(worker_id=W2, run_id="r2"), SCHEDULER,
     "illegal event illegal illegal illegal illegal"),
    (StartRun(run_id="r1", worker_id=W1), A1, "illegal fenced event fenced fenced fenced"),
    (CompleteRun(run_id="r1", worker_id=W1), A1, "illegal fenced event fenced fenced fenced"),
    (FailRun(run_id="r1", worker_id=W1, error="x"), A1,
     "illegal fenced event fenced fenced fenced"),
    (RequeueJob(run_id="r1", worker_id=W1, run_status="failed", reason="lost"), A1,
     "illegal fenced event fenced fenced fenced"),
    (STORE, A1, "illegal fenced event event event event"),
    (ExtendJobTimeout(timeout=LATER), CLIENT, "illegal event event illegal illegal illegal"),
    (NoteWaitReason(reason=NO_GPU), PROVISIONER,
     "illegal event illegal illegal illegal illegal"),
]
CELLS = [(cmd, by, state, outcome) for cmd, by, row in MATRIX
         for state, outcome in zip(STATES, row.split(), strict=True)]


@pytest.mark.parametrize(("cmd", "by", "state_name", "outcome"), CELLS,
                         ids=[f"{type(c).__name__}-{s}-{o}" for c, _, s, o in CELLS])
def test_command_in_state(cmd: JobCommand, by: Actor, state_name: str | None,
                          outcome: str) -> None:
    state = given(*HISTORY[state_name])
    name = type(cmd).__name__
    if outcome == "illegal":
        with pytest.raises(IllegalTransition) as exc:
            when(state, cmd, by)
        assert exc.value.state == (state_name or "absent") and exc.value.command == name
        assert f"job in state '{state_name or 'absent'}' cannot accept {name}" in str(exc.value)
    elif outcome == "fenced":
        with pytest.raises(Fenced):
            when(state, cmd, by)
    elif outcome == "noop":
        assert when(state, cmd, by) == []
    else:
        events = when(state, cmd, by)
        assert len(events) == 1
        job.evolve(state, events[0])  # whatever decide says, evolve accepts


def test_the_matrix_covers_every_command() -> None:
    assert {type(c) for c, _, _ in MATRIX} == set(get_args(JobCommand))


# -- fencing: a worker speaks only for its job's open run ------------------------------
REASSIGNED = [submitted(), assigned("r1", W1), requeued("r1", W1), assigned("r2", W2)]


def worker_updates(run: str, worker: str) -> list[JobCommand]:
    return [
        StartRun(run_id=run, worker_id=worker),
        CompleteRun(run_id=run, worker_id=worker),
        FailRun(run_id=run, worker_id=worker, error="exit 1"),
        RequeueJob(run_id=run, worker_id=worker, run_status="failed", reason="restarted"),
        CancelJob(reason="timeout", run_id=run, worker_id=worker),
    ]


@pytest.mark.parametrize(
    ("history", "run", "worker"),
    [
        (REASSIGNED, "r1", W1),  # its run was requeued and the job given to another worker
        (REASSIGNED, "r2", W1),  # another worker's run
        (REASSIGNED, "r9", W2),  # a run that never was
        ([submitted(), assigned(), canceled()], "r1", W1),  # the job was canceled
        ([submitted(), assigned(), requeued()], "r1", W1),  # the job was requeued
        ([submitted(), assigned(), failed()], "r1", W1),  # the run already ended
    ],
    ids=["stale-run", "other-worker", "unknown-run", "after-cancel", "after-requeue",
         "after-fail"],
)
def test_a_stale_worker_is_fenced(history: list[Event], run: str, worker: str) -> None:
    state = given(*history)
    for cmd in worker_updates(run, worker):
        with pytest.raises(Fenced) as exc:
            when(state, cmd, agent(worker))
        assert isinstance(exc.value, Conflict) and not isinstance(exc.value, IllegalTransition)
        assert repr(run) in str(exc.value) and repr(worker) in str(exc.value)


def test_the_worker_of_the_open_run_is_heard() -> None:
    state = given(*REASSIGNED)
    for cmd in worker_updates("r2", W2):
        assert len(when(state, cmd, A2)) == 1


def test_a_run_log_is_stored_only_by_its_own_worker() -> None:
    state = given(*REASSIGNED)
    assert when(state, StoreRunLog(run_id="r1", worker_id=W1, log_file="f"), A1) == [
        RunLogStored(**meta(A1), job_id=JOB, run_id="r1", worker_id=W1, log_file="f")]
    for run, worker in [("r1", W2), ("r2", W1), ("r9", W1)]:
        with pytest.raises(Fenced):
            when(state, StoreRunLog(run_id=run, worker_id=worker, log_file="f"), agent(worker))


def test_a_stored_run_log_lands_on_its_run_only() -> None:
    state = given(*REASSIGNED, RunLogStored(at=NOW, by=A1, job_id=JOB, run_id="r1",
                                            worker_id=W1, log_file="f-log-r1"))
    assert state is not None
    assert [(r.id, r.log_file) for r in state.runs] == [("r1", "f-log-r1"), ("r2", None)]
    assert state.status == "in_progress" and state.worker_id == W2


# -- resubmission ----------------------------------------------------------------------
@pytest.mark.parametrize("state_name", ["pending", "in_progress", "completed"])
def test_resubmitting_the_same_job_changes_nothing(state_name: str) -> None:
    assert when(given(*HISTORY[state_name]), submit()) == []


@pytest.mark.parametrize("state_name", ["pending", "in_progress", "completed"])
@pytest.mark.parametrize(
    "change",
    [{"allowed_hardware": ["1x H200", "2x A100"]}, {"allowed_hardware": None},
     {"requires_vram_gb": 80}, {"requires_vram_gb": None}, {"docker_image": "img:v2"},
     {"script": "python train.py --fast"},
     {"docker_image": "img:v3", "requires_vram_gb": 24}],
    ids=lambda c: "+".join(c),
)
def test_resubmitting_with_other_placement_changes_only_those(
    state_name: str, change: dict[str, Any]
) -> None:
    state = given(*HISTORY[state_name])
    assert state is not None
    events = when(state, submit(**change))
    assert events == [JobRequirementsChanged(**meta(), job_id=JOB, **{**PLACEMENT, **change})]
    after = job.evolve(state, events[0])
    assert after == msgspec.structs.replace(
        state, updated_at=NOW, spec=msgspec.structs.replace(state.spec, **change))


@pytest.mark.parametrize("state_name", ["failed", "canceled"])
def test_resubmitting_a_failed_or_canceled_job_resets_it_with_the_new_spec(
    state_name: str,
) -> None:
    state = given(*HISTORY[state_name])
    assert state is not None
    new = {"params": {"epochs": 4}, "docker_image": "img:v2", "timeout": LATER}
    events = when(state, submit(**new))
    assert events == [JobReset(**meta(), **nested({**SPEC, **new}))]
    after = job.evolve(state, events[0])
    assert (after.status, after.worker_id, after.spec.params, after.spec.timeout) == (
        "pending", None, {"epochs": 4}, LATER)
    assert after.runs == state.runs  # the history of runs stays
    assert after.open_run is None


@pytest.mark.parametrize("state_name", ["completed", "failed", "canceled"])
def test_restart_resets_the_job_with_its_current_spec(state_name: str) -> None:
    # The spec as it is now, including requirements changed since the submission.
    changed = JobRequirementsChanged(at=T0, by=CLIENT, job_id=JOB,
                                     **{**PLACEMENT, "requires_vram_gb": 80})
    state = given(submitted(), changed, *HISTORY[state_name][1:])
    assert when(state, RestartJob()) == [
        JobReset(**meta(), **nested({**SPEC, "requires_vram_gb": 80}))]


# -- cancel, requeue, runs -------------------------------------------------------------
def test_cancel_of_a_pending_job_names_no_run() -> None:
    state = given(*HISTORY["pending"])
    [event] = when(state, CancelJob())
    assert event == JobCanceled(**meta(), job_id=JOB, run_id=None, reason="requested")
    after = job.evolve(state, event)
    assert (after.status, after.runs) == ("canceled", ())


def test_cancel_of_a_job_in_progress_cancels_its_open_run() -> None:
    state = given(*HISTORY["in_progress"], started())
    [event] = when(state, CancelJob())
    after = job.evolve(state, event)
    assert after.status == "canceled" and after.open_run is None
    assert [(r.id, r.status, r.updated_at) for r in after.runs] == [("r1", "canceled", NOW)]


def test_a_worker_cancels_its_own_run_when_its_timeout_passed() -> None:
    state = given(*HISTORY["in_progress"], started())
    cmd = CancelJob(reason="timeout", run_id="r1", worker_id=W1)
    assert when(state, cmd, A1) == [
        JobCanceled(**meta(A1), job_id=JOB, run_id="r1", reason="timeout")]


@pytest.mark.parametrize("run_status", ["failed", "canceled"])
def test_requeue_ends_the_run_and_frees_the_job(run_status: Any) -> None:
    state = given(*HISTORY["in_progress"], started())
    [event] = when(state, RequeueJob(run_id="r1", worker_id=W1, run_status=run_status,
                                     reason="worker shut down", log_file="f-log"), A1)
    after = job.evolve(state, event)
    assert (after.status, after.worker_id, after.open_run) == ("pending", None, None)
    [run] = after.runs
    assert (run.status, run.log_file, run.worker_id) == (run_status, "f-log", W1)


def test_runs_are_numbered_by_attempt() -> None:
    state = given(submitted(), assigned("r1", W1), requeued("r1", W1), assigned("r2", W2),
                  failed("r2", W2), JobReset(at=T0, by=CLIENT, **nested(SPEC)), assigned("r3", W1))
    assert state is not None
    assert [(r.id, r.attempt, r.worker_id, r.status) for r in state.runs] == [
        ("r1", 1, W1, "failed"), ("r2", 2, W2, "failed"), ("r3", 3, W1, "in_progress")]
    assert state.open_run == state.run("r3")
    assert state.worker_id == W1


def test_assigning_opens_a_run_on_the_worker() -> None:
    state = given(*HISTORY["pending"])
    after = job.evolve(state, JobAssigned(**meta(SCHEDULER), job_id=JOB, worker_id=W2,
                                          run_id="r7"))
    assert after.worker_id == W2
    assert after.open_run == job.RunState(id="r7", job_id=JOB, attempt=1, worker_id=W2,
                                          status="in_progress", created_at=NOW, updated_at=NOW)


def test_start_marks_the_run_started_once() -> None:
    state = given(*HISTORY["in_progress"])
    [event] = when(state, StartRun(run_id="r1", worker_id=W1), A1)
    after = job.evolve(state, event)
    assert after.open_run is not None and after.open_run.started_at == NOW
    assert when(after, StartRun(run_id="r1", worker_id=W1), A1) == []  # a retried start


@pytest.mark.parametrize(("end", "run_status"), [(completed, "completed"), (failed, "failed")])
def test_the_end_of_the_run_is_the_end_of_the_job(end: Any, run_status: str) -> None:
    state = given(*HISTORY["in_progress"], started(), end())
    assert state is not None
    assert state.status == run_status and state.worker_id == W1  # who ran it stays known
    assert [r.status for r in state.runs] == [run_status]


def test_extending_to_the_same_timeout_changes_nothing() -> None:
    state = given(submitted(timeout=LATER))
    assert when(state, ExtendJobTimeout(timeout=LATER)) == []
    assert when(state, ExtendJobTimeout(timeout=None)) == [
        JobTimeoutExtended(**meta(), job_id=JOB, timeout=None)]


def test_evolve_refuses_an_impossible_history() -> None:
    with pytest.raises(IllegalTransition, match=r"'absent' cannot accept job\.assigned/1"):
        job.evolve(None, assigned())
    with pytest.raises(IllegalTransition, match=r"'completed' cannot accept job\.completed/1"):
        given(*HISTORY["completed"], completed())


# -- why a pending job waits -------------------------------------------------------------
def test_a_wait_reason_is_an_event_only_when_it_changes_and_ends_with_the_wait() -> None:
    noted = JobWaitReasonChanged(**meta(PROVISIONER), job_id=JOB, reason=NO_GPU)
    state = given(submitted(), noted)
    assert state is not None and state.wait_reason == NO_GPU
    assert state.updated_at == T0  # its place in the queue keeps
    assert when(state, NoteWaitReason(reason=NO_GPU), PROVISIONER) == []
    assert when(state, NoteWaitReason(reason=None), PROVISIONER) == [
        JobWaitReasonChanged(**meta(PROVISIONER), job_id=JOB, reason=None)]
    for then in (assigned(), JobCanceled(**meta(), job_id=JOB)):
        after = job.evolve(state, then)
        assert after.wait_reason is None  # it no longer waits
    again = given(submitted(), noted, assigned(), requeued())
    assert again is not None and again.status == "pending" and again.wait_reason is None
