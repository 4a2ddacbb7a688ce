"""Events of the worker aggregate (one machine running one agent).

States users of the original know: ``starting`` (machine requested), ``active``
(agent registered), ``shutdown`` (asked to stop, stopped itself, or declared lost),
``terminated`` (machine released).
"""

from __future__ import annotations

from datetime import datetime

from openweights.events.base import Event


class WorkerRequested(Event, frozen=True, tag="worker.requested/1"):
    """The provisioner decided to start a machine; ``reason`` says which demand."""

    worker_id: str
    org: str
    backend: str
    hardware: str
    docker_image: str
    reason: str
    managed: bool = True


class WorkerMachineStarted(Event, frozen=True, tag="worker.machine_started/2"):
    """The backend started the machine. ``price_per_hour`` (USD) is what it costs while it
    lives, from the hardware catalog at start; costs are projected from it (version 1 had
    no price and is upcast to 0: machines started before prices were recorded cost nothing).
    """

    worker_id: str
    machine_id: str
    price_per_hour: float = 0.0


class WorkerMachineFailed(Event, frozen=True, tag="worker.machine_failed/1"):
    """The backend could not start the machine; the worker ends terminated."""

    worker_id: str
    error: str


class WorkerRegistered(Event, frozen=True, tag="worker.registered/1"):
    """The agent is up: what it found on its machine. Also sent on restart (same id)."""

    worker_id: str
    org: str
    docker_image: str
    hardware_type: str
    gpu_type: str | None
    gpu_count: int
    vram_gb: int
    managed: bool
    ttl_until: datetime | None = None


class WorkerShutdownRequested(Event, frozen=True, tag="worker.shutdown_requested/1"):
    worker_id: str
    reason: str


class WorkerStopped(Event, frozen=True, tag="worker.stopped/1"):
    """The agent stopped itself (graceful shutdown, TTL, too many failures)."""

    worker_id: str
    reason: str
    log_file: str | None = None


class WorkerLost(Event, frozen=True, tag="worker.lost/1"):
    """Silent past its deadline (status ``shutdown``); its jobs are requeued separately."""

    worker_id: str
    last_seen: datetime | None
    reason: str


class WorkerTerminated(Event, frozen=True, tag="worker.terminated/1"):
    """The machine was released by the provisioner."""

    worker_id: str
    reason: str


class WorkerTTLExtended(Event, frozen=True, tag="worker.ttl_extended/1"):
    worker_id: str
    ttl_until: datetime


WORKER_EVENTS = (
    WorkerRequested, WorkerMachineStarted, WorkerMachineFailed, WorkerRegistered,
    WorkerShutdownRequested, WorkerStopped, WorkerLost, WorkerTerminated, WorkerTTLExtended,
)
