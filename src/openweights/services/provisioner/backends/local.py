"""The ``local`` backend: each "machine" is an agent process on this computer.

Agents may pretend to have GPUs (``OW_LOCAL_FAKE_GPUS``) so that hardware matching and
VRAM needs can be exercised without any. Machine ids are ``local-<pid>``; they stay
meaningful across a provisioner restart (signals go to the pid).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio

from openweights.adapters.embedded import die_with_parent
from openweights.config import Settings, settings_env
from openweights.hardware import hourly_cost, local_hardware, offers, vram_gb
from openweights.procs import pid_alive
from openweights.services.provisioner.port import Fleet, MachineSpec, MachineStartFailed


class LocalBackend:
    name = "local"

    def __init__(self, settings: Settings, *, stop_grace_s: float = 30.0) -> None:
        self.settings = settings
        self.stop_grace_s = stop_grace_s
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.logs = settings.home / "logs" / "agents"

    @property
    def hardware(self) -> str:
        return local_hardware(self.settings.local_fake_gpus, self.settings.local_fake_gpu_type)

    @property
    def vram(self) -> int:
        return vram_gb(self.hardware) if self.settings.local_fake_gpus > 0 else 0

    def hardware_options(self, required_vram_gb: int | None,
                         allowed_hardware: list[str] | None) -> list[str]:
        # The api refuses a defaulted VRAM need by the same rule (api/jobs.py).
        return [self.hardware] if offers(self.hardware, required_vram_gb,
                                         allowed_hardware) else []

    def price_per_hour(self, hardware: str) -> float:
        # What such a machine would cost on a provider: fake GPUs are priced as real ones.
        return 0.0 if hardware == "cpu" else hourly_cost(hardware)

    async def start(self, spec: MachineSpec) -> str:
        env = dict(agent_env(self.settings), **spec.env, OW_WORKER_ID=spec.worker_id,
                   OW_DOCKER_IMAGE=spec.docker_image, OW_MANAGED="1")
        log_path: Path = self.logs / f"{spec.worker_id}.log"
        # Spawned on the loop's own thread (a few milliseconds, once per machine): the
        # agent's parent-death signal fires when the *thread* that started it exits, and
        # a worker thread of anyio's pool is retired when idle.
        try:
            self.logs.mkdir(parents=True, exist_ok=True)
            self.logs.chmod(0o700)  # the agents' logs are the operator's, not a job's
            out = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                          0o600)
            try:
                proc = subprocess.Popen(  # noqa: ASYNC220 - on purpose, see above
                    [sys.executable, "-m", "openweights.services.agent"], env=env,
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, preexec_fn=die_with_parent)
            finally:
                os.close(out)
        except OSError as exc:
            raise MachineStartFailed(f"cannot start a local agent: {exc}") from exc
        self.procs[proc.pid] = proc
        return f"local-{proc.pid}"

    @staticmethod
    def _pid(machine_id: str) -> int:
        return int(machine_id.removeprefix("local-"))

    async def stop(self, machine_id: str) -> None:
        pid = self._pid(machine_id)
        if not await self.alive(machine_id):
            return
        try:
            os.kill(pid, signal.SIGTERM)  # graceful: the agent gives its job back
        except ProcessLookupError:
            return

    async def kill(self, machine_id: str) -> None:
        """Hard stop (tests, chaos): what a machine dying looks like."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid(machine_id), signal.SIGKILL)
        await self.alive(machine_id)

    async def alive(self, machine_id: str) -> bool:
        pid = self._pid(machine_id)
        proc = self.procs.get(pid)
        if proc is not None:
            if proc.poll() is None:
                return True
            self.procs.pop(pid, None)
            return False
        return pid_alive(pid)

    async def maintain(self, fleet: Fleet) -> None:
        """Nothing to tidy: every agent is a child of this process."""

    async def close(self) -> None:
        """Stop every agent this backend started: SIGTERM, then SIGKILL after the grace."""
        for pid in list(self.procs):
            await self.stop(f"local-{pid}")
        with anyio.move_on_after(self.stop_grace_s):
            for proc in list(self.procs.values()):  # a wait the grace's end can abandon
                await anyio.to_thread.run_sync(proc.wait, abandon_on_cancel=True)
        for pid, proc in list(self.procs.items()):
            if proc.poll() is None:
                await self.kill(f"local-{pid}")
                await anyio.to_thread.run_sync(proc.wait)
            self.procs.pop(pid, None)


# What a machine must never hold: the services' credentials, the secrets key, the
# database, the file store's keys. An agent gets the client URL and (with auth) its own
# worker token; its jobs get less still (services/agent/job_io.py: job_base_env).
_SERVICE_ONLY = ("OW_NATS_URL", "OW_DATABASE_URL", "OW_SECRET_KEY", "OW_NATS_AUTH_FILE",
                 "OW_AUTH", "OW_CLIENT_NATS_URL", "OPENWEIGHTS_API_KEY", "OW_S3_ACCESS_KEY",
                 "OW_S3_SECRET_KEY", "OW_RUNPOD_API_KEY", "RUNPOD_API_KEY", "OW_SECRETS_DIR")


def agent_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SERVICE_ONLY}
    env.update({k: v for k, v in settings_env(settings).items() if k not in _SERVICE_ONLY})
    env["OW_NATS_URL"] = settings.client_nats_url or settings.nats_url or ""
    return env
