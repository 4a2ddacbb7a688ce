"""The provisioner: ``python -m openweights.services.provisioner``."""

from __future__ import annotations

from openweights.services.provisioner.bootstrap import compose
from openweights.services.runtime import run_service

if __name__ == "__main__":
    run_service("provisioner", compose)
