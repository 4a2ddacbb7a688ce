"""Composition root of the agent: ``python -m openweights.services.agent``.

``OW_WORKER_ID`` (else ``unmanaged-<host>-<pid>``), ``OW_DOCKER_IMAGE`` (the image whose
jobs it takes; default ``dev``), ``OW_MANAGED`` (started by a provisioner),
``OW_LOCAL_FAKE_GPUS`` (pretend to have GPUs, for the local backend), ``OW_JOB_ISOLATION``
(how its jobs are kept apart: ``openweights.isolation``). SIGTERM stops it
gracefully (the running job goes back to pending); a second SIGTERM stops it at once.
"""

from __future__ import annotations

import os
import signal
import socket

import anyio

from openweights.config import Settings
from openweights.isolation import become_subreaper, choose
from openweights.logs import configure_logging
from openweights.services.agent.agent import Agent
from openweights.services.agent.gpu import HardwareInfo, detect_hardware
from openweights.services.agent.spawn import watch_children_with_pidfd
from openweights.stack import resolve


async def main() -> None:
    settings = resolve(Settings())
    configure_logging(settings.log_json)
    watch_children_with_pidfd()
    worker_id = os.environ.get("OW_WORKER_ID") or f"unmanaged-{socket.gethostname()}-{os.getpid()}"
    if settings.local_fake_gpus > 0:
        hardware, real = HardwareInfo.fake_gpus(settings.local_fake_gpus,
                                                settings.local_fake_gpu_type), False
    else:
        hardware = await detect_hardware()
        real = hardware.gpu_count > 0
    isolation = choose(settings)
    if not isolation.isolated:  # what a job orphans is then found among our descendants
        become_subreaper()
    agent = Agent(settings, worker_id, os.environ.get("OW_DOCKER_IMAGE", "dev"), hardware,
                  managed=os.environ.get("OW_MANAGED", "").lower() in ("1", "true", "yes"),
                  real_gpus=real, isolation=isolation)
    async with anyio.create_task_group() as tg:
        async def on_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    if agent.stopping.is_set():
                        tg.cancel_scope.cancel()  # second signal: stop now
                        return
                    agent.stop("shutdown requested")

        tg.start_soon(on_signals)
        await agent.run()
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
