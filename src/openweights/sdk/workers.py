"""``aow.workers``: your organization's machines (what `ow workers` lists).

Every method may raise ``StackUnavailable`` / ``Unavailable`` when the service cannot be
reached (after retrying).
"""

from __future__ import annotations

from typing import TypedDict

from openweights.sdk.transport import Transport


class WorkerInfo(TypedDict):
    id: str
    status: str  # starting | active | shutdown | terminated
    managed: bool  # started by the provisioner (False: joined by hand, `ow worker`)
    backend: str | None
    docker_image: str | None
    hardware_type: str | None
    gpu_type: str | None
    gpu_count: int
    vram_gb: int
    reason: str | None  # why it stopped, once it has
    current_job: str | None  # the job it runs now
    created_at: str
    updated_at: str


class AsyncWorkers:
    """Machines that run your organization's jobs."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    async def list(self, limit: int = 100, ended: bool = False) -> list[WorkerInfo]:
        """Machines, newest first, each with the job it runs now; shut-down and
        terminated ones only with ``ended``. Raises ``InvalidRequest`` for a limit
        outside 1..1000."""
        result: list[WorkerInfo] = await self._t.call("workers.list", read=True, limit=limit,
                                                      ended=ended)
        return result
