"""Building a worker environment: a virtual environment with an image's packages,
cached under the environments directory and keyed by a hash of its requirement list.

A build goes into a temporary directory next to its final place and is renamed there
once complete (a crashed build leaves no environment that looks usable), under a lock
file so that two agents (or an agent and ``ow image build``) never build one at once.
Each environment sees the running openweights package through a ``.pth`` file and a
link to its source directory, refreshed on every use: an editable checkout's changes
need no rebuild.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from openweights.errors import OpenWeightsError
from openweights.workerenv.requirements import package_dir

__all__ = ["MARKER", "EnvBuildFailed", "build_env", "env_key", "link_openweights"]

MARKER = "openweights-env.json"
FORMAT = 1  # bump when what a build does changes: every environment is then rebuilt
Echo = Callable[[str], None]


class EnvBuildFailed(OpenWeightsError):
    """A worker environment could not be built (the failing step and its output are
    named): fix the requirement or the package index and build it again."""

    code = "env_build_failed"
    hint = "fix what the output names, then `ow image build <image>`"


def env_key(requirements: list[str], uninstall: tuple[str, ...]) -> str:
    """The hash an environment is cached under: its requirement list, what it
    uninstalls, the Python it is built with and the build format."""
    data = {"requirements": sorted(requirements), "uninstall": sorted(uninstall),
            "python": sys.version.split()[0], "format": FORMAT}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the lock file ``path`` (blocking until another holder lets go)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def site_packages(env: Path) -> Path:
    found = sorted((env / "lib").glob("python*/site-packages"))
    if not found:
        raise EnvBuildFailed(f"{env} has no lib/python*/site-packages: not a virtual env")
    return found[0]


def link_openweights(env: Path) -> None:
    """Make the environment import the running openweights: ``<env>/ow-src/openweights``
    links to its package directory, a ``.pth`` puts ``<env>/ow-src`` on the path."""
    src = env / "ow-src"
    src.mkdir(exist_ok=True)
    link, target = src / "openweights", package_dir()
    if not (link.is_symlink() and Path(os.readlink(link)) == target):
        tmp = src / f".openweights-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target, target_is_directory=True)
        tmp.replace(link)  # atomic: a job starting now sees the old link or the new
    pth = site_packages(env) / "_openweights_src.pth"
    if not pth.is_file() or pth.read_text().strip() != str(src):
        pth.write_text(f"{src}\n")


def _run(step: str, cmd: list[str], echo: Echo) -> None:
    """Run ``cmd``, echoing each output line; raises ``EnvBuildFailed`` with its tail."""
    echo(f"{step}: {' '.join(cmd[:6])}{' ...' if len(cmd) > 6 else ''}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, errors="replace",
                            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                                 "PYTHONNOUSERSITE": "1"})
    tail: list[str] = []
    assert proc.stdout is not None
    read_all = False
    try:
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                echo(line)
                tail = [*tail[-19:], line]
        read_all = True
    finally:
        if not read_all:  # interrupted (the caller gave up): pip must not go on writing
            proc.kill()
            proc.wait()
    if proc.wait() != 0:
        raise EnvBuildFailed(f"{step} failed (exit {proc.returncode}):\n" + "\n".join(tail))


def _relocate(env: Path, old: str, new: str) -> None:
    """Scripts in ``bin`` name the directory they were installed into: name the final
    one (a virtual environment is otherwise not movable)."""
    for path in (env / "bin").iterdir():
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old.encode() in data:
            path.write_bytes(data.replace(old.encode(), new.encode()))


def build_env(final: Path, requirements: list[str], uninstall: tuple[str, ...],
              echo: Echo, base_python: str | None = None) -> Path:
    """Build the environment ``final`` (a temp directory beside it, renamed once whole);
    returns its python. Raises ``EnvBuildFailed``."""
    for stale in final.parent.glob(f".build-{final.name}-*"):  # a build interrupted
        shutil.rmtree(stale, ignore_errors=True)  # (the caller holds the build lock)
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{final.name}-", dir=final.parent))
    try:
        python = base_python or _base_python()
        _run("create the environment", [python, "-m", "venv", str(tmp)], echo)
        pip = [str(tmp / "bin" / "python"), "-m", "pip"]
        if requirements:
            _run(f"install {len(requirements)} requirements",
                 [*pip, "install", "--progress-bar", "off", *requirements], echo)
        if uninstall:
            _run(f"uninstall {', '.join(uninstall)}", [*pip, "uninstall", "-y", *uninstall],
                 echo)
        _relocate(tmp, str(tmp), str(final))
        (tmp / MARKER).write_text(json.dumps({"requirements": requirements,
                                              "uninstall": list(uninstall)}, indent=1))
        if final.exists():  # an unfinished older build of the same key
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    link_openweights(final)
    return final / "bin" / "python"


def _base_python() -> str:
    """The interpreter to create environments with: the one under the running virtual
    environment (its packages are not the new environment's)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return base if Path(base).exists() else sys.executable
