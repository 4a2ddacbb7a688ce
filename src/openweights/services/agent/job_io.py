"""What a job is given and what it leaves: its environment, and the files it uploads."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["build_job_env", "collect_uploads"]


def build_job_env(
    base: Mapping[str, str], *, run_id: str, n_gpus: int, secrets: Mapping[str, str],
    python_executable: str = sys.executable,
) -> dict[str, str]:
    """The job's environment: ``base``, then the org's ``secrets``, then what openweights
    sets (last, so a secret cannot fake the run id).

    The directory of ``python_executable`` goes first on ``PATH`` so that ``python`` in
    an entrypoint is the agent's own interpreter, which can import openweights.
    """
    env = {**base, **secrets}
    # Not resolved: a venv's python is a symlink, and its bin dir is what selects the venv.
    python_dir = os.path.dirname(os.path.abspath(python_executable))
    rest = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != python_dir]
    env.update(OPENWEIGHTS_RUN_ID=run_id, N_GPUS=str(n_gpus), PYTHONUNBUFFERED="1",
               PATH=os.pathsep.join([python_dir, *rest]))
    return env


def collect_uploads(workdir: Path) -> list[tuple[str, Path]]:
    """Every regular file under ``workdir/uploads`` as (posix path relative to uploads,
    absolute path), sorted. Symlinked files count only if they resolve inside
    ``workdir`` (a job must not upload the machine's files); symlinked directories are
    not followed, so a link loop cannot trap the walk."""
    uploads = (workdir / "uploads").absolute()
    root: Path | None = None  # resolved only if there is a file: most jobs upload none
    found: list[tuple[str, Path]] = []
    for dirpath, _dirnames, filenames in os.walk(uploads, followlinks=False):
        for name in filenames:
            path = Path(dirpath, name)
            root = root or workdir.resolve()
            if _uploadable(path, root):
                found.append((path.relative_to(uploads).as_posix(), path))
    return sorted(found)


def _uploadable(path: Path, root: Path) -> bool:
    if path.is_symlink() and not path.resolve().is_relative_to(root):
        return False
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:  # dangling link, or removed meanwhile
        return False
