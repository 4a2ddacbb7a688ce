"""``aow.jobs`` and ``AsyncJob``: submit, find, change and wait for jobs.

Every method may raise ``StackUnavailable`` / ``Unavailable`` when the service cannot be
reached (after retrying), besides what it lists.
"""

from __future__ import annotations

import builtins
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import PrivateAttr

from openweights.sdk.live import wait_for_job
from openweights.sdk.runs import AsyncRun, AsyncRuns
from openweights.sdk.transport import Transport
from openweights.sdk.types import JobFields


class AsyncJob(JobFields):
    """A job of the async client; its methods are awaitable and update it in place."""

    _jobs: AsyncJobsResource = PrivateAttr()

    async def refresh(self) -> AsyncJob:
        """Reload this job in place (and return it). Raises ``NotFound``."""
        self._take(await self._jobs.retrieve(self.id))
        return self

    async def cancel(self) -> AsyncJob:
        """Cancel it (in place); a canceled job stays as it is (a retried cancel is no
        error). Raises ``IllegalTransition`` when it has completed or failed."""
        self._take(await self._jobs.cancel(self.id))
        return self

    async def restart(self) -> AsyncJob:
        """Run it again (in place). Raises ``IllegalTransition`` unless it has ended."""
        self._take(await self._jobs.restart(self.id))
        return self

    # `timeout=` is the original SDK's name: a bound, not a cancel scope of the caller's.
    async def wait(self, timeout: float | None = None) -> AsyncJob:  # noqa: ASYNC109
        """Wait until it is completed, failed or canceled (event-driven, no polling).

        Raises ``TimeoutError`` if ``timeout`` seconds pass first."""
        self._take(await self._jobs.wait(self.id, timeout))
        return self

    @property
    def runs(self) -> Coroutine[Any, Any, list[AsyncRun]]:
        """(await it) This job's runs, oldest first."""
        return self._jobs._runs.list(job_id=self.id)

    @property
    def cost(self) -> Coroutine[Any, Any, float]:
        """(await it) What it cost so far in USD: its runs' shares of their machines'
        time at their price (a running job's grows until it ends)."""
        return self._jobs._cost(self.id)

    async def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines its latest run printed (its stored log once the run
        has ended): with ``error``, what to read first of a failed job. ``""`` before
        it has run."""
        runs = await self.runs
        if not runs or lines <= 0:
            return ""
        return "".join((await runs[-1].logs()).splitlines(keepends=True)[-lines:])

    async def download(self, target_dir: str | Path, only_last_run: bool = True) -> list[Path]:
        """Write the run log and every file the job returned under ``target_dir`` (every
        run's into ``target_dir/<run id>`` with ``only_last_run=False``)."""
        runs = await self.runs
        if only_last_run:
            return await runs[-1].download(target_dir) if runs else []
        out: list[Path] = []
        for run in runs:
            out += await run.download(Path(target_dir) / run.id)
        return out


class AsyncJobsResource:
    def __init__(self, transport: Transport, runs: AsyncRuns) -> None:
        self._t, self._runs = transport, runs

    async def _job(self, data: dict[str, Any]) -> AsyncJob:
        """The job in a reply; output values it holds by reference (too large to inline,
        ``$refs``) are read here, with ``events.latest`` (which has the same values)."""
        refs = data.pop("$refs", None) or {}
        if refs.get("outputs"):
            outputs = dict(data["outputs"])
            async for page in self._t.pages("events.latest", read=True, job_id=data["id"],
                                            keys=refs["outputs"]):
                outputs.update(page)
            data["outputs"] = outputs
        job = AsyncJob.model_validate(data)
        job._jobs = self
        return job

    async def submit(self, *, id_prefix: str, script: str, docker_image: str,
                     type: str = "custom", model: str | None = None,
                     params: dict[str, Any] | None = None, requires_vram_gb: int | None = 0,
                     allowed_hardware: list[str] | None = None,
                     timeout: datetime | float | None = None,  # noqa: ASYNC109 - deadline
                     job_id_suffix: str | None = None,
                     vram_defaulted: bool = False,
                     fill_job_id: list[str] | None = None) -> AsyncJob:
        """Submit a job spec as it is (custom job classes build one from their params).

        Its id is ``<id_prefix>-<hash of the spec>[-<job_id_suffix>]``: the same spec again
        returns the same job, which runs once (a failed or canceled one is reset to
        pending). ``vram_defaulted`` (set by job classes): ``requires_vram_gb`` is the
        ``Jobs`` default, not a choice. Raises ``InvalidRequest`` for a malformed spec,
        unknown hardware, a file id that does not exist, or a defaulted VRAM need no
        machine of the stack can ever have. ``timeout``: the job's deadline, an instant or
        seconds from now; once it passes, pending or running, the job is canceled with
        the reason "timeout". ``fill_job_id``: dotted paths of string params whose
        ``{job_id}`` the service fills with the id (which hashes them unfilled)."""
        # A number of seconds becomes a deadline on the services' clock, not ours.
        seconds = None if timeout is None or isinstance(timeout, datetime) else float(timeout)
        return await self._job(await self._t.call(
            "jobs.submit", id_prefix=id_prefix, type=type, model=model, params=params or {},
            script=script, docker_image=docker_image, requires_vram_gb=requires_vram_gb,
            allowed_hardware=allowed_hardware, timeout=timeout if seconds is None else None,
            timeout_s=seconds, job_id_suffix=job_id_suffix,
            vram_defaulted=vram_defaulted, fill_job_id=fill_job_id or []))

    async def _cost(self, job_id: str) -> float:
        """What job ``job_id`` cost so far (USD); 0 for a job that never ran."""
        report = await self._t.call("costs.report", read=True, by="job", job_id=job_id)
        return float(report["total_usd"])

    async def retrieve(self, job_id: str) -> AsyncJob:
        """The job. Raises ``NotFound`` (also for another organization's job)."""
        return await self._job(await self._t.call("jobs.get", read=True, job_id=job_id))

    async def list(self, limit: int = 10, status: str | None = None) -> list[AsyncJob]:
        """Jobs, most recently updated first. Raises ``InvalidRequest`` for a bad status."""
        return await self._pages("jobs.list", limit=limit, status=status)

    async def find(self, limit: int = 100, **params: Any) -> builtins.list[AsyncJob]:
        """Jobs whose ``params`` contain every given key with the given value."""
        return await self._pages("jobs.find", params=params, limit=limit)

    async def _pages(self, endpoint: str, **fields: Any) -> builtins.list[AsyncJob]:
        """Every page of jobs; a job the page holds by reference (too large to inline
        in a list) is read on its own."""
        out: builtins.list[AsyncJob] = []
        async for rows in self._t.pages(endpoint, read=True, **fields):
            for r in rows:
                out.append(await (self.retrieve(r["id"]) if "$ref" in r else self._job(r)))
        return out

    async def cancel(self, job_id: str) -> AsyncJob:
        """Cancel a pending or running job; a canceled one is returned unchanged (a
        retried cancel whose reply was lost is no error). Raises ``NotFound``, and
        ``IllegalTransition`` for a completed or failed job."""
        return await self._job(await self._t.call("jobs.cancel", job_id=job_id))

    async def restart(self, job_id: str) -> AsyncJob:
        """Run an ended job again (back to pending, outputs cleared).
        Raises ``NotFound``, ``IllegalTransition``."""
        return await self._job(await self._t.call("jobs.restart", job_id=job_id))

    async def renew_lease(self, job_id: str, seconds: float = 900.0) -> AsyncJob:
        """Keep a job alive for ``seconds`` more (API deployments end when not renewed).
        Raises ``NotFound``."""
        return await self._job(await self._t.call("jobs.lease", job_id=job_id, seconds=seconds))

    async def wait(self, job_id: str,
                   timeout: float | None = None) -> AsyncJob:  # noqa: ASYNC109 (see AsyncJob)
        """Wait until the job ends (event-driven). Raises ``TimeoutError``, ``NotFound``."""
        return await self._job(await wait_for_job(self._t, job_id, timeout))
