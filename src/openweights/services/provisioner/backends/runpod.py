"""The ``runpod`` backend (``OW_BACKEND=runpod``): each machine is a RunPod pod.

A pod runs the job's image with the agent as its command (``python -m
openweights.services.agent``: the image must have openweights installed) and an
environment that holds only what an agent needs: the client NATS URL, the stack's
settings and the credentials minted for that one worker, never the operator's.

Machine ids are ``<org>/<pod id>``: the organization says whose RunPod key acts on the
pod (its ``RUNPOD_API_KEY`` secret, read at every call, so a new key takes effect at
once; else the operator's ``OW_RUNPOD_API_KEY``). Pods are named
``<deployment>.<org>.<worker id>``; this backend only ever terminates a pod it recorded
(``stop``) or, in :mod:`.runpod_reconcile`, one of this deployment and organization that
no live worker owns. The key is account-wide: nothing else is ever touched.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import anyio
import structlog

from openweights.config import Settings, settings_env
from openweights.services.provisioner.backends.local import _SERVICE_ONLY
from openweights.services.provisioner.backends.runpod_api import RunPodApi, RunPodFailure
from openweights.services.provisioner.backends.runpod_reconcile import maintain
from openweights.services.provisioner.catalog import Catalog
from openweights.services.provisioner.port import Fleet, MachineSpec, MachineStartFailed

log = structlog.get_logger("provisioner.runpod")
AGENT_COMMAND = "python -m openweights.services.agent"
# Settings that describe the operator's machine, not a pod's.
_HOST_ONLY = ("OW_HOME", "OW_JOBS_DIR", "OW_BACKEND", "OW_LOCAL_FAKE_GPUS",
              "OW_LOCAL_FAKE_GPU_TYPE")
_HOST_PREFIXES = ("OW_RUNPOD_", "OW_DASHBOARD_", "OW_S3_")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
GONE = ("TERMINATED", "EXITED", "DEAD")
KeyLookup = Callable[[str], str | None]


def deployment_prefix(settings: Settings) -> str:
    prefix = settings.runpod_deployment or f"ow-{settings.namespace}"
    if "." in prefix or not prefix:
        raise ValueError(f"OW_RUNPOD_DEPLOYMENT {prefix!r}: a non-empty name without dots")
    return prefix


class RunPodBackend:
    name = "runpod"

    def __init__(self, settings: Settings, keys: KeyLookup, *,
                 api: RunPodApi | None = None) -> None:
        self.settings, self.keys = settings, keys
        self.api = api or RunPodApi(settings.runpod_timeout_s)
        self.prefix = deployment_prefix(settings)
        self.catalog = Catalog()
        self.started: set[str] = set()  # machines of this instance not yet stopped
        self._stopped: set[str] = set()
        self._created: dict[str, float] = {}  # machine id -> monotonic time of its start
        self._listings: dict[str, tuple[float, dict[str, dict[str, Any]]]] = {}
        self._listing_locks: dict[str, anyio.Lock] = {}

    # -- naming ------------------------------------------------------------------------
    def pod_name(self, org: str, worker_id: str) -> str:
        return f"{self.prefix}.{org}.{worker_id}"

    def owner(self, pod_name: str) -> tuple[str, str] | None:
        """(org, worker id) of a pod of this deployment; None for any other pod."""
        head, _, rest = pod_name.partition(".")
        parts = rest.split(".")
        return (parts[0], parts[1]) if head == self.prefix and len(parts) == 2 else None

    @staticmethod
    def split(machine_id: str) -> tuple[str, str]:
        org, _, pod_id = machine_id.rpartition("/")
        return org, pod_id

    def _key(self, org: str) -> str:
        key = self.keys(org)
        if not key:
            raise MachineStartFailed(
                f"organization {org!r} has no RunPod key: set one with `ow env set "
                "RUNPOD_API_KEY` (or the operator's OW_RUNPOD_API_KEY)", kind="credentials")
        return key

    # -- the port ----------------------------------------------------------------------
    def hardware_options(self, required_vram_gb: int | None,
                         allowed_hardware: list[str] | None) -> list[str]:
        return self.catalog.options(required_vram_gb, allowed_hardware)

    def price_per_hour(self, hardware: str) -> float:
        return self.catalog.price_per_hour(hardware)

    def pod_env(self, spec: MachineSpec) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in settings_env(s).items()
               if k not in _SERVICE_ONLY and k not in _HOST_ONLY
               and not k.startswith(_HOST_PREFIXES)}
        env.update(spec.env, OW_NATS_URL=s.client_nats_url or s.nats_url or "",
                   OW_WORKER_ID=spec.worker_id, OW_DOCKER_IMAGE=spec.docker_image,
                   OW_MANAGED="1")
        if bad := [k for k in env if not _ENV_NAME.fullmatch(k)]:
            raise MachineStartFailed(f"not an environment variable name: {bad[0][:80]!r}")
        return env

    async def start(self, spec: MachineSpec) -> str:
        config = self.catalog.config(spec.hardware)
        if config is None:
            raise MachineStartFailed(f"RunPod does not rent {spec.hardware!r} here")
        key = self._key(spec.org)
        s = self.settings
        cuda = [v.strip() for v in s.runpod_cuda_versions.split(",") if v.strip()]
        pod = await self.api.create_pod(
            key, name=self.pod_name(spec.org, spec.worker_id), image=spec.docker_image,
            gpu_type_id=config.gpu.provider_id, gpu_count=config.count,
            env=self.pod_env(spec), docker_args=AGENT_COMMAND, cloud_type=s.runpod_cloud_type,
            container_disk_gb=s.runpod_container_disk_gb, volume_gb=s.runpod_volume_gb,
            ports=s.runpod_ports, cuda_versions=cuda)
        machine_id = f"{spec.org}/{pod['id']}"
        self.started.add(machine_id)
        self._created[machine_id] = time.monotonic()
        log.info("runpod.pod_created", machine=machine_id, hardware=spec.hardware,
                 worker=spec.worker_id)
        return machine_id

    async def stop(self, machine_id: str) -> None:
        """Terminate the pod (RunPod stops its container with SIGTERM first, so the agent
        gives its job back). A pod already gone is fine."""
        org, pod_id = self.split(machine_id)
        key = self._key(org)
        try:
            await self.api.terminate(key, pod_id)
        except RunPodFailure:
            if await self.api.pod(key, pod_id) is not None:
                raise
        self._stopped.add(machine_id)
        self.started.discard(machine_id)

    async def alive(self, machine_id: str) -> bool:
        """From a listing at most ``OW_RUNPOD_POLL_S`` old (one call per key, not per
        pod). When RunPod cannot be asked the answer is yes: a machine that really died
        stops heartbeating, and the scheduler declares its worker lost."""
        if machine_id in self._stopped:
            return False
        org, pod_id = self.split(machine_id)
        try:
            pods = await self.listing(self._key(org), self._created.get(machine_id, 0.0))
        except MachineStartFailed as exc:
            log.warning("runpod.alive_unknown", machine=machine_id, error=str(exc))
            return True
        pod = pods.get(pod_id)
        return pod is not None and pod.get("desiredStatus") not in GONE

    async def listing(self, key: str, newer_than: float = 0.0) -> dict[str, dict[str, Any]]:
        """Every pod the key's account has, by id; fetched again when older than the
        poll interval or than ``newer_than`` (a pod started after it is not in it)."""
        lock = self._listing_locks.setdefault(key, anyio.Lock())
        async with lock:
            taken, pods = self._listings.get(key, (-1.0, {}))
            now = time.monotonic()
            if taken < newer_than or now - taken >= self.settings.runpod_poll_s:
                pods = {p["id"]: p for p in await self.api.pods(key) if p and p.get("id")}
                self._listings[key] = (now, pods)
            return pods

    async def close(self) -> None:
        """Terminate every pod this instance started (RunPod kills a container that
        ignores the SIGTERM once its grace is over)."""
        for machine_id in sorted(self.started):
            try:
                await self.stop(machine_id)
            except MachineStartFailed as exc:
                log.warning("runpod.close_failed", machine=machine_id, error=str(exc))

    async def maintain(self, fleet: Fleet) -> None:
        """Refresh the catalog and release leaked pods, each on its own interval."""
        await maintain(self, fleet)
