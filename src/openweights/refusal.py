"""Why a token was refused: the one narrow channel a refused connection gets.

nats-server tells a client that its auth callout refused only "Authorization
Violation", so an unknown, a revoked and an expired token would all read alike. A
client that wants the reason connects once more with the same token under the
connection name :data:`REFUSAL_CONNECTION`. The callout admits that connection, whatever
the token's state, with one right: to publish a request to ``<ns>refused.<token id>``
and receive the reply on ``<inbox_prefix(token id)>.>``, closed by the server after
:data:`REFUSAL_TTL_S`. The request carries the
token; the api answers only if it has that token's id, and classifies it by its full
hash, never by the id, so a refused connection learns about the token it holds and
nothing else ("unknown" says nothing of other organizations' tokens).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import msgspec

from openweights.errors import AuthenticationError, ExpiredToken, RevokedToken, UnknownToken

REFUSAL_CONNECTION = "ow-why-refused"
REFUSAL_TTL_S = 5.0  # the server closes a reason connection this long after admitting it
REFUSAL_MAX_PAYLOAD = 1024  # a request is the token in a small JSON object: the api
# answers a larger one "unknown" without reading it


def inbox_prefix(token_id: str) -> str:
    """Where a reason connection receives its reply: no other connection of the token
    uses it (their inboxes go on with a random 22-character token, never ``why``)."""
    return f"_INBOX.{token_id}.why"


class RefusalRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    token: str


class Refusal(msgspec.Struct, frozen=True):
    """Why ``token_id`` is refused: ``at`` is when it was revoked or expired, ``by`` who
    revoked it. ``active``: it is usable now (refused while the stack restarted)."""

    status: Literal["unknown", "revoked", "expired", "active"]
    token_id: str
    at: datetime | None = None
    by: str | None = None


def _when(at: datetime | None) -> str:
    return "an unknown time" if at is None else at.astimezone(UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def error_for(refusal: Refusal) -> AuthenticationError:
    """The error a client raises for ``refusal``, saying what to do."""
    tid = refusal.token_id
    listing = "`ow token ls` (with a working token) shows each token's status"
    if refusal.status == "unknown":
        return UnknownToken(
            f"no such token: this openweights stack knows no token {tid}; check "
            f"OPENWEIGHTS_API_KEY ({listing}, `ow token create` makes a new one)")
    if refusal.status == "revoked":
        return RevokedToken(
            f"token {tid} was revoked at {_when(refusal.at)} by {refusal.by or 'an admin'}; "
            f"ask an admin of your organization for a new one (`ow token create`; {listing})")
    if refusal.status == "expired":
        return ExpiredToken(
            f"token {tid} expired at {_when(refusal.at)}; mint a new one with "
            f"`ow token create --expires 30d` ({listing})")
    return AuthenticationError(
        f"token {tid} was refused but is valid now (the stack was probably restarting): "
        f"retry; {listing}")
