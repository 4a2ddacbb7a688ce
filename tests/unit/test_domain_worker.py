"""The worker aggregate: given events, when a command, then events (or a typed refusal)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest

from openweights.domain import worker
from openweights.domain.commands import (
    DeclareLost,
    ExtendWorkerTTL,
    RecordMachineFailed,
    RecordMachineStarted,
    RegisterWorker,
    ReportStopped,
    RequestShutdown,
    RequestWorker,
    TerminateWorker,
    WorkerCommand,
)
from openweights.domain.worker import WorkerState
from openweights.errors import IllegalTransition
from openweights.events import (
    Actor,
    Event,
    WorkerLost,
    WorkerMachineFailed,
    WorkerMachineStarted,
    WorkerRegistered,
    WorkerRequested,
    WorkerShutdownRequested,
    WorkerStopped,
    WorkerTerminated,
    WorkerTTLExtended,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
TTL = NOW + timedelta(hours=4)
WID = "worker-1"
PROVISIONER, AGENT = Actor("provisioner", "prov-0"), Actor("agent", WID)
REQUEST: dict[str, Any] = {"worker_id": WID, "org": "org-a", "backend": "runpod",
                           "hardware": "1x H100S", "docker_image": "img:v1",
                           "reason": "1 pending job", "managed": True}
REGISTER: dict[str, Any] = {"worker_id": WID, "org": "org-a", "docker_image": "img:v1",
                            "hardware_type": "1x H100S", "gpu_type": "H100S", "gpu_count": 1,
                            "vram_gb": 80, "managed": True, "ttl_until": None}


def requested() -> WorkerRequested:
    return WorkerRequested(at=T0, by=PROVISIONER, **REQUEST)


def registered(**changes: Any) -> WorkerRegistered:
    return WorkerRegistered(at=T0, by=AGENT, **{**REGISTER, **changes})


HISTORY: dict[str | None, list[Event]] = {
    None: [],
    "starting": [requested()],
    "active": [requested(), registered()],
    "shutdown": [requested(), registered(),
                 WorkerShutdownRequested(at=T0, by=PROVISIONER, worker_id=WID, reason="idle")],
    "terminated": [requested(), registered(),
                   WorkerTerminated(at=T0, by=PROVISIONER, worker_id=WID, reason="released")],
}


def given(*events: Event) -> WorkerState | None:
    state: WorkerState | None = None
    for event in events:
        state = worker.evolve(state, event)
    return state


def when(state: WorkerState | None, cmd: WorkerCommand, by: Actor = PROVISIONER) -> list[Event]:
    return worker.decide(state, cmd, NOW, by)


def status(state: WorkerState | None) -> str | None:
    return None if state is None else state.status


def meta(by: Actor = PROVISIONER) -> dict[str, Any]:
    return {"at": NOW, "by": by}


# -- every transition of the table -----------------------------------------------------
@dataclass(frozen=True)
class Case:
    given: str | None  # a state of HISTORY
    when: WorkerCommand
    by: Actor
    then: Event
    status_after: str


SHUTDOWN = RequestShutdown(reason="idle for 600s")
STOPPED = ReportStopped(reason="ttl reached", log_file="f-log")
LOST = DeclareLost(last_seen=T0, reason="no heartbeat for 120s")
TERMINATE = TerminateWorker(reason="pod released")
EXTEND = ExtendWorkerTTL(ttl_until=TTL)


def shutdown_requested() -> Event:
    return WorkerShutdownRequested(**meta(), worker_id=WID, reason="idle for 600s")


def stopped() -> Event:
    return WorkerStopped(**meta(AGENT), worker_id=WID, reason="ttl reached", log_file="f-log")


def lost() -> Event:
    return WorkerLost(**meta(), worker_id=WID, last_seen=T0, reason="no heartbeat for 120s")


def terminated() -> Event:
    return WorkerTerminated(**meta(), worker_id=WID, reason="pod released")


def ttl_extended() -> Event:
    return WorkerTTLExtended(**meta(), worker_id=WID, ttl_until=TTL)


UNMANAGED = {**REGISTER, "managed": False}
CASES = [
    Case(None, RequestWorker(**REQUEST), PROVISIONER,
         WorkerRequested(**meta(), **REQUEST), "starting"),
    Case(None, RegisterWorker(**UNMANAGED), AGENT,
         WorkerRegistered(**meta(AGENT), **UNMANAGED), "active"),
    Case("starting", RecordMachineStarted(machine_id="pod-x8kq"), PROVISIONER,
         WorkerMachineStarted(**meta(), worker_id=WID, machine_id="pod-x8kq"), "starting"),
    Case("starting", RecordMachineFailed(error="no capacity"), PROVISIONER,
         WorkerMachineFailed(**meta(), worker_id=WID, error="no capacity"), "terminated"),
    Case("starting", RegisterWorker(**REGISTER), AGENT,
         WorkerRegistered(**meta(AGENT), **REGISTER), "active"),
    Case("active", RegisterWorker(**REGISTER), AGENT,
         WorkerRegistered(**meta(AGENT), **REGISTER), "active"),
    Case("starting", SHUTDOWN, PROVISIONER, shutdown_requested(), "shutdown"),
    Case("active", SHUTDOWN, PROVISIONER, shutdown_requested(), "shutdown"),
    Case("starting", STOPPED, AGENT, stopped(), "shutdown"),
    Case("active", STOPPED, AGENT, stopped(), "shutdown"),
    Case("shutdown", STOPPED, AGENT, stopped(), "shutdown"),
    Case("starting", LOST, PROVISIONER, lost(), "shutdown"),
    Case("active", LOST, PROVISIONER, lost(), "shutdown"),
    Case("shutdown", LOST, PROVISIONER, lost(), "shutdown"),
    Case("starting", TERMINATE, PROVISIONER, terminated(), "terminated"),
    Case("active", TERMINATE, PROVISIONER, terminated(), "terminated"),
    Case("shutdown", TERMINATE, PROVISIONER, terminated(), "terminated"),
    Case("starting", EXTEND, PROVISIONER, ttl_extended(), "starting"),
    Case("active", EXTEND, PROVISIONER, ttl_extended(), "active"),
]


def key(case: Case) -> tuple[str | None, type[Event]]:
    return case.given, type(case.then)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.given}-{type(c.then).__name__}")
def test_transition(case: Case) -> None:
    state = given(*HISTORY[case.given])
    assert status(state) == case.given
    assert when(state, case.when, case.by) == [case.then]
    assert status(worker.evolve(state, case.then)) == case.status_after
    after = worker.TRANSITIONS[key(case)]
    assert case.status_after == (case.given if after == "*" else after)


def test_every_transition_of_the_table_has_a_case() -> None:
    assert {key(c) for c in CASES} == set(worker.TRANSITIONS)


# -- every command in every state ------------------------------------------------------
STATES = list(HISTORY)
MATRIX: list[tuple[WorkerCommand, str]] = [
    # absent  starting active shutdown terminated
    (RequestWorker(**REQUEST), "event illegal illegal illegal illegal"),
    (RegisterWorker(**REGISTER), "event event event illegal illegal"),
    (RecordMachineStarted(machine_id="pod-1"), "illegal event illegal illegal illegal"),
    (RecordMachineFailed(error="boom"), "illegal event illegal illegal illegal"),
    (SHUTDOWN, "illegal event event noop noop"),
    (STOPPED, "illegal event event event noop"),
    (LOST, "illegal event event event noop"),
    (TERMINATE, "illegal event event event noop"),
    (EXTEND, "illegal event event illegal illegal"),
]
CELLS = [(cmd, state, outcome) for cmd, row in MATRIX
         for state, outcome in zip(STATES, row.split(), strict=True)]


@pytest.mark.parametrize(("cmd", "state_name", "outcome"), CELLS,
                         ids=[f"{type(c).__name__}-{s}-{o}" for c, s, o in CELLS])
def test_command_in_state(cmd: WorkerCommand, state_name: str | None, outcome: str) -> None:
    state = given(*HISTORY[state_name])
    name = type(cmd).__name__
    if outcome == "illegal":
        with pytest.raises(IllegalTransition) as exc:
            when(state, cmd)
        assert exc.value.state == (state_name or "absent") and exc.value.command == name
        assert f"worker in state '{state_name or 'absent'}' cannot accept {name}" in str(
            exc.value)
    elif outcome == "noop":
        assert when(state, cmd) == []  # it already took effect, or comes too late to matter
    else:
        [event] = when(state, cmd)
        assert event.worker_id == WID
        worker.evolve(state, event)


def test_the_matrix_covers_every_command() -> None:
    assert {type(c) for c, _ in MATRIX} == set(get_args(WorkerCommand))


# -- what each event records -----------------------------------------------------------
def test_a_requested_worker_remembers_why_and_where() -> None:
    state = given(requested(), WorkerMachineStarted(at=NOW, by=PROVISIONER, worker_id=WID,
                                                    machine_id="pod-x8kq", price_per_hour=2.99))
    assert state == WorkerState(id=WID, org="org-a", status="starting", created_at=T0,
                                updated_at=NOW, managed=True, backend="runpod",
                                docker_image="img:v1", hardware_type="1x H100S",
                                machine_id="pod-x8kq", reason="1 pending job",
                                price_per_hour=2.99, machine_started_at=NOW)


def test_a_machine_is_billed_from_its_start_to_its_termination() -> None:
    started = given(requested(), WorkerMachineStarted(at=NOW, by=PROVISIONER, worker_id=WID,
                                                      machine_id="pod-x8kq",
                                                      price_per_hour=2.99))
    later = NOW + timedelta(hours=2)
    ended = worker.evolve(started, WorkerTerminated(at=later, by=PROVISIONER, worker_id=WID,
                                                    reason="idle"))
    assert (ended.machine_started_at, ended.machine_ended_at) == (NOW, later)
    # A machine that never started (failed, or an agent joined by hand) has no lifetime.
    never = worker.evolve(given(requested()), WorkerTerminated(
        at=later, by=PROVISIONER, worker_id=WID, reason="gone"))
    assert never.machine_started_at is None and never.machine_ended_at is None


def test_registration_records_the_machine_and_keeps_the_backend() -> None:
    state = given(requested(), registered(gpu_count=2, vram_gb=160, ttl_until=TTL))
    assert state is not None
    assert (state.status, state.backend, state.gpu_type, state.gpu_count, state.vram_gb,
            state.ttl_until) == ("active", "runpod", "H100S", 2, 160, TTL)


def test_an_unmanaged_agent_registers_without_being_requested() -> None:
    state = given(registered(managed=False))
    assert state is not None
    assert (state.status, state.managed, state.backend, state.created_at) == (
        "active", False, None, T0)


def test_a_restarted_agent_registers_again_under_the_same_id() -> None:
    state = given(*HISTORY["active"], registered(docker_image="img:v2", vram_gb=48))
    assert state is not None
    assert (state.status, state.docker_image, state.vram_gb) == ("active", "img:v2", 48)


def test_a_failed_machine_ends_terminated_with_its_error() -> None:
    state = given(requested(), WorkerMachineFailed(at=NOW, by=PROVISIONER, worker_id=WID,
                                                   error="no capacity"))
    assert state is not None
    assert (state.status, state.reason, state.updated_at) == ("terminated", "no capacity", NOW)


def test_a_stop_without_a_log_keeps_the_log_it_had() -> None:
    state = given(*HISTORY["active"], stopped(),
                  WorkerStopped(at=NOW, by=AGENT, worker_id=WID, reason="again"))
    assert state is not None
    assert (state.status, state.log_file, state.reason) == ("shutdown", "f-log", "again")


def test_a_lost_worker_is_shut_down_until_its_machine_is_released() -> None:
    state = given(*HISTORY["active"], lost())
    assert state is not None
    assert (state.status, state.reason) == ("shutdown", "no heartbeat for 120s")
    with pytest.raises(IllegalTransition):  # it takes no new work, even if it comes back
        when(state, EXTEND)
    [event] = when(state, TERMINATE)
    released = worker.evolve(state, event)
    assert released.status == "terminated"
    assert when(released, STOPPED, AGENT) == []  # its agent's last words change nothing


def test_ttl_extension_moves_the_deadline() -> None:
    state = given(*HISTORY["active"], ttl_extended())
    assert state is not None and state.ttl_until == TTL


def test_evolve_refuses_an_impossible_history() -> None:
    with pytest.raises(IllegalTransition, match=r"'terminated' cannot accept worker\.reg"):
        given(*HISTORY["terminated"], registered())
    with pytest.raises(IllegalTransition, match=r"'absent' cannot accept worker\.lost/1"):
        worker.evolve(None, lost())
