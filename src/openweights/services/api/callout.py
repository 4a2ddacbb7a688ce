"""The api service as the NATS auth callout: token -> permissions for one connection.

Each connection gets exactly its organization's subjects (NATS-AUTH.md): requests under
its own token id, replies on its own inbox prefix, live data of its organization; a
worker, of the live events only its own worker's, and its own machine's heartbeat, log
and assignment subjects (the scheduler tells it of its runs' cancels). Tenants
get no JetStream API rights at all. Revoking a token kicks its live connections.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg
import nats
from nats.aio.client import Client

from openweights import tokens
from openweights.adapters.nats.callout import AuthCallout, ClientInfo, Grant
from openweights.adapters.nats.server_config import NatsAuthConfig
from openweights.adapters.postgres.db import query
from openweights.clock import Clock
from openweights.domain.aggregates import TOKEN
from openweights.domain.token import TokenState
from openweights.errors import AuthenticationError
from openweights.fold import Fold
from openweights.services.api.indexes import TokenIndex


def grant_for(ns: str, t: TokenState) -> Grant:
    org, tid = t.org, t.id
    pub = [f"{ns}api.{org}.{tid}.>", f"{ns}whoami.{tid}"]
    sub = [f"_INBOX.{tid}.>", f"{ns}livelog.{org}.>"]
    if t.role == "worker" and t.worker_id:
        w = t.worker_id
        pub += [f"{ns}hb.{org}.{w}", f"{ns}log.{org}.{w}.>"]
        # No job's live events: the scheduler tells the agent of its runs' cancels.
        sub += [f"{ns}agent.{org}.{w}", f"{ns}live.{org}.worker.{w}"]
    else:
        sub += [f"{ns}live.{org}.>"]
    return Grant(name=tid, pub_allow=pub, sub_allow=sub)


def _with_user(url: str, auth: NatsAuthConfig, user: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    return f"{parts.scheme}://{user}:{auth.password(user)}@{host}:{parts.port or 4222}"


@contextlib.asynccontextmanager
async def callout_connections(nats_url: str, auth: NatsAuthConfig
                              ) -> AsyncIterator[tuple[Client, Client]]:
    """The callout's own connections: as the ``auth`` user (authorization requests) and
    the ``sys`` user (kicking a revoked token's connections)."""
    nc_auth = await nats.connect(_with_user(nats_url, auth, "auth"), name="ow-callout",
                                 max_reconnect_attempts=-1)
    try:
        nc_sys = await nats.connect(_with_user(nats_url, auth, "sys"), name="ow-callout-sys",
                                    max_reconnect_attempts=-1)
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

    async def __call__(self, token: str, client: ClientInfo) -> Grant:
        if not tokens.TOKEN.match(token):
            raise AuthenticationError("not an openweights token")
        found = self.tokens.by_hash.get(tokens.token_hash(token))
        state = self.fold.get(found[0], TOKEN, found[1]) if found else None
        now = self.clock()
        if state is None:
            raise AuthenticationError("unknown token")
        if state.status == "revoked":
            raise AuthenticationError("token revoked")
        if not state.usable(now):
            raise AuthenticationError("token expired")
        with contextlib.suppress(Exception):  # a usage stamp must never refuse a connect
            await self.pool.execute(query("token_used"), state.id, now)
        return grant_for(self.ns, state)


@dataclass(frozen=True, eq=False)
class CalloutKicker:
    """Disconnects a revoked token's live connections through the system account."""

    callout: AuthCallout
    nc_sys: Client

    async def kick(self, token_id: str) -> int:
        return await self.callout.kick(token_id, self.nc_sys)
