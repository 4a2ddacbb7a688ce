"""The scheduler: matches pending jobs with idle workers, and notices lost workers.

Its state is a fold of the log (a restart is a replay; no Postgres in decisions).
Assignments are appended to the job's subject with the sequence the fold last saw, so
two schedulers running at once never assign one job twice: the second append fails.
"""

from __future__ import annotations

import asyncio
import heapq
import secrets
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from openweights.adapters.nats.fold import LiveFold
from openweights.adapters.nats.reader import StoredMessage, read_stream
from openweights.api.protocol import Assignment, Heartbeat, RunNotice
from openweights.config import Settings
from openweights.domain.aggregates import JOB, SECRET
from openweights.domain.commands import AssignJob, CancelJob, JobCommand, RequeueJob
from openweights.domain.job import JobState, RunState
from openweights.domain.matching import cached_model, pick_worker, priority
from openweights.domain.worker import WorkerState
from openweights.errors import Conflict, OpenWeightsError
from openweights.events import Actor, Event, JobCanceled, JobCompleted, JobTimeoutExtended
from openweights.execute import Executor
from openweights.services.lifecycle import declare_lost
from openweights.services.scheduler.budgets import enforce_limits
from openweights.subjects import Subjects

log = structlog.get_logger("scheduler")
ME = Actor("scheduler")


class Scheduler:
    def __init__(self, settings: Settings, nc: Client, js: JetStreamContext, fold: LiveFold,
                 executor: Executor) -> None:
        self.settings, self.nc, self.js = settings, nc, js
        self.subjects = Subjects(settings.namespace)
        self.fold, self.executor = fold, executor
        self.fold.listeners.append(self._on_event)
        self.cached: dict[str, set[str]] = defaultdict(set)
        self.last_seen: dict[tuple[str, str], datetime] = {}
        # Indices kept by the fold's listener, so a pass never scans every job.
        self._pending: dict[tuple[str, str], JobState] = {}
        self._open: dict[tuple[str, str], JobState] = {}  # jobs with an open run
        self._workers: dict[tuple[str, str], WorkerState] = {}
        # Per organization, pending jobs by priority: a heap with lazy deletion (an entry
        # counts only while its job is pending with that priority), so a pass costs the
        # jobs it looks at, not the length of the queue.
        self._queues: dict[str, list[tuple[Any, str]]] = defaultdict(list)
        # asyncio's events: set for every folded event, where anyio's cost a lookup
        self._wake = asyncio.Event()
        self._notices: list[RunNotice] = []
        self._notices_wake = asyncio.Event()

    # -- state -----------------------------------------------------------------------
    def _on_event(self, seq: int, org: str, event: Event, before: Any, after: Any) -> None:
        if isinstance(after, JobState):
            key = (org, after.id)
            if after.status == "pending":
                self._pending[key] = after
                if not (isinstance(before, JobState) and before.status == "pending"
                        and priority(before) == priority(after)):
                    heapq.heappush(self._queues[org], (priority(after), after.id))
            else:
                self._pending.pop(key, None)
            if after.open_run is not None:
                self._open[key] = after
            else:
                self._open.pop(key, None)
            if isinstance(event, JobCompleted) and (name := cached_model(after.spec.model)):
                self.cached[event.worker_id].add(name)
            elif isinstance(event, JobCanceled | JobTimeoutExtended):
                self._notice(org, event, before)
        elif isinstance(after, WorkerState):
            self._workers[(org, after.id)] = after
        self._wake.set()

    def _notice(self, org: str, event: JobCanceled | JobTimeoutExtended, before: Any) -> None:
        """The agent running the job learns of its cancel or new timeout from us: it
        listens on its own subject only, not to every job it runs."""
        run = before.open_run if isinstance(before, JobState) else None
        window = timedelta(seconds=self.settings.run_notice_window_s)
        if run is None or datetime.now(UTC) - event.at >= window:
            return  # history replayed: a heartbeat naming a run that is over has it told
        if isinstance(event, JobCanceled):
            self._tell(org, run, kind="canceled", reason=event.reason)
        else:
            self._tell(org, run, kind="timeout", timeout=event.timeout)

    def _tell(self, org: str, run: RunState, **about: Any) -> None:
        self._notices.append(RunNotice(org=org, job_id=run.job_id, run_id=run.id,
                                       worker_id=run.worker_id, **about))
        self._notices_wake.set()

    def pending(self) -> list[JobState]:
        return list(self._pending.values())

    def idle_workers(self) -> list[WorkerState]:
        busy = {(j.org, j.open_run.worker_id) for j in self._open.values() if j.open_run}
        return [w for key, w in self._workers.items()
                if w.status == "active" and key not in busy]

    # -- the service -----------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            await self._load_heartbeats()
            sub = await self.nc.subscribe(self.subjects.all_heartbeats, cb=self._on_heartbeat)
            try:
                await tg.start(self.fold.run)
                tg.start_soon(self._assign_forever)
                tg.start_soon(self._notify_forever)
                tg.start_soon(self._check_forever)
                log.info("scheduler.started", seq=self.fold.seq)
                task_status.started()
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    await sub.unsubscribe()

    async def _load_heartbeats(self) -> None:
        async def on_batch(batch: list[StoredMessage]) -> None:
            for m in batch:
                _, org, wid = m.subject.split(".", 2)
                self.last_seen[(org, wid)] = datetime.fromtimestamp(m.ts_ns / 1e9, UTC)

        await read_stream(self.nc, self.js, self.subjects.heartbeats_stream, on_batch)

    async def _on_heartbeat(self, msg: Msg) -> None:
        _, org, wid = msg.subject.split(".", 2)
        self.last_seen[(org, wid)] = datetime.now(UTC)
        try:
            beat = msgspec.json.decode(msg.data, type=Heartbeat)
        except msgspec.DecodeError:
            return  # liveness is all a heartbeat must prove
        j = self.fold.get(org, JOB, beat.job_id) if beat.job_id and beat.run_id else None
        run = j.run(beat.run_id) if j is not None and beat.run_id else None
        if run is not None and run.worker_id == wid and run.status != "in_progress":
            # Its agent missed the notice (sent before a restart of ours, or lost).
            self._tell(org, run, kind="canceled", reason=f"the run is {run.status}")

    async def _notify_forever(self) -> None:
        while True:
            await self._notices_wake.wait()
            self._notices_wake = asyncio.Event()
            notices, self._notices = self._notices, []
            for n in notices:
                try:
                    await self.nc.publish(self.subjects.agent(n.org, n.worker_id),
                                          msgspec.json.encode(n))
                except Exception as exc:  # its next heartbeat has it told again
                    log.warning("scheduler.notice_failed", run=n.run_id, error=str(exc))

    # -- assignment ------------------------------------------------------------------
    async def _assign_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = asyncio.Event()
            await self.assign_pass()

    def _pop(self, org: str) -> tuple[tuple[Any, str], JobState] | None:
        """The organization's most urgent pending job (and its heap entry), if any."""
        heap = self._queues[org]
        while heap:
            entry = heapq.heappop(heap)
            j = self._pending.get((org, entry[1]))
            if j is not None and priority(j) == entry[0]:
                return entry, j
        return None

    async def assign_pass(self) -> int:
        """Give idle workers the most urgent jobs they match: priority order within an
        organization, round robin across organizations."""
        idle = self.idle_workers()
        if not idle:  # most wake-ups while busy
            return 0
        assigned, skipped, done = 0, [], set()
        # A worker serves its own organization only: the orgs without an idle worker are
        # not looked at (a pass costs the same with 1 or 100 organizations queued).
        orgs = sorted(o for o in {w.org for w in idle} if self._queues.get(o))
        try:
            while idle and orgs:
                for org in list(orgs):
                    popped = self._pop(org)
                    if popped is None:
                        orgs.remove(org)
                        continue
                    entry, j = popped
                    if j.id in done:
                        continue
                    w = pick_worker(j, idle, self.cached)
                    if w is not None and await self._assign(j, w):
                        idle.remove(w)
                        assigned += 1
                        done.add(j.id)
                    else:
                        skipped.append((org, entry))  # no worker for it now: keep it
                    if not idle:
                        break
        finally:
            for org, entry in skipped:
                heapq.heappush(self._queues[org], entry)
        return assigned

    async def _assign(self, j: JobState, w: WorkerState) -> bool:
        # Decide on the state the fold holds now: ``j`` comes from the pass's snapshot,
        # and the fold may have moved on (say, to another scheduler's assignment) while
        # earlier assignments of this pass were awaited.
        current = self.fold.get(j.org, JOB, j.id)
        if current is None or current.status != "pending":
            return False
        run_id = f"run-{secrets.token_hex(8)}"
        try:  # not settled: the pass's next assignment is another job's
            await self.executor.execute(j.org, JOB, j.id, AssignJob(worker_id=w.id, run_id=run_id),
                                        ME, settle=False)
        except Conflict as exc:  # another scheduler was first, or the job moved on
            log.debug("scheduler.not_assigned", job=j.id, reason=str(exc))
            return False
        spec = current.spec
        assignment = Assignment(org=j.org, job_id=j.id, run_id=run_id, worker_id=w.id,
                                script=spec.script, docker_image=spec.docker_image,
                                model=spec.model, params=spec.params, timeout=spec.timeout,
                                secrets_seq=self.fold.version(j.org, SECRET))
        try:
            await self.nc.publish(self.subjects.agent(j.org, w.id),
                                  msgspec.json.encode(assignment))
        except Exception as exc:  # the start deadline requeues what the agent never got
            log.warning("scheduler.notify_failed", job=j.id, worker=w.id, error=str(exc))
        # Per job, at debug: the log itself is the audit trail (`ow audit job`).
        log.debug("scheduler.assigned", job=j.id, worker=w.id, run=run_id)
        return True

    # -- deadlines -------------------------------------------------------------------
    async def _check_forever(self) -> None:
        while True:
            await anyio.sleep(self.settings.scheduler_check_s)  # a period, not a wait
            try:
                await self.check_deadlines(datetime.now(UTC))
                await enforce_limits(self.fold, self.executor, self.executor.clock(), ME)
            except OpenWeightsError as exc:
                log.warning("scheduler.check_failed", error=str(exc))

    async def check_deadlines(self, now: datetime) -> None:
        s = self.settings
        for w in list(self._workers.values()):
            holds_run = w.status == "shutdown" and any(
                j.open_run and j.open_run.worker_id == w.id and j.org == w.org
                for j in self._open.values())
            if w.status not in ("active", "starting") and not holds_run:
                continue  # a stopping worker still answers for the run it holds
            limit = s.worker_lost_starting_s if w.status == "starting" else s.worker_lost_s
            seen = self.last_seen.get((w.org, w.id), w.updated_at)
            if now - max(seen, w.updated_at) > timedelta(seconds=limit):
                await declare_lost(self.executor, w, list(self._open.values()), seen,
                                   "no heartbeat", ME)
        for j in [*self._pending.values(), *self._open.values()]:
            run = j.open_run
            timeout = j.spec.timeout
            if j.status in ("pending", "in_progress") and timeout and timeout <= now:
                await self._job_decision(j, CancelJob(reason="timeout"))
            elif run is not None and run.started_at is None and (
                    now - run.created_at > timedelta(seconds=s.run_start_timeout_s)):
                await self._job_decision(j, RequeueJob(
                    run_id=run.id, worker_id=run.worker_id, run_status="failed",
                    reason="the worker did not start the run in time"))

    async def _job_decision(self, j: JobState, cmd: JobCommand) -> None:
        try:
            await self.executor.execute(j.org, JOB, j.id, cmd, ME)
        except Conflict as exc:  # the job moved on meanwhile (ended, canceled, reassigned)
            log.info("scheduler.decision_skipped", job=j.id, command=type(cmd).__name__,
                     reason=str(exc))
