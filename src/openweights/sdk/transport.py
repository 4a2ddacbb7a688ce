"""Requests to the api service, with retries through outages and typed errors.

Every call carries a request id that stays the same across its retries, so a command
whose reply was lost is not applied twice. Transient failures (no responder, timeout,
reconnecting) are retried with jittered exponential backoff up to ``retry_for_s``;
anything else is raised at once as the package's own typed error.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec
import nats
import nats.errors
from nats.aio.client import Client

from openweights.adapters.nats.servers import connect_options
from openweights.api import protocol
from openweights.config import Settings
from openweights.errors import (
    AuthenticationError,
    Forbidden,
    OpenWeightsError,
    StackUnavailable,
    Unavailable,
    from_wire,
)
from openweights.sdk.refusal import why_refused
from openweights.stack import resolve
from openweights.subjects import Subjects
from openweights.tokens import check as check_token_format
from openweights.tokens import token_id

_TRANSIENT = (nats.errors.NoRespondersError, nats.errors.TimeoutError,
              nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError)


class Transport:
    def __init__(self, settings: Settings, api_key: str | None = None,
                 retry_for_s: float = 60.0, organization_id: str | None = None) -> None:
        self.settings = settings
        self.api_key = api_key
        self.subjects = Subjects(settings.namespace)
        # Without a token the caller names its organization; with one, `whoami` does and
        # ``organization_id`` must agree with it.
        self.requested_org = organization_id
        self.org = organization_id or settings.default_org
        self.org_name: str | None = None
        self.org_hf_org: str | None = None  # the organization's HF_ORG secret, if any
        self.identified = False  # org and names are known: connected (and `whoami` said)
        # The principal in request subjects: the token's id, or "anon" on a stack
        # without auth. With a token, the org comes from the service (`whoami`).
        self.principal = token_id(api_key) if api_key else "anon"
        self.role = "admin" if api_key is None else "unknown"
        self.worker_id: str | None = None
        self.retry_for_s = retry_for_s
        self.seen_seq = 0  # the newest log position this client caused: read-your-writes
        self.last_reply_seq = 0
        self.nc: Client | None = None
        self.auth_refused = False  # the server refused our token (revoked while connected)
        # Concurrent first calls must share one connection, not each leave one open.
        self._connecting = anyio.Lock()

    async def connect(self) -> Client:
        if self.nc is not None and not self.nc.is_closed:
            return self.nc
        async with self._connecting:
            if self.nc is not None and not self.nc.is_closed:
                return self.nc  # another caller connected while we waited
            settings = resolve(self.settings)
            if self.api_key is not None:
                check_token_format(self.api_key)
            nc = await self._first_connect(str(settings.nats_url))
            if self.api_key is not None:
                try:
                    await self._whoami(nc)
                except BaseException:
                    # Unidentified, a connection must not be used: the next call asks again.
                    with anyio.CancelScope(shield=True):
                        await nc.close()
                    raise
            self.nc, self.identified = nc, True
            return nc

    async def _first_connect(self, url: str) -> Client:
        """Connect, failing fast: nats-py retries a first connect as often as later
        reconnects (forever here), so a refused token or an absent server would hang."""
        refused = anyio.Event()
        last: list[Exception] = []
        restarts = _ServerRestarts(self.retry_for_s)

        async def on_error(exc: Exception) -> None:
            last.append(exc)
            if "authorization" in str(exc).lower():
                if connected and restarts.refused_while_restarting(connected[0]):
                    return  # nats-py knocks again in 0.5 s
                self.auth_refused = True
                refused.set()
                if connected and not connected[0].is_closed:
                    # Refused on reconnect (revoked): stop knocking every 0.5 s; the
                    # next call connects afresh and says why it cannot.
                    asyncio.get_running_loop().create_task(connected[0].close())

        async def on_reconnected() -> None:
            self.auth_refused = False  # admitted again: a refusal was a callout outage
            if connected:
                restarts.admitted(connected[0])

        connected: list[Client] = []
        async with anyio.create_task_group() as tg:
            async def connect() -> None:
                connected.append(await nats.connect(
                    **_connect_options(url, self.api_key),
                    name=f"ow-sdk-{socket.gethostname()}-{os.getpid()}",
                    max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=5,
                    allow_reconnect=True,
                    inbox_prefix=f"_INBOX.{self.principal}".encode(), error_cb=on_error,
                    reconnected_cb=on_reconnected))
                tg.cancel_scope.cancel()

            async def give_up() -> None:
                with anyio.move_on_after(self.settings.request_timeout_s):
                    await refused.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(connect)
            tg.start_soon(give_up)
        if connected:
            self.auth_refused = False
            restarts.admitted(connected[0])
            return connected[0]
        if refused.is_set():
            # The server says only "authorization violation": the api says which it is.
            raise await self._refusal(url, "was refused: this stack does not know it, or "
                                      "it was revoked or has expired")
        cause = f" ({type(last[-1]).__name__}: {last[-1]})" if last else ""
        raise StackUnavailable(f"cannot reach openweights at {url}{cause}; is `ow up` running?")

    async def _refusal(self, url: str, fallback: str) -> AuthenticationError:
        """Why our token was refused, asked of the api; ``fallback`` if it cannot say."""
        assert self.api_key is not None
        told = await why_refused(url, self.api_key, self.subjects,
                                 min(self.settings.request_timeout_s, 2.0))
        return told or AuthenticationError(
            f"OPENWEIGHTS_API_KEY (token {self.principal}) {fallback}; `ow token ls` (with "
            "a working token) shows its status, `ow token create` makes a new one")

    async def _whoami(self, nc: Client) -> None:
        try:
            msg = await nc.request(self.subjects.whoami(self.principal), b"{}",
                                   timeout=self.settings.request_timeout_s)
        except _TRANSIENT as exc:
            raise Unavailable("the api service did not say who this token is") from exc
        me = self.unwrap(msg.data)
        if self.requested_org is not None and me["org"] != self.requested_org:
            raise Forbidden(
                f"this API token belongs to organization {me['org']!r}, not "
                f"{self.requested_org!r}: use a token of {self.requested_org!r}, or leave "
                "organization_id out")
        self.org, self.role, self.worker_id = me["org"], me["role"], me.get("worker_id")
        # Newer api services name the organization and its HF_ORG secret; older ones don't.
        self.org_name, self.org_hf_org = me.get("org_name"), me.get("hf_org")

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.drain()
        self.nc = None

    def subject(self, endpoint: str) -> str:
        return self.subjects.api(self.org, self.principal, endpoint)

    async def call(self, endpoint: str, *, read: bool = False, min_seq: int | None = None,
                   **fields: Any) -> Any:
        """Send ``endpoint`` a request built from ``fields``; return its result."""
        return (await self.call_reply(endpoint, read=read, min_seq=min_seq, **fields)).ok

    async def pages(self, endpoint: str, *, read: bool = False, **fields: Any
                    ) -> AsyncIterator[Any]:
        """The result of each page of ``endpoint``: a reply whose page was cut (by count
        or by bytes) names the fields (``next``) of the request that reads on."""
        while True:
            reply = await self.call_reply(endpoint, read=read, **fields)
            yield reply.ok
            if reply.next is None:
                return
            fields = {**fields, **reply.next}

    async def call_reply(self, endpoint: str, *, read: bool = False,
                         min_seq: int | None = None, **fields: Any) -> protocol.Reply:
        """The whole reply of :meth:`call` (its result, log position and ``next``)."""
        request_type = protocol.ENDPOINTS[endpoint]
        if min_seq is None:
            min_seq = self.seen_seq if read else 0
        try:
            body = request_type(request_id=uuid.uuid4().hex, min_seq=min_seq, **fields)
        except (TypeError, msgspec.ValidationError) as exc:
            from openweights.errors import InvalidRequest

            raise InvalidRequest(f"invalid arguments for {endpoint}: {exc}") from None
        payload = protocol.encoder.encode(body)
        await self.connect()  # with a token, the subject's org comes from `whoami`
        delay, deadline = 0.1, anyio.current_time() + self.retry_for_s
        while True:
            msg = await self.request(self.subject(endpoint), payload)
            try:
                return self.reply(msg.data)
            except OpenWeightsError as exc:
                # The same request id again: a retried command is applied at most once.
                if not exc.retryable or anyio.current_time() + delay > deadline:
                    raise
                await anyio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)

    def unwrap(self, data: bytes) -> Any:
        return self.reply(data).ok

    def reply(self, data: bytes) -> protocol.Reply:
        """The reply in ``data``. Raises the typed error it carries."""
        try:
            reply = protocol.reply_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise OpenWeightsError(f"malformed reply from the api service: {exc}") from None
        if reply.error is not None:
            raise from_wire(reply.error.code, reply.error.message)
        self.seen_seq = max(self.seen_seq, reply.seq)
        self.last_reply_seq = reply.seq  # read right after the call returns (no await between)
        return reply

    async def request(self, subject: str, payload: bytes,
                      headers: dict[str, str] | None = None) -> Any:
        nc = await self.connect()
        delay, deadline = 0.1, anyio.current_time() + self.retry_for_s
        while True:
            if self.auth_refused:  # a reconnect was refused: kicked after a revocation
                raise await self._refusal(str(resolve(self.settings).nats_url),
                                          "was revoked or expired while connected")
            try:
                return await nc.request(subject, payload, timeout=self.settings.request_timeout_s,
                                        headers=headers)
            except _TRANSIENT as exc:
                if anyio.current_time() + delay > deadline:
                    raise Unavailable(f"the api service did not answer {subject} for "
                                      f"{self.retry_for_s:.0f} s ({type(exc).__name__})") from exc
                await anyio.sleep(delay * (0.5 + random.random()))  # backoff between retries
                delay = min(delay * 2, 5.0)


class _ServerRestarts:
    """Tells a revocation from a server restart on a refused reconnect.

    A server that kicked a revoked token refuses its reconnect at once. A nats-server
    that restarted (a new server id) refuses everyone until the api's auth callout is
    subscribed again, for a second or so: that refusal is waited out, up to
    ``grace_s``, so a long-lived client rides through the restart."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.server_id: str | None = None  # of the server that last admitted us
        self.refused_since: float | None = None

    def admitted(self, nc: Client) -> None:
        self.server_id, self.refused_since = _server_id(nc), None

    def refused_while_restarting(self, nc: Client) -> bool:
        if _server_id(nc) in (None, self.server_id):
            return False
        now = time.monotonic()
        if self.refused_since is None:
            self.refused_since = now
        return now - self.refused_since < self.grace_s


def _server_id(nc: Client) -> str | None:
    """The id of the server ``nc`` talks (or last tried to talk) to; new at every start."""
    info = getattr(nc, "_server_info", None)  # nats-py keeps the INFO it last got here
    server_id = info.get("server_id") if isinstance(info, dict) else None
    return server_id if isinstance(server_id, str) else None


def _connect_options(url: str, token: str | None) -> dict[str, Any]:
    """The servers of ``url`` (a cluster's, comma-separated); a token replaces the URL's
    credentials, as nats-py itself prefers the token option over them."""
    options = connect_options(url)
    if token is not None:
        options.pop("user", None)
        options.pop("password", None)
        options["token"] = token
    return options
