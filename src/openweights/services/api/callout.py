"""The api service as the NATS auth callout: token -> permissions for one connection.

Each connection gets exactly its organization's subjects (NATS-AUTH.md): requests under
its own token id, replies on its own inbox prefix, live data of its organization; a
worker, of the live events and log lines only its own worker's, and its own machine's
heartbeat, log and assignment subjects (the scheduler tells it of its runs' cancels).
Tenants get no JetStream API rights at all. Revoking a token kicks its live connections;
so does its expiry: the user JWT carries it (the server closes the connection then, in
real time) and :class:`ExpiryWatch` kicks what is past it by the services' clock.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
import asyncpg
import nats
import structlog
from anyio.abc import TaskStatus
from nats.aio.client import Client

from openweights import tokens
from openweights.adapters.nats.callout import AuthCallout, ClientInfo, Grant
from openweights.adapters.nats.server_config import NatsAuthConfig
from openweights.adapters.nats.servers import servers
from openweights.adapters.postgres.db import query
from openweights.clock import Clock
from openweights.domain.aggregates import TOKEN
from openweights.domain.token import TokenState
from openweights.errors import AuthenticationError, Unavailable
from openweights.fold import Fold
from openweights.refusal import REFUSAL_CONNECTION
from openweights.services.api.context import Kicker
from openweights.services.api.indexes import TokenIndex
from openweights.services.api.refusal import refusal_grant

EXPIRY_CHECK_S = 1.0  # how often past-expiry tokens are looked for (the server is exact)
log = structlog.get_logger("api")


def grant_for(ns: str, t: TokenState, now: datetime) -> Grant:
    """What token ``t`` may do on one connection; it ends at the token's expiry."""
    org, tid = t.org, t.id
    pub = [f"{ns}api.{org}.{tid}.>", f"{ns}whoami.{tid}"]
    sub = [f"_INBOX.{tid}.>"]
    if t.role == "worker" and t.worker_id:
        w = t.worker_id
        pub += [f"{ns}hb.{org}.{w}", f"{ns}log.{org}.{w}.>"]
        # No job's live events: the scheduler tells the agent of its runs' cancels. No
        # other worker's lines: readers take a run's lines only under its own worker.
        sub += [f"{ns}agent.{org}.{w}", f"{ns}live.{org}.worker.{w}",
                f"{ns}livelog.{org}.{w}.>"]
    else:
        sub += [f"{ns}live.{org}.>", f"{ns}livelog.{org}.>"]
    left = None if t.expires_at is None else (t.expires_at - now).total_seconds()
    return Grant(name=tid, pub_allow=pub, sub_allow=sub, expires_in_s=left)


def _with_user(url: str, auth: NatsAuthConfig, user: str) -> dict[str, Any]:
    """``nats.connect`` options for static user ``user`` on every server of ``url``."""
    return {"servers": servers(url), "user": user, "password": auth.password(user)}


@contextlib.asynccontextmanager
async def callout_connections(nats_url: str, auth: NatsAuthConfig
                              ) -> AsyncIterator[tuple[Client, Client]]:
    """The callout's own connections: as the ``auth`` user (authorization requests) and
    the ``sys`` user (kicking a revoked token's connections)."""
    nc_auth = await nats.connect(**_with_user(nats_url, auth, "auth"), name="ow-callout",
                                 max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    try:
        nc_sys = await nats.connect(**_with_user(nats_url, auth, "sys"),
                                    name="ow-callout-sys", max_reconnect_attempts=-1,
                                    reconnect_time_wait=0.5)
    except BaseException:
        await nc_auth.close()
        raise
    try:
        yield nc_auth, nc_sys
    finally:
        for nc in (nc_sys, nc_auth):
            with contextlib.suppress(Exception):
                await nc.close()


@dataclass(frozen=True, eq=False)
class TokenAuthorizer:
    """What a connecting token may do: its grant, or :class:`AuthenticationError`."""

    ns: str
    fold: Fold
    tokens: TokenIndex
    pool: asyncpg.Pool
    clock: Clock
    expiries: Expiries

    async def __call__(self, token: str, client: ClientInfo) -> Grant:
        if not tokens.TOKEN.match(token):
            raise AuthenticationError("not an openweights token")
        if client.name == REFUSAL_CONNECTION:  # asks why it was refused, and no more
            return refusal_grant(self.ns, tokens.token_id(token))
        found = self.tokens.by_hash.get(tokens.token_hash(token))
        state = self.fold.get(found[0], TOKEN, found[1]) if found else None
        now = self.clock()
        if state is None:
            raise AuthenticationError("unknown token")
        if state.status == "revoked":
            raise AuthenticationError("token revoked")
        if not state.usable(now):
            raise AuthenticationError("token expired")
        if state.expires_at is not None:
            self.expiries.admitted(state.id, state.expires_at)
        with contextlib.suppress(Exception):  # a usage stamp must never refuse a connect
            await self.pool.execute(query("token_used"), state.id, now)
        return grant_for(self.ns, state, now)


@dataclass(frozen=True, eq=False)
class CalloutKicker:
    """Disconnects a revoked token's live connections through the system account."""

    callout: AuthCallout
    nc_sys: Client

    async def kick(self, token_id: str) -> int:
        return await self.callout.kick(token_id, self.nc_sys)


class Expiries:
    """The expiring tokens this instance admitted connections of, soonest first."""

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, str]] = []
        self._queued: set[str] = set()

    def admitted(self, token_id: str, expires_at: datetime) -> None:
        if token_id not in self._queued:
            self._queued.add(token_id)
            heapq.heappush(self._heap, (expires_at, token_id))

    def due(self, now: datetime) -> list[tuple[datetime, str]]:
        """``(expires_at, token id)`` of every token expired by ``now``, taken out."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap))
            self._queued.discard(out[-1][1])
        return out


@dataclass(frozen=True, eq=False)
class ExpiryWatch:
    """Kicks the connections of tokens past their expiry by the services' clock.

    nats-server closes them itself at the user JWT's ``exp`` (real time); this is for a
    clock that is not the server's (moved in tests, or skewed), checked every
    ``period_s``. A reconnect is refused by the callout: the token is expired.
    """

    expiries: Expiries
    kicker: Kicker
    clock: Clock
    period_s: float = EXPIRY_CHECK_S

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await anyio.sleep(self.period_s)  # a period, not a wait
            await self.kick_expired()

    async def kick_expired(self) -> None:
        for expires_at, token_id in self.expiries.due(self.clock()):
            try:
                closed = await self.kicker.kick(token_id)
            except Unavailable as exc:  # unconfirmed: again next period
                log.warning("callout.expiry_kick_failed", token=token_id, error=str(exc))
                self.expiries.admitted(token_id, expires_at)
                continue
            if closed:
                log.info("callout.expired_disconnected", token=token_id, connections=closed)
