"""Composition root of the projector."""

from __future__ import annotations

from contextlib import AsyncExitStack

from nats.aio.client import Client
from nats.js import JetStreamContext

from openweights.adapters.postgres.db import connect
from openweights.clock import Clock
from openweights.config import Settings
from openweights.services.projector.projector import Projector
from openweights.services.runtime import closing


async def compose(settings: Settings, stack: AsyncExitStack, nc: Client, js: JetStreamContext,
                  clock: Clock) -> Projector:
    assert settings.database_url is not None
    lease = await connect(settings.database_url)  # a session: its lock dies with it
    closing(stack, lease.close)
    conn = await connect(settings.database_url)
    closing(stack, conn.close)
    # The log is the truth: a commit lost in a crash is re-projected from it.
    await conn.execute("SET synchronous_commit TO off")
    return Projector(settings, nc, js, lease, conn)
