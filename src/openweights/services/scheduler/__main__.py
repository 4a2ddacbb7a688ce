"""Composition root of the scheduler: ``python -m openweights.services.scheduler``."""

from __future__ import annotations

from openweights.config import Settings
from openweights.services.runtime import nats_connection, run_service
from openweights.services.scheduler.scheduler import Scheduler


async def main(settings: Settings) -> None:
    async with nats_connection(settings, "scheduler", restart_on_reconnect=True) as (nc, js):
        await Scheduler(settings, nc, js).run()


if __name__ == "__main__":
    run_service("scheduler", main)
