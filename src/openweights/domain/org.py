"""The organization aggregate: a tenant. Created once; its id is in every subject and row."""

from __future__ import annotations

from datetime import datetime

import msgspec

from openweights.domain.commands import CreateOrganization, SetSpendingLimit
from openweights.errors import IllegalTransition
from openweights.events import Actor, Event, OrganizationCreated
from openweights.events.org import SpendingLimitSet


class OrgState(msgspec.Struct, frozen=True):
    id: str
    name: str
    created_at: datetime
    updated_at: datetime
    spending_limit: float | None = None  # USD, lifetime; None: no limit


def decide(state: OrgState | None, cmd: CreateOrganization | SetSpendingLimit, now: datetime,
           by: Actor) -> list[Event]:
    if isinstance(cmd, SetSpendingLimit):
        if state is None:
            raise IllegalTransition("organization", "absent", "SetSpendingLimit")
        if state.spending_limit == cmd.limit_usd:
            return []
        return [SpendingLimitSet(at=now, by=by, org=state.id, limit_usd=cmd.limit_usd)]
    if state is not None:
        if state.name == cmd.name:
            return []  # creating the same organization again changes nothing
        raise IllegalTransition("organization", "exists", "CreateOrganization",
                                f"{cmd.org!r} is already named {state.name!r}")
    return [OrganizationCreated(at=now, by=by, org=cmd.org, name=cmd.name)]


def evolve(state: OrgState | None, event: Event) -> OrgState:
    if state is None and isinstance(event, OrganizationCreated):
        return OrgState(id=event.org, name=event.name, created_at=event.at, updated_at=event.at)
    if state is not None and isinstance(event, SpendingLimitSet):
        return msgspec.structs.replace(state, spending_limit=event.limit_usd,
                                       updated_at=event.at)
    raise IllegalTransition("organization", "exists" if state else "absent", event.tag)
