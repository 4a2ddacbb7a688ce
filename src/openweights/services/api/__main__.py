"""Composition root of the api service: ``python -m openweights.services.api``."""

from __future__ import annotations

from openweights.config import Settings
from openweights.services.api.service import ApiService
from openweights.services.runtime import nats_connection, run_service


async def main(settings: Settings) -> None:
    async with nats_connection(settings, "api", restart_on_reconnect=True) as (nc, js):
        await ApiService(settings, nc, js).run()


if __name__ == "__main__":
    run_service("api", main)
