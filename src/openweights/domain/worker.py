"""The worker aggregate: one machine running one agent.

- ``starting``: the provisioner asked a backend for a machine; no agent yet.
- ``active``: its agent registered and heartbeats; it may be assigned jobs.
- ``shutdown``: asked to stop (idle, TTL, failures, operator) or stopped itself;
  takes no new work.
- ``terminated``: its machine is gone. Final: anything a terminated worker says is refused.

A worker declared lost (silent past its deadline) goes to ``shutdown``: its runs were
failed and its jobs requeued, so its late updates are fenced; the provisioner then
releases its machine (``terminated``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

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

WorkerStatus = Literal["starting", "active", "shutdown", "terminated"]

TRANSITIONS: dict[tuple[str | None, type[Event]], str] = {
    (None, WorkerRequested): "starting",
    (None, WorkerRegistered): "active",  # an unmanaged agent started by hand
    ("starting", WorkerMachineStarted): "*",
    ("starting", WorkerMachineFailed): "terminated",
    ("starting", WorkerRegistered): "active",
    ("active", WorkerRegistered): "active",  # restart under the same id
    ("starting", WorkerShutdownRequested): "shutdown",
    ("active", WorkerShutdownRequested): "shutdown",
    ("starting", WorkerStopped): "shutdown",
    ("active", WorkerStopped): "shutdown",
    ("shutdown", WorkerStopped): "shutdown",
    ("starting", WorkerLost): "shutdown",
    ("active", WorkerLost): "shutdown",
    ("shutdown", WorkerLost): "shutdown",
    ("starting", WorkerTerminated): "terminated",
    ("active", WorkerTerminated): "terminated",
    ("shutdown", WorkerTerminated): "terminated",
    ("starting", WorkerTTLExtended): "*",
    ("active", WorkerTTLExtended): "*",
}


class WorkerState(msgspec.Struct, frozen=True, gc=False):
    id: str
    org: str
    status: WorkerStatus
    created_at: datetime
    updated_at: datetime
    managed: bool = True
    backend: str | None = None
    docker_image: str | None = None
    hardware_type: str | None = None
    gpu_type: str | None = None
    gpu_count: int = 0
    vram_gb: int = 0
    machine_id: str | None = None
    price_per_hour: float = 0.0  # USD, recorded when its machine started
    # Its machine's lifetime, what it is billed for: machine started .. terminated.
    machine_started_at: datetime | None = None
    machine_ended_at: datetime | None = None
    ttl_until: datetime | None = None
    log_file: str | None = None
    reason: str | None = None  # why it was requested, or why it stopped


def _status(state: WorkerState | None) -> str | None:
    return None if state is None else state.status


def _event_for(state: WorkerState | None, cmd: WorkerCommand, meta: dict[str, Any]) -> Event:
    wid = state.id if state is not None else getattr(cmd, "worker_id", "")
    match cmd:
        case RequestWorker():
            return WorkerRequested(**meta, **msgspec.structs.asdict(cmd))
        case RegisterWorker():
            return WorkerRegistered(**meta, **msgspec.structs.asdict(cmd))
        case RecordMachineStarted(machine_id=machine_id, price_per_hour=price):
            return WorkerMachineStarted(**meta, worker_id=wid, machine_id=machine_id,
                                        price_per_hour=price)
        case RecordMachineFailed(error=error):
            return WorkerMachineFailed(**meta, worker_id=wid, error=error)
        case RequestShutdown(reason=reason):
            return WorkerShutdownRequested(**meta, worker_id=wid, reason=reason)
        case ReportStopped(reason=reason, log_file=log_file):
            return WorkerStopped(**meta, worker_id=wid, reason=reason, log_file=log_file)
        case DeclareLost(last_seen=last_seen, reason=reason):
            return WorkerLost(**meta, worker_id=wid, last_seen=last_seen, reason=reason)
        case TerminateWorker(reason=reason):
            return WorkerTerminated(**meta, worker_id=wid, reason=reason)
        case ExtendWorkerTTL(ttl_until=ttl_until):
            return WorkerTTLExtended(**meta, worker_id=wid, ttl_until=ttl_until)
    raise TypeError(f"not a worker command: {cmd!r}")


def decide(
    state: WorkerState | None, cmd: WorkerCommand, now: datetime, by: Actor
) -> list[Event]:
    event = _event_for(state, cmd, {"at": now, "by": by})
    if (_status(state), type(event)) not in TRANSITIONS:
        # Repeating a request that already took effect is not an error.
        if state is not None and (
            (isinstance(cmd, RequestShutdown) and state.status in ("shutdown", "terminated"))
            or (isinstance(cmd, TerminateWorker | DeclareLost) and state.status == "terminated")
            or (isinstance(cmd, ReportStopped) and state.status == "terminated")
        ):
            return []
        raise IllegalTransition("worker", str(_status(state) or "absent"), type(cmd).__name__)
    return [event]


def evolve(state: WorkerState | None, event: Event) -> WorkerState:
    after = TRANSITIONS.get((_status(state), type(event)))
    if after is None:
        raise IllegalTransition("worker", str(_status(state) or "absent"), event.tag)
    at = event.at
    if state is None:
        if isinstance(event, WorkerRequested):
            return WorkerState(id=event.worker_id, org=event.org, status="starting",
                               created_at=at, updated_at=at, managed=event.managed,
                               backend=event.backend, docker_image=event.docker_image,
                               hardware_type=event.hardware, reason=event.reason)
        assert isinstance(event, WorkerRegistered)
        state = WorkerState(id=event.worker_id, org=event.org, status="active",
                            created_at=at, updated_at=at)
    status = state.status if after == "*" else after
    r = msgspec.structs.replace
    match event:
        case WorkerRegistered():
            return r(state, status=status, updated_at=at, managed=event.managed,
                     docker_image=event.docker_image, hardware_type=event.hardware_type,
                     gpu_type=event.gpu_type, gpu_count=event.gpu_count,
                     vram_gb=event.vram_gb, ttl_until=event.ttl_until)
        case WorkerMachineStarted():
            return r(state, machine_id=event.machine_id, price_per_hour=event.price_per_hour,
                     machine_started_at=at, updated_at=at)
        case WorkerMachineFailed():
            return r(state, status=status, reason=event.error, updated_at=at)
        case WorkerTerminated():
            ended = at if state.machine_started_at is not None else None
            return r(state, status=status, reason=event.reason, updated_at=at,
                     machine_ended_at=ended)
        case WorkerShutdownRequested() | WorkerLost():
            return r(state, status=status, reason=event.reason, updated_at=at)
        case WorkerStopped():
            return r(state, status=status, reason=event.reason, updated_at=at,
                     log_file=event.log_file or state.log_file)
        case WorkerTTLExtended():
            return r(state, ttl_until=event.ttl_until, updated_at=at)
    raise TypeError(f"not a worker event: {event!r}")
