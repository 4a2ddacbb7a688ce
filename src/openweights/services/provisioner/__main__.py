"""Composition root of the provisioner: ``python -m openweights.services.provisioner``."""

from __future__ import annotations

from openweights.config import Settings
from openweights.services.provisioner.backends.local import LocalBackend
from openweights.services.provisioner.provisioner import Provisioner
from openweights.services.runtime import nats_connection, run_service


async def main(settings: Settings) -> None:
    async with nats_connection(settings, "provisioner") as (nc, js):
        await Provisioner(settings, nc, js, LocalBackend(settings)).run()


if __name__ == "__main__":
    run_service("provisioner", main)
