"""The port between the provisioner and whatever starts machines.

A backend starts a machine that runs one agent for ``worker_id`` and can stop it; the
``local`` backend starts agent processes here, the RunPod backend starts pods. Every
backend passes the contract tests in ``tests/contract/test_machine_backend.py``.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from openweights.errors import OpenWeightsError


class MachineSpec(msgspec.Struct, frozen=True, kw_only=True):
    worker_id: str
    org: str
    hardware: str  # "2x H100S", or "cpu"
    docker_image: str
    env: dict[str, str] = {}


class MachineStartFailed(OpenWeightsError):
    """The backend could not start a machine; the provisioner tries other hardware later.

    ``spending_limit`` marks provider refusals for money, which pause all starts instead
    of penalising the hardware type."""

    code = "machine_start_failed"

    def __init__(self, message: str, *, spending_limit: bool = False) -> None:
        super().__init__(message)
        self.spending_limit = spending_limit


class MachineBackend(Protocol):
    name: str

    def hardware_options(self, required_vram_gb: int | None,
                         allowed_hardware: list[str] | None) -> list[str]:
        """Hardware this backend can start for such a need, preferred first ([] = none).

        A bigger need only removes options; with ``allowed_hardware`` the result is what
        of that list this backend can start, in the caller's order, whatever the need."""
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

    async def close(self) -> None:
        """Release every machine this instance started: politely, then by force once
        the backend's grace is over."""
        ...
