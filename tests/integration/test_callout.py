"""Auth callout on a real nats-server: org isolation, refusals, kicks (NATS-AUTH.md).

Two orgs, A and B, each with an API token ``ow_<48 hex>``; org A has a second token
that gets revoked. The permissions are those of NATS-AUTH.md §5 on openweights
subjects. Waits are on signals (a sentinel message, an event, a closed callback); the
few timeouts bound the proof that something does *not* arrive.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import stat
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import anyio
import nats
import nkeys
import pytest
from anyio.abc import TaskStatus
from nats.aio.client import Client

from openweights.adapters.embedded import EmbeddedNats
from openweights.adapters.nats import jwt
from openweights.adapters.nats.callout import AuthCallout, ClientInfo, Grant, wait_flushed
from openweights.adapters.nats.server_config import NatsAuthConfig, render_nats_conf
from openweights.errors import AuthenticationError, Unavailable

pytestmark = pytest.mark.anyio

NS = "ow"
TOKEN_SHAPE = re.compile(r"ow_[0-9a-f]{48}")


def _token() -> str:
    return "ow_" + secrets.token_hex(24)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Tokens:
    """The token table of a real deployment, in memory: hash -> (org, token id)."""

    table: dict[str, tuple[str, str]] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    expiring: dict[str, float] = field(default_factory=dict)  # token id -> seconds left
    refusals: list[tuple[str, str]] = field(default_factory=list)  # (token id, reason)

    def issue(self, org: str, token_id: str) -> str:
        token = _token()
        self.table[_hash(token)] = (org, token_id)
        return token

    async def authorize(self, token: str, client: ClientInfo) -> Grant:
        assert client.kind == "nats" and client.cid > 0 and client.server_id.startswith("N")
        if not TOKEN_SHAPE.fullmatch(token):
            raise AuthenticationError("malformed token: expected ow_ and 48 hex characters")
        entry = self.table.get(_hash(token))
        if entry is None:
            raise AuthenticationError("unknown token")
        org, tid = entry
        if tid in self.revoked:
            self.refusals.append((tid, "revoked"))
            raise AuthenticationError(f"token {tid} revoked")
        return Grant(name=tid,
                     pub_allow=[f"{NS}api.{org}.{tid}.>", f"{NS}whoami.{tid}"],
                     sub_allow=[f"_INBOX.{tid}.>", f"{NS}live.{org}.>", f"{NS}livelog.{org}.>"],
                     expires_in_s=self.expiring.get(tid))


TOKENS = Tokens()
TA, TB, TA2 = TOKENS.issue("A", "ta1"), TOKENS.issue("B", "tb1"), TOKENS.issue("A", "ta2")
TE = TOKENS.issue("A", "te1")  # its grant expires a second after each connect
TOKENS.expiring["te1"] = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    home = tmp_path_factory.mktemp("nats-auth")
    auth = NatsAuthConfig.load_or_create(home / "secrets" / "nats-auth.json")
    srv = EmbeddedNats(home / "nats", auth=auth).start()
    yield srv
    srv.stop()


class Errors:
    """An ``error_cb`` that keeps what the server said, so tests can wait for it."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._changed = anyio.Event()

    async def record(self, exc: Exception) -> None:
        self.seen.append(str(exc).lower())  # nats-py lowercases subjects in violations
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, fragment: str) -> None:
        with anyio.fail_after(5):
            while not any(fragment.lower() in e for e in self.seen):
                await self._changed.wait()


async def _connect(server: EmbeddedNats, token: str | None, tid: str = "none",
                   errors: Errors | None = None, **options: Any) -> Client:
    # A first connect must not retry: nats-py would otherwise retry a refused token for
    # max_reconnect_attempts x reconnect_time_wait (two minutes by default).
    options.setdefault("allow_reconnect", False)
    if token is not None:
        options["token"] = token
    return await nats.connect(server.url, inbox_prefix=f"_INBOX.{tid}",
                              error_cb=(errors or Errors()).record, **options)


@dataclass
class Instance:
    callout: AuthCallout
    nc: Client
    crashed: bool = False

    async def serve(self, *, task_status: TaskStatus[None]) -> None:
        try:
            await self.callout.run(task_status=task_status)
        except Unavailable:
            assert self.crashed  # a lost connection ends the service loudly

    async def crash(self) -> None:
        """Drop the connection without unsubscribing, like a killed process."""
        self.crashed = True
        await self.nc.close()


@asynccontextmanager
async def callouts(server: EmbeddedNats, n: int) -> AsyncIterator[list[Instance]]:
    assert server.auth is not None
    instances = []
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            nc = await nats.connect(server.url_for("auth"))
            inst = Instance(AuthCallout(nc, server.auth.issuer_seed,
                                        authorize=TOKENS.authorize), nc)
            await tg.start(inst.serve)
            instances.append(inst)
        try:
            yield instances
        finally:
            tg.cancel_scope.cancel()
            for inst in instances:
                with anyio.CancelScope(shield=True):
                    await inst.nc.close()


@asynccontextmanager
async def static(server: EmbeddedNats, user: str) -> AsyncIterator[Client]:
    nc = await nats.connect(server.url_for(user), allow_reconnect=False)
    try:
        yield nc
    finally:
        await nc.close()


async def test_org_a_receives_its_own_live_messages_and_nothing_of_b(
        server: EmbeddedNats) -> None:
    async with callouts(server, 1), static(server, "svc") as svc:
        errors = Errors()
        a = await _connect(server, TA, "ta1", errors)
        own: list[str] = []
        foreign: list[tuple[str, str]] = []
        sentinel = anyio.Event()

        async def on_own(msg: Any) -> None:
            own.append(msg.subject)
            if msg.subject.endswith(".done"):
                sentinel.set()

        def spy(pattern: str) -> Any:
            async def cb(msg: Any) -> None:
                foreign.append((pattern, msg.subject))
            return cb

        await a.subscribe(f"{NS}live.A.>", cb=on_own)
        for pattern in (">", f"{NS}live.B.>", f"{NS}livelog.B.>", "_INBOX.>", "_INBOX.tb1.>",
                        f"{NS}live.*.job.j1", f"{NS}api.>"):
            await a.subscribe(pattern, cb=spy(pattern))
        await wait_flushed(a)  # every SUB reached the server before anything is published
        for subject in (f"{NS}live.B.job.j1", f"{NS}livelog.B.r1", "_INBOX.tb1.reply",
                        f"{NS}api.B.tb1.x", f"{NS}live.A.job.j1", f"{NS}live.A.job.done"):
            await svc.publish(subject, b"secret of " + subject.encode())
        # One publisher's messages reach a connection in order: once A has the sentinel,
        # anything of B that was going to reach A would have.
        with anyio.fail_after(5):
            await sentinel.wait()
        assert own == [f"{NS}live.A.job.j1", f"{NS}live.A.job.done"]
        assert foreign == []
        for pattern in (">", f"{NS}live.B.>", "_INBOX.>"):
            await errors.wait_for(f'permissions violation for subscription to "{pattern}"')
        assert a.is_connected  # violations are not fatal
        await a.close()


async def test_requests_reach_only_the_own_orgs_api_under_the_own_token(
        server: EmbeddedNats) -> None:
    async with callouts(server, 1), static(server, "svc") as svc:
        seen: list[str] = []

        async def api(msg: Any) -> None:
            seen.append(msg.subject)
            await msg.respond(b"ok " + msg.subject.encode())

        await svc.subscribe(f"{NS}api.>", cb=api)
        await svc.subscribe(f"{NS}whoami.*", cb=api)
        await wait_flushed(svc)
        errors = Errors()
        a = await _connect(server, TA, "ta1", errors)
        assert (await a.request(f"{NS}api.A.ta1.ping", b"", timeout=2)).data.startswith(b"ok")
        assert (await a.request(f"{NS}whoami.ta1", b"", timeout=2)).data.startswith(b"ok")
        for subject in (f"{NS}api.B.ta1.ping", f"{NS}api.A.ta2.ping", f"{NS}whoami.tb1"):
            # A denied publish is dropped, so the request can only time out.
            with pytest.raises(nats.errors.TimeoutError):
                await a.request(subject, b"", timeout=0.3)
            await errors.wait_for(f'permissions violation for publish to "{subject}"')
        assert seen == [f"{NS}api.A.ta1.ping", f"{NS}whoami.ta1"]
        await a.close()


@pytest.mark.parametrize("token", [
    pytest.param(_token(), id="unknown"),
    pytest.param(TA2, id="revoked"),
    pytest.param("ow_not-hex", id="malformed"),
    pytest.param(None, id="missing"),
])
async def test_a_bad_token_is_refused_at_once(server: EmbeddedNats, token: str | None) -> None:
    TOKENS.revoked.add("ta2")
    try:
        async with callouts(server, 1):
            started = time.perf_counter()
            with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
                await _connect(server, token)
            elapsed = time.perf_counter() - started
            print(f"\nrefused in {elapsed * 1000:.1f} ms")
            assert elapsed < 1.0
    finally:
        TOKENS.revoked.discard("ta2")


async def test_kick_closes_a_revoked_tokens_connection_and_refuses_its_reconnect(
        server: EmbeddedNats) -> None:
    async with callouts(server, 2) as instances, static(server, "sys") as nc_sys:
        closed = anyio.Event()

        async def on_closed() -> None:
            closed.set()

        revoked = await _connect(server, TA2, "ta2", allow_reconnect=True,
                                 reconnect_time_wait=0.05, max_reconnect_attempts=3,
                                 closed_cb=on_closed)
        a, b = await _connect(server, TA, "ta1"), await _connect(server, TB, "tb1")
        # Kick from the instance that did *not* admit it: connz finds it anyway.
        admitted_by = [i for i in instances if i.callout.connections("ta2")]
        assert len(admitted_by) == 1
        kicker = next(i for i in instances if i is not admitted_by[0])
        TOKENS.revoked.add("ta2")
        try:
            assert await kicker.callout.kick("ta2", nc_sys) == 1
            with anyio.fail_after(5):
                await closed.wait()
            assert ("ta2", "revoked") in TOKENS.refusals  # the reconnect met the callout
        finally:
            TOKENS.revoked.discard("ta2")
        await a.flush(timeout=2)
        await b.flush(timeout=2)
        assert a.is_connected and b.is_connected and revoked.is_closed
        await a.close()
        await b.close()


async def test_the_server_closes_a_connection_when_its_grant_expires(
        server: EmbeddedNats) -> None:
    """The user JWT carries the grant's expiry: nats-server cuts the connection then,
    in real time, with no callout or kick involved; other connections stay."""
    async with callouts(server, 1):
        closed = anyio.Event()

        async def on_closed() -> None:
            closed.set()

        expiring = await _connect(server, TE, "te1", closed_cb=on_closed)
        lasting = await _connect(server, TA, "ta1")
        await expiring.subscribe(f"{NS}live.A.>")
        await wait_flushed(expiring)
        with anyio.fail_after(5):
            await closed.wait()
        # nats-py keeps the server's -ERR as the last error (no error_cb for it).
        assert "authentication expired" in str(expiring.last_error).lower()
        await lasting.flush(timeout=2)
        assert lasting.is_connected
        await lasting.close()


async def test_connects_keep_working_when_one_of_two_instances_dies(
        server: EmbeddedNats) -> None:
    async with callouts(server, 2) as instances, static(server, "sys") as nc_sys:
        # Until the server has noticed the crash, it may still route a request to it.
        gone = await nc_sys.subscribe("$SYS.ACCOUNT.AUTH.DISCONNECT", max_msgs=1)
        await wait_flushed(nc_sys)
        await instances[0].crash()
        await gone.next_msg(timeout=5)
        for _ in range(20):
            nc = await _connect(server, TB, "tb1")
            await nc.close()


async def test_the_services_user_connects_while_no_callout_runs(server: EmbeddedNats) -> None:
    started = time.perf_counter()
    async with static(server, "svc") as svc:
        assert svc.is_connected
        await svc.flush()
    assert time.perf_counter() - started < 1.0
    started = time.perf_counter()
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
        # Nobody answers: the server refuses after its auth_timeout (2 s), which must
        # not race nats-py's own connect_timeout (also 2 s by default).
        await _connect(server, TA, "ta1", connect_timeout=5)
    print(f"\ntoken connect with no callout running: refused after "
          f"{time.perf_counter() - started:.2f} s")


async def test_connect_latency_with_callout(server: EmbeddedNats) -> None:
    async with callouts(server, 1):
        times = []
        for _ in range(20):
            started = time.perf_counter()
            nc = await _connect(server, TA, "ta1")
            times.append(time.perf_counter() - started)
            await nc.close()
    median_ms = statistics.median(times) * 1000
    print(f"\nconnect latency with callout: median {median_ms:.2f} ms, "
          f"max {max(times) * 1000:.2f} ms (n=20)")
    assert median_ms < 100


def _server_request(user_nkey: str, token: str | None, server_seed: bytes) -> bytes:
    opts = {"auth_token": token} if token else {}
    claims = {"sub": "A" * 56, "aud": "nats-authorization-request",
              "nats": {"type": "authorization_request", "version": 2,
                       "user_nkey": user_nkey, "server_id": {"id": "NSERVER"},
                       "client_info": {"id": 7, "host": "127.0.0.1", "type": "nats"},
                       "connect_opts": opts}}
    return jwt.encode_jwt(claims, server_seed).encode()


def _server_seed() -> bytes:
    return bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_SERVER))


async def test_a_kick_while_authorizing_refuses_that_connection(server: EmbeddedNats) -> None:
    deciding, decided = anyio.Event(), anyio.Event()

    async def slow(token: str, client: ClientInfo) -> Grant:
        deciding.set()
        await decided.wait()
        return await TOKENS.authorize(token, client)

    seed = jwt.new_account_seed()
    async with static(server, "sys") as nc_sys:
        callout = AuthCallout(nc_sys, seed, authorize=slow)
        answers: list[bytes] = []
        async with anyio.create_task_group() as tg:
            async def ask() -> None:
                answers.append(await callout.answer(_server_request("UX", TA, _server_seed())))
            tg.start_soon(ask)
            await deciding.wait()
            assert await callout.kick("ta1", nc_sys) == 0
            decided.set()
    response = jwt.decode_and_verify(answers[0].decode(), expect_issuer_prefix="A")
    assert "revoked while connecting" in response["nats"]["error"]
    assert callout.connections("ta1") == frozenset()


async def test_forged_or_garbled_requests_get_a_refusal() -> None:
    seed = jwt.new_account_seed()
    callout = AuthCallout(cast(Client, None), seed, authorize=TOKENS.authorize)  # no I/O
    assert await callout.answer(b"not a jwt") == b""
    not_a_server = _server_request("UX", TA, jwt.new_account_seed())
    real = _server_request("UX", TA, _server_seed())
    tampered = real[:-4] + (b"AAAA" if not real.endswith(b"AAAA") else b"BBBB")
    for request, reason in ((not_a_server, "not an 'N' key"), (tampered, "does not verify"),
                            (_server_request("UX", None, _server_seed()), "no token")):
        response = jwt.decode_and_verify((await callout.answer(request)).decode(),
                                         expect_issuer_prefix="A")
        assert response["sub"] == "UX" and response["aud"] == "NSERVER"
        assert reason in response["nats"]["error"] and "jwt" not in response["nats"]
    not_a_request = jwt.encode_jwt({"nats": {"type": "user", "user_nkey": "UX",
                                             "server_id": {"id": "NSERVER"}}}, _server_seed())
    response = jwt.decode_and_verify((await callout.answer(not_a_request.encode())).decode(),
                                     expect_issuer_prefix="A")
    assert "malformed authorization request" in response["nats"]["error"]
    granted = jwt.decode_and_verify((await callout.answer(real)).decode(),
                                     expect_issuer_prefix="A")
    user = jwt.decode_and_verify(granted["nats"]["jwt"], expect_issuer_prefix="A")
    assert user["aud"] == "APP" and user["name"] == "ta1" and user["sub"] == "UX"


def test_an_empty_allow_list_denies_everything_instead_of_nothing() -> None:
    seed = jwt.new_account_seed()
    user = jwt.decode_and_verify(jwt.user_jwt("UX", "APP", "n", [], [], ["a.>"], [], seed),
                                 expect_issuer_prefix="A")
    assert user["nats"]["pub"] == {"deny": [">"]}
    assert user["nats"]["sub"] == {"allow": ["a.>"]}


def test_auth_config_persists_with_owner_only_permissions(tmp_path: Path) -> None:
    path = tmp_path / "nats-auth.json"
    first = NatsAuthConfig.load_or_create(path)
    assert NatsAuthConfig.load_or_create(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.issuer.startswith("A") and json.loads(path.read_text())["issuer_seed"]
    conf = render_nats_conf("127.0.0.1", 4222, tmp_path, first)
    assert f"issuer: {first.issuer}" in conf and first.issuer_seed not in conf
    assert "auth_callout" not in render_nats_conf("127.0.0.1", 4222, tmp_path, None)
