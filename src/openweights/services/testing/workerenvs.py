"""The worker environments tests run real ML jobs in: built once per machine in a
directory outside any checkout and any test's ``OW_HOME`` (``$OW_TEST_WORKER_ENV_DIR``,
default ``~/.cache/openweights/worker-envs``), so a second test run, and CI on the same
machine, finds them built; a fresh machine builds them from scratch.

    settings = Settings(..., worker_env_dir=shared_env_dir(), worker_envs="build")
    python = ensure(images.WORKER_UNSLOTH, settings).python
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from openweights.workerenv import ensure_spec
from openweights.workerenv.specs import EnvSpec

__all__ = ["fill_hf_cache", "shared_env_dir", "worker_python"]


def shared_env_dir() -> Path:
    given = os.environ.get("OW_TEST_WORKER_ENV_DIR")
    return Path(given) if given else Path.home() / ".cache" / "openweights" / "worker-envs"


def worker_python(spec: EnvSpec) -> Path:
    """The python of ``spec``'s worker environment, built if this machine has none yet."""
    return ensure_spec(spec, shared_env_dir(), print)


def fill_hf_cache(python: Path, home: Path, *writers: list[str]) -> Path:
    """Write fixtures into the Hugging Face cache ``home`` with ``python`` (a worker
    environment's: their formats are its libraries'). Each writer is a module of this
    package and its arguments, e.g. ``["tinymodel", "--repo-id", "tiny/llama"]``."""
    for module, *args in writers:
        done = subprocess.run([str(python), "-m", f"openweights.services.testing.{module}",
                               "--hf-home", str(home), *args], capture_output=True,
                              text=True, timeout=300)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-4000:])
            raise RuntimeError(f"{module} could not write its fixture into {home} "
                               f"(exit {done.returncode}; its stderr is above)")
    return home
