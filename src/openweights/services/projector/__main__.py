"""The projector: ``python -m openweights.services.projector``."""

from __future__ import annotations

from openweights.services.projector.bootstrap import compose
from openweights.services.runtime import run_service

if __name__ == "__main__":
    run_service("projector", compose)
