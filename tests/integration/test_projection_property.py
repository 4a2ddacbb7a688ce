"""Property: the rows the live projector writes equal the pure fold of the domain.

Histories are made by drawing random commands and keeping what the real ``decide``
accepts, so every history is legal. Each is then projected the way the live projector
does it, in randomly split batches (encode, decode, load the touched rows, apply,
write rows and checkpoint), into a fresh Postgres schema, and compared table by table
with one in-memory :class:`ReadModel` that folded the whole history at once, and with
those rows as ``ow replay`` writes them (COPY into another fresh schema).

NATS is not involved: the log's part (order, sequence numbers, each message's subject)
is played by the list. Both organizations start workers by hand under the same few ids:
workers are keyed by (organization, id).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from openweights.adapters.postgres.db import connect, migrate
from openweights.adapters.postgres.readmodels import (
    bulk_load,
    get_checkpoint,
    load,
    write_changes,
)
from openweights.adapters.projected import CHECKPOINT
from openweights.domain import file, job, org, secret, token, worker
from openweights.domain.commands import (
    AssignJob,
    CancelJob,
    CompleteRun,
    CreateFile,
    CreateOrganization,
    CreateToken,
    DeclareLost,
    ExtendJobTimeout,
    ExtendWorkerTTL,
    FailRun,
    NoteWaitReason,
    RecordMachineFailed,
    RecordMachineStarted,
    RegisterWorker,
    RemoveSecret,
    ReportStopped,
    RequestShutdown,
    RequestWorker,
    RequeueJob,
    RestartJob,
    RevokeToken,
    SetSecret,
    SetSpendingLimit,
    StartRun,
    StoreRunLog,
    SubmitJob,
    TerminateWorker,
)
from openweights.domain.job import JobState, RunState
from openweights.errors import Fenced, IllegalTransition
from openweights.events import (
    ALL_EVENTS,
    Actor,
    Event,
    JobSpec,
    RunEventLogged,
    RunFileUploaded,
    decode,
    encode,
)
from openweights.projection.model import ReadModel
from openweights.projection.rows import COLUMNS, PRIMARY_KEY, TABLES, Row

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ORGS = ("org-a", "org-b")
JOBS = ("job-0", "job-1", "job-2", "job-3")
WORKERS = ("w-0", "w-1", "w-2")
MODELS = ("unsloth/Qwen3-8B", "org/m-1b/checkpoint-3", None, "unsloth/Qwen3-8B")
AGGREGATES: dict[str, Any] = {"org": org, "token": token, "secret": secret, "file": file,
                              "job": job, "worker": worker}


class World:
    """Drives the real domain with drawn commands; keeps the messages decide accepts."""

    def __init__(self) -> None:
        self.now = T0
        self.states: dict[str, dict[Any, Any]] = {kind: {} for kind in AGGREGATES}
        self.messages: list[tuple[str, list[Event]]] = []  # (subject, events)
        self._runs = self._workers = 0

    @property
    def jobs(self) -> dict[str, JobState]:
        return self.states["job"]

    def step(self, op: str, a: int, b: int, dt_us: int) -> None:
        self.now += timedelta(microseconds=dt_us)
        with contextlib.suppress(IllegalTransition, Fenced):  # refused: nothing happened
            OPS[op](self, a, b)

    def decide(self, kind: str, key: Any, cmd: Any, by: Actor) -> None:
        aggregate, store = AGGREGATES[kind], self.states[kind]
        state = store.get(key)
        events = aggregate.decide(state, cmd, self.now, by)
        for event in events:
            state = aggregate.evolve(state, event)  # what decide says, evolve accepts
        if events:
            store[key] = state
            org_id = state.id if kind == "org" else state.org
            agg_id = key[1] if isinstance(key, tuple) else key
            self.messages.append((f"ow.{org_id}.{kind}.{agg_id}", events))

    # -- jobs ------------------------------------------------------------------------
    def submit(self, a: int, b: int) -> None:
        i = a % len(JOBS)
        self.decide("job", JOBS[i], SubmitJob(job_id=JOBS[i], org=ORGS[i % 2], spec=JobSpec(
            type="fine-tuning", model=MODELS[i],
            params={"lr": 1e-4, "epochs": b % 3, "name": f"run {i}"},
            script=("python train.py", "python train.py --v2")[b & 1],
            docker_image=("img:v1", "img:v2")[(b >> 1) & 1],
            requires_vram_gb=(None, 24, 80)[(b >> 2) % 3],
            allowed_hardware=(None, ["1x H100S"], ["1x H200", "2x A100"])[(b >> 4) % 3],
            timeout=None if b % 5 else self.now + timedelta(hours=1),
        )), Actor("client", "tok-0"))

    def _job(self, a: int, *statuses: str) -> str:
        """A job in one of ``statuses`` if there is one (most commands then apply)."""
        ids = [j for j, s in self.jobs.items() if s.status in statuses] or list(JOBS)
        return ids[a % len(ids)]

    def assign(self, a: int, b: int) -> None:
        known = self.states["worker"]
        workers = [w for (_, w), s in known.items() if s.status == "active"] or [
            w for _, w in known] or list(WORKERS)
        self._runs += 1
        self.decide("job", self._job(a, "pending"), AssignJob(
            worker_id=workers[b % len(workers)], run_id=f"run-{self._runs}"), Actor("scheduler"))

    def _run(self, a: int, b: int) -> tuple[str, RunState, str] | None:
        """A run and a worker speaking for it: mostly an open run's own worker, sometimes
        a stale or a wrong one (which the fencing refuses)."""
        state = self.jobs.get(self._job(a, "in_progress") if b % 5 else JOBS[a % len(JOBS)])
        if state is None or not state.runs:
            return None
        run = state.open_run or state.runs[b % len(state.runs)]
        speaker = run.worker_id if b % 7 else WORKERS[b % len(WORKERS)]
        return state.id, run, speaker

    def _worker_says(self, a: int, b: int, make: Callable[[str, str], Any]) -> None:
        if (found := self._run(a, b)) is not None:
            job_id, run, speaker = found
            self.decide("job", job_id, make(run.id, speaker), Actor("agent", speaker))

    def start(self, a: int, b: int) -> None:
        self._worker_says(a, b, lambda r, w: StartRun(run_id=r, worker_id=w))

    def complete(self, a: int, b: int) -> None:
        self._worker_says(a, b, lambda r, w: CompleteRun(
            run_id=r, worker_id=w, log_file=None if b % 2 else f"file-log-{r}"))

    def fail(self, a: int, b: int) -> None:
        self._worker_says(a, b, lambda r, w: FailRun(run_id=r, worker_id=w, error="exit 1",
                                                     exit_code=b % 3 or None))

    def requeue(self, a: int, b: int) -> None:
        self._worker_says(a, b, lambda r, w: RequeueJob(
            run_id=r, worker_id=w, run_status=("failed", "canceled")[b % 2], reason="lost"))

    def worker_cancel(self, a: int, b: int) -> None:
        self._worker_says(a, b, lambda r, w: CancelJob(reason="timeout", run_id=r, worker_id=w))

    def store_log(self, a: int, b: int) -> None:
        self._worker_says(a, b, lambda r, w: StoreRunLog(run_id=r, worker_id=w,
                                                         log_file=f"file-full-log-{r}"))

    def log(self, a: int, b: int) -> None:
        """Run events are not decided: the agent appends them for its run."""
        if (found := self._run(a, b | 1)) is None:
            return
        job_id, run, _ = found
        by = Actor("agent", run.worker_id)
        events: list[Event] = [
            RunEventLogged(at=self.now, by=by, job_id=job_id, run_id=run.id,
                           data={"step": b + k, "loss": round(1 / (b + k + 1), 4),
                                 "note": None if k else "first"})
            for k in range(1 + a % 3)]
        if b % 3 == 0:
            events.append(RunFileUploaded(at=self.now, by=by, job_id=job_id, run_id=run.id,
                                          path="samples.jsonl", file=f"file-up-{b}"))
        self.messages.append((f"ow.{self.jobs[job_id].org}.run.{job_id}", events))

    def cancel(self, a: int, b: int) -> None:
        self.decide("job", self._job(a, "pending", "in_progress"), CancelJob(),
                    Actor("client", "tok-0"))

    def restart(self, a: int, b: int) -> None:
        self.decide("job", self._job(a, "completed", "failed", "canceled"), RestartJob(),
                    Actor("client", "tok-0"))

    def extend_timeout(self, a: int, b: int) -> None:
        timeout = None if b % 3 == 0 else self.now + timedelta(minutes=b)
        self.decide("job", self._job(a, "pending", "in_progress"),
                    ExtendJobTimeout(timeout=timeout), Actor("client", "tok-0"))

    def note_wait(self, a: int, b: int) -> None:
        reason = None if b % 3 == 0 else f"the organization is at its machine cap ({b})"
        self.decide("job", self._job(a, "pending"), NoteWaitReason(reason=reason),
                    Actor("provisioner"))

    # -- workers ---------------------------------------------------------------------
    def _new_worker_id(self) -> str:
        self._workers += 1
        return f"w-{self._workers}"

    def _worker(self, a: int, cmd: Any, by: str = "provisioner", prefer: str = "") -> None:
        """``cmd`` for its own worker id, or for a known worker (in state ``prefer`` if any)."""
        known = self.states["worker"]
        keys = [k for k, s in known.items() if s.status == prefer] or list(known) or [
            (ORGS[a % 2], w) for w in WORKERS]
        key = (cmd.org, cmd.worker_id) if hasattr(cmd, "org") else keys[a % len(keys)]
        self.decide("worker", key, cmd, Actor(by, key[1] if by == "agent" else "prov-0"))

    def request_worker(self, a: int, b: int) -> None:
        self._worker(a, RequestWorker(worker_id=self._new_worker_id(), org=ORGS[a % 2],
                                      backend="local", hardware="1x H100S",
                                      docker_image="img:v1", reason=f"{b} pending jobs"))

    def register_worker(self, a: int, b: int) -> None:
        """The agent of a requested machine, or (sometimes) one started by hand."""
        starting = [k for k, s in self.states["worker"].items() if s.status == "starting"]
        # By hand: one of a few names, which the other organization may use too.
        org_id, wid = (starting[a % len(starting)] if starting and b % 4
                       else (ORGS[a % 2], WORKERS[b % len(WORKERS)]))
        self._worker(a, RegisterWorker(
            worker_id=wid, org=org_id, docker_image=("img:v1", "img:v2")[b % 2],
            hardware_type=f"{1 + b % 2}x H100S", gpu_type="H100S", gpu_count=1 + b % 2,
            vram_gb=80 * (1 + b % 2), managed=b % 4 != 0,
            ttl_until=None if b % 2 else self.now + timedelta(hours=2)), by="agent")

    def machine_started(self, a: int, b: int) -> None:
        self._worker(a, RecordMachineStarted(machine_id=f"pod-{b}", price_per_hour=b / 8),
                     prefer="starting")

    def machine_failed(self, a: int, b: int) -> None:
        self._worker(a, RecordMachineFailed(error="no capacity"), prefer="starting")

    def shutdown(self, a: int, b: int) -> None:
        self._worker(a, RequestShutdown(reason="idle"))

    def stopped(self, a: int, b: int) -> None:
        self._worker(a, ReportStopped(reason="ttl", log_file=f"file-wlog-{b}" if b % 2 else None),
                     by="agent", prefer="shutdown")

    def lost(self, a: int, b: int) -> None:
        self._worker(a, DeclareLost(last_seen=self.now - timedelta(minutes=2), reason="silent"))

    def terminate(self, a: int, b: int) -> None:
        self._worker(a, TerminateWorker(reason="released"))

    def extend_ttl(self, a: int, b: int) -> None:
        self._worker(a, ExtendWorkerTTL(ttl_until=self.now + timedelta(hours=b)), prefer="active")

    # -- tenancy ---------------------------------------------------------------------
    def create_org(self, a: int, b: int) -> None:
        self.decide("org", ORGS[a % 2], CreateOrganization(
            org=ORGS[a % 2], name=("Lab", "Other lab")[b % 2]), Actor("operator"))

    def create_token(self, a: int, b: int) -> None:
        tid = f"tok-{a % 3}"
        role = ("admin", "user", "worker", "service")[b % 4]
        self.decide("token", tid, CreateToken(
            org=ORGS[a % 2], token_id=tid, name=f"token {b}", role=role,
            token_hash=hashlib.sha256(tid.encode()).hexdigest(), token_prefix=f"ow_{tid}",
            expires_at=None if b % 2 else self.now + timedelta(days=b),
            worker_id=WORKERS[b % 3] if role == "worker" else None), Actor("operator"))

    def revoke_token(self, a: int, b: int) -> None:
        self.decide("token", f"tok-{a % 3}", RevokeToken(), Actor("operator"))

    def set_limit(self, a: int, b: int) -> None:
        limit = None if b % 5 == 0 else b * 1.5
        if a % 2:
            self.decide("org", ORGS[a % 2], SetSpendingLimit(limit_usd=limit), Actor("operator"))
        else:
            self.decide("token", f"tok-{a % 3}", SetSpendingLimit(limit_usd=limit),
                        Actor("operator"))

    def set_secret(self, a: int, b: int) -> None:
        key = (ORGS[a % 2], ("HF_TOKEN", "WANDB_API_KEY")[(a >> 1) % 2])
        self.decide("secret", key, SetSecret(org=key[0], name=key[1], ciphertext=f"ct-{b}"),
                    Actor("client", "tok-0"))

    def remove_secret(self, a: int, b: int) -> None:
        key = (ORGS[a % 2], ("HF_TOKEN", "WANDB_API_KEY")[(a >> 1) % 2])
        self.decide("secret", key, RemoveSecret(), Actor("client", "tok-0"))

    def create_file(self, a: int, b: int) -> None:
        fid = f"file-{a % 3}"
        self.decide("file", fid, CreateFile(
            org=ORGS[a % 2], file_id=fid, filename=f"data-{b}.jsonl", purpose="conversations",
            bytes=b * 1000, sha256=hashlib.sha256(fid.encode()).hexdigest()),
            Actor("client", "tok-0"))


OPS: dict[str, Callable[[World, int, int], None]] = {
    name: getattr(World, name) for name in (
        "submit", "assign", "start", "complete", "fail", "requeue", "worker_cancel",
        "store_log", "log", "cancel", "restart", "extend_timeout", "note_wait", "request_worker",
        "register_worker", "machine_started", "machine_failed", "shutdown", "stopped",
        "lost", "terminate", "extend_ttl", "create_org", "create_token", "revoke_token",
        "set_limit", "set_secret", "remove_secret", "create_file")}
# A job's lifecycle takes several steps in a row, so its commands are drawn more often.
WEIGHTED = [*OPS, *["submit", "assign", "start", "complete", "fail", "requeue", "log"] * 3,
            "assign", "log", "register_worker", "register_worker"]
# (command, two target/variant numbers, microseconds since the previous step)
command_steps = st.lists(
    st.tuples(st.sampled_from(WEIGHTED), st.integers(0, 63), st.integers(0, 63),
              st.integers(1, 5_000_000)),
    min_size=20, max_size=80)


# -- the two sides ---------------------------------------------------------------------
def normalised(table: str, table_rows: list[Row]) -> list[Row]:
    pk = [COLUMNS[table].index(c) for c in PRIMARY_KEY[table]]
    return sorted(table_rows, key=lambda r: tuple(r[i] for i in pk))


def fold_at_once(messages: list[tuple[str, list[Event]]]) -> ReadModel:
    model = ReadModel()
    for seq, (subject, events) in enumerate(messages, start=1):
        model.apply(seq, events, subject)
    return model


@contextlib.asynccontextmanager
async def fresh_schema(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection whose search_path is a new, migrated schema (dropped afterwards)."""
    schema = f"prop_{uuid.uuid4().hex[:12]}"
    conn = await connect(url, schema=schema)
    try:
        await conn.execute("SET synchronous_commit TO off")
        await migrate(conn, schema)
        yield conn
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def project_live(url: str, batches: list[list[tuple[int, tuple[str, bytes]]]]
                       ) -> dict[str, list[Row]]:
    """What the projector does per batch (decode, load, apply, write); every table after."""
    async with fresh_schema(url) as conn:
        for batch in batches:
            decoded = [(seq, subject, decode(data)) for seq, (subject, data) in batch]
            model = ReadModel()
            await load(conn, model, ReadModel.keys_of((s, evs) for _, s, evs in decoded))
            for seq, subject, events in decoded:
                model.apply(seq, events, subject)
            await write_changes(conn, model, name=CHECKPOINT, last_seq=batch[-1][0])
        assert await get_checkpoint(conn, CHECKPOINT) == batches[-1][-1][0]
        return {t: await table_rows(conn, t) for t in TABLES}


async def project_replay(url: str, model: ReadModel) -> dict[str, list[Row]]:
    """What ``ow replay`` does with a whole fold: COPY every row into empty tables."""
    async with fresh_schema(url) as conn:
        async with conn.transaction():
            await bulk_load(conn, model.all_rows())
        return {t: await table_rows(conn, t) for t in TABLES}


async def both(url: str, batches: list[list[tuple[int, tuple[str, bytes]]]], model: ReadModel
               ) -> tuple[dict[str, list[Row]], dict[str, list[Row]]]:
    return await project_live(url, batches), await project_replay(url, model)


async def table_rows(conn: asyncpg.Connection, table: str) -> list[Row]:
    records = await conn.fetch(f'SELECT * FROM "{table}"')
    for r in records:
        assert list(r.keys()) == list(COLUMNS[table]), f"{table}: columns and rows.py differ"
    return [tuple(r.values()) for r in records]


def split(messages: list[tuple[str, bytes]], sizes: list[int]
          ) -> list[list[tuple[int, tuple[str, bytes]]]]:
    numbered = list(enumerate(messages, start=1))
    batches, i, k = [], 0, 0
    while i < len(numbered):
        size = sizes[k % len(sizes)]
        batches.append(numbered[i:i + size])
        i, k = i + size, k + 1
    return batches


@hsettings(max_examples=40, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=command_steps, sizes=st.lists(st.integers(1, 8), min_size=1, max_size=12))
def test_live_projection_equals_the_pure_fold(
    database_url: str, steps: list[tuple[str, int, int, int]], sizes: list[int]
) -> None:
    world = World()
    for step in steps:
        world.step(*step)
    if not world.messages:
        return
    expected = fold_at_once(world.messages)
    assert expected.jobs == world.jobs  # the projection folds exactly what decide folded
    assert expected.workers == world.states["worker"]

    batches = split([(subject, encode(m)) for subject, m in world.messages], sizes)
    live, replayed = asyncio.run(both(database_url, batches, expected))

    want = expected.all_rows()
    for table in TABLES:
        assert normalised(table, live[table]) == normalised(table, want[table]), table
        assert normalised(table, replayed[table]) == normalised(table, want[table]), table


def test_the_generator_makes_every_event() -> None:
    """The property is only as good as its histories: a long walk makes every event."""
    world = World()
    rng = random.Random(7)
    for _ in range(3000):
        world.step(rng.choice(WEIGHTED), rng.randrange(64), rng.randrange(64),
                   rng.randrange(1, 5_000_000))
    made = {type(e) for _, m in world.messages for e in m}
    assert sorted(c.__name__ for c in set(ALL_EVENTS) - made) == []
    model = fold_at_once(world.messages)
    assert any(model.cached_models.values())
    assert any((ORGS[0], w) in model.workers and (ORGS[1], w) in model.workers
               for w in WORKERS), "no worker id in both organizations"
