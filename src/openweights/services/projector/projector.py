"""The projector: folds the event log into the Postgres read models.

Exactly-once effects from at-least-once delivery: rows and the checkpoint commit in one
transaction, the log is acked after that commit, and a redelivered message at or below
the checkpoint is skipped. Several projectors may run; a Postgres advisory lock (held
by a session, so released when its holder dies) lets exactly one apply while the
others wait their turn.

The lease holder is the only writer of the read models, so the states it folded stay
in memory between batches (up to ``CACHE_JOBS`` jobs, then it starts afresh): a job's
later events are applied without reading its rows back, and a job submitted in the
batch is not looked up at all. Any failure drops what it holds.
"""

from __future__ import annotations

import anyio
import asyncpg
import structlog
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.js import JetStreamContext

from openweights.adapters.nats.puller import Puller
from openweights.adapters.nats.reader import StoredMessage
from openweights.adapters.postgres.readmodels import get_checkpoint, load, write_changes
from openweights.adapters.projected import CHECKPOINT, projected_subject
from openweights.config import Settings
from openweights.events import Event, JobSubmitted, decode
from openweights.projection.model import ReadModel
from openweights.subjects import Subjects

log = structlog.get_logger("projector")
CACHE_JOBS = 20_000


class Projector:
    def __init__(self, settings: Settings, nc: Client, js: JetStreamContext,
                 lease: asyncpg.Connection, conn: asyncpg.Connection) -> None:
        self.settings, self.nc, self.js = settings, nc, js
        self.lease, self.conn = lease, conn  # the lease's session, and the writer's
        self.subjects = Subjects(settings.namespace)
        self.checkpoint = 0
        self.model = ReadModel()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        log.info("projector.waiting_for_lease")
        await self.lease.execute("SELECT pg_advisory_lock(hashtext($1))",
                                 f"projector:{self.settings.namespace}")
        self.checkpoint = await get_checkpoint(self.conn, CHECKPOINT)
        puller = Puller(self.nc, self.js, self.subjects.events_stream,
                        f"{self.subjects.stream_prefix}_projector")
        try:
            await puller.open(self.checkpoint + 1)
            log.info("projector.started", checkpoint=self.checkpoint)
            task_status.started()
            async for batch in puller.batches():
                await self._apply(self.conn, batch)
                await puller.ack()
        finally:
            with anyio.CancelScope(shield=True):
                await puller.close()

    async def _apply(self, conn: asyncpg.Connection, batch: list[StoredMessage]) -> None:
        fresh = [m for m in batch if m.seq > self.checkpoint]  # redelivery is a no-op
        if not fresh:
            return
        decoded = [(m.seq, m.subject, decode(m.data)) for m in fresh]
        if len(self.model.jobs) > CACHE_JOBS:
            self.model = ReadModel()
        model = self.model
        try:
            keys = ReadModel.keys_of((subject, evs) for _, subject, evs in decoded)
            keys["jobs"] -= _submitted_here(decoded)
            await load(conn, model, keys)
            for seq, subject, events in decoded:
                model.apply(seq, events, subject)
            await write_changes(conn, model, name=CHECKPOINT, last_seq=fresh[-1].seq)
        except BaseException:
            self.model = ReadModel()  # it may hold what was not committed
            raise
        self.checkpoint = fresh[-1].seq
        await self.nc.publish(projected_subject(self.subjects), str(self.checkpoint).encode())


def _submitted_here(decoded: list[tuple[int, str, list[Event]]]) -> set[str]:
    """Jobs whose first event in the batch submits them: they have no rows to load."""
    seen: set[str] = set()
    new: set[str] = set()
    for _, _, events in decoded:
        for e in events:
            job_id = getattr(e, "job_id", None)
            if job_id is not None and job_id not in seen:
                seen.add(job_id)
                if isinstance(e, JobSubmitted):
                    new.add(job_id)
    return new
