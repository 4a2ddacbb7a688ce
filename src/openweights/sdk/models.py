"""What the SDK hands back: ``Job`` and ``Run`` (pydantic models bound to their client).

Their methods return results on ``OpenWeights`` and awaitables on ``AsyncOpenWeights``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

if TYPE_CHECKING:
    from openweights.sdk.client import _Client

TERMINAL = frozenset({"completed", "failed", "canceled"})


class Job(BaseModel):
    """A job: ``id, type, status, model, params, script, docker_image, requires_vram_gb,
    allowed_hardware, outputs, worker_id, timeout, created_at, updated_at``."""

    model_config = ConfigDict(extra="ignore")

    id: str
    type: str
    status: str
    model: str | None = None
    params: dict[str, Any] = {}
    script: str = ""
    docker_image: str = ""
    requires_vram_gb: int | None = None
    allowed_hardware: list[str] | None = None
    outputs: dict[str, Any] = {}
    worker_id: str | None = None
    timeout: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    organization_id: str | None = None
    _client: Any = PrivateAttr(default=None)

    def bind(self, client: _Client) -> Job:
        self._client = client
        return self

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def _update(self, other: Job) -> Job:
        for name in type(self).model_fields:
            setattr(self, name, getattr(other, name))
        return self

    async def _refresh(self) -> Job:
        return self._update(await self._client.jobs._retrieve(self.id))

    def refresh(self) -> Any:
        """Reload this job in place (and return it)."""
        return self._client.call(self._refresh())

    async def _cancel(self) -> Job:
        return self._update(await self._client.jobs._cancel(self.id))

    def cancel(self) -> Any:
        return self._client.call(self._cancel())

    async def _restart(self) -> Job:
        return self._update(await self._client.jobs._restart(self.id))

    def restart(self) -> Any:
        return self._client.call(self._restart())

    async def _wait_until_done(self, limit_s: float | None = None) -> Job:
        from openweights.sdk.live import wait_job

        return self._update(await wait_job(self._client, self.id, limit_s))

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the job is completed, failed or canceled (event-driven, no polling).

        Raises ``TimeoutError`` if ``timeout`` seconds pass first."""
        return self._client.call(self._wait_until_done(timeout))

    @property
    def runs(self) -> Any:
        return self._client.runs.list(job_id=self.id)

    async def _download(self, target_dir: str | Path, only_last_run: bool) -> list[Path]:
        runs = await self._client.runs._list(job_id=self.id)
        if only_last_run:
            return await runs[-1]._download(target_dir) if runs else []
        out: list[Path] = []
        for run in runs:
            out += await run._download(Path(target_dir) / run.id)
        return out

    def download(self, target_dir: str | Path, only_last_run: bool = True) -> Any:
        """Write the run log and every file the job returned under ``target_dir``."""
        return self._client.call(self._download(target_dir, only_last_run))


class Run(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    job_id: str
    attempt: int = 1
    worker_id: str | None = None
    status: str
    log_file: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    _client: Any = PrivateAttr(default=None)

    def bind(self, client: _Client) -> Run:
        self._client = client
        return self

    @property
    def events(self) -> Any:
        return self._client.events.list(run_id=self.id)

    async def _logs(self) -> str:
        if self.log_file:
            data: bytes = await self._client.files._content(self.log_file)
            return data.decode(errors="replace")
        lines = await self._client.transport.call("logs.read", run_id=self.id)
        return "".join(chunk["data"] for chunk in lines)

    def logs(self) -> Any:
        """The run's full output: the stored log file, or the live lines while it runs."""
        return self._client.call(self._logs())

    async def _download(self, target_dir: str | Path) -> list[Path]:
        target = Path(target_dir)
        target.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        log_path = target / f"{self.id}.log"
        log_path.write_text(await self._logs())
        written.append(log_path)
        for event in await self._client.events._list(run_id=self.id):
            file_id = event["data"].get("file") if isinstance(event["data"], dict) else None
            if not isinstance(file_id, str):
                continue
            rel = event["data"].get("path") or file_id
            dest = (target / rel).resolve()
            if target.resolve() not in dest.parents:
                continue  # a path escaping the target directory is never written
            dest.parent.mkdir(parents=True, exist_ok=True)
            await self._client.files._download_to(file_id, dest)
            written.append(dest)
        return written

    def download(self, target_dir: str | Path) -> Any:
        return self._client.call(self._download(target_dir))
