"""The agent: one per machine. Registers, heartbeats, runs what it is assigned.

Assignments arrive as messages (no polling) and queue up; jobs run one at a time in a
fresh directory (made ahead, see ``workspace``). Every status change goes to the api
service fenced by the run, so a stale agent (declared lost, restarted, canceled) cannot
change a job it no longer owns.

Starting a run: the api's reply to ``agent.run.start`` carries the org's secrets and
their version. When the next assignment names the version the agent already holds (and
the machine has no GPUs to reclaim first), the command is spawned at once and the start
confirmed meanwhile: pickup is assignment -> spawn, not assignment -> round trip ->
spawn. A refused start stops the command and reports nothing. The confirmation waits
``QUICK_JOB_S``: a job that ends before reports its start with its end (``with_start``),
one request and one append instead of two of each; the run exists since its assignment,
so the job may use it (``ow.run.log``) meanwhile. The next job's shell is spawned in the
next job's directory while the agent waits (``WarmShell``), so a job starts when its
script is written to it.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import msgspec
import structlog
from nats.aio.msg import Msg

from openweights.api.protocol import Assignment, Heartbeat, RunNotice, ToAgent
from openweights.config import Settings
from openweights.errors import Conflict, InvalidRequest, NotFound, OpenWeightsError
from openweights.events import WorkerLost, WorkerShutdownRequested, WorkerTTLExtended, decode
from openweights.sdk.client import AsyncOpenWeights
from openweights.services.agent.gpu import (
    ForeignGpuHolder,
    GpuReclaimError,
    HardwareInfo,
    gpu_health_problems,
    read_gpus,
    reclaim_gpu,
)
from openweights.services.agent.process import (
    WarmShell,
    build_job_env,
    collect_uploads,
    run_job_process,
)
from openweights.services.agent.workspace import Workspace, Workspaces
from openweights.subjects import check_token

log = structlog.get_logger("agent")

# The api refused to start an assigned run: it is stale (canceled, reassigned) or names
# no job of ours. Either way there is nothing to run; the agent drops it and goes on.
REFUSED = (Conflict, NotFound, InvalidRequest)
# An optimistic start is confirmed after this long; a job that ends sooner reports its
# start with its end (one request and one append instead of two of each).
QUICK_JOB_S = 0.05


class Agent:
    def __init__(self, settings: Settings, worker_id: str, docker_image: str,
                 hardware: HardwareInfo, *, managed: bool, real_gpus: bool = False) -> None:
        self.settings, self.worker_id, self.docker_image = settings, worker_id, docker_image
        self.hardware, self.managed, self.real_gpus = hardware, managed, real_gpus
        self.ow = AsyncOpenWeights(settings=settings)
        self.t = self.ow.transport
        self.stopping = anyio.Event()
        self.stop_reason = "shutdown requested"
        self.ttl_until = datetime.now(UTC) + timedelta(seconds=settings.worker_ttl_s)
        self.failures = 0
        self.current: Assignment | None = None
        self._stop_reported = False
        # ``None`` in the queue means "stop": what is still queued behind it is requeued.
        # asyncio's queue: anyio's stream costs a library lookup per item.
        self._queue: asyncio.Queue[Assignment | None] = asyncio.Queue()
        self.workdir_root = settings.home / "agent" / worker_id
        self._base_env = dict(os.environ)  # decoded once, not for every job
        self.workspaces = Workspaces(self.workdir_root)
        # org -> (version, secrets) from the last start reply (see Assignment.secrets_seq)
        self._secrets: dict[str, tuple[int, dict[str, str]]] = {}
        self._warm: WarmShell | None = None  # the next job's shell, spawned ahead
        self._warm_ok = True
        # The scheduler's notices about runs (see ``RunNotice``): the running one's
        # control, and queued runs canceled before they started.
        self._controls: dict[str, _RunControl] = {}
        self._queued: set[str] = set()
        self._canceled: set[str] = set()
        self.workdir_root.mkdir(parents=True, exist_ok=True)

    async def call(self, endpoint: str, **fields: Any) -> Any:
        return await self.t.call(endpoint, worker_id=self.worker_id, **fields)

    # -- lifecycle ---------------------------------------------------------------------
    async def run(self) -> None:
        nc = await self.t.connect()
        org = self.t.org
        subs = [
            await nc.subscribe(self.t.subjects.agent(org, self.worker_id), cb=self._on_message),
            await nc.subscribe(self.t.subjects.live(org, "worker", self.worker_id),
                               cb=self._on_worker_event),
        ]
        try:
            registered = await self.call(
                "agent.register", docker_image=self.docker_image,
                hardware_type=self.hardware.hardware_type, gpu_type=self.hardware.gpu_type,
                gpu_count=self.hardware.gpu_count, vram_gb=self.hardware.vram_gb,
                managed=self.managed, ttl_until=self.ttl_until)
            log.info("agent.registered", worker=self.worker_id, requeued=registered["requeued"],
                     hardware=self.hardware.hardware_type)
            await self.workspaces.prepare()
            self._warm_up()
            if self.real_gpus and (problems := gpu_health_problems(await read_gpus())):
                log.error("agent.gpu_unhealthy", problems=problems)
                self.stop(f"GPU health check failed: {'; '.join(problems)}")
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat_forever)
                tg.start_soon(self._watch_ttl)
                await self._work()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                for sub in subs:
                    await sub.unsubscribe()
                if self._warm is not None:
                    await self._warm.discard()
                self.workspaces.discard()
                await self._report_stopped()
                await self.ow.close()

    def stop(self, reason: str) -> None:
        if not self.stopping.is_set():
            self.stop_reason = reason
            self.stopping.set()
            self._queue.put_nowait(None)
            for control in self._controls.values():
                control.stop("shutdown")

    async def _report_stopped(self) -> None:
        """Once, and before any job is given back: an active worker would be handed it
        again by the scheduler just as it goes away."""
        if self._stop_reported:
            return
        self._stop_reported = True
        self.t.retry_for_s = min(self.t.retry_for_s, 10.0)  # stopping: don't linger
        try:
            await self.call("agent.stopped", reason=self.stop_reason)
        except OpenWeightsError as exc:
            log.warning("agent.stop_report_failed", error=str(exc))

    async def _on_message(self, msg: Msg) -> None:
        if (a := self._valid_assignment(msg.data)) is not None:
            self._queued.add(a.run_id)
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
        if m.org != self.t.org or m.worker_id != self.worker_id:
            # Only the scheduler can publish here; still, nothing foreign is acted on.
            log.warning("agent.foreign_assignment", job=m.job_id, org=m.org, worker=m.worker_id)
            return None
        if isinstance(m, RunNotice):
            self._on_notice(m)
            return None
        return m

    def _on_notice(self, n: RunNotice) -> None:
        if (control := self._controls.get(n.run_id)) is not None:
            control.on_notice(n)
        elif n.kind == "canceled" and n.run_id in self._queued:
            self._canceled.add(n.run_id)  # not started yet: it never will be

    async def _on_worker_event(self, msg: Msg) -> None:
        for event in decode(msg.data):
            if isinstance(event, WorkerShutdownRequested | WorkerLost):
                self.stop(getattr(event, "reason", "shutdown requested"))
            elif isinstance(event, WorkerTTLExtended):
                self.ttl_until = event.ttl_until

    async def _heartbeat_forever(self) -> None:
        subject = self.t.subjects.heartbeat(self.t.org, self.worker_id)
        nc = await self.t.connect()
        while True:
            a = self.current
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

    async def _work(self) -> None:
        while (assignment := await self._queue.get()) is not None:
            await self._run_one(assignment)
            if self.failures >= self.settings.max_consecutive_failures:
                self.stop(f"{self.failures} consecutive failed jobs")
        await self._report_stopped()
        while True:  # stopping: give back what was assigned but never started
            try:
                left = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if left is not None:
                await self._requeue_unstarted(left)

    async def _requeue_unstarted(self, a: Assignment) -> None:
        try:
            await self._start(a)
        except REFUSED:
            return
        await self._end(a, "requeue", reason=self.stop_reason)

    # -- one job -------------------------------------------------------------------------
    async def _run_one(self, a: Assignment) -> None:
        self._queued.discard(a.run_id)
        if a.run_id in self._canceled:
            self._canceled.discard(a.run_id)
            log.info("agent.assignment_stale", job=a.job_id, reason="canceled before it started")
            return
        control = self._controls[a.run_id] = _RunControl(a.timeout)
        if self.stopping.is_set():
            control.stop("shutdown")
        try:
            cached = self._secrets.get(a.org)
            if not self.real_gpus and cached is not None and cached[0] == a.secrets_seq:
                # The assignment is in the log already and our copy of the secrets is
                # current: the command starts while the api confirms the start. Should it
                # refuse (canceled or reassigned meanwhile), the command is stopped and
                # nothing is reported (a job may run more than once; it completes once).
                await self._run(a, control, cached[1], confirm=True)
                return
            try:
                secrets = await self._start(a)
            except REFUSED as exc:
                log.info("agent.assignment_stale", job=a.job_id, reason=str(exc))
                return
            if self.real_gpus:
                try:
                    await reclaim_gpu(own_pids=[os.getpid()])
                except ForeignGpuHolder as exc:
                    await self._end(a, "requeue",
                                    reason=f"GPU held by another container: {exc}")
                    self.stop("GPU held by another container")
                    return
                except GpuReclaimError as exc:
                    log.warning("agent.gpu_reclaim_failed", error=str(exc))
            await self._run(a, control, secrets, confirm=False)
        finally:
            del self._controls[a.run_id]
            control.close()

    async def _start(self, a: Assignment) -> dict[str, str]:
        """Tell the api the run starts; returns the org's secrets (kept, with their
        version, for the next assignment; sent only when ours are not current). Raises
        one of ``REFUSED``."""
        held_seq, held = self._secrets.get(a.org, (-1, {}))
        started = await self.call("agent.run.start", job_id=a.job_id, run_id=a.run_id,
                                  secrets_seq=held_seq)
        secrets: dict[str, str] = started.get("secrets", held)
        self._secrets[a.org] = (int(started["secrets_seq"]), secrets)
        return secrets

    async def _run(self, a: Assignment, control: _RunControl, secrets: dict[str, str], *,
                   confirm: bool) -> None:
        self.current = a
        ws = await self.workspaces.take()
        try:
            await self._execute(a, ws, control, secrets, confirm=confirm)
        finally:
            self.current = None
            with anyio.CancelScope(shield=True):
                await self.workspaces.give_back(ws)
                if not self.stopping.is_set():
                    self._warm_up()

    def _job_env(self, run_id: str, job_id: str, secrets: dict[str, str]) -> dict[str, str]:
        env = build_job_env(self._base_env, run_id=run_id, n_gpus=self.hardware.gpu_count,
                            secrets=secrets)
        env.update(OPENWEIGHTS_JOB_ID=job_id, OW_WORKER_ID=self.worker_id)
        return env

    def _warm_up(self) -> None:
        """Spawn the next job's shell in the next job's directory while there is no job
        (see ``WarmShell``): the job then starts as soon as it is assigned."""
        if (self._warm is not None or not self._warm_ok
                or (workdir := self.workspaces.next_dir) is None):
            return
        secrets = self._secrets.get(self.t.org, (-1, {}))[1]
        try:
            self._warm = WarmShell.start(workdir, self._job_env("", "", secrets))
        except OSError as exc:  # no pidfds here (Linux < 5.3): jobs spawn as they come
            log.warning("agent.no_warm_shell", error=str(exc))
            self._warm_ok = False

    async def _take_warm(self, workdir: Path, env: dict[str, str]) -> WarmShell | None:
        warm, self._warm = self._warm, None
        if warm is not None and not warm.fits(workdir, env):
            await warm.discard()
            return None
        return warm

    async def _execute(self, a: Assignment, ws: Workspace, control: _RunControl,
                       secrets: dict[str, str], *, confirm: bool) -> None:
        workdir = ws.dir
        for target, file_id in (a.params.get("mounted_files") or {}).items():
            dest = (workdir / target).resolve()
            if workdir.resolve() not in dest.parents:
                raise OpenWeightsError(f"mount target {target!r} escapes the working directory")
            dest.parent.mkdir(parents=True, exist_ok=True)
            await self.ow.files._download_to(file_id, dest)
        env = self._job_env(a.run_id, a.job_id, secrets)
        shell = await self._take_warm(workdir, env)
        nc = await self.t.connect()
        log_subject = self.t.subjects.log(a.org, a.run_id, self.worker_id)
        refused: list[Exception] = []
        start_sent = False

        async def on_line(line: bytes) -> None:
            await nc.publish(log_subject, line + b"\n")

        async def confirm_start() -> None:
            nonlocal start_sent
            # A linger, not a wait for something: a job done by then reports its start
            # with its end, in one request and one append.
            await asyncio.sleep(QUICK_JOB_S)
            start_sent = True
            try:
                await self._start(a)
            except REFUSED as exc:
                refused.append(exc)
                control.stop("refused")

        # A plain task, not a task group: one job's worth of anyio bookkeeping is a
        # measurable part of a no-op job (see run_job_process).
        confirming = asyncio.ensure_future(confirm_start()) if confirm else None
        try:
            outcome = await run_job_process(
                a.script, cwd=workdir, env=env, on_line=on_line, log_path=ws.log,
                cancel=control.cancel, grace_s=self.settings.cancel_grace_s, shell=shell)
            if confirming is not None and start_sent:
                await confirming  # nothing is reported about a run not (yet) ours
        finally:
            if confirming is not None and not confirming.done():
                confirming.cancel()
        with_start = confirming is not None and not start_sent
        if with_start and outcome.status not in ("completed", "failed"):
            try:  # stopped early (canceled, shutdown): the start goes first, on its own
                await self._start(a)
            except REFUSED as exc:
                refused.append(exc)
            with_start = False
        if refused:
            log.info("agent.assignment_stale", job=a.job_id, reason=str(refused[0]))
            return
        log_file = await self._store_log(ws.log, f"{a.run_id}.log")
        await self._upload_results(a, workdir)
        if outcome.status == "completed":
            self.failures = 0
            await self._end(a, "completed", log_file=log_file, with_start=with_start)
        elif outcome.status == "failed":
            self.failures += 1
            await self._end(a, "failed", log_file=log_file, exit_code=outcome.exit_code,
                            with_start=with_start,
                            error=f"Process exited with return code {outcome.exit_code}"
                            if outcome.exit_code is not None else outcome.reason)
        elif control.why == "shutdown":
            with anyio.CancelScope(shield=True):  # a second signal must not strand the job
                await self._report_stopped()
                await self._end(a, "requeue", log_file=log_file, reason=self.stop_reason)
        else:
            await self._end(a, "timeout" if control.why == "timeout" else "canceled",
                            log_file=log_file)

    async def _store_log(self, log_path: Path, filename: str) -> str | None:
        """Uploads the run's output as its log file; a run that printed nothing has
        none (``run.logs()`` is then "" all the same)."""
        try:
            if log_path.stat().st_size == 0:
                return None
        except FileNotFoundError:
            return None
        with log_path.open("rb") as f:
            info = await self.ow.files._create(f, "log", filename)
        log_path.unlink(missing_ok=True)
        return str(info["id"])

    async def _upload_results(self, a: Assignment, workdir: Path) -> None:
        files = []
        for rel, path in collect_uploads(workdir):
            info = await self.ow.files._upload(path, "result")
            files.append({"path": rel, "file": info["id"]})
        if files:
            try:
                await self.call("agent.run.uploaded", job_id=a.job_id, run_id=a.run_id,
                                files=files)
            except Conflict as exc:
                log.info("agent.uploads_fenced", job=a.job_id, reason=str(exc))

    async def _end(self, a: Assignment, outcome: str, **fields: Any) -> None:
        try:
            await self.call("agent.run.end", job_id=a.job_id, run_id=a.run_id, outcome=outcome,
                            **fields)
        except Conflict as exc:  # the job moved on without us: nothing to change
            log.info("agent.end_fenced", job=a.job_id, outcome=outcome, reason=str(exc))
        log.debug("agent.run_ended", job=a.job_id, run=a.run_id, outcome=outcome)


class _RunControl:
    """Why and when a running job must stop: a cancel or an (extendable) timeout the
    scheduler tells of, the assignment's timeout passing, or the agent stopping. The
    timeout is a timer on the loop, not a task polling the clock."""

    def __init__(self, timeout: datetime | None) -> None:
        self.cancel = anyio.Event()
        self.why = "canceled"
        self._timer: asyncio.TimerHandle | None = None
        self.set_deadline(timeout)

    def set_deadline(self, deadline: datetime | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None and not self.cancel.is_set():
            left = (deadline - datetime.now(UTC)).total_seconds()
            self._timer = asyncio.get_running_loop().call_later(max(left, 0.0), self.stop,
                                                                "timeout")

    def stop(self, why: str) -> None:
        if not self.cancel.is_set():
            self.why = why
            self.cancel.set()
        self.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def on_notice(self, n: RunNotice) -> None:
        if n.kind == "canceled":
            self.stop("timeout" if n.reason == "timeout" else "canceled")
        else:
            self.set_deadline(n.timeout)
