"""What the MachineBackend contract needs from each backend beyond the port itself.

A harness knows how to tell that a machine of its backend runs (its agent registered),
that it is gone (its process exited, its pod terminated), and how to break one (crash
it, make it unresponsive, make a start fail). The clauses in
``test_machine_backend.py`` use only this and the port, so another backend joins the
suite with one harness here and one fixture param there.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Protocol

import anyio
import nats

from openweights.config import Settings
from openweights.events import WorkerRegistered, decode
from openweights.hardware import GPUS
from openweights.services.provisioner.backends.local import LocalBackend
from openweights.services.provisioner.backends.runpod import RunPodBackend
from openweights.services.provisioner.backends.runpod_api import RunPodApi
from openweights.services.provisioner.catalog import Catalog
from openweights.services.provisioner.port import MachineBackend, MachineSpec
from openweights.services.testing.runpod_stub import NO_CAPACITY, RunPodStub
from openweights.subjects import Subjects

# Bounds on waits that end at an event; a machine that needs longer is broken.
RUNNING_WITHIN_S = 60.0
GONE_WITHIN_S = 30.0


class MachineHarness(Protocol):
    name: str
    backend: MachineBackend
    stop_grace_s: float  # the grace ``backend`` was built with
    fitting_vram_gb: int  # a VRAM need this backend can meet
    foreign_hardware: str | None  # hardware it cannot start; None: it starts any
    unknown_machine_id: str  # shaped like its ids, naming no machine

    def spec(self) -> MachineSpec:
        """A spec for a new worker on the backend's preferred hardware."""
        ...

    def new_backend(self) -> MachineBackend:
        """Another instance on the same settings: what a restarted provisioner holds."""
        ...

    async def wait_running(self, machine_id: str, spec: MachineSpec) -> WorkerRegistered:
        """The registration of the agent the machine runs for ``spec.worker_id``."""
        ...

    async def wait_gone(self, machine_id: str) -> None: ...

    def crash(self, machine_id: str) -> None:
        """The machine dies on its own, as a power cut would kill it."""
        ...

    def make_unresponsive(self, machine_id: str) -> None:
        """The machine keeps running but no longer acts on a polite stop."""
        ...

    def make_unstartable(self, spec: MachineSpec) -> None:
        """Arrange for ``backend.start(spec)`` to fail, in a way real life can."""
        ...

    def break_backend(self) -> None:
        """Arrange for every start to fail: what the backend itself needs is unusable."""
        ...


class LocalHarness:
    """The ``local`` backend: a machine is an agent process with one fake GPU."""

    name = "local"
    stop_grace_s = 1.0
    fitting_vram_gb = 80  # one fake H100S
    foreign_hardware: str | None = "1x H200"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.namespace)
        self.backends: list[LocalBackend] = []
        self.backend: MachineBackend = self.new_backend()
        # Each machine's pidfd, opened while it surely runs: a signal or a wait through one
        # never reaches a later process that got the same pid.
        self.pidfds: dict[str, int | None] = {}
        self.frozen: list[str] = []
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        self.unknown_machine_id = f"local-{pid_max + 1}"  # above any pid the kernel gives
        self._registered: dict[str, WorkerRegistered] = {}
        self._arrived = anyio.Event()

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[LocalHarness]:
        harness = cls(settings.model_copy(update={"local_fake_gpus": 1,
                                                  "local_fake_gpu_type": "H100S"}))
        nc = await nats.connect(str(settings.nats_url))
        live = harness.subjects.live(settings.default_org, "worker", "*")
        await nc.subscribe(live, cb=harness._on_worker_event)
        await nc.flush()
        try:
            yield harness
        finally:
            with anyio.CancelScope(shield=True):
                await harness._release_everything()
                await nc.close()

    def new_backend(self) -> LocalBackend:
        backend = LocalBackend(self.settings, stop_grace_s=self.stop_grace_s)
        self.backends.append(backend)
        return backend

    def spec(self) -> MachineSpec:
        hardware = self.backend.hardware_options(None, None)[0]
        return MachineSpec(worker_id=f"contract-{uuid.uuid4().hex[:8]}",
                           org=self.settings.default_org, hardware=hardware,
                           docker_image="contract-image")

    @staticmethod
    def pid(machine_id: str) -> int:
        return int(machine_id.removeprefix("local-"))

    async def _on_worker_event(self, msg: Any) -> None:
        for event in decode(msg.data):
            if isinstance(event, WorkerRegistered):
                self._registered[event.worker_id] = event
                self._arrived.set()
                self._arrived = anyio.Event()

    async def wait_running(self, machine_id: str, spec: MachineSpec) -> WorkerRegistered:
        self._pidfd(machine_id)
        with anyio.fail_after(RUNNING_WITHIN_S):
            while spec.worker_id not in self._registered:
                await self._arrived.wait()
        return self._registered[spec.worker_id]

    def _pidfd(self, machine_id: str) -> int | None:
        """The machine's pidfd; None once the process is gone and reaped."""
        if machine_id not in self.pidfds:
            try:
                self.pidfds[machine_id] = os.pidfd_open(self.pid(machine_id))
            except ProcessLookupError:
                self.pidfds[machine_id] = None
        return self.pidfds[machine_id]

    async def wait_gone(self, machine_id: str) -> None:
        """Until the process has exited: its pidfd turns readable then (reaped or not)."""
        if (fd := self._pidfd(machine_id)) is not None:
            with anyio.fail_after(GONE_WITHIN_S):
                await anyio.wait_readable(fd)

    def _signal(self, machine_id: str, signum: int) -> None:
        if (fd := self._pidfd(machine_id)) is not None:
            with suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signum)

    def crash(self, machine_id: str) -> None:
        self._signal(machine_id, signal.SIGKILL)

    def make_unresponsive(self, machine_id: str) -> None:
        # A stopped process keeps SIGTERM pending; only SIGKILL ends it.
        self.frozen.append(machine_id)
        self._signal(machine_id, signal.SIGSTOP)

    def make_unstartable(self, spec: MachineSpec) -> None:
        # The agent's output goes to this file: a directory in its place cannot be opened.
        (self.settings.home / "logs" / "agents" / f"{spec.worker_id}.log").mkdir(parents=True)

    def break_backend(self) -> None:
        # A file where the folder of every agent's log goes: no log, no agent.
        self.settings.home.mkdir(parents=True, exist_ok=True)
        (self.settings.home / "logs").touch()

    async def _release_everything(self) -> None:
        """Every machine a clause left behind; a frozen one first, which no polite stop
        can end."""
        for machine_id in self.frozen:
            self.crash(machine_id)
        for backend in self.backends:
            await backend.close()
        for fd in self.pidfds.values():
            if fd is not None:
                os.close(fd)


class RunPodHarness:
    """The ``runpod`` backend against the RunPod stand-in: a machine is a pod whose
    container is a real agent process here, on the cheapest GPU the catalog offers."""

    name = "runpod"
    stop_grace_s = 1.0  # the stand-in's SIGTERM-to-SIGKILL grace
    fitting_vram_gb = 80
    foreign_hardware: str | None = "1x MI300X"  # not in the stand-in's inventory

    def __init__(self, settings: Settings, stub: RunPodStub, key: str) -> None:
        self.stub, self.key = stub, key
        self.settings = settings.model_copy(update={
            "backend": "runpod", "runpod_api_key": key, "runpod_poll_s": 0.0})
        self.subjects = Subjects(settings.namespace)
        self.unknown_machine_id = f"{settings.default_org}/00000000000000"
        self.backends: list[RunPodBackend] = []
        self.catalog = Catalog()
        self.backend: MachineBackend = self.new_backend()
        self._registered: dict[str, WorkerRegistered] = {}
        self._arrived = anyio.Event()

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[RunPodHarness]:
        stub = RunPodStub(settings.home.parent / "runpod", grace_s=cls.stop_grace_s).start()
        stub.unlisted.add(GPUS["MI300X"])
        before = os.environ.get("RUNPOD_API_BASE_URL")
        os.environ["RUNPOD_API_BASE_URL"] = stub.url  # the SDK reads it at every call
        harness = cls(settings, stub, stub.add_key("contract-key"))
        # What the backend's upkeep does first: the catalog after RunPod's inventory.
        harness.catalog = harness.catalog.refreshed(
            await RunPodApi(10).gpu_types(harness.key))
        for backend in harness.backends:
            backend.catalog = harness.catalog
        nc = await nats.connect(str(settings.nats_url))
        await nc.subscribe(harness.subjects.live(settings.default_org, "worker", "*"),
                           cb=harness._on_worker_event)
        await nc.flush()
        try:
            yield harness
        finally:
            with anyio.CancelScope(shield=True):
                for backend in harness.backends:
                    await backend.close()
                await nc.close()
                await anyio.to_thread.run_sync(stub.close)
                if before is None:
                    os.environ.pop("RUNPOD_API_BASE_URL", None)
                else:
                    os.environ["RUNPOD_API_BASE_URL"] = before

    def new_backend(self) -> RunPodBackend:
        backend = RunPodBackend(self.settings, lambda org: self.key)
        backend.catalog = self.catalog
        self.backends.append(backend)
        return backend

    def spec(self) -> MachineSpec:
        hardware = self.backend.hardware_options(None, None)[0]
        return MachineSpec(worker_id=f"contract-{uuid.uuid4().hex[:8]}",
                           org=self.settings.default_org, hardware=hardware,
                           docker_image="contract-image")

    async def _on_worker_event(self, msg: Any) -> None:
        for event in decode(msg.data):
            if isinstance(event, WorkerRegistered):
                self._registered[event.worker_id] = event
                self._arrived.set()
                self._arrived = anyio.Event()

    async def wait_running(self, machine_id: str, spec: MachineSpec) -> WorkerRegistered:
        with anyio.fail_after(RUNNING_WITHIN_S):
            while spec.worker_id not in self._registered:
                await self._arrived.wait()
        return self._registered[spec.worker_id]

    @staticmethod
    def pod_id(machine_id: str) -> str:
        return machine_id.rpartition("/")[2]

    async def wait_gone(self, machine_id: str) -> None:
        """Until RunPod lists the pod no more and its container has exited."""
        pod_id = self.pod_id(machine_id)
        assert pod_id not in self.stub.pods, f"pod {pod_id} is still listed"
        proc = self.stub.gone.get(pod_id)
        if proc is not None:
            with anyio.fail_after(GONE_WITHIN_S):
                await anyio.to_thread.run_sync(proc.wait, abandon_on_cancel=True)

    def crash(self, machine_id: str) -> None:
        self.stub.vanish(self.pod_id(machine_id))

    def make_unresponsive(self, machine_id: str) -> None:
        self.stub.freeze(self.pod_id(machine_id))

    def make_unstartable(self, spec: MachineSpec) -> None:
        self.stub.fail_next.append(NO_CAPACITY)

    def break_backend(self) -> None:
        self.stub.revoke(self.key)
