"""The RunPod API as the backend uses it: the ``runpod`` SDK (pinned 1.10.0), off the loop.

The SDK is synchronous (``requests``), so every call runs in a worker thread, bounded by
our own timeout (a call past it is abandoned and counts as failed; a pod it created
anyway carries this deployment's name and is released by reconciliation). Its
module-wide ``runpod.api_key`` cannot serve several organizations at once, so each call
goes through ``run_graphql_query(..., api_key=)`` with the SDK's own query builders.
Its errors are translated here, at the edge, into :class:`RunPodFailure` with a kind the
provisioner acts on (``port.FailureKind``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import requests
from runpod import error as rp_error
from runpod.api import ctl_commands
from runpod.api.graphql import run_graphql_query
from runpod.api.mutations.pods import (
    generate_pod_deployment_mutation,
    generate_pod_terminate_mutation,
)

from openweights.services.provisioner.port import FailureKind, MachineStartFailed

T = TypeVar("T")
# What RunPod says when an account may spend no more (the original's list).
_SPENDING = ("spending limit", "spend limit", "budget limit", "exceeded your")


class RunPodFailure(MachineStartFailed):
    """A RunPod API call failed; ``kind`` says why (``port.FailureKind``)."""

    code = "runpod_failed"
    hint = "see the message; RunPod's status page tells of outages"


def classify(message: str) -> FailureKind:
    return "spending_limit" if any(s in message.lower() for s in _SPENDING) else "hardware"


def gql_string(value: str) -> str:
    """``value`` escaped for the inside of a GraphQL string literal (JSON's escapes are
    GraphQL's): the SDK puts names, env values and docker args between quotes as given."""
    return json.dumps(value)[1:-1]


class RunPodApi:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            with anyio.fail_after(self.timeout_s):
                return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
        except TimeoutError:
            raise RunPodFailure(f"RunPod {what}: no answer within {self.timeout_s:g} s",
                                kind="unavailable") from None
        except rp_error.AuthenticationError as exc:
            raise RunPodFailure(f"RunPod {what}: the API key was refused ({exc})",
                                kind="credentials") from exc
        except rp_error.QueryError as exc:
            raise RunPodFailure(f"RunPod {what}: {exc}", kind=classify(str(exc))) from exc
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            # Unreachable, or an answer that is not the API's (a proxy's error page).
            raise RunPodFailure(f"RunPod {what}: {type(exc).__name__}: {exc}",
                                kind="unavailable") from exc

    async def gpu_types(self, key: str) -> list[dict[str, Any]]:
        return await self._call("get_gpus", lambda: list(ctl_commands.get_gpus(api_key=key)))

    async def pods(self, key: str) -> list[dict[str, Any]]:
        return await self._call("get_pods", lambda: list(ctl_commands.get_pods(api_key=key)))

    async def pod(self, key: str, pod_id: str) -> dict[str, Any] | None:
        return await self._call("get_pod", lambda: ctl_commands.get_pod(pod_id, api_key=key))

    async def terminate(self, key: str, pod_id: str) -> None:
        query = generate_pod_terminate_mutation(gql_string(pod_id))
        await self._call("terminate_pod", lambda: run_graphql_query(query, api_key=key))

    async def create_pod(self, key: str, *, name: str, image: str, gpu_type_id: str,
                         gpu_count: int, env: dict[str, str], docker_args: str,
                         cloud_type: str, container_disk_gb: int, volume_gb: int,
                         ports: str, cuda_versions: list[str] | None) -> dict[str, Any]:
        """The created pod (``id`` at least). RunPod finds a machine or refuses at once."""
        query = generate_pod_deployment_mutation(
            name=gql_string(name), image_name=gql_string(image), gpu_type_id=gql_string(
                gpu_type_id), cloud_type=cloud_type, support_public_ip=True, start_ssh=True,
            gpu_count=gpu_count, volume_in_gb=volume_gb, container_disk_in_gb=container_disk_gb,
            min_vcpu_count=1, min_memory_in_gb=1, docker_args=gql_string(docker_args),
            ports=gql_string(ports), volume_mount_path="/workspace",
            env={k: gql_string(v) for k, v in env.items()},
            allowed_cuda_versions=[gql_string(v) for v in cuda_versions or []] or None)

        def create() -> dict[str, Any]:
            pod = run_graphql_query(query, api_key=key)["data"]["podFindAndDeployOnDemand"]
            if not pod or not pod.get("id"):
                raise rp_error.QueryError("RunPod created no pod", query)
            return dict(pod)

        return await self._call("create_pod", create)
