"""Tokens, secrets and ``whoami``: what an organization's admins manage."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from openweights import tokens
from openweights.adapters.postgres.db import query
from openweights.api import protocol
from openweights.domain.aggregates import ORG, SECRET, TOKEN
from openweights.domain.commands import CreateToken, RemoveSecret, RevokeToken, SetSecret
from openweights.domain.secret import check_sizes
from openweights.errors import InvalidRequest, NotFound, OpenWeightsError
from openweights.services.api.context import Context, Deps, Seq
from openweights.subjects import check_token

SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_TOKEN_LIFE_S = 100 * 365 * 24 * 3600


def whoami(d: Deps, token_id: str) -> protocol.Reply:
    """Who a token is: its organization (and that organization's name and ``HF_ORG``
    secret, which the SDK shows as ``org_name`` and ``hf_org``), role and worker."""
    org = d.tokens.org_of.get(token_id)
    state = d.fold.get(org, TOKEN, token_id) if org else None
    if org is None or state is None or not state.usable(d.clock()):
        return protocol.Reply(error=protocol.ErrorBody(
            code="unauthenticated", message="this token is unknown, revoked or expired"))
    organization = d.fold.get(org, ORG, org)
    return protocol.Reply(ok={
        "org": org, "role": state.role, "token_id": state.id, "worker_id": state.worker_id,
        "org_name": organization.name if organization is not None else org,
        "hf_org": d.secrets.value(org, "HF_ORG")})


async def create_token(d: Deps, ctx: Context, req: protocol.TokenCreateReq) -> Seq:
    if not req.name.strip():
        raise InvalidRequest("a token needs a name (--name)")
    if req.expires_in_s is not None and not 0 < req.expires_in_s <= MAX_TOKEN_LIFE_S:
        # Beyond the bound the expiry date overflows (and means "never" anyway).
        raise InvalidRequest(f"expires_in_s must be positive and at most {MAX_TOKEN_LIFE_S}")
    if (req.role == "worker") != (req.worker_id is not None):
        raise InvalidRequest("a worker token names its worker (--worker NAME), and only a "
                             "worker token does")
    if req.worker_id is not None:
        check_token(req.worker_id, "worker id")
    plain = tokens.new_token()
    expires = (d.clock() + timedelta(seconds=req.expires_in_s) if req.expires_in_s else None)
    cmd = CreateToken(org=ctx.org, token_id=tokens.token_id(plain), name=req.name,
                      role=req.role, token_hash=tokens.token_hash(plain),
                      token_prefix=tokens.token_prefix(plain), expires_at=expires,
                      worker_id=req.worker_id)
    done = await d.executor.execute(ctx.org, TOKEN, cmd.token_id, cmd, ctx.actor, req.request_id)
    state = done.state
    assert state is not None
    return Seq({"id": state.id, "token": plain, "name": state.name, "role": state.role,
                "prefix": state.token_prefix, "expires_at": state.expires_at,
                "worker_id": state.worker_id}, done.seq)


async def list_tokens(d: Deps, ctx: Context, req: protocol.TokenListReq) -> list[dict[str, Any]]:
    return [dict(r) for r in await d.reads.pool.fetch(query("api_tokens_list"), ctx.org)]


async def revoke_token(d: Deps, ctx: Context, req: protocol.TokenRevokeReq) -> Seq:
    check_token(req.token_id, "token id")
    if d.fold.get(ctx.org, TOKEN, req.token_id) is None:
        raise NotFound(f"token {req.token_id!r} not found")
    done = await d.executor.execute(ctx.org, TOKEN, req.token_id, RevokeToken(), ctx.actor,
                                    req.request_id)
    kicked = await d.kicker.kick(req.token_id)
    assert done.state is not None
    return Seq({"id": done.state.id, "status": done.state.status, "disconnected": kicked},
               done.seq)


async def set_secrets(d: Deps, ctx: Context, req: protocol.SecretSetReq) -> Seq:
    if not req.values:
        raise InvalidRequest("no secrets given (KEY=VALUE)")
    bad = [k for k in req.values if not SECRET_NAME.fullmatch(k)]
    if bad:
        raise InvalidRequest(f"secret name(s) {bad} must be letters, digits and '_', "
                             "not starting with a digit")
    check_sizes(_held_sizes(d, ctx.org), req.values)
    seq = 0
    for name, value in sorted(req.values.items()):
        cmd = SetSecret(org=ctx.org, name=name, ciphertext=d.secrets.box.encrypt(value))
        seq = (await d.executor.execute(ctx.org, SECRET, name, cmd, ctx.actor)).seq
    return Seq({"set": sorted(req.values)}, seq)


def _held_sizes(d: Deps, org: str) -> dict[str, int]:
    """Name -> bytes of each value ``org`` has set; one sealed under another key counts
    as long as its ciphertext, which is longer."""
    out: dict[str, int] = {}
    for name, sealed in d.secrets.sealed(org).items():
        try:
            out[name] = len(d.secrets.box.decrypt(sealed).encode())
        except OpenWeightsError:
            out[name] = len(sealed)
    return out


async def list_secret_names(d: Deps, ctx: Context, req: protocol.SecretNamesReq) -> list[str]:
    return sorted(d.secrets.sealed(ctx.org))


async def show_secrets(d: Deps, ctx: Context, req: protocol.SecretNamesReq) -> dict[str, str]:
    return d.secrets.plain(ctx.org)


async def remove_secret(d: Deps, ctx: Context, req: protocol.SecretRemoveReq) -> Seq:
    state = d.fold.get(ctx.org, SECRET, req.name)
    if state is None or state.status != "set":
        raise NotFound(f"secret {req.name!r} not found")
    done = await d.executor.execute(ctx.org, SECRET, req.name, RemoveSecret(), ctx.actor)
    return Seq({"removed": req.name}, done.seq)
