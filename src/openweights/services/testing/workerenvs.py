"""The worker environments tests run real ML jobs in: built once per machine in a
directory outside any checkout and any test's ``OW_HOME`` (``$OW_TEST_WORKER_ENV_DIR``,
default ``~/.cache/openweights/worker-envs``), so a second test run, and CI on the same
machine, finds them built; a fresh machine builds them from scratch.

    settings = Settings(..., worker_env_dir=shared_env_dir(), worker_envs="build")
    python = ensure(images.WORKER_UNSLOTH, settings).python
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["shared_env_dir"]


def shared_env_dir() -> Path:
    given = os.environ.get("OW_TEST_WORKER_ENV_DIR")
    return Path(given) if given else Path.home() / ".cache" / "openweights" / "worker-envs"
