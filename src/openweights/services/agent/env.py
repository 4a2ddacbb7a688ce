"""The worker environment of the agent's image (``openweights.workerenv``), made ready
before the agent registers: a built-in image's environment is built then if it is not
yet (its output goes to the agent's log), so that no job of the image waits on it."""

from __future__ import annotations

import functools

import anyio
import structlog

from openweights.config import Settings
from openweights.workerenv import WorkerEnv, ensure

__all__ = ["prepare_env"]

log = structlog.get_logger("agent")


async def prepare_env(image: str, settings: Settings) -> WorkerEnv:
    """The environment the jobs of ``image`` run with here. Raises ``EnvBuildFailed``."""

    def echo(line: str) -> None:
        log.info("agent.env_build", image=image, line=line)

    env = await anyio.to_thread.run_sync(functools.partial(ensure, image, settings, echo))
    log.info("agent.env", image=image, kind=env.kind, python=str(env.python),
             note=env.note)
    return env
