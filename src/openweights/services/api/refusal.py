"""The api's side of "why was I refused" (:mod:`openweights.refusal`).

The callout admits a connection named :data:`~openweights.refusal.REFUSAL_CONNECTION`
with :func:`refusal_grant` only, and this module answers its one request. The answer
is looked up by the full hash of the token the request carries, as the callout looks
tokens up, and only if that token's id is the one in the subject (the id the callout
admitted the connection under): an id alone never selects a token, so "unknown" is all
anyone learns of a token they do not hold.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
import structlog
from nats.aio.msg import Msg

from openweights import tokens
from openweights.adapters.nats.callout import Grant
from openweights.domain.aggregates import TOKEN
from openweights.domain.token import TokenState
from openweights.events import Actor
from openweights.refusal import (
    REFUSAL_MAX_PAYLOAD,
    REFUSAL_TTL_S,
    Refusal,
    RefusalRequest,
    inbox_prefix,
)
from openweights.services.api.context import Deps

log = structlog.get_logger("api")
_decode = msgspec.json.Decoder(RefusalRequest)
_encode = msgspec.json.Encoder()


def refusal_grant(ns: str, token_id: str) -> Grant:
    """One request on the token's own reason subject and its reply; nothing else."""
    return Grant(name=f"refused-{token_id}", pub_allow=[f"{ns}refused.{token_id}"],
                 sub_allow=[f"{inbox_prefix(token_id)}.>"], expires_in_s=REFUSAL_TTL_S,
                 kickable=False)


def _revoker(by: Actor | None) -> str:
    if by is None:
        return "an admin"
    if by.kind == "client":
        return f"token {by.id}"
    if by.kind == "operator":
        return "the operator"
    return f"the {by.kind} service"


def classify(state: TokenState | None, token_id: str, now: datetime) -> Refusal:
    """Why the token whose state is ``state`` (None: no token has its hash) is refused."""
    if state is None:
        return Refusal(status="unknown", token_id=token_id)
    if state.status == "revoked":
        return Refusal(status="revoked", token_id=token_id, at=state.revoked_at,
                       by=_revoker(state.revoked_by))
    if not state.usable(now):
        return Refusal(status="expired", token_id=token_id, at=state.expires_at)
    return Refusal(status="active", token_id=token_id)


def reason(d: Deps, subject_token_id: str, body: bytes) -> Refusal:
    """The answer to one request on ``<ns>refused.<subject_token_id>``."""
    try:  # a request is the token in a small JSON object; anything larger is not one
        token = _decode.decode(body).token if len(body) <= REFUSAL_MAX_PAYLOAD else ""
    except msgspec.DecodeError:
        token = ""
    if not tokens.TOKEN.match(token) or tokens.token_id(token) != subject_token_id:
        # Not the token the connection was admitted with: say nothing of any other.
        return Refusal(status="unknown", token_id=subject_token_id)
    found = d.tokens.by_hash.get(tokens.token_hash(token))
    state = d.fold.get(found[0], TOKEN, found[1]) if found else None
    return classify(state, subject_token_id, d.clock())


async def answer(d: Deps, msg: Msg) -> None:
    """Reply to a reason request (the subscription's callback)."""
    if not msg.reply:
        return
    subject_token_id = msg.subject.rsplit(".", 1)[-1]
    refusal = reason(d, subject_token_id, msg.data)
    log.info("api.refusal_explained", token=subject_token_id, status=refusal.status)
    await msg.respond(_encode.encode(refusal))
