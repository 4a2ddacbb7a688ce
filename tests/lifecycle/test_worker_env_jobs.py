"""A machine's agent runs the jobs of its image in that image's environment: an image
given as a path to a Python environment runs there (its python first on PATH), an
unknown image in the agent's own, with a line in the run's log saying so."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from openweights import OpenWeights
from openweights.config import Settings
from openweights.services.testing.stack import ALL_SERVICES, services_thread
from openweights.workerenv import EnvSpec, ensure_spec

SCRIPT = "python -c \"import sys; print('prefix', sys.prefix); import six\""


@pytest.fixture
def env_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_spec(EnvSpec("tiny", requirements=("six",), core=False),
                       tmp_path_factory.mktemp("envs"))


@pytest.fixture
def ow_build(fast_settings: Settings, env_python: Path) -> Iterator[OpenWeights]:
    settings = fast_settings.model_copy(update={
        "worker_envs": "build", "worker_env_dir": env_python.parents[2]})
    with services_thread(settings, ALL_SERVICES):
        client = OpenWeights(settings=settings, retry_for_s=10)
        yield client
        client.close()


def test_a_path_image_runs_in_its_environment(ow_build: OpenWeights,
                                              env_python: Path) -> None:
    job = ow_build.jobs.submit(id_prefix="envjob", script=SCRIPT,
                               docker_image=str(env_python.parents[1]))
    job.wait(timeout=90)
    logs = job.runs[-1].logs()
    assert job.status == "completed", logs
    assert f"prefix {env_python.parents[1]}" in logs
    assert "agent's own environment" not in logs


def test_an_unknown_image_runs_in_the_agents_environment_and_says_so(
        ow_build: OpenWeights) -> None:
    job = ow_build.jobs.submit(id_prefix="envjob", script=SCRIPT.replace("; import six", ""),
                               docker_image="python:3.11-slim")
    job.wait(timeout=90)
    logs = job.runs[-1].logs()
    assert job.status == "completed", logs
    first = logs.splitlines()[0]
    assert first.startswith("openweights: image 'python:3.11-slim' is not a built-in "
                            "worker image nor a path to a Python environment"), logs
    assert f"prefix {sys.prefix}" in logs
