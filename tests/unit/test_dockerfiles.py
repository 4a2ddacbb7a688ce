"""The Dockerfiles build what images.py names: hadolint passes, every COPY source exists,
every base image is pinned, the control plane runs as a non-root user, and every
entrypoint or command is a module of the package. (No Docker engine runs here: building
them is left to a machine that has one; docs/deploy.md says how.)"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from openweights import images

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {image: ROOT / path for image, path in images.DOCKERFILES.items()}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        word, _, rest = pending.partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_every_image_has_its_dockerfile() -> None:
    for image, path in DOCKERFILES.items():
        assert path.is_file(), f"{image}: {path} is missing"
        assert image.rsplit(":", 1)[1] == images.IMAGE_TAG


@pytest.mark.skipif(hadolint() is None, reason="hadolint not installed (the dev extra has it)")
def test_hadolint_passes() -> None:
    done = subprocess.run([str(hadolint()), *map(str, DOCKERFILES.values())],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("image", list(images.DOCKERFILES))
def test_bases_are_pinned_and_copies_exist(image: str) -> None:
    stages: set[str] = set()
    for word, args in instructions(DOCKERFILES[image]):
        if word == "FROM":
            base, *alias = args.split(" AS ")
            tag = base.rsplit(":", 1)[-1] if ":" in base else ""
            assert tag and tag != "latest" and any(c.isdigit() for c in tag), base
            stages.update(a.strip() for a in alias)
        elif word == "COPY" and "--from=" not in args:
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{image}: COPY {source} does not exist"
        elif word == "COPY":
            stage = args.split("--from=", 1)[1].split()[0]
            assert stage in stages, f"{image}: COPY --from={stage} names no stage"


def _exec_module(args: str) -> str:
    argv = json.loads(args)  # exec form only: a shell form would hide the signal
    assert argv[:2] == ["python", "-m"], argv
    return str(argv[2])


@pytest.mark.parametrize("image", list(images.DOCKERFILES))
def test_what_the_image_runs_is_a_module_and_the_control_plane_is_not_root(
        image: str) -> None:
    found = instructions(DOCKERFILES[image])
    run = [args for word, args in found if word in ("ENTRYPOINT", "CMD")]
    assert run, f"{image}: no ENTRYPOINT or CMD"
    for args in run:
        module = _exec_module(args)
        assert importlib.util.find_spec(module) is not None, f"{image}: no module {module}"
    users = [args for word, args in found if word == "USER"]
    if image == images.CONTROL_PLANE:
        assert users and users[-1].split(":")[0] not in ("root", "0"), users
    else:  # the agent gives each run its own unprivileged user, which needs root
        assert _exec_module(run[-1]) == "openweights.services.agent"
