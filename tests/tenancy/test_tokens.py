"""Tokens: refusal at connect, revocation of live connections, roles, and the lifecycle
`ow token create|ls|revoke` and `ow org create` (issue 5)."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta

import anyio
import pytest

from openweights import tokens
from openweights.errors import AuthenticationError, Forbidden, InvalidRequest, RevokedToken
from tests.tenancy.conftest import World, raw_connect, wait_flushed

TOKEN_LINE = re.compile(r"ow_[0-9a-f]{48}")


def _refused_quickly(world: World, token: str) -> str:
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as caught:
        world.ow(token, retry_for_s=30).jobs.list()
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"refused after {elapsed:.1f} s: that is a timeout, not a refusal"
    return str(caught.value)


def test_unknown_malformed_revoked_and_expired_tokens_are_refused_at_once(world: World) -> None:
    a = world.ow("a_admin")
    revoked = a.tokens.create("to revoke")
    expiring = a.tokens.create("short-lived", expires_in_s=60)
    assert world.ow(revoked["token"]).jobs.list() == []  # both work at first
    live = world.ow(expiring["token"])
    assert live.jobs.list() == []
    a.tokens.revoke(revoked["id"])
    expires_at = datetime.fromisoformat(expiring["expires_at"])
    assert expires_at - world.clock() > timedelta(seconds=59)
    world.clock.advance(61)  # the services' clock: the token is past its expiry now
    messages = {name: _refused_quickly(world, token) for name, token in (
        ("revoked", revoked["token"]), ("expired", expiring["token"]),
        ("unknown", tokens.new_token()))}
    for name, says in (("revoked", "was revoked at"), ("expired", "expired at"),
                       ("unknown", "no such token")):
        assert says in messages[name] and "ow token create" in messages[name], messages[name]
    assert "48 hex" in _refused_quickly(world, "ow_not-a-token")
    # A connection made before the expiry is refused on its next call, not served.
    with pytest.raises(AuthenticationError):
        live.jobs.list()
    # The CLI says so in one line, with exit code 1, as quickly.
    started = time.monotonic()
    result = world.cli(revoked["token"], "ls")
    assert result.exit_code == 1 and "was revoked" in result.output, result.output
    # It names the token and gives its advice once (issue 21, defect 6: it was doubled).
    one_line = " ".join(result.output.split())
    assert tokens.token_id(revoked["token"]) in one_line, one_line
    assert one_line.count("ow token create") == 1 and "ow token ls" in one_line, one_line
    assert time.monotonic() - started < 5


def test_ow_token_revoke_disconnects_live_connections(world: World) -> None:
    a = world.ow("a_admin")
    made = a.tokens.create("soon revoked")
    victim = world.ow(made["token"], retry_for_s=30)
    assert victim.jobs.list() == []
    closed = anyio.Event()

    async def raw_until_closed() -> None:
        async def on_closed() -> None:
            closed.set()

        nc = await raw_connect(world, made["token"], allow_reconnect=True,
                               reconnect_time_wait=0.05, max_reconnect_attempts=3,
                               closed_cb=on_closed)
        await nc.flush()
        # Kicked while this runs: nats-py reconnects, is refused, and gives up.
        result = await anyio.to_thread.run_sync(world.cli, "a_admin", "token", "revoke",
                                                made["id"])
        assert result.exit_code == 0, result.output
        assert re.fullmatch(rf"revoked {made['id']} \(([2-9]) connection\(s\) closed\)\n",
                            result.output), result.output
        with anyio.fail_after(5):
            await closed.wait()

    anyio.run(raw_until_closed)
    # Called right away, the request may wait out one request timeout (it was sent while
    # nats-py was still reconnecting); then it is the refusal, not a retry for 30 s.
    started = time.monotonic()
    with pytest.raises(RevokedToken, match=f"token {made['id']} was revoked at"):
        victim.jobs.list()
    assert time.monotonic() - started < world.client_settings.request_timeout_s + 1
    with pytest.raises(AuthenticationError):  # and every call after it, at once
        victim.files.get_by_id("blob:file-000000000000")
    assert time.monotonic() - started < world.client_settings.request_timeout_s + 1.5
    assert a.jobs.list() == []  # the org's other connections are unaffected
    assert {t["id"]: t["status"] for t in a.tokens.list()}[made["id"]] == "revoked"


def test_an_expired_tokens_live_subscriptions_are_cut_at_expiry(world: World) -> None:
    """As at revocation: past its expiry (the services' clock, moved here) a token's
    connections are closed, not only its next request refused; others stay."""
    a = world.ow("a_admin")
    made = a.tokens.create("short-lived", expires_in_s=60)
    ns = world.ns

    async def check() -> None:
        closed = anyio.Event()

        async def on_closed() -> None:
            closed.set()

        nc = await raw_connect(world, made["token"], allow_reconnect=True,
                               reconnect_time_wait=0.05, max_reconnect_attempts=3,
                               closed_cb=on_closed)
        other = await raw_connect(world, world.tokens["a_user"])
        for subject in (f"{ns}live.orgA.>", f"{ns}livelog.orgA.>"):
            await nc.subscribe(subject)
            await other.subscribe(subject)
        await wait_flushed(nc)
        world.clock.advance(61)
        with anyio.fail_after(10):
            await closed.wait()
        await other.flush(timeout=2)
        assert other.is_connected
        await other.close()

    anyio.run(check)
    with pytest.raises(AuthenticationError):
        world.ow(made["token"]).jobs.list()


def test_user_tokens_cannot_manage_tokens_or_read_secrets(world: World) -> None:
    a, user = world.ow("a_admin"), world.ow("a_user")
    a.secrets.set(HF_TOKEN="hf-value")
    for call in (lambda: user.tokens.create("x"), lambda: user.tokens.create("x", role="admin"),
                 lambda: user.tokens.list(), lambda: user.tokens.revoke(world.tid("a_admin")),
                 lambda: user.secrets.show(), lambda: user.secrets.set(HF_TOKEN="mine"),
                 lambda: user.secrets.remove("HF_TOKEN")):
        with pytest.raises(Forbidden):
            call()
    assert user.secrets.list() == ["HF_TOKEN"]  # names only
    with pytest.raises(InvalidRequest):  # nobody mints worker credentials through the api
        a.tokens.create("w", role="worker")
    listed = world.cli("a_user", "env", "ls")
    assert (listed.exit_code, listed.output) == (0, "HF_TOKEN\n")
    shown = world.cli("a_user", "env", "show")
    assert shown.exit_code == 1 and "needs an admin token" in shown.output
    assert "hf-value" not in shown.output
    created = world.cli("a_user", "token", "create", "--name", "escalate", "--role", "admin")
    assert created.exit_code == 1 and not TOKEN_LINE.search(created.output)
    admin_show = world.cli("a_admin", "env", "show")
    assert (admin_show.exit_code, admin_show.output) == (0, "HF_TOKEN=hf-value\n")
    assert a.secrets.show() == {"HF_TOKEN": "hf-value"}  # the user changed nothing


def test_token_lifecycle_with_the_cli(world: World) -> None:
    created = world.cli("a_admin", "token", "create", "--name", "ci", "--expires", "30d")
    assert created.exit_code == 0, created.output
    shown = TOKEN_LINE.findall(created.output)
    assert len(shown) == 1  # printed once
    plain = shown[0]
    assert re.fullmatch(r"ow_[0-9a-f]{48}", plain)
    tid = tokens.token_id(plain)
    assert tid in created.output

    def listed() -> dict[str, dict[str, object]]:
        result = world.cli("a_admin", "token", "ls", "--json")
        assert result.exit_code == 0, result.output
        assert plain not in result.output and plain[3:] not in result.output
        assert tokens.token_hash(plain) not in result.output
        return {t["id"]: t for t in json.loads(result.output)}

    row = listed()[tid]
    assert row["token_prefix"] == plain[:11] and row["role"] == "user"
    assert row["name"] == "ci" and row["status"] == "active"
    assert row["last_used_at"] is None and row["expires_at"] is not None
    table = world.cli("a_admin", "token", "ls")
    assert plain[:11] + "…" in table.output and plain not in table.output
    assert world.ow(plain).jobs.list() == []  # a connect through the callout
    used = listed()[tid]["last_used_at"]
    assert used is not None and str(used) >= str(row["created_at"])
    admin = world.cli("a_admin", "token", "create", "--name", "ops", "--role", "admin", "--json")
    assert admin.exit_code == 0, admin.output
    new_admin = json.loads(admin.output)
    assert world.ow(new_admin["token"]).tokens.list()  # an admin indeed
    revoked = world.cli("a_admin", "token", "revoke", tid)
    assert revoked.exit_code == 0 and tid in revoked.output
    assert listed()[tid]["status"] == "revoked"


def test_ow_org_create_needs_operator_credentials(world: World) -> None:
    refused = world.cli("a_admin", "org", "create", "evil")
    assert refused.exit_code != 0 and not TOKEN_LINE.search(refused.output)
    assert isinstance(refused.exception, SystemExit), repr(refused.exception)  # one clear line
    assert "credentials" in refused.output
    made = world.cli("", "org", "create", "orgC", operator=True)
    assert made.exit_code == 0, made.output
    shown = TOKEN_LINE.findall(made.output)
    assert len(shown) == 1
    world.wait_usable(shown[0])
    c = world.ow(shown[0])
    assert c.jobs.list() == [] and c.secrets.list() == []
    assert {t["id"] for t in c.tokens.list()} == {tokens.token_id(shown[0])}
