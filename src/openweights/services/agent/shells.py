"""What a job runs in: its environment, and the shell spawned ahead for the next job."""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from openweights.services.agent.job_io import build_job_env
from openweights.services.agent.warm_shell import WarmShell

__all__ = ["Shells"]

log = structlog.get_logger("agent")


class Shells:
    """Builds jobs' environments and keeps one :class:`WarmShell` ready for the next."""

    def __init__(self, worker_id: str, gpu_count: int) -> None:
        self.worker_id, self.gpu_count = worker_id, gpu_count
        self._base_env = dict(os.environ)  # decoded once, not for every job
        self._warm: WarmShell | None = None  # the next job's shell, spawned ahead
        self._warm_ok = True

    def job_env(self, run_id: str, job_id: str, secrets: dict[str, str]) -> dict[str, str]:
        env = build_job_env(self._base_env, run_id=run_id, n_gpus=self.gpu_count,
                            secrets=secrets)
        env.update(OPENWEIGHTS_JOB_ID=job_id, OW_WORKER_ID=self.worker_id)
        return env

    def warm_up(self, workdir: Path | None, secrets: dict[str, str]) -> None:
        """Spawn the next job's shell in ``workdir``, the next job's directory, while
        there is no job: the job then starts as soon as it is assigned."""
        if self._warm is not None or not self._warm_ok or workdir is None:
            return
        try:
            self._warm = WarmShell.start(workdir, self.job_env("", "", secrets))
        except OSError as exc:  # no pidfds here (Linux < 5.3): jobs spawn as they come
            log.warning("agent.no_warm_shell", error=str(exc))
            self._warm_ok = False

    async def take(self, workdir: Path, env: dict[str, str]) -> WarmShell | None:
        """The warm shell, if the job with ``env`` can run in it in ``workdir``."""
        warm, self._warm = self._warm, None
        if warm is not None and not warm.fits(workdir, env):
            await warm.discard()
            return None
        return warm

    async def close(self) -> None:
        if self._warm is not None:
            await self._warm.discard()
            self._warm = None
