"""The api service: ``python -m openweights.services.api``."""

from __future__ import annotations

from openweights.services.api.bootstrap import compose
from openweights.services.runtime import run_service

if __name__ == "__main__":
    run_service("api", compose, restart_on_reconnect=True)
