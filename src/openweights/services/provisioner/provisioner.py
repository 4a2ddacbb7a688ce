"""The provisioner: starts machines for unmet demand and releases what is not needed.

Demand is placed per job (``placement``): a job an idle worker matches or a starting
machine can serve needs nothing new, any other gets a machine sized for its own need.
Every decision is an event with its reason (``WorkerRequested``,
``WorkerShutdownRequested``, ``WorkerTerminated``), so ``ow audit worker <id>`` explains
why a machine exists and why it went away; and a job that waits says why
(``JobWaitReasonChanged``, appended when its reason changes).

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
from openweights.domain.aggregates import JOB, ORG, SECRET, TOKEN, WORKER
from openweights.domain.commands import (
    CreateToken,
    NoteWaitReason,
    RecordMachineFailed,
    RecordMachineStarted,
    RequestShutdown,
    RequestWorker,
    RevokeToken,
    TerminateWorker,
    WorkerCommand,
)
from openweights.domain.job import JobState
from openweights.domain.worker import WorkerState
from openweights.errors import Conflict, OpenWeightsError
from openweights.events import (
    Actor,
    Event,
    JobCompleted,
    JobFailed,
    SecretRemoved,
    SecretSet,
    WorkerLost,
    WorkerMachineFailed,
    WorkerRegistered,
    WorkerTerminated,
)
from openweights.execute import Executor
from openweights.secretbox import SecretBox
from openweights.services.lifecycle import declare_lost
from openweights.services.provisioner.launching import Launcher
from openweights.services.provisioner.pacing import StartPacing, share
from openweights.services.provisioner.placement import (
    Placement,
    at_cap,
    cooling_down,
    place,
    takes_slot,
)
from openweights.services.provisioner.port import MachineBackend, MachineSpec, MachineStartFailed

log = structlog.get_logger("provisioner")
ME = Actor("provisioner")
NEVER_REGISTERED = "never registered"
# Wait reasons appended per reconcile at most; the rest follow in the next (each append
# wakes the loop), so a long queue meeting a cap does not stall one pass.
NOTES_PER_PASS = 64


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
        self.launcher = Launcher(settings)  # hardware cooldowns, spend and key pauses
        self._refused: set[str] = set()  # workers whose start the provider refused
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
        elif isinstance(event, SecretSet | SecretRemoved) and event.name == "RUNPOD_API_KEY":
            self.launcher.pauses.key_changed(org)  # a new key: try it
        self._wake.set()

    def _on_worker_event(self, org: str, event: Event, w: WorkerState) -> None:
        """A machine that died unasked before ending a run was a start wasted (pacing);
        a worker started by hand (no backend) was no start of ours."""
        never = isinstance(event, WorkerTerminated) and event.reason == NEVER_REGISTERED
        died = isinstance(event, WorkerLost | WorkerMachineFailed) or never
        if never:  # counts as a failed start of its hardware
            self.launcher.never_registered(w.hardware_type, event.at)
        elif isinstance(event, WorkerRegistered) and w.backend == self.backend.name:
            self.launcher.worked(w.hardware_type)
        if died and w.backend is not None and (org, w.id) not in self._worked \
                and w.id not in self._refused:  # a refusal has its own pause
            self.pacing.died(org, event.at)
        if w.status == "terminated":
            self._worked.discard((org, w.id))

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(self.fold.run)
            tg.start_soon(self._maintain)
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

    async def _maintain(self) -> None:
        """The backend's upkeep (catalog, leaked machines); restarted if it fails."""
        while True:
            try:
                await self.backend.maintain(self)
                return
            except OpenWeightsError as exc:
                log.warning("provisioner.maintain_failed", error=str(exc))
            await anyio.sleep(self.settings.provisioner_check_s)

    # -- the Fleet the backend sees -----------------------------------------------------
    def organizations(self) -> list[str]:
        orgs = {self.settings.default_org, *(o.id for o in self.fold.of_kind(ORG))}
        orgs.update(w.org for w in self.fold.of_kind(WORKER))
        orgs.update(s.org for s in self.fold.of_kind(SECRET)
                    if s.name == "RUNPOD_API_KEY" and s.status == "set")
        return sorted(orgs)

    def owns(self, org: str, worker_id: str, machine_id: str) -> bool:
        w = self.fold.get(org, WORKER, worker_id)
        return w is not None and w.status != "terminated" and w.machine_id in (None, machine_id)

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
        live = {org: sum(takes_slot(w, busy) for w in ws) for org, ws in workers.items()}
        room = self.settings.max_workers - sum(live.values())
        plans = {org: place(js, workers[org], busy, self.backend.hardware_options)
                 for org, js in pending.items()}
        demand = {org: min(len(plan.needs), self.max_workers(org) - live.get(org, 0))
                  for org, plan in plans.items() if self._may_start(org, now)}
        budgets = share(room, demand)
        notes = NOTES_PER_PASS
        for org, plan in sorted(plans.items()):
            await self._scale_up(org, plan, budgets.get(org, 0), live.get(org, 0), now)
            notes = await self._note_waits(org, plan.waits, notes)

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
        await self._revoke_credentials(w.org, w.id)

    async def _revoke_credentials(self, org: str, worker_id: str) -> None:
        for t in self.fold.of_kind(TOKEN):  # its credentials die with the machine
            if t.org == org and t.worker_id == worker_id and t.status == "active":
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
    async def _scale_up(self, org: str, plan: Placement, budget: int, live: int,
                        now: datetime) -> None:
        """Start a machine for each job of ``org`` that needs one: at most ``budget`` (its
        share of the operator's limit, never past its own); the others wait, saying why."""
        started = 0
        for j, options in plan.needs:
            paused = self.launcher.paused(org, now)
            if paused is not None:
                plan.waits[j.id] = paused
            elif started < budget:
                usable, skipped = self.launcher.usable(options, now)
                hardware, story = (await self._start_any(org, j, usable, now)) if usable \
                    else (None, None)
                started += hardware is not None
                plan.waits[j.id] = "; ".join([*skipped, story] if story else skipped) or None
                if hardware is not None and plan.waits[j.id]:
                    self.launcher.trying[(org, j.id)] = plan.waits[j.id]  # type: ignore[assignment]
                continue
            else:
                until = self.pacing.not_before(org)
                plan.waits[j.id] = (  # not which workers are busy: that changes every run
                    cooling_down(until) if until is not None and now < until else
                    at_cap(self.max_workers(org), live + started, self.settings.max_workers))

    async def _start_any(self, org: str, j: JobState, usable: list[str],
                         now: datetime) -> tuple[str | None, str | None]:
        """Try ``usable`` in order until a machine starts: (its hardware, the job's wait
        story). A shortage moves on to the next option; a refusal of the account or an
        unreachable provider ends the attempt (the pause says why)."""
        for i, hardware in enumerate(usable):
            try:
                if not await self._start(org, j, hardware):
                    return None, None
            except MachineStartFailed as exc:
                self.launcher.failed(org, hardware, exc, self.executor.clock())
                if exc.kind == "hardware":
                    continue
                why = self.launcher.paused(org, now) or f"starts failed: {exc.message[:200]}"
                return None, why
            return hardware, self.launcher.story(usable[:i + 1], now, hardware)
        return None, self.launcher.story(usable, now, None)

    async def _note_waits(self, org: str, waits: dict[str, str | None], budget: int) -> int:
        """Append each job's wait reason where it changed (at most ``budget`` of them;
        the rest in the next pass); returns the budget left."""
        for job_id, reason in waits.items():
            state = self.fold.get(org, JOB, job_id)
            if state is None or state.status != "pending":
                self.launcher.trying.pop((org, job_id), None)
                continue
            # A job whose machine is coming after a shortage keeps saying so.
            reason = reason or self.launcher.trying.get((org, job_id))
            if state.wait_reason == reason:
                continue
            if budget <= 0:
                self._wake.set()
                return 0
            budget -= 1
            try:  # not settled: the next pass folds it before it reads the reason
                await self.executor.execute(org, JOB, job_id, NoteWaitReason(reason=reason),
                                            ME, settle=False)
            except Conflict as exc:  # assigned or canceled meanwhile: it waits no more
                log.debug("provisioner.wait_not_noted", job=job_id, reason=str(exc))
                continue
            if reason is not None:  # said once per change, not per pass
                log.info("provisioner.job_waiting", org=org, job=job_id, reason=reason)
        return budget

    async def _start(self, org: str, j: JobState, hardware: str) -> bool:
        image = j.spec.docker_image
        worker_id = f"{org}-{secrets.token_hex(4)}"
        reason = f"pending job {j.id} needs a {hardware} machine of {image}"
        requested = RequestWorker(worker_id=worker_id, org=org, backend=self.backend.name,
                                  hardware=hardware, docker_image=image, reason=reason)
        if not await self._record(org, worker_id, requested):
            return False
        try:
            machine_id = await self.backend.start(MachineSpec(
                worker_id=worker_id, org=org, hardware=hardware, docker_image=image,
                env=await self._worker_credentials(org, worker_id)))
        except MachineStartFailed as exc:
            if exc.kind in ("spending_limit", "credentials"):
                self._refused.add(worker_id)
            await self._record(org, worker_id, RecordMachineFailed(error=str(exc)))
            await self._revoke_credentials(org, worker_id)
            raise
        price = self.backend.price_per_hour(hardware)
        await self._record(org, worker_id,
                           RecordMachineStarted(machine_id=machine_id, price_per_hour=price))
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
