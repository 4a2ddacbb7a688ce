"""Worker environments: the Python a machine's agent runs the jobs of its image with.

In production a job's image is the machine's image. On the local backend an image is
a Python environment:

- a built-in worker image (``openweights.images``; see ``specs.LOCAL_ENVS``) maps to an
  environment openweights builds on demand from its worker extras, cached under
  ``Settings.worker_env_dir`` (``$OW_WORKER_ENV_DIR``, default ``$OW_HOME/envs``) in a
  directory named after the hash of its requirement list, so it is rebuilt when that
  list changes;
- an image that is a path to a Python environment (its directory or its python) is used
  as it is;
- any other image runs in the agent's own environment, and each run's log says so
  (its first line, ``openweights: image ... runs in the agent's own environment``).
  Every image does when ``OW_WORKER_ENVS=agent`` (the test suite's setting: its custom
  jobs need no ML packages), without a line per run.

The path API (for the agent, ``ow image build`` and tests)::

    env = resolve("ghcr.io/openweights/worker-unsloth:v0.1.0", settings)  # no build
    env = ensure(image, settings)        # builds if needed; env.python is its python
    python = ensure_spec(UNSLOTH, root)  # an EnvSpec straight into the directory root

A built environment imports the running openweights (a ``.pth`` and a link to its
package directory) and has openweights' core dependencies.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from openweights.config import Settings
from openweights.workerenv.build import (
    MARKER,
    Echo,
    EnvBuildFailed,
    build_env,
    env_key,
    link_openweights,
    locked,
)
from openweights.workerenv.requirements import requirements_for
from openweights.workerenv.specs import LOCAL_ENVS, EnvSpec, spec_for

__all__ = ["LOCAL_ENVS", "EnvBuildFailed", "EnvSpec", "WorkerEnv", "ensure", "ensure_spec",
           "env_root", "resolve", "spec_dir"]

Kind = Literal["built", "path", "agent"]


@dataclass(frozen=True)
class WorkerEnv:
    """How the jobs of ``image`` run here: with ``python``; ``kind`` says where it came
    from, ``note`` (for the run's log) why it is the agent's own, if it is."""

    image: str
    python: Path
    kind: Kind
    spec: EnvSpec | None = None
    note: str | None = None

    @property
    def ready(self) -> bool:
        return self.python.exists()


def env_root(settings: Settings) -> Path:
    """Where built environments are cached."""
    return settings.worker_env_dir or settings.home / "envs"


def spec_dir(spec: EnvSpec, root: Path) -> Path:
    """The directory of ``spec``'s environment for its current requirement list."""
    return root / f"{spec.name}-{env_key(requirements_for(spec), spec.uninstall)}"


def _as_path(image: str) -> Path | None:
    """The python of the environment ``image`` names by path, if it names one."""
    if not image.startswith(("/", "./", "../", "~")):
        return None
    path = Path(image).expanduser()
    for python in (path, path / "bin" / "python"):
        if python.is_file() and python.name.startswith("python"):
            return python
    return None


def resolve(image: str, settings: Settings) -> WorkerEnv:
    """What ``image`` runs with here, without building anything (``ready`` says whether
    a built environment exists yet)."""
    agent = Path(sys.executable)
    if settings.worker_envs == "agent":  # the operator's choice: nothing to say per run
        return WorkerEnv(image, agent, "agent")
    if (python := _as_path(image)) is not None:
        return WorkerEnv(image, python, "path")
    spec = spec_for(image)
    if spec is None:
        return WorkerEnv(image, agent, "agent", note=(
            f"image {image!r} is not a built-in worker image nor a path to a Python "
            f"environment: it runs in the agent's own environment ({agent})"))
    return WorkerEnv(image, spec_dir(spec, env_root(settings)) / "bin" / "python", "built",
                     spec=spec)


def ensure(image: str, settings: Settings, echo: Echo | None = None) -> WorkerEnv:
    """``resolve(image)``, with its environment built first if it is a built-in image's
    and not built yet. Raises ``EnvBuildFailed``."""
    env = resolve(image, settings)
    if env.kind == "built" and env.spec is not None:
        ensure_spec(env.spec, env_root(settings), echo)
    return env


def ensure_spec(spec: EnvSpec, root: Path, echo: Echo | None = None) -> Path:
    """The python of ``spec``'s environment under ``root``, built if it is missing (one
    build at a time per spec; older builds of it are removed once a new one is whole).
    Raises ``EnvBuildFailed``."""
    requirements = requirements_for(spec)
    final = root / f"{spec.name}-{env_key(requirements, spec.uninstall)}"
    say = echo or (lambda line: None)
    with locked(root / f".{spec.name}.lock"):
        if (final / MARKER).is_file():
            link_openweights(final)
            return final / "bin" / "python"
        say(f"building worker environment {final.name} ({len(requirements)} requirements)")
        python = build_env(final, requirements, spec.uninstall, say)
        for old in root.glob(f"{spec.name}-*"):
            if old != final and (old / MARKER).is_file():
                _remove(old)
        return python


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
