"""The NATS auth callout service: token in, signed per-connection permissions out.

nats-server (config mode, NATS-AUTH.md §3) asks ``$SYS.REQ.USER.AUTH`` about every
client that is not a static user. :class:`AuthCallout` verifies the server's request,
asks ``authorize`` what the client's token may do, and answers with a user JWT placing
the connection into the APP account with exactly those permissions, or with an error.
Run two or more instances: they share the queue group, so any one of them answers.

Revocation is "mark the token, then :meth:`AuthCallout.kick` its live connections":
JWT expiry and config reloads both make nats-py drop connections for good (§7, §8).
Expiry is the one case where that is right: a grant with ``expires_in_s`` is admitted
with a user JWT whose ``exp`` has the server close the connection at that moment.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from openweights.adapters.nats import jwt
from openweights.errors import AuthenticationError, Unavailable

AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"
KICK_WAIT_S = 2.0  # a live server answers a KICK or CONNZ in about a millisecond
PEER_GRACE_S = 0.1  # after the first connz answer, how long the cluster's others get
CONNZ_PING = "$SYS.REQ.SERVER.PING.CONNZ"
CONNZ_LIMIT = 100_000  # connz pages at 1024 by default; one name never has this many

log = structlog.get_logger("auth-callout")


async def wait_flushed(nc: Client) -> None:
    """Return once the server has processed everything ``nc`` sent before the call.

    nats-py 2.16's ``flush()`` writes its PING straight to the socket while earlier
    SUB/PUB commands still wait for the flusher task, so one PONG can come back before
    a subscription exists. The flusher runs while the first PONG is awaited, so the
    second PING travels behind them.
    """
    await nc.flush()
    await nc.flush()


class ClientInfo(msgspec.Struct, frozen=True):
    """Who is connecting, as the server reports it (``cid`` is unique per server run)."""

    server_id: str
    cid: int
    host: str
    kind: str  # "nats", "websocket", "mqtt", "leafnode"
    name: str = ""  # the connection name the client chose (it asks for a purpose)


class Grant(msgspec.Struct, frozen=True):
    """What one connection may do. ``name`` (e.g. the token id) names it in server logs,
    connz and :meth:`AuthCallout.kick`. An empty allow list means "nothing" here.
    ``expires_in_s``: the server closes the connection that many seconds (rounded up to
    a whole one) after it is admitted; None: never. ``kickable``: False for a
    connection that ends by itself soon (its expiry) and so is not remembered."""

    name: str
    pub_allow: list[str]
    sub_allow: list[str]
    pub_deny: list[str] = []
    sub_deny: list[str] = []
    expires_in_s: float | None = None
    kickable: bool = True


Authorize = Callable[[str, ClientInfo], Awaitable[Grant]]
"""``authorize(token, client)``: the grant, or :class:`AuthenticationError` with the reason."""


class AuthCallout:
    def __init__(
        self,
        nc_auth: Client,
        issuer_seed: bytes | str,
        *,
        authorize: Authorize,
        account: str = "APP",
        queue: str = "auth",
    ) -> None:
        self.nc, self.issuer_seed, self.authorize = nc_auth, issuer_seed, authorize
        self.account, self.queue = account, queue
        self._live: dict[str, set[tuple[str, int]]] = {}
        # A kick that lands while `authorize` is still deciding must not miss the
        # connection it is admitting: each kick is numbered, answers check the number.
        self._kicks = 0
        self._kicked_at: dict[str, int] = {}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Answer authorization requests until cancelled; ``started`` once subscribed."""
        sub = await self.nc.subscribe(AUTH_SUBJECT, queue=self.queue)
        try:
            await wait_flushed(self.nc)  # the server has the subscription: requests will come
            task_status.started()
            # One task per request: a slow `authorize` (a database) must not queue others.
            async with anyio.create_task_group() as tg:
                async for msg in sub.messages:
                    tg.start_soon(self._reply, msg)
            # The iteration ends only when the connection closed: say so, loudly, since
            # no client can connect while no instance answers.
            raise Unavailable("the auth callout's NATS connection closed: restart it "
                              "(clients are refused while no callout instance runs)")
        finally:
            with anyio.CancelScope(shield=True):
                if not self.nc.is_closed:
                    await sub.unsubscribe()

    async def _reply(self, msg: Any) -> None:
        response = await self.answer(msg.data)
        if msg.reply:
            await self.nc.publish(msg.reply, response)

    async def answer(self, request: bytes) -> bytes:
        """The response to one raw authorization request (the protocol, without I/O)."""
        try:
            claims = jwt.decode_and_verify(request.decode(errors="replace"))
        except jwt.JwtError as exc:
            log.warning("auth request rejected", reason=str(exc))
            return self._refusal(jwt.peek_claims(request), f"bad request: {exc}")
        try:
            user_nkey, info, token = _parse_request(claims)
        except (KeyError, TypeError, ValueError) as exc:
            return self._refusal(claims, f"malformed authorization request: {exc!r}")
        if not token:
            return self._refusal(claims, "no token: connect with token=<OPENWEIGHTS_API_KEY>")
        started = self._kicks
        try:
            grant = await self.authorize(token, info)
        except AuthenticationError as exc:
            return self._refusal(claims, exc.message)
        except Exception:  # a broken `authorize` refuses; it must not stop the service
            log.exception("authorize failed", cid=info.cid)
            return self._refusal(claims, "authorization failed: see the callout's log")
        if self._kicked_at.get(grant.name, 0) > started:
            return self._refusal(claims, f"{grant.name} was revoked while connecting")
        if grant.kickable:
            self._live.setdefault(grant.name, set()).add((info.server_id, info.cid))
        expires = (None if grant.expires_in_s is None
                   else math.ceil(time.time() + grant.expires_in_s))
        user = jwt.user_jwt(user_nkey, self.account, grant.name, grant.pub_allow,
                            grant.pub_deny, grant.sub_allow, grant.sub_deny, self.issuer_seed,
                            expires_at=expires)
        return jwt.authorization_response(claims, user, issuer_seed=self.issuer_seed).encode()

    def _refusal(self, claims: dict[str, Any] | None, reason: str) -> bytes:
        # Without the connection's nkey and server id no signed refusal can be addressed;
        # an empty reply is one too (the server logs "no reason supplied").
        nats = (claims or {}).get("nats")
        if not isinstance(nats, dict) or not nats.get("user_nkey"):
            return b""
        if not isinstance(nats.get("server_id"), dict):
            return b""
        return jwt.authorization_response(claims or {}, error=reason,
                                          issuer_seed=self.issuer_seed).encode()

    def connections(self, name: str) -> frozenset[tuple[str, int]]:
        """``(server_id, cid)`` of every connection this instance admitted as ``name``
        and has not kicked (some may have closed since)."""
        return frozenset(self._live.get(name, ()))

    async def kick(self, name: str, nc_sys: Client) -> int:
        """Disconnect every live connection admitted as ``name``; how many were closed.

        Call it after marking the token revoked, so that reconnects are refused.
        ``nc_sys`` is connected as the ``sys`` user. Besides this instance's own
        admissions, the servers' connz is asked for ``name``: another callout instance
        may have admitted some. An admission another instance was still deciding when
        the token was marked can land after the sweep; every such decision is over
        within the server's auth_timeout (2 s), so a second kick after it is complete.
        Raises :class:`Unavailable` when a server does not confirm a kick (those
        connections stay listed; call again).
        """
        self._kicks += 1
        self._kicked_at[name] = self._kicks
        targets = self._live.pop(name, set()) | await self._find_live(name, nc_sys)
        closed, unconfirmed = 0, set()
        for server_id, cid in sorted(targets):
            subject = f"$SYS.REQ.SERVER.{server_id}.KICK"
            try:
                reply = await nc_sys.request(subject, json.dumps({"cid": cid}).encode(),
                                             timeout=KICK_WAIT_S)
            except NoRespondersError:
                continue  # that server is gone, and its connections with it
            except NatsTimeout:
                unconfirmed.add((server_id, cid))
                continue
            if not json.loads(reply.data).get("error"):
                closed += 1  # an error means the connection had already closed
        if unconfirmed:
            self._live.setdefault(name, set()).update(unconfirmed)
            raise Unavailable(f"{len(unconfirmed)} connection(s) of {name} were not confirmed "
                              "kicked: check the nats-server and call kick again")
        return closed

    async def _find_live(self, name: str, nc_sys: Client) -> set[tuple[str, int]]:
        """``(server_id, cid)`` of ``name``'s connections, from every server's connz.

        A PING reaches every server of the cluster, but how many will answer is unknown:
        gather until the first answer plus a short grace for its peers.
        """
        inbox = nc_sys.new_inbox()
        sub = await nc_sys.subscribe(inbox)
        query = {"acc": self.account, "user": name, "auth": True, "limit": CONNZ_LIMIT}
        found: set[tuple[str, int]] = set()
        try:
            await nc_sys.publish(CONNZ_PING, json.dumps(query).encode(), reply=inbox)
            with anyio.move_on_after(KICK_WAIT_S) as scope:
                async for msg in sub.messages:
                    answer = json.loads(msg.data)
                    server_id = answer.get("server", {}).get("id", "")
                    for conn in (answer.get("data") or {}).get("connections") or ():
                        found.add((server_id, int(conn["cid"])))
                    scope.deadline = min(scope.deadline, anyio.current_time() + PEER_GRACE_S)
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()
        return found


def _parse_request(claims: dict[str, Any]) -> tuple[str, ClientInfo, str]:
    """``(user_nkey, client, token)`` of a verified request; the token may be empty."""
    nats = claims.get("nats")
    if not isinstance(nats, dict) or nats.get("type") != "authorization_request":
        raise ValueError("not an authorization_request")
    client = nats.get("client_info") or {}
    opts = nats.get("connect_opts") or {}
    info = ClientInfo(server_id=str(nats["server_id"]["id"]), cid=int(client["id"]),
                      host=str(client.get("host", "")), kind=str(client.get("type", "")),
                      name=str(opts.get("name") or client.get("name") or ""))
    token = opts.get("auth_token") or ""
    return str(nats["user_nkey"]), info, str(token)
