"""A refused token is told why (issue 21, defect 6): unknown, revoked and expired each get
their own error and advice, through a reason connection that can do nothing else."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import anyio
import nats
import pytest

from openweights import tokens
from openweights.domain import token
from openweights.domain.commands import CreateToken, RevokeToken
from openweights.errors import AuthenticationError, ExpiredToken, RevokedToken, UnknownToken
from openweights.refusal import REFUSAL_CONNECTION, inbox_prefix
from tests.tenancy.conftest import OPERATOR, B, Errors, World, wait_flushed


def _utc(value: Any) -> str:
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _refusal(world: World, plain: str) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as caught:
        world.ow(plain, retry_for_s=30).jobs.list()
    return caught.value


def _revoked_and_expired(world: World) -> tuple[dict[str, Any], dict[str, Any]]:
    a = world.ow("a_admin")
    revoked = a.tokens.create("to revoke")
    expiring = a.tokens.create("short-lived", expires_in_s=60)
    a.tokens.revoke(revoked["id"])
    world.clock.advance(61)  # the services' clock: the token is past its expiry now
    listed = {t["id"]: t for t in a.tokens.list()}
    return {**revoked, **listed[revoked["id"]]}, {**expiring, **listed[expiring["id"]]}


def test_unknown_revoked_and_expired_tokens_are_each_told_why(world: World) -> None:
    revoked, expired = _revoked_and_expired(world)
    unknown = tokens.new_token()
    err = _refusal(world, unknown)
    assert isinstance(err, UnknownToken), repr(err)
    assert str(err).startswith(f"no such token: this openweights stack knows no token "
                               f"{tokens.token_id(unknown)}")
    assert "OPENWEIGHTS_API_KEY" in str(err) and "`ow token ls`" in str(err)
    err = _refusal(world, revoked["token"])
    assert isinstance(err, RevokedToken), repr(err)
    assert str(err).startswith(f"token {revoked['id']} was revoked at "
                               f"{_utc(revoked['revoked_at'])} by token {world.tid('a_admin')}")
    err = _refusal(world, expired["token"])
    assert isinstance(err, ExpiredToken), repr(err)
    assert str(err).startswith(f"token {expired['id']} expired at "
                               f"{_utc(expired['expires_at'])}; mint a new one with "
                               "`ow token create")


def test_ow_ls_with_each_bad_token_prints_its_reason(world: World) -> None:
    revoked, expired = _revoked_and_expired(world)
    unknown = tokens.new_token()
    for plain, says in ((unknown, f"no such token: this openweights stack knows no token "
                                  f"{tokens.token_id(unknown)}"),
                        (revoked["token"], f"token {revoked['id']} was revoked at "
                                           f"{_utc(revoked['revoked_at'])} by token "
                                           f"{world.tid('a_admin')}"),
                        (expired["token"], f"token {expired['id']} expired at "
                                           f"{_utc(expired['expires_at'])}")):
        result = world.cli(plain, "ls")
        one_line = " ".join(result.output.split())
        assert result.exit_code == 1 and says in one_line, one_line
        assert one_line.count("ow token create") == 1, one_line  # the advice once


async def _reason_connection(world: World, plain: str, errors: Errors,
                             **options: Any) -> nats.aio.client.Client:
    return await nats.connect(world.server.url, token=plain, name=REFUSAL_CONNECTION,
                              inbox_prefix=inbox_prefix(tokens.token_id(plain)),
                              allow_reconnect=False, error_cb=errors.record, **options)


async def _ask(nc: nats.aio.client.Client, world: World, tid: str, body: dict[str, str]
               ) -> dict[str, Any]:
    reply = await nc.request(world.subjects.refusal(tid), json.dumps(body).encode(), timeout=2)
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


def test_a_reason_connection_can_ask_its_own_reason_and_nothing_else(world: World) -> None:
    """Even a working admin token, connected under the reason connection's name, may only
    ask why; a refused one gains no right at all."""
    revoked, _ = _revoked_and_expired(world)
    ns, other = world.ns, world.tokens["a_admin"]
    stranger = tokens.token_id(tokens.new_token())  # another token's reason subject

    async def check(plain: str) -> None:
        tid, errors = tokens.token_id(plain), Errors()
        nc = await _reason_connection(world, plain, errors)
        try:
            for subject in (">", "_INBOX.>", f"_INBOX.{tid}.>", f"{ns}live.orgA.>",
                            f"{ns}refused.{tid}", f"{ns}api.orgA.{tid}.jobs.list"):
                await nc.subscribe(subject)
            await wait_flushed(nc)
            for subject in (f"{ns}api.orgA.{tid}.jobs.list", f"{ns}whoami.{tid}",
                            f"{ns}refused.{stranger}", f"{ns}.orgA.job.x",
                            "$JS.API.INFO", f"_INBOX.{tid}.why.x"):
                await nc.publish(subject, b"{}")
                await errors.wait_for(f'publish to "{subject.lower()}"')
            for subject in (">", "_inbox.>", f"_inbox.{tid.lower()}.>"):
                await errors.wait_for(f'subscription to "{subject}"')
            # Asking about another token on its own subject tells nothing of it.
            another = other if plain != other else world.tokens["b_admin"]
            assert (await _ask(nc, world, tid, {"token": another}))["status"] == "unknown"
            asked = await _ask(nc, world, tid, {"token": plain})  # its own: the one answer
            assert asked["token_id"] == tid and asked["status"] in ("active", "revoked")
            assert not any("publish to" in e and "refused" in e and tid.lower() in e
                           for e in errors.seen)
        finally:
            await nc.close()

    anyio.run(check, other)
    anyio.run(check, revoked["token"])


def test_a_reason_connection_ends_by_itself(world: World) -> None:
    plain = tokens.new_token()

    async def check() -> None:
        closed, errors = anyio.Event(), Errors()

        async def on_closed() -> None:
            closed.set()

        nc = await _reason_connection(world, plain, errors, closed_cb=on_closed)
        # A larger request than a reason needs is not read: it learns nothing.
        big = {"token": plain, "pad": "x" * 2048}
        assert (await _ask(nc, world, tokens.token_id(plain), big))["status"] == "unknown"
        with anyio.fail_after(8):  # the grant's expiry: 5 s
            await closed.wait()
        # nats-py keeps a closing error as last_error (error_cb hears permissions only)
        assert "expired" in str(nc.last_error).lower(), nc.last_error

    anyio.run(check)


def test_an_unknown_token_learns_nothing_of_another_orgs_token_with_its_id(
        world: World) -> None:
    """B holds a revoked token whose id is the id of a token nobody created: the holder
    of that token is told 'unknown', word for word what any unknown token is told."""
    plain, stranger = tokens.new_token(), tokens.new_token()
    tid = tokens.token_id(plain)
    cmd = CreateToken(org=B, token_id=tid, name="b secret name", role="admin",
                      token_hash=tokens.token_hash(tokens.new_token()),
                      token_prefix=tokens.token_prefix(plain))
    created = token.decide(None, cmd, world.clock(), OPERATOR)
    events = created + token.decide(token.evolve(None, created[0]), RevokeToken(),
                                    world.clock(), OPERATOR)
    anyio.run(world._append, B, "token", tid, events, 0)
    world.worker_token(B, "w-later")  # appended after it, and usable: the api has both
    told = str(_refusal(world, plain))
    assert told == str(_refusal(world, stranger)).replace(tokens.token_id(stranger), tid)
    for secret in ("revoked", "orgB", "b secret name", "operator"):
        assert secret not in told, told
