"""Waiting until the read models reflect a given log position (read-your-writes).

The projector announces every committed checkpoint on a core NATS subject; a watcher
subscribes first and then reads the stored checkpoint, so no announcement is missed.
"""

from __future__ import annotations

import anyio
import asyncpg
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from openweights.adapters.postgres.readmodels import get_checkpoint
from openweights.subjects import Subjects

CHECKPOINT = "read_models"


def projected_subject(subjects: Subjects) -> str:
    return f"{subjects.ns}sys.projected"


class ProjectionWatcher:
    def __init__(self, nc: Client, subjects: Subjects) -> None:
        self.nc, self.subjects = nc, subjects
        self.seq = 0
        self._changed = anyio.Event()
        self._sub: Subscription | None = None

    async def start(self, conn: asyncpg.Connection | asyncpg.Pool) -> None:
        self._sub = await self.nc.subscribe(projected_subject(self.subjects), cb=self._on_msg)
        self._advance(await get_checkpoint(conn, CHECKPOINT))

    async def _on_msg(self, msg: Msg) -> None:
        self._advance(int(msg.data))

    def _advance(self, seq: int) -> None:
        if seq > self.seq:
            self.seq = seq
            self._changed.set()
            self._changed = anyio.Event()

    async def wait_projected(self, seq: int) -> None:
        """Return once the read models include log position ``seq``."""
        while self.seq < seq:
            await self._changed.wait()

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
