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
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import nats
import structlog
from nats.aio.client import Client

from openweights import tokens
from openweights.adapters.nats.callout import AuthCallout, ClientInfo, Grant
from openweights.adapters.nats.server_config import NatsAuthConfig
from openweights.adapters.postgres.db import query
from openweights.domain.token import TokenState
from openweights.errors import AuthenticationError
from openweights.events import Event, TokenCreated
from openweights.services.api.service import ApiService

log = structlog.get_logger("callout")


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
async def callout_connections(api: ApiService) -> AsyncIterator[tuple[Client, Client]]:
    s = api.settings
    assert s.nats_auth_file is not None and s.nats_url is not None
    auth = NatsAuthConfig.load_or_create(s.nats_auth_file)
    nc_auth = await nats.connect(_with_user(s.nats_url, auth, "auth"), name="ow-callout",
                                 max_reconnect_attempts=-1)
    nc_sys = await nats.connect(_with_user(s.nats_url, auth, "sys"), name="ow-callout-sys",
                                max_reconnect_attempts=-1)
    try:
        yield nc_auth, nc_sys
    finally:
        for nc in (nc_sys, nc_auth):
            with contextlib.suppress(Exception):
                await nc.close()


def install(api: ApiService, nc_auth: Client, nc_sys: Client) -> AuthCallout:
    auth = NatsAuthConfig.load_or_create(api.settings.nats_auth_file)  # type: ignore[arg-type]
    by_hash: dict[str, tuple[str, str]] = {}  # token hash -> (org, token id)

    def index(seq: int, org: str, event: Event, before: Any, after: Any) -> None:
        if isinstance(event, TokenCreated):
            by_hash[event.token_hash] = (org, event.token_id)

    api.fold.listeners.append(index)

    async def authorize(token: str, client: ClientInfo) -> Grant:
        if not tokens.TOKEN.match(token):
            raise AuthenticationError("not an openweights token")
        found = by_hash.get(tokens.token_hash(token))
        state = api.fold.get(found[0], "token", found[1]) if found else None
        now = datetime.now(UTC)
        if state is None:
            raise AuthenticationError("unknown token")
        if state.status == "revoked":
            raise AuthenticationError("token revoked")
        if not state.usable(now):
            raise AuthenticationError("token expired")
        with contextlib.suppress(Exception):  # a usage stamp must never refuse a connect
            await api.pool.execute(query("token_used"), state.id, now)
        return grant_for(api.subjects.ns, state)

    callout = AuthCallout(nc_auth, auth.issuer_seed, authorize=authorize)

    async def kick(token_id: str) -> int:
        return await callout.kick(token_id, nc_sys)

    api.kick = kick
    return callout
