"""Composition root of the projector: ``python -m openweights.services.projector``."""

from __future__ import annotations

from openweights.config import Settings
from openweights.services.projector.projector import Projector
from openweights.services.runtime import nats_connection, run_service


async def main(settings: Settings) -> None:
    async with nats_connection(settings, "projector") as (nc, js):
        await Projector(settings, nc, js).run()


if __name__ == "__main__":
    run_service("projector", main)
