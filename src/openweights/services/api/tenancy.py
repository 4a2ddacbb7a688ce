"""Tokens, secrets and `whoami`: what an organization's admins manage."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from nats.aio.msg import Msg

from openweights import tokens
from openweights.adapters.postgres.db import query
from openweights.api import protocol
from openweights.domain import secret, token
from openweights.domain.commands import CreateToken, RemoveSecret, RevokeToken, SetSecret
from openweights.domain.job import JobState
from openweights.errors import Conflict, InvalidRequest, NotFound, OpenWeightsError
from openweights.events import Event, TokenCreated
from openweights.secretbox import SecretBox
from openweights.services.api.auth import check_worker
from openweights.services.api.service import ApiService, Context, Seq
from openweights.subjects import check_token

SECRET_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
MAX_TOKEN_LIFE_S = 100 * 365 * 24 * 3600


def install(api: ApiService) -> None:
    box = SecretBox(api.settings.secret_key)
    token_orgs: dict[str, str] = {}  # token id -> organization, for whoami
    # (org, worker id) -> the jobs whose open run it holds: checked on every job start,
    # so it must not scan every job ever submitted.
    holding: dict[tuple[str, str], set[str]] = defaultdict(set)

    def index(seq: int, org: str, event: Event, before: Any, after: Any) -> None:
        if isinstance(event, TokenCreated):
            token_orgs[event.token_id] = org
        if isinstance(before, JobState) and (run := before.open_run) is not None:
            holding[(org, run.worker_id)].discard(before.id)
        if isinstance(after, JobState) and (run := after.open_run) is not None:
            holding[(org, run.worker_id)].add(after.id)

    api.fold.listeners.append(index)

    async def whoami(msg: Msg) -> None:
        principal = msg.subject.rsplit(".", 1)[-1]
        org = token_orgs.get(principal)
        state = api.fold.get(org, "token", principal) if org else None
        if state is None or not state.usable(datetime.now(UTC)):
            body = protocol.Reply(error=protocol.ErrorBody(
                code="unauthenticated", message="this token is unknown, revoked or expired"))
        else:
            body = protocol.Reply(ok={"org": org, "role": state.role, "token_id": state.id,
                                      "worker_id": state.worker_id})
        if msg.reply:
            await msg.respond(protocol.encoder.encode(body))

    api.whoami = whoami

    @api.route("tokens.create")
    async def create(ctx: Context, req: protocol.TokenCreateReq) -> Seq:
        if not req.name.strip():
            raise InvalidRequest("a token needs a name (--name)")
        if req.expires_in_s is not None and not 0 < req.expires_in_s <= MAX_TOKEN_LIFE_S:
            # Beyond the bound the expiry date overflows (and means "never" anyway).
            raise InvalidRequest(f"expires_in_s must be positive and at most {MAX_TOKEN_LIFE_S}")
        plain = tokens.new_token()
        expires = (datetime.now(UTC) + timedelta(seconds=req.expires_in_s)
                   if req.expires_in_s else None)
        cmd = CreateToken(org=ctx.org, token_id=tokens.token_id(plain), name=req.name,
                          role=req.role, token_hash=tokens.token_hash(plain),
                          token_prefix=tokens.token_prefix(plain), expires_at=expires)
        _, seq, state = await api.executor.execute(
            ctx.org, "token", cmd.token_id, lambda s, now, by: token.decide(s, cmd, now, by),
            ctx.actor, req.request_id)
        return Seq({"id": state.id, "token": plain, "name": state.name, "role": state.role,
                    "prefix": state.token_prefix, "expires_at": state.expires_at}, seq)

    @api.route("tokens.list")
    async def list_tokens(ctx: Context, req: protocol.TokenListReq) -> list[dict[str, Any]]:
        return [dict(r) for r in await api.pool.fetch(query("api_tokens_list"), ctx.org)]

    @api.route("tokens.revoke")
    async def revoke(ctx: Context, req: protocol.TokenRevokeReq) -> Seq:
        check_token(req.token_id, "token id")
        if api.fold.get(ctx.org, "token", req.token_id) is None:
            raise NotFound(f"token {req.token_id!r} not found")
        _, seq, state = await api.executor.execute(
            ctx.org, "token", req.token_id,
            lambda s, now, by: token.decide(s, RevokeToken(), now, by), ctx.actor,
            req.request_id)
        kicked = await api.kick(req.token_id)
        return Seq({"id": state.id, "status": state.status, "disconnected": kicked}, seq)

    @api.route("secrets.set")
    async def set_secrets(ctx: Context, req: protocol.SecretSetReq) -> Seq:
        import re

        if not req.values:
            raise InvalidRequest("no secrets given (KEY=VALUE)")
        bad = [k for k in req.values if not re.fullmatch(SECRET_NAME, k)]
        if bad:
            raise InvalidRequest(f"secret name(s) {bad} must be letters, digits and '_', "
                                 "not starting with a digit")
        seq = 0
        for name, value in sorted(req.values.items()):
            cmd = SetSecret(org=ctx.org, name=name, ciphertext=box.encrypt(value))
            _, seq, _ = await api.executor.execute(
                ctx.org, "secret", name, lambda s, now, by, c=cmd: secret.decide(s, c, now, by),
                ctx.actor)
        return Seq({"set": sorted(req.values)}, seq)

    def _live_secrets(org: str) -> dict[str, str]:
        return {s.name: s.ciphertext for s in api.fold.of_kind("secret")
                if s.org == org and s.status == "set"}

    @api.route("secrets.list")
    async def names(ctx: Context, req: protocol.SecretNamesReq) -> list[str]:
        return sorted(_live_secrets(ctx.org))

    @api.route("secrets.show")
    async def show(ctx: Context, req: protocol.SecretNamesReq) -> dict[str, str]:
        return {k: box.decrypt(v) for k, v in sorted(_live_secrets(ctx.org).items())}

    @api.route("secrets.remove")
    async def remove(ctx: Context, req: protocol.SecretRemoveReq) -> Seq:
        state = api.fold.get(ctx.org, "secret", req.name)
        if state is None or state.status != "set":
            raise NotFound(f"secret {req.name!r} not found")
        _, seq, _ = await api.executor.execute(
            ctx.org, "secret", req.name,
            lambda s, now, by: secret.decide(s, RemoveSecret(), now, by), ctx.actor)
        return Seq({"removed": req.name}, seq)

    def org_secrets(org: str) -> dict[str, str]:
        try:
            return {k: box.decrypt(v) for k, v in _live_secrets(org).items()}
        except OpenWeightsError:  # a secret sealed under another key: none given
            return {}

    api.org_secrets = org_secrets

    @api.route("agent.secrets")
    async def for_worker(ctx: Context, req: protocol.AgentSecrets) -> dict[str, str]:
        check_worker(ctx.principal, req.worker_id)
        if not holding.get((ctx.org, req.worker_id)):
            raise Conflict("secrets are given to a worker only while it runs a job: start "
                           "the run first (the reply to agent.run.start carries them)")
        return org_secrets(ctx.org)


def decode_secrets(data: bytes) -> dict[str, str]:
    return msgspec.json.decode(data, type=dict[str, str])
