"""Everything the agent asks of the api service, typed, in one place.

The agent speaks to the api only through :class:`AgentApi`: the ``agent.*`` endpoints,
the three file operations (the SDK's public ``files.download``, ``files.create`` and
``files.upload``), and the NATS connection its log lines and heartbeats go out on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from nats.aio.client import Client

from openweights.config import Settings
from openweights.errors import Conflict, InvalidRequest, NotFound
from openweights.sdk.client import AsyncOpenWeights
from openweights.sdk.transport import Transport
from openweights.services.agent.gpu import HardwareInfo
from openweights.services.agent.reporting import Outcome
from openweights.subjects import Subjects

__all__ = ["REFUSED", "AgentApi", "Send", "Started"]

# The api refused to start an assigned run: it is stale (canceled, reassigned) or names
# no job of ours. Either way there is nothing to run; the agent drops it and goes on.
REFUSED = (Conflict, NotFound, InvalidRequest)

# Sends ``endpoint`` a request of ``fields`` (plus the worker id); returns the reply.
Send = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Started:
    """The api's reply to a run's start: the version of the org's secrets, and the
    secrets themselves unless the agent holds that version already."""

    secrets_seq: int
    secrets: dict[str, str] | None


class AgentApi:
    """The api service as this worker sees it. Every method may raise
    :class:`~openweights.errors.Unavailable` once the api stayed away past the
    transport's retries, besides what it lists.

    ``send``: the one function every ``agent.*`` request passes through (default
    :meth:`request`); the agent routes it through its own ``call``, which tests observe.
    """

    def __init__(self, settings: Settings, worker_id: str, send: Send | None = None) -> None:
        self._ow = AsyncOpenWeights(settings=settings)
        self.transport: Transport = self._ow.transport
        self.worker_id = worker_id
        self._send: Send = send or self.request

    @property
    def org(self) -> str:
        return self.transport.org

    @property
    def subjects(self) -> Subjects:
        return self.transport.subjects

    async def connect(self) -> Client:
        """The NATS connection (opened on first use) for log lines and heartbeats."""
        return await self.transport.connect()

    def give_up_after(self, seconds: float) -> None:
        """Retry a request through an outage for at most ``seconds`` from now on (the
        agent is stopping: it must not linger)."""
        self.transport.retry_for_s = min(self.transport.retry_for_s, seconds)

    async def close(self) -> None:
        await self._ow.close()

    async def request(self, endpoint: str, **fields: Any) -> Any:
        """``endpoint`` with ``fields`` and this worker's id; the reply's result."""
        return await self.transport.call(endpoint, worker_id=self.worker_id, **fields)

    # -- agent.* -------------------------------------------------------------------------
    async def register(self, docker_image: str, hardware: HardwareInfo, *, managed: bool,
                       ttl_until: datetime) -> list[str]:
        """Register this worker; returns the jobs it held before (a restart under the
        same id), which the api has put back in the queue. Raises ``Conflict`` when
        another organization holds the worker id."""
        registered = await self._send(
            "agent.register", docker_image=docker_image, hardware_type=hardware.hardware_type,
            gpu_type=hardware.gpu_type, gpu_count=hardware.gpu_count,
            vram_gb=hardware.vram_gb, managed=managed, ttl_until=ttl_until)
        return list(registered["requeued"])

    async def start_run(self, job_id: str, run_id: str, secrets_seq: int) -> Started:
        """Start the run, holding the org's secrets of version ``secrets_seq`` (-1: none).
        Raises one of :data:`REFUSED` when the run is not ours to start."""
        started = await self._send("agent.run.start", job_id=job_id, run_id=run_id,
                                   secrets_seq=secrets_seq)
        return Started(int(started["secrets_seq"]), started.get("secrets"))

    async def end_run(self, job_id: str, run_id: str, outcome: Outcome, *,
                      log_file: str | None = None, exit_code: int | None = None,
                      error: str | None = None, reason: str = "",
                      with_start: bool = False) -> None:
        """Report how the run ended (``with_start``: its start too, in the same append;
        only with "completed" or "failed"). Raises ``Conflict`` when the job moved on
        without us (the run is not ours any more)."""
        await self._send("agent.run.end", job_id=job_id, run_id=run_id, outcome=outcome,
                         log_file=log_file, exit_code=exit_code, error=error, reason=reason,
                         with_start=with_start)

    async def uploaded(self, job_id: str, run_id: str, files: list[tuple[str, str]]) -> None:
        """Record the run's uploaded ``files`` as (path under uploads/, file id). Raises
        ``Conflict`` when the run is not ours any more."""
        await self._send("agent.run.uploaded", job_id=job_id, run_id=run_id,
                         files=[{"path": path, "file": file_id} for path, file_id in files])

    async def stopped(self, reason: str) -> None:
        """Report that this worker stops (it takes no more work)."""
        await self._send("agent.stopped", reason=reason)

    # -- files ---------------------------------------------------------------------------
    async def download(self, file_id: str, dest: Path) -> Path:
        """Stream the stored file into ``dest``. Raises ``NotFound``."""
        return await self._ow.files.download(file_id, dest)

    async def store_log(self, file: IO[bytes], filename: str) -> str:
        """Store ``file`` as a run's log; returns its file id."""
        return str((await self._ow.files.create(file, "log", filename))["id"])

    async def upload_result(self, path: Path) -> str:
        """Store the file at ``path`` as a job's result; returns its file id."""
        return str((await self._ow.files.upload(path, "result"))["id"])
