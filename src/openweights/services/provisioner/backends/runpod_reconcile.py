"""The RunPod backend's upkeep: the hardware catalog refreshed from ``get_gpus``, and
pods of this deployment that no live worker owns released.

A pod leaks when the provisioner died between creating it and recording it, when a
create call timed out on our side but went through on RunPod's, or when a worker was
terminated while its pod's termination failed. Such a pod has this deployment's name
(``<deployment>.<org>.<worker id>``), so it is found by name and released. Any other pod
of the account (another deployment's, a person's) is never touched, nor is a pod of
another organization found with a shared key: each organization's pods are released
only in its own pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import anyio
import structlog

from openweights.config import Settings
from openweights.errors import OpenWeightsError
from openweights.services.provisioner.backends.runpod_api import RunPodApi
from openweights.services.provisioner.catalog import Catalog
from openweights.services.provisioner.port import Fleet

log = structlog.get_logger("provisioner.runpod")


class RunPodBackend(Protocol):
    """What of the backend (``runpod.RunPodBackend``) its upkeep uses."""

    settings: Settings
    keys: Callable[[str], str | None]
    api: RunPodApi
    catalog: Catalog

    def owner(self, pod_name: str) -> tuple[str, str] | None: ...


def keys_of(backend: RunPodBackend, fleet: Fleet) -> dict[str, list[str]]:
    """Each RunPod key in use -> the organizations that use it."""
    by_key: dict[str, list[str]] = {}
    for org in fleet.organizations():
        if key := backend.keys(org):
            by_key.setdefault(key, []).append(org)
    return by_key


async def refresh_catalog(backend: RunPodBackend, fleet: Fleet) -> bool:
    """The catalog after RunPod's inventory (any key will do: it is the same for all);
    the one we had when RunPod cannot be asked. True if it was refreshed."""
    keys = [k for k in (backend.settings.runpod_api_key, *keys_of(backend, fleet)) if k]
    for key in keys:
        try:
            backend.catalog = backend.catalog.refreshed(await backend.api.gpu_types(key))
        except OpenWeightsError as exc:
            log.warning("runpod.catalog_refresh_failed", error=str(exc))
            continue
        listed = sum(g.listed for g in backend.catalog.gpus.values())
        log.info("runpod.catalog_refreshed", listed=listed)
        return True
    return False


async def release_leaked(backend: RunPodBackend, fleet: Fleet) -> list[str]:
    """Terminate this deployment's pods that no live worker owns; their machine ids."""
    released: list[str] = []
    for key, orgs in keys_of(backend, fleet).items():
        try:
            pods = await backend.api.pods(key)
        except OpenWeightsError as exc:
            log.warning("runpod.reconcile_failed", orgs=orgs, error=str(exc))
            continue
        for pod in pods:
            owner = backend.owner(str(pod.get("name") or ""))
            if owner is None or owner[0] not in orgs or not pod.get("id"):
                continue  # not ours, or another organization's found with a shared key
            org, worker_id = owner
            machine_id = f"{org}/{pod['id']}"
            if fleet.owns(org, worker_id, machine_id):
                continue
            try:
                await backend.api.terminate(key, str(pod["id"]))
            except OpenWeightsError as exc:
                log.warning("runpod.release_failed", machine=machine_id, error=str(exc))
                continue
            released.append(machine_id)
            log.warning("runpod.leaked_pod_released", machine=machine_id, worker=worker_id,
                        reason="no live worker owns it")
    return released


async def maintain(backend: RunPodBackend, fleet: Fleet) -> None:
    s = backend.settings
    next_catalog = next_sweep = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= next_catalog:
            await refresh_catalog(backend, fleet)
            next_catalog = now + s.runpod_catalog_refresh_s
        if now >= next_sweep:
            await release_leaked(backend, fleet)
            next_sweep = now + s.runpod_reconcile_s
        await anyio.sleep(max(0.0, min(next_catalog, next_sweep) - time.monotonic()))
