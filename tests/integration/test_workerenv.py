"""Worker environments, built for real with pip: a tiny one (``six``) proves the mapping,
the cache, the rebuild on a changed requirement list, one build at a time, the path
image and the unknown image; the real unsloth environment is built (once per machine,
cached outside the checkout) and imports its training stack beside openweights."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openweights import images
from openweights.cli.main import app
from openweights.config import Settings
from openweights.services.testing.workerenvs import shared_env_dir
from openweights.workerenv import (
    EnvBuildFailed,
    EnvSpec,
    ensure_spec,
    resolve,
    spec_dir,
)
from openweights.workerenv.build import MARKER
from openweights.workerenv.requirements import requirements_for

TINY = EnvSpec("tiny", requirements=("six",), core=False)


def _py(python: Path, code: str) -> str:
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("envs")


@pytest.fixture(scope="module")
def tiny(root: Path) -> Path:
    return ensure_spec(TINY, root)


def test_a_built_env_has_its_packages_and_the_running_openweights(tiny: Path,
                                                                  root: Path) -> None:
    assert tiny == spec_dir(TINY, root) / "bin" / "python"
    out = _py(tiny, "import six, sys, openweights; "
                    "print(sys.prefix); print(openweights.__file__)")
    prefix, ow_file = out.splitlines()
    assert Path(prefix) == spec_dir(TINY, root)
    src = Path(__file__).resolve().parents[2] / "src" / "openweights"
    assert Path(ow_file).resolve().parent == src  # the checkout's code: no rebuild to edit
    # The agent's own packages are not there (only what the env installed).
    _py(tiny, "import importlib.util as u, sys; sys.exit(u.find_spec('pytest') is not None)")


def test_a_built_env_is_cached_and_rebuilt_when_its_requirements_change(
        tiny: Path, root: Path) -> None:
    marker = tiny.parents[1] / MARKER
    built_at = marker.stat().st_mtime_ns
    lines: list[str] = []
    assert ensure_spec(TINY, root, lines.append) == tiny
    assert lines == [] and marker.stat().st_mtime_ns == built_at  # no second build

    first = ensure_spec(EnvSpec("grown", requirements=("six",), core=False), root)
    changed = EnvSpec("grown", requirements=("six", "colorama"), core=False)
    python = ensure_spec(changed, root, lines.append)
    assert python != first and any("building worker environment" in x for x in lines)
    _py(python, "import six, colorama")
    assert not first.parents[1].exists()  # the older build of the spec is gone
    assert sorted(p.name for p in root.glob("grown-*")) == [python.parents[1].name]


def test_two_builders_build_once(root: Path) -> None:
    spec = EnvSpec("twice", requirements=("six",), core=False)
    lines: list[str] = []
    pythons: list[Path] = []
    threads = [threading.Thread(target=lambda: pythons.append(
        ensure_spec(spec, root, lines.append))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(pythons) == 2 and pythons[0] == pythons[1]
    assert sum("building worker environment" in x for x in lines) == 1
    assert not list(root.glob(".build-*"))  # no half-built directory is left


def test_a_failed_build_leaves_nothing(root: Path) -> None:
    spec = EnvSpec("broken", requirements=("this-package-does-not-exist-ow==0.0.1",),
                   core=False)
    with pytest.raises(EnvBuildFailed, match="install 1 requirements failed"):
        ensure_spec(spec, root)
    assert not list(root.glob("broken-*")) and not list(root.glob(".build-*"))


def test_images_map_to_envs(tiny: Path, root: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, worker_env_dir=root, worker_envs="build")
    by_path = resolve(str(tiny.parents[1]), settings)
    assert (by_path.kind, by_path.python, by_path.note) == ("path", tiny, None)
    assert resolve(str(tiny), settings).python == tiny
    unknown = resolve("python:3.11-slim", settings)
    assert unknown.kind == "agent" and unknown.python == Path(sys.executable)
    assert unknown.note is not None and "not a built-in worker image" in unknown.note
    built = resolve(images.WORKER_UNSLOTH, settings)
    assert built.kind == "built" and built.python.is_relative_to(root)
    assert resolve("nielsrolf/ow-unsloth:v0.11", settings).python == built.python
    every = resolve(images.WORKER_UNSLOTH, settings.model_copy(update={"worker_envs": "agent"}))
    assert (every.kind, every.note) == ("agent", None)


def test_the_unsloth_requirements_come_from_the_worker_extra() -> None:
    spec = resolve(images.WORKER_UNSLOTH, Settings(worker_envs="build")).spec
    assert spec is not None
    reqs = requirements_for(spec)
    for needed in ("torch==2.13.0", "unsloth", "trl", "peft", "datasets", "psutil>=5.9",
                   "pydantic>=2.7", "nats-py>=2.16,<3"):
        assert needed in reqs
    assert not any(r.startswith("openweights") for r in reqs)


@pytest.mark.timeout(1800)  # a fresh machine downloads and installs ~2 GB
def test_the_real_unsloth_env_builds_and_imports_its_stack() -> None:
    """`ow image build` builds it once per machine under the shared directory (CI caches
    it); later runs find it. The fine-tuning tests run their jobs in this environment."""
    env = {"OW_WORKER_ENV_DIR": str(shared_env_dir()), "OW_WORKER_ENVS": "build",
           "COLUMNS": "120"}
    built = CliRunner().invoke(app, ["image", "build", images.WORKER_UNSLOTH], env=env)
    assert built.exit_code == 0, built.output
    settings = Settings(worker_env_dir=shared_env_dir(), worker_envs="build")
    python = resolve(images.WORKER_UNSLOTH, settings).python
    assert built.output.strip().splitlines()[-1] == str(python) and python.exists()
    listed = CliRunner().invoke(app, ["image", "ls", "--json"], env=env)
    assert {"image": images.WORKER_UNSLOTH, "python": str(python), "built": True} in \
        json.loads(listed.output)
    out = _py(python, "import importlib.util as u, torch, trl, peft, datasets, "
                      "transformers, openweights.jobs.unsloth.config; "
                      "print(torch.__version__); "
                      "print(u.find_spec('unsloth') is not None, "
                      "u.find_spec('torchvision') is None)")
    version, found = out.splitlines()
    assert version.startswith("2.13.0") and found == "True True"
