"""What a job runs in: its environment, and the shell spawned ahead for the next job."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import structlog

from openweights.isolation import JobIsolation
from openweights.services.agent.job_io import JobEnvironmentRefused, build_job_env, check_env
from openweights.services.agent.warm_shell import WarmShell
from openweights.services.agent.workspace import Workspace

__all__ = ["Shells"]

log = structlog.get_logger("agent")


class Shells:
    """Builds jobs' environments and keeps one :class:`WarmShell` ready for the next.

    ``base_env`` is what every job starts from (``job_io.job_base_env``); each job's adds
    its org's secrets, its ids and ``HOME``, its own directory."""

    def __init__(self, worker_id: str, gpu_count: int, base_env: Mapping[str, str],
                 isolation: JobIsolation) -> None:
        self.worker_id, self.gpu_count = worker_id, gpu_count
        self._base_env = dict(base_env)  # decoded once, not for every job
        self.isolation = isolation
        self._warm: WarmShell | None = None  # the next job's shell, spawned ahead
        self._warm_ok = True
        # The python of the image's worker environment, first on each job's PATH.
        self.python = sys.executable

    def job_env(self, run_id: str, job_id: str, secrets: dict[str, str],
                home: Path) -> dict[str, str]:
        env = build_job_env(self._base_env, run_id=run_id, n_gpus=self.gpu_count,
                            secrets=secrets, python_executable=self.python)
        env.update(OPENWEIGHTS_JOB_ID=job_id, OW_WORKER_ID=self.worker_id, HOME=str(home))
        return env

    def warm_up(self, ws: Workspace | None, secrets: dict[str, str]) -> None:
        """Spawn the next job's shell in ``ws``, the next job's workspace (as its user),
        while there is no job: the job then starts as soon as it is assigned."""
        if self._warm is not None or not self._warm_ok or ws is None:
            return
        env = self.job_env("", "", secrets, ws.dir)
        try:
            check_env(env)
        except JobEnvironmentRefused:
            return  # no process can be given it: the job fails saying why
        try:
            self._warm = WarmShell.start(ws.dir, env, ws.user, self.isolation.prefix(ws.user))
        except OSError as exc:  # no pidfds here (Linux < 5.3): jobs spawn as they come
            log.warning("agent.no_warm_shell", error=str(exc))
            self._warm_ok = False

    async def take(self, ws: Workspace, env: dict[str, str]) -> WarmShell | None:
        """The warm shell, if the job with ``env`` can run in it in ``ws``."""
        warm, self._warm = self._warm, None
        if warm is not None and not warm.fits(ws.dir, env, ws.user):
            await warm.discard()
            return None
        return warm

    async def close(self) -> None:
        if self._warm is not None:
            await self._warm.discard()
            self._warm = None
