"""The scheduler: ``python -m openweights.services.scheduler``."""

from __future__ import annotations

from openweights.services.runtime import run_service
from openweights.services.scheduler.bootstrap import compose

if __name__ == "__main__":
    run_service("scheduler", compose, restart_on_reconnect=True)
