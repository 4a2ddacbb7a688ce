"""The provisioner: starts machines for unmet demand and releases what is not needed.

Demand is the pending jobs grouped by image and hardware need; supply is the starting
workers of that image and the idle active ones that match. Every decision is an event
with its reason (``WorkerRequested``, ``WorkerShutdownRequested``, ``WorkerTerminated``),
so ``ow audit worker <id>`` explains why a machine exists and why it went away.

Limits: the operator's ``OW_MAX_WORKERS`` bounds the live machines in all and those of
any one organization (whose ``MAX_WORKERS`` secret can only lower its own); when it
cannot meet every organization's demand it is shared out round-robin. An organization
whose machines keep dying waits longer and longer before its next start (``pacing``).
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus

from openweights import tokens
from openweights.adapters.nats.fold import LiveFold
from openweights.config import Settings
from openweights.domain.aggregates import JOB, SECRET, TOKEN, WORKER
from openweights.domain.commands import (
    CreateToken,
    RecordMachineFailed,
    RecordMachineStarted,
    RequestShutdown,
    RequestWorker,
    RevokeToken,
    TerminateWorker,
    WorkerCommand,
)
from openweights.domain.job import JobState
from openweights.domain.matching import matches
from openweights.domain.worker import WorkerState
from openweights.errors import Conflict, OpenWeightsError
from openweights.events import (
    Actor,
    Event,
    JobCompleted,
    JobFailed,
    WorkerLost,
    WorkerMachineFailed,
    WorkerTerminated,
)
from openweights.execute import Executor
from openweights.secretbox import SecretBox
from openweights.services.lifecycle import declare_lost
from openweights.services.provisioner.pacing import StartPacing, share
from openweights.services.provisioner.port import MachineBackend, MachineSpec, MachineStartFailed

log = structlog.get_logger("provisioner")
ME = Actor("provisioner")
NEVER_REGISTERED = "never registered"


class Provisioner:
    def __init__(self, settings: Settings, fold: LiveFold, executor: Executor,
                 backend: MachineBackend, box: SecretBox) -> None:
        self.settings, self.fold, self.executor, self.backend = settings, fold, executor, backend
        self.box = box
        self.last_active: dict[tuple[str, str], datetime] = {}  # worker -> last run change
        self.fold.listeners.append(self._on_event)
        self._stop_sent: dict[str, datetime] = {}
        self.pacing = StartPacing(settings.start_backoff_s, settings.start_backoff_max_s)
        self._worked: set[tuple[str, str]] = set()  # workers that ended a run
        self._deferred: dict[str, datetime] = {}  # org -> the wait last logged
        self._wake = anyio.Event()

    def _on_event(self, seq: int, org: str, event: Event, before: Any, after: Any) -> None:
        if isinstance(after, JobState) and after.runs:
            run = after.runs[-1]
            self.last_active[(org, run.worker_id)] = event.at
            if isinstance(event, JobCompleted) or (
                    isinstance(event, JobFailed) and event.by.kind == "agent"):
                self._worked.add((org, event.worker_id))  # its agent ended a run
                self.pacing.worked(org)
        elif isinstance(after, WorkerState):
            self._on_worker_event(org, event, after)
        self._wake.set()

    def _on_worker_event(self, org: str, event: Event, w: WorkerState) -> None:
        """A machine that died unasked before ending a run was a start wasted (pacing)."""
        died = isinstance(event, WorkerLost | WorkerMachineFailed) or (
            isinstance(event, WorkerTerminated) and event.reason == NEVER_REGISTERED)
        if died and (org, w.id) not in self._worked:
            self.pacing.died(org, event.at)
        if w.status == "terminated":
            self._worked.discard((org, w.id))

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(self.fold.run)
            log.info("provisioner.started", backend=self.backend.name, seq=self.fold.seq)
            task_status.started()
            while True:
                with anyio.move_on_after(self.settings.provisioner_check_s):
                    await self._wake.wait()  # demand changed, or the periodic check
                self._wake = anyio.Event()
                try:
                    await self.reconcile(self.executor.clock())
                except OpenWeightsError as exc:  # the log or a backend failed: next round
                    log.warning("provisioner.reconcile_failed", error=str(exc))

    def max_workers(self, org: str) -> int:
        """The org's MAX_WORKERS secret, bounded by the operator's OW_MAX_WORKERS (which is
        also what an org without one gets)."""
        limit = self.settings.max_workers
        state = self.fold.get(org, SECRET, "MAX_WORKERS")
        if state is not None and state.status == "set":
            try:
                return min(limit, max(0, int(self.box.decrypt(state.ciphertext))))
            except (OpenWeightsError, ValueError) as exc:
                log.warning("provisioner.bad_max_workers", org=org, error=str(exc))
        return limit

    async def _worker_credentials(self, org: str, worker_id: str) -> dict[str, str]:
        """A token that can act only for this worker (auth on), for the machine's env."""
        if not self.settings.auth:
            return {}
        plain = tokens.new_token()
        cmd = CreateToken(org=org, token_id=tokens.token_id(plain), name=f"worker {worker_id}",
                          role="worker", token_hash=tokens.token_hash(plain),
                          token_prefix=tokens.token_prefix(plain), worker_id=worker_id)
        await self.executor.execute(org, TOKEN, cmd.token_id, cmd, ME)
        return {"OPENWEIGHTS_API_KEY": plain}

    async def reconcile(self, now: datetime) -> None:
        workers: dict[str, list[WorkerState]] = defaultdict(list)
        for w in self.fold.of_kind(WORKER):
            workers[w.org].append(w)
        jobs = self.fold.of_kind(JOB)
        pending: dict[str, list[JobState]] = defaultdict(list)
        busy: set[tuple[str, str]] = set()
        for j in jobs:
            if j.status == "pending":
                pending[j.org].append(j)
            elif j.open_run is not None:
                busy.add((j.org, j.open_run.worker_id))
        open_jobs = [j for j in jobs if j.open_run is not None]
        for org in sorted(set(workers) | set(pending)):
            await self._release(workers[org], open_jobs, now)
            await self._scale_down(workers[org], busy, now)
        live = {org: sum(w.status != "terminated" for w in ws) for org, ws in workers.items()}
        room = self.settings.max_workers - sum(live.values())
        # An upper bound of each org's need (idle workers may serve some of it).
        demand = {org: min(len(jobs), self.max_workers(org) - live.get(org, 0))
                  for org, jobs in pending.items() if self._may_start(org, now)}
        for org, budget in share(room, demand).items():
            if budget > 0:
                await self._scale_up(org, workers[org], pending[org], busy, budget)

    def _may_start(self, org: str, now: datetime) -> bool:
        """Whether ``org``'s starts are not backed off (said in the log once per wait)."""
        if self.pacing.may_start(org, now):
            return True
        until = self.pacing.not_before(org)
        assert until is not None
        if self._deferred.get(org) != until:
            self._deferred[org] = until
            log.warning("provisioner.starts_backed_off", org=org, until=until.isoformat(),
                        reason="its machines died unasked (lost, failed to start, never "
                        "registered); each death doubles the wait")
        return False

    # -- releasing -----------------------------------------------------------------------
    async def _release(self, ws: list[WorkerState], open_jobs: list[JobState],
                       now: datetime) -> None:
        for w in ws:
            if w.status == "terminated" or w.backend != self.backend.name:
                continue
            machine_alive = w.machine_id is not None and await self.backend.alive(w.machine_id)
            if w.status == "shutdown":
                if machine_alive:
                    await self._stop_once(w.machine_id, now)  # type: ignore[arg-type]
                else:
                    # A run it left open (it died while giving its job back) goes back
                    # to pending before the worker is gone for good.
                    if any(j.open_run and j.open_run.worker_id == w.id and j.org == w.org
                           for j in open_jobs):
                        await declare_lost(self.executor, w, open_jobs, None,
                                           "its machine is gone", ME)
                    await self._terminate(w, w.reason or "stopped")
            elif w.machine_id is not None and not machine_alive:
                await declare_lost(self.executor, w, open_jobs, None, "its machine is gone", ME)
            elif w.status == "starting" and now - w.created_at > timedelta(
                    seconds=self.settings.never_registered_s):
                if w.machine_id is not None:
                    await self.backend.stop(w.machine_id)
                await self._terminate(w, NEVER_REGISTERED)

    async def _stop_once(self, machine_id: str, now: datetime) -> None:
        """Ask a machine to stop, again only after a minute: a second SIGTERM is an
        agent's signal to stop at once rather than gracefully."""
        sent = self._stop_sent.get(machine_id)
        if sent is None or now - sent > timedelta(seconds=60):
            self._stop_sent[machine_id] = now
            await self.backend.stop(machine_id)

    async def _terminate(self, w: WorkerState, reason: str) -> None:
        await self._record(w.org, w.id, TerminateWorker(reason=reason))
        for t in self.fold.of_kind(TOKEN):  # its credentials die with the machine
            if t.org == w.org and t.worker_id == w.id and t.status == "active":
                await self.executor.execute(t.org, TOKEN, t.id, RevokeToken(), ME)

    async def _scale_down(self, ws: list[WorkerState], busy: set[tuple[str, str]],
                          now: datetime) -> None:
        s = self.settings
        for w in ws:
            if w.status != "active" or not w.managed or (w.org, w.id) in busy:
                continue
            if now - w.created_at < timedelta(seconds=s.min_worker_age_s):
                continue
            last = self.last_active.get((w.org, w.id), w.updated_at)
            if now - last > timedelta(seconds=s.idle_shutdown_s):
                await self._record(w.org, w.id,
                                   RequestShutdown(reason=f"idle since {last.isoformat()}"))

    # -- starting ------------------------------------------------------------------------
    async def _scale_up(self, org: str, ws: list[WorkerState], pending: list[JobState],
                        busy: set[tuple[str, str]], budget: int) -> None:
        """Start machines for ``org``'s unmet demand: at most ``budget`` (its share of the
        operator's limit) and never past its own limit."""
        live = [w for w in ws if w.status != "terminated"]
        slots = min(budget, self.max_workers(org) - len(live))
        idle = [w for w in ws if w.status == "active" and (w.org, w.id) not in busy]
        starting = [w for w in ws if w.status == "starting"]
        groups: dict[tuple[str, tuple[str, ...] | None], list[JobState]] = defaultdict(list)
        for j in pending:
            hardware = j.spec.allowed_hardware
            key = (j.spec.docker_image, tuple(sorted(hardware)) if hardware else None)
            groups[key].append(j)
        for (image, _), group in sorted(groups.items(), key=lambda kv: kv[0][0]):
            served = 0
            for j in group:  # jobs an idle worker can take need no new machine
                match = next((w for w in idle if matches(j, w)), None)
                if match is not None:
                    idle.remove(match)
                    served += 1
            same_image = sum(1 for w in starting if w.docker_image == image)
            unmet = len(group) - served - same_image
            n = min(unmet, slots)
            for _ in range(max(n, 0)):
                if await self._start(org, image, group):
                    slots -= 1

    async def _start(self, org: str, image: str, group: list[JobState]) -> bool:
        need = max((j.spec.requires_vram_gb or 0) for j in group)
        allowed = group[0].spec.allowed_hardware
        options = self.backend.hardware_options(need, allowed)
        if not options:
            log.warning("provisioner.no_hardware", org=org, image=image, vram=need,
                        allowed=allowed)
            return False
        worker_id = f"{org}-{secrets.token_hex(4)}"
        reason = f"{len(group)} pending job(s) for {image} (first: {group[0].id})"
        requested = RequestWorker(worker_id=worker_id, org=org, backend=self.backend.name,
                                  hardware=options[0], docker_image=image, reason=reason)
        if not await self._record(org, worker_id, requested):
            return False
        try:
            machine_id = await self.backend.start(MachineSpec(
                worker_id=worker_id, org=org, hardware=options[0], docker_image=image,
                env=await self._worker_credentials(org, worker_id)))
        except MachineStartFailed as exc:
            await self._record(org, worker_id, RecordMachineFailed(error=str(exc)))
            return False
        await self._record(org, worker_id, RecordMachineStarted(machine_id=machine_id))
        log.info("provisioner.started_machine", worker=worker_id, machine=machine_id,
                 reason=reason)
        return True

    async def _record(self, org: str, worker_id: str, cmd: WorkerCommand) -> bool:
        """Decide ``cmd`` for the worker; False when the worker moved on meanwhile (an
        agent's own report, the scheduler declaring it lost), which is said in the log."""
        try:
            return bool((await self.executor.execute(org, WORKER, worker_id, cmd, ME)).events)
        except Conflict as exc:
            log.info("provisioner.decision_skipped", worker=worker_id,
                     command=type(cmd).__name__, reason=str(exc))
            return False
