"""The API token aggregate: ``active`` until revoked (or past ``expires_at``).

Only a hash and a display prefix are ever recorded; the token itself is shown once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from openweights.domain.commands import CreateToken, RevokeToken, SetSpendingLimit
from openweights.errors import IllegalTransition
from openweights.events import Actor, Event, TokenCreated, TokenRevoked
from openweights.events.org import TokenRole, TokenSpendingLimitSet


class TokenState(msgspec.Struct, frozen=True):
    id: str
    org: str
    name: str
    role: TokenRole
    token_hash: str
    token_prefix: str
    created_at: datetime
    status: Literal["active", "revoked"] = "active"
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_by: Actor | None = None  # who revoked it: a refused connection is told
    worker_id: str | None = None
    spending_limit: float | None = None  # USD, lifetime, over the jobs it submitted

    def usable(self, now: datetime) -> bool:
        return self.status == "active" and (self.expires_at is None or now < self.expires_at)


def decide(state: TokenState | None, cmd: CreateToken | RevokeToken | SetSpendingLimit,
           now: datetime, by: Actor) -> list[Event]:
    match cmd, state:
        case SetSpendingLimit(), TokenState():
            if state.spending_limit == cmd.limit_usd:
                return []
            return [TokenSpendingLimitSet(at=now, by=by, org=state.org, token_id=state.id,
                                          limit_usd=cmd.limit_usd)]
        case CreateToken(), None:
            return [TokenCreated(at=now, by=by, **msgspec.structs.asdict(cmd))]
        case RevokeToken(), TokenState(status="active"):
            return [TokenRevoked(at=now, by=by, org=state.org, token_id=state.id)]
        case RevokeToken(), TokenState(status="revoked"):
            return []
    raise IllegalTransition("token", state.status if state else "absent", type(cmd).__name__)


def evolve(state: TokenState | None, event: Event) -> TokenState:
    match event, state:
        case TokenCreated(), None:
            return TokenState(id=event.token_id, org=event.org, name=event.name,
                              role=event.role, token_hash=event.token_hash,
                              token_prefix=event.token_prefix, created_at=event.at,
                              expires_at=event.expires_at, worker_id=event.worker_id)
        case TokenRevoked(), TokenState(status="active"):
            return msgspec.structs.replace(state, status="revoked", revoked_at=event.at,
                                        revoked_by=event.by)
        case TokenSpendingLimitSet(), TokenState():
            return msgspec.structs.replace(state, spending_limit=event.limit_usd)
    raise IllegalTransition("token", state.status if state else "absent", event.tag)
