"""The agent: one per machine. Registers, heartbeats, runs what it is assigned.

Assignments arrive as messages (no polling) and queue up; jobs run one at a time (see
``runs``; how each is reported is the state machine in ``reporting``). Every status
change goes to the api service fenced by the run, so a stale agent (declared lost,
restarted, canceled) cannot change a job it no longer owns. Stopping, the agent reports
its stop, gives back the running job (requeue) and what is queued behind it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import msgspec
import structlog
from nats.aio.msg import Msg

from openweights.api.protocol import Assignment, Heartbeat, RunNotice, ToAgent
from openweights.config import Settings
from openweights.errors import InvalidRequest, OpenWeightsError
from openweights.events import WorkerLost, WorkerShutdownRequested, WorkerTTLExtended, decode
from openweights.isolation import JobIsolation, choose, harden_home
from openweights.sdk.transport import Transport
from openweights.services.agent.api import AgentApi
from openweights.services.agent.control import RunControls
from openweights.services.agent.env import prepare_env
from openweights.services.agent.gpu import HardwareInfo, gpu_health_problems, read_gpus
from openweights.services.agent.runs import RunExecutor
from openweights.subjects import check_token

__all__ = ["Agent"]

log = structlog.get_logger("agent")


class Agent:
    def __init__(self, settings: Settings, worker_id: str, docker_image: str,
                 hardware: HardwareInfo, *, managed: bool, real_gpus: bool = False,
                 isolation: JobIsolation | None = None) -> None:
        """``isolation``: how jobs are kept apart here (default: what ``settings`` asks
        for on this machine; raises ``IsolationUnavailable`` when that cannot be had)."""
        self.settings, self.worker_id, self.docker_image = settings, worker_id, docker_image
        self.hardware, self.managed, self.real_gpus = hardware, managed, real_gpus
        self.api = AgentApi(settings, worker_id, send=self.call)
        self.stopping = anyio.Event()
        self.stop_reason = "shutdown requested"
        self.ttl_until = datetime.now(UTC) + timedelta(seconds=settings.worker_ttl_s)
        self._stop_reported = False
        # ``None`` in the queue means "stop": what is still queued behind it is given back.
        # asyncio's queue: anyio's stream costs a library lookup per item.
        self._queue: asyncio.Queue[Assignment | None] = asyncio.Queue()
        self.controls = RunControls()
        self.isolation = isolation if isolation is not None else choose(settings)
        harden_home(settings.home)  # the stack's keys and data: not a job's to read
        self.workdir_root = self.isolation.jobs_root(worker_id)
        self.runs = RunExecutor(self, self.api, settings, hardware, real_gpus=real_gpus,
                                workdir_root=self.workdir_root, isolation=self.isolation)

    @property
    def t(self) -> Transport:
        """The connection to the api (tests shorten its retries)."""
        return self.api.transport

    async def call(self, endpoint: str, **fields: Any) -> Any:
        """Every request to the api passes here (see ``AgentApi``): a seam tests watch."""
        return await self.api.request(endpoint, **fields)

    # -- lifecycle ---------------------------------------------------------------------
    async def run(self) -> None:
        # Before registering: the image's environment is ready when a job comes.
        env = await prepare_env(self.docker_image, self.settings)
        self.runs.shells.python, self.runs.env_note = str(env.python), env.note
        nc = await self.api.connect()
        org, subjects = self.api.org, self.api.subjects
        subs = [
            await nc.subscribe(subjects.agent(org, self.worker_id), cb=self._on_message),
            await nc.subscribe(subjects.live(org, "worker", self.worker_id),
                               cb=self._on_worker_event),
        ]
        try:
            await self._register()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat_forever)
                tg.start_soon(self._watch_ttl)
                await self._work()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                for sub in subs:
                    await sub.unsubscribe()
                await self.runs.close()
                await self.report_stopped()
                await self.api.close()

    async def _register(self) -> None:
        requeued = await self.api.register(self.docker_image, self.hardware,
                                           managed=self.managed, ttl_until=self.ttl_until)
        log.info("agent.registered", worker=self.worker_id, requeued=requeued,
                 hardware=self.hardware.hardware_type, jobs_isolated=self.isolation.isolated,
                 why_not=self.isolation.why_not or None)
        await self.runs.workspaces.prepare()
        self.runs.warm_up()
        if self.real_gpus and (problems := gpu_health_problems(await read_gpus())):
            log.error("agent.gpu_unhealthy", problems=problems)
            self.stop(f"GPU health check failed: {'; '.join(problems)}")

    def stop(self, reason: str) -> None:
        if not self.stopping.is_set():
            self.stop_reason = reason
            self.stopping.set()
            self._queue.put_nowait(None)
            self.controls.stop_all("shutdown")

    async def report_stopped(self) -> None:
        """Once, and before any job is given back: an active worker would be handed it
        again by the scheduler just as it goes away."""
        if self._stop_reported:
            return
        self._stop_reported = True
        self.api.give_up_after(10.0)  # stopping: don't linger
        try:
            await self.api.stopped(self.stop_reason)
        except OpenWeightsError as exc:
            log.warning("agent.stop_report_failed", error=str(exc))

    async def _work(self) -> None:
        while (assignment := await self._queue.get()) is not None:
            await self._run_one(assignment)
            if self.runs.failures >= self.settings.max_consecutive_failures:
                self.stop(f"{self.runs.failures} consecutive failed jobs")
        await self.report_stopped()
        while True:  # stopping: give back what was assigned but never started
            try:
                left = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if left is not None:
                await self.runs.give_back(left)

    async def _run_one(self, a: Assignment) -> None:
        control = self.controls.open(a, stopping=self.stopping.is_set())
        if control is None:
            log.info("agent.assignment_stale", job=a.job_id, reason="canceled before it started")
            return
        try:
            await self.runs.run(a, control)
        finally:
            self.controls.close(a.run_id)

    # -- what arrives ------------------------------------------------------------------
    async def _on_message(self, msg: Msg) -> None:
        if (a := self._valid_assignment(msg.data)) is not None:
            self.controls.queued(a)
            self._queue.put_nowait(a)

    def _valid_assignment(self, data: bytes) -> Assignment | None:
        """The assignment in a message from the scheduler, or None: a run notice (acted
        on here) or, with a warning, something this agent must not act on."""
        try:
            m = msgspec.json.decode(data, type=ToAgent)
            check_token(m.job_id, "job id")
            check_token(m.run_id, "run id")
        # msgspec raises the last two itself, for invalid UTF-8 and too deep nesting.
        except (msgspec.DecodeError, InvalidRequest, UnicodeDecodeError, RecursionError) as exc:
            log.warning("agent.bad_assignment", error=str(exc))
            return None
        if m.org != self.api.org or m.worker_id != self.worker_id:
            # Only the scheduler can publish here; still, nothing foreign is acted on.
            log.warning("agent.foreign_assignment", job=m.job_id, org=m.org, worker=m.worker_id)
            return None
        if isinstance(m, RunNotice):
            self.controls.on_notice(m)
            return None
        return m

    async def _on_worker_event(self, msg: Msg) -> None:
        for event in decode(msg.data):
            if isinstance(event, WorkerShutdownRequested | WorkerLost):
                self.stop(getattr(event, "reason", "shutdown requested"))
            elif isinstance(event, WorkerTTLExtended):
                self.ttl_until = event.ttl_until

    # -- while it runs -----------------------------------------------------------------
    async def _heartbeat_forever(self) -> None:
        subject = self.api.subjects.heartbeat(self.api.org, self.worker_id)
        nc = await self.api.connect()
        while True:
            a = self.runs.current
            beat = Heartbeat(worker_id=self.worker_id, at=datetime.now(UTC),
                             job_id=a.job_id if a else None, run_id=a.run_id if a else None)
            await nc.publish(subject, msgspec.json.encode(beat))
            await anyio.sleep(self.settings.heartbeat_s)  # the heartbeat period itself

    async def _watch_ttl(self) -> None:
        while not self.stopping.is_set():
            left = (self.ttl_until - datetime.now(UTC)).total_seconds()
            if left <= 0:
                self.stop("ttl expired")
                return
            await anyio.sleep(min(left, 60.0))  # re-read: the TTL may be extended meanwhile
