"""What every api handler is given, and what it may return.

A handler is a module-level function ``async def submit_job(d: Deps, ctx: Context,
req: protocol.JobSubmit) -> Seq``: its dependencies come in ``d`` (built once, by the
composition root in :mod:`openweights.services.api.bootstrap`), who asks in ``ctx``, the
decoded request in ``req``. The route table (:mod:`openweights.services.api.routes`)
names the handler of every endpoint. This module imports no handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import asyncpg
import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext

from openweights.adapters.files.port import FileStore
from openweights.adapters.nats.fold import LiveFold
from openweights.adapters.projected import ProjectionWatcher
from openweights.clock import Clock
from openweights.config import Settings
from openweights.errors import Unavailable
from openweights.eventlog import EventLog
from openweights.events import Actor
from openweights.execute import Executor
from openweights.ratelimit import EventRates
from openweights.services.api.auth import Principal
from openweights.services.api.indexes import Holdings, OrgSecrets, RunIndex, TokenIndex
from openweights.services.api.uploads import Uploads
from openweights.subjects import Subjects


class Context(msgspec.Struct, frozen=True):
    """Who asks: the organization and principal (from the subject, bound by NATS
    permissions to the connection's token), and the raw request."""

    org: str
    principal: Principal
    raw: Any = None  # the micro Request, for raw-payload endpoints

    @property
    def actor(self) -> Actor:
        return self.principal.actor


class Seq(msgspec.Struct):
    """A handler's result that caused appends up to log position ``seq``: the reply
    carries it, so the client's next read can wait for the read models to include it."""

    value: Any
    seq: int


class Raw(msgspec.Struct):
    """A reply sent as these bytes (file contents), not as a JSON ``Reply``."""

    data: bytes
    headers: dict[str, str] | None = None


class Page(msgspec.Struct):
    """A list result cut to fit a reply: its items as one encoded JSON array, and the
    request fields that read on from where it ends (None: nothing more was asked for).
    See :mod:`openweights.services.api.paging`."""

    items: msgspec.Raw
    next: dict[str, Any] | None = None


class Kicker(Protocol):
    async def kick(self, token_id: str) -> int:
        """Disconnect every live connection made with ``token_id``; how many."""
        ...


class NoKicker:
    """Without the auth callout there are no token-bound connections to close."""

    async def kick(self, token_id: str) -> int:
        return 0


@dataclass(frozen=True, eq=False)
class ReadModels:
    """The Postgres read models, and the wait for them to include a log position."""

    pool: asyncpg.Pool
    watcher: ProjectionWatcher
    log: EventLog
    timeout_s: float

    async def wait_projected(self, seq: int) -> int:
        """Wait until the read models include ``seq`` (negative: the log's last position
        now, which every message stored before this request precedes); return it.
        Raises :class:`Unavailable` when the projector stays behind."""
        with anyio.move_on_after(self.timeout_s) as scope:
            if seq < 0:
                seq = await self.log.last_seq()
            await self.watcher.wait_projected(seq)
        if scope.cancelled_caught:
            raise Unavailable(f"read models are behind log position {seq}; retry shortly")
        return seq


@dataclass(frozen=True, eq=False)
class Deps:
    settings: Settings
    subjects: Subjects
    nc: Client
    js: JetStreamContext
    fold: LiveFold
    executor: Executor
    reads: ReadModels
    files: FileStore
    uploads: Uploads
    tokens: TokenIndex
    runs: RunIndex
    holdings: Holdings
    secrets: OrgSecrets
    kicker: Kicker
    clock: Clock
    instance: str  # this api instance: upload chunks must reach the one that began it
    event_rates: EventRates  # run.log's per-run and per-organization rates


Handler = Callable[[Deps, Context, Any], Awaitable[Any]]
