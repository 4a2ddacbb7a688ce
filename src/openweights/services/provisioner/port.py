"""The port between the provisioner and whatever starts machines.

A backend starts a machine that runs one agent for ``worker_id`` and can stop it; the
``local`` backend starts agent processes here, the RunPod backend starts pods. Every
backend passes the contract tests in ``tests/contract/test_machine_backend.py``.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

from openweights.errors import OpenWeightsError


class MachineSpec(msgspec.Struct, frozen=True, kw_only=True):
    worker_id: str
    org: str
    hardware: str  # "2x H100S", or "cpu"
    docker_image: str
    env: dict[str, str] = {}


# Why a start failed, which decides what the provisioner does next: ``hardware`` (no
# capacity, a refused or broken machine) counts towards that hardware's cooldown and the
# next option is tried; ``spending_limit`` pauses every start; ``credentials`` pauses
# the organization until its key changes; ``unavailable`` (the provider did not answer)
# ends this pass's starts for the organization.
FailureKind = Literal["hardware", "spending_limit", "credentials", "unavailable"]


class MachineStartFailed(OpenWeightsError):
    """The backend could not start a machine; ``kind`` says whose fault it was."""

    code = "machine_start_failed"

    def __init__(self, message: str, *, kind: FailureKind = "hardware",
                 spending_limit: bool = False) -> None:
        super().__init__(message)
        self.kind: FailureKind = "spending_limit" if spending_limit else kind

    @property
    def spending_limit(self) -> bool:
        return self.kind == "spending_limit"


class Fleet(Protocol):
    """What the provisioner knows of its workers, for a backend that tidies up."""

    def organizations(self) -> list[str]:
        """Organizations that have or may have machines."""
        ...

    def owns(self, org: str, worker_id: str, machine_id: str) -> bool:
        """Whether a live worker (not terminated) owns that machine, or may still
        record it as its own (its start is under way)."""
        ...


class MachineBackend(Protocol):
    name: str

    def hardware_options(self, required_vram_gb: int | None,
                         allowed_hardware: list[str] | None) -> list[str]:
        """Hardware this backend can start for such a need, preferred first ([] = none).

        A bigger need only removes options; with ``allowed_hardware`` the result is what
        of that list this backend can start, in the caller's order, whatever the need."""
        ...

    def price_per_hour(self, hardware: str) -> float:
        """USD per hour a machine of ``hardware`` costs while it lives (its catalog
        price at start; recorded in ``WorkerMachineStarted``)."""
        ...

    async def start(self, spec: MachineSpec) -> str:
        """Start a machine that runs an agent for ``spec.worker_id``; returns its id, which
        another instance of the backend (a restarted provisioner) understands too.

        Raises :class:`MachineStartFailed`, whatever kept the machine from starting."""
        ...

    async def stop(self, machine_id: str) -> None:
        """Release the machine (idempotent: stopping a gone machine is fine)."""
        ...

    async def alive(self, machine_id: str) -> bool:
        """Whether the machine still runs: False once it is gone, or if it never was."""
        ...

    async def maintain(self, fleet: Fleet) -> None:
        """Background upkeep for as long as the provisioner runs (refreshing what the
        backend offers, releasing machines no worker owns); returns at once if none."""
        ...

    async def close(self) -> None:
        """Release every machine this instance started: politely, then by force once
        the backend's grace is over."""
        ...
