"""Running one assignment and reporting it: the I/O around a :class:`RunReport`.

Starting a run: the api's reply to ``agent.run.start`` carries the org's secrets and
their version. When the next assignment names the version the agent already holds (and
the machine has no GPUs to reclaim first), the command is spawned at once and the start
confirmed meanwhile: pickup is assignment -> spawn, not assignment -> round trip ->
spawn. The confirmation waits ``QUICK_JOB_S``; the run exists since its assignment, so
the job may use it (``ow.run.log``) meanwhile. Jobs run in a fresh directory (made
ahead, see ``workspace``), normally in a shell spawned there ahead (``WarmShell``), so
a job starts when its script is written to it; as the run's own user where the machine
can give it one (``openweights.isolation``). Whatever keeps a run from starting (see
``prepare``) fails that run with the reason; the agent goes on to the next.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Protocol

import anyio
import structlog

from openweights.api.protocol import Assignment
from openweights.config import Settings
from openweights.errors import Conflict
from openweights.isolation import JobIsolation, JobUser
from openweights.services.agent.api import REFUSED, AgentApi
from openweights.services.agent.control import RunControl
from openweights.services.agent.gpu import (
    ForeignGpuHolder,
    GpuReclaimError,
    HardwareInfo,
    reclaim_gpu,
)
from openweights.services.agent.job_io import collect_uploads, job_base_env
from openweights.services.agent.output import OnLine
from openweights.services.agent.prepare import note, prepare_run, sweeper, tell
from openweights.services.agent.process import ProcessOutcome, run_job_process, unstarted
from openweights.services.agent.reporting import (
    Collect,
    EndRun,
    Input,
    Request,
    RunReport,
    StartRun,
    State,
    ending,
)
from openweights.services.agent.shells import Shells
from openweights.services.agent.workspace import Workspace, Workspaces

__all__ = ["QUICK_JOB_S", "Host", "RunExecutor"]

log = structlog.get_logger("agent")

# An optimistic start is confirmed after this long; a job that ends sooner reports its
# start with its end (one request and one append instead of two of each).
QUICK_JOB_S = 0.05


class Host(Protocol):
    """What the executor needs of its agent."""

    @property
    def stopping(self) -> anyio.Event: ...

    @property
    def stop_reason(self) -> str: ...

    def stop(self, reason: str) -> None: ...

    async def report_stopped(self) -> None: ...


class _Run:
    """One run while it is carried out: its report and what the report's requests need."""

    __slots__ = ("a", "confirming", "control", "log_file", "outcome", "reason", "report",
                 "ws")

    def __init__(self, a: Assignment, control: RunControl | None) -> None:
        self.a, self.control, self.report = a, control, RunReport()
        self.confirming: asyncio.Future[Request | None] | None = None  # the start, in flight
        self.ws: Workspace | None = None
        self.outcome: ProcessOutcome | None = None
        self.log_file: str | None = None
        self.reason = ""  # why it is given back, when not because the agent stops


class RunExecutor:
    """Runs the agent's assignments one at a time, each reported as its report says."""

    def __init__(self, host: Host, api: AgentApi, settings: Settings, hardware: HardwareInfo,
                 *, real_gpus: bool, workdir_root: Path, isolation: JobIsolation) -> None:
        self.host, self.api, self.settings = host, api, settings
        self.hardware, self.real_gpus = hardware, real_gpus
        self.failures = 0  # consecutive failed jobs
        self.current: Assignment | None = None  # the one running (heartbeats name it)
        self.isolation = isolation
        self.workspaces = Workspaces(workdir_root, isolation)
        base_env = job_base_env(os.environ, settings, api.transport.api_key)
        self.shells = Shells(api.worker_id, hardware.gpu_count, base_env, isolation)
        # What each run's log says first about its environment (an unknown image runs
        # in the agent's own: ``openweights.workerenv``); None: nothing to say.
        self.env_note: str | None = None
        # org -> (version, secrets) from the last start reply (see Assignment.secrets_seq)
        self._secrets: dict[str, tuple[int, dict[str, str]]] = {}

    def warm_up(self) -> None:
        """Spawn the next job's shell ahead (see ``Shells``), unless the agent stops."""
        if not self.host.stopping.is_set():
            secrets = self._secrets.get(self.api.org, (-1, {}))[1]
            self.shells.warm_up(self.workspaces.spare, secrets)

    async def close(self) -> None:
        await self.shells.close()
        self.workspaces.discard()

    async def run(self, a: Assignment, control: RunControl) -> None:
        """Run ``a`` under ``control`` and report it (nothing, if it is not ours)."""
        run = _Run(a, control)
        cached = self._secrets.get(a.org)
        if not self.real_gpus and cached is not None and cached[0] == a.secrets_seq:
            # The assignment is in the log already and our copy of the secrets is
            # current: the command starts while the api confirms the start. Should it
            # refuse (canceled or reassigned meanwhile), the command is stopped and
            # nothing is reported (a job may run more than once; it completes once).
            await self._run_command(run, cached[1])
            return
        await self._drive(run, run.report.handle(Input.BEGIN_CONFIRMED))
        if run.report.state is State.STARTED and await self._gpus_free(run):
            await self._run_command(run, self._secrets[a.org][1])

    async def give_back(self, a: Assignment) -> None:
        """``a`` never began and the agent stops: back to the queue (the api first
        confirms the start, so nothing is given back that is not ours)."""
        run = _Run(a, None)
        await self._drive(run, run.report.handle(Input.GIVE_BACK))

    async def _gpus_free(self, run: _Run) -> bool:
        if not self.real_gpus:
            return True
        try:
            await reclaim_gpu(own_pids=[os.getpid()])
        except ForeignGpuHolder as exc:
            run.reason = f"GPU held by another container: {exc}"
            await self._drive(run, run.report.handle(Input.UNRUNNABLE))
            self.host.stop("GPU held by another container")
            return False
        except GpuReclaimError as exc:
            log.warning("agent.gpu_reclaim_failed", error=str(exc))
        return True

    # -- the requests ----------------------------------------------------------------
    async def _drive(self, run: _Run, request: Request | None) -> None:
        while request is not None:
            request = await self._send(run, request)

    async def _send(self, run: _Run, request: Request) -> Request | None:
        """Carry out ``request``; tell the report how it went; return its next one."""
        match request:
            case StartRun():
                return await self._start(run)
            case Collect():
                if run.ws is not None:  # None: the run had no directory to leave anything in
                    run.log_file = await self._store_log(run.ws.log, f"{run.a.run_id}.log")
                    await self._upload_results(run.a, run.ws.dir, run.ws.user)
                return run.report.handle(Input.COLLECTED)
            case EndRun():
                await self._end(run, request)
        return None

    async def _start(self, run: _Run) -> Request | None:
        """Tell the api the run starts; keeps the org's secrets (with their version, for
        the next assignment; sent only when ours are not current)."""
        a = run.a
        held_seq, held = self._secrets.get(a.org, (-1, {}))
        try:
            started = await self.api.start_run(a.job_id, a.run_id, held_seq)
        except REFUSED as exc:
            log.info("agent.assignment_stale", job=a.job_id, reason=str(exc))
            if run.control is not None:
                run.control.stop("refused")  # a command running for it stops
            return run.report.handle(Input.START_REFUSED)
        secrets = started.secrets if started.secrets is not None else held
        self._secrets[a.org] = (started.secrets_seq, secrets)
        return run.report.handle(Input.START_ACCEPTED)

    async def _store_log(self, log_path: Path, filename: str) -> str | None:
        """Uploads the run's output as its log file; a run that printed nothing has
        none (``run.logs()`` is then "" all the same)."""
        try:
            if log_path.stat().st_size == 0:
                return None
        except FileNotFoundError:
            return None
        with log_path.open("rb") as f:
            file_id = await self.api.store_log(f, filename)
        log_path.unlink(missing_ok=True)
        return file_id

    async def _upload_results(self, a: Assignment, workdir: Path, user: JobUser | None) -> None:
        files = [(rel, await self.api.upload_result(path))
                 for rel, path in collect_uploads(workdir, user.uid if user else None)]
        if files:
            try:
                await self.api.uploaded(a.job_id, a.run_id, files)
            except Conflict as exc:
                log.info("agent.uploads_fenced", job=a.job_id, reason=str(exc))

    async def _end(self, run: _Run, end: EndRun) -> None:
        if end.outcome == "completed":
            self.failures = 0
        elif end.outcome == "failed":
            self.failures += 1
        if end.stop_first:
            with anyio.CancelScope(shield=True):  # a second signal must not strand the job
                await self.host.report_stopped()
                await self._send_end(run, end)
        else:
            await self._send_end(run, end)

    async def _send_end(self, run: _Run, end: EndRun) -> None:
        a, o = run.a, run.outcome
        exit_code, error, reason = None, None, ""
        if end.outcome == "failed" and o is not None:
            exit_code = o.exit_code
            error = (f"Process exited with return code {o.exit_code}"
                     if o.exit_code is not None else o.reason)
        elif end.outcome == "requeue":
            reason = run.reason or self.host.stop_reason
        try:
            await self.api.end_run(a.job_id, a.run_id, end.outcome, log_file=run.log_file,
                                   exit_code=exit_code, error=error, reason=reason,
                                   with_start=end.with_start)
        except Conflict as exc:  # the job moved on without us: nothing to change
            log.info("agent.end_fenced", job=a.job_id, outcome=end.outcome, reason=str(exc))
        log.debug("agent.run_ended", job=a.job_id, run=a.run_id, outcome=end.outcome)

    # -- the command -----------------------------------------------------------------
    async def _run_command(self, run: _Run, secrets: dict[str, str]) -> None:
        self.current = run.a
        try:
            await self._drive(run, await self._supervise(run, secrets))
        finally:
            self.current = None
            with anyio.CancelScope(shield=True):
                if run.ws is not None:
                    await self.workspaces.give_back(run.ws)
                self.warm_up()

    async def _execute(self, run: _Run, secrets: dict[str, str],
                       on_line: OnLine) -> ProcessOutcome:
        """Make the run ready (its workspace, its files) and run its command; a run that
        cannot start has a failed outcome saying why."""
        a, control = run.a, run.control
        assert control is not None
        try:
            run.ws = ws = await self.workspaces.take()
        except OSError as exc:
            return unstarted(f"no directory could be made for it: {exc}")
        env = self.shells.job_env(a.run_id, a.job_id, secrets, ws.dir)
        shell = await self.shells.take(ws, env)
        why = await prepare_run(self.api, self.isolation, a, ws, env)
        if why is not None:
            if shell is not None:
                await shell.discard()
            await tell(ws.log, on_line, why)
            return unstarted(why)
        if self.env_note is not None:
            await note(ws.log, on_line, self.env_note)
        return await run_job_process(
            a.script, cwd=ws.dir, env=env, on_line=on_line, log_path=ws.log,
            cancel=control.cancel, grace_s=self.settings.cancel_grace_s, shell=shell,
            prefix=self.isolation.prefix(ws.user), sweep=sweeper(self.isolation, ws, a.run_id))

    async def _supervise(self, run: _Run, secrets: dict[str, str]) -> Request | None:
        """Run the command to its end, confirming an optimistic start meanwhile; returns
        what to send once it ended."""
        a, report, control = run.a, run.report, run.control
        assert control is not None
        nc = await self.api.connect()
        log_subject = self.api.subjects.log(a.org, a.run_id, self.api.worker_id)

        async def on_line(line: bytes) -> None:
            await nc.publish(log_subject, line + b"\n")

        timer = None
        if report.state is State.STARTED:  # confirmed before the spawn
            report.handle(Input.SPAWNED)
        else:
            report.handle(Input.BEGIN_OPTIMISTIC)
            # A linger, not a wait for something: a job done by then reports its start
            # with its end. A timer, not a task: most jobs are done before it fires.
            timer = asyncio.get_running_loop().call_later(QUICK_JOB_S, self._linger_passed,
                                                          run)
        try:
            run.outcome = outcome = await self._execute(run, secrets, on_line)
            # No await since the command ended: the timer cannot have fired meanwhile.
            request = report.handle(ending(outcome.status, control.why))
            if request is None and run.confirming is not None:
                request = await run.confirming  # nothing is reported about a run not (yet) ours
        finally:
            if timer is not None:
                timer.cancel()
            if run.confirming is not None and not run.confirming.done():
                run.confirming.cancel()
        return request

    def _linger_passed(self, run: _Run) -> None:
        if (request := run.report.handle(Input.LINGER_PASSED)) is not None:
            # A plain task, not a task group: one job's worth of anyio bookkeeping is a
            # measurable part of a no-op job (see run_job_process).
            run.confirming = asyncio.ensure_future(self._send(run, request))
