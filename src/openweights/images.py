"""The container images openweights builds, named in one place.

The Dockerfiles under ``docker/`` build them, ``compose.yaml`` runs the control plane's,
the built-in jobs name the worker image they need and the RunPod backend starts
machines from these names. A release bumps ``IMAGE_TAG`` once.
"""

from __future__ import annotations

from typing import Final

REGISTRY: Final = "ghcr.io/openweights"
IMAGE_TAG: Final = "v0.1.0"

# The services (api, projector, scheduler, provisioner, dashboard): docker/control-plane.Dockerfile.
CONTROL_PLANE: Final = f"{REGISTRY}/control-plane:{IMAGE_TAG}"
# Workers: the agent is the entrypoint (docker/worker-*.Dockerfile).
WORKER_UNSLOTH: Final = f"{REGISTRY}/worker-unsloth:{IMAGE_TAG}"
WORKER_VLLM: Final = f"{REGISTRY}/worker-vllm:{IMAGE_TAG}"

# Which Dockerfile builds which image (checked by tests/unit/test_dockerfiles.py).
DOCKERFILES: Final[dict[str, str]] = {
    CONTROL_PLANE: "docker/control-plane.Dockerfile",
    WORKER_UNSLOTH: "docker/worker-unsloth.Dockerfile",
    WORKER_VLLM: "docker/worker-vllm.Dockerfile",
}
