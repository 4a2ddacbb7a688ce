"""The organization aggregate: a tenant. Created once; its id is in every subject and row."""

from __future__ import annotations

from datetime import datetime

import msgspec

from openweights.domain.commands import CreateOrganization
from openweights.errors import IllegalTransition
from openweights.events import Actor, Event, OrganizationCreated


class OrgState(msgspec.Struct, frozen=True):
    id: str
    name: str
    created_at: datetime
    updated_at: datetime


def decide(state: OrgState | None, cmd: CreateOrganization, now: datetime, by: Actor
           ) -> list[Event]:
    if state is not None:
        if state.name == cmd.name:
            return []  # creating the same organization again changes nothing
        raise IllegalTransition("organization", "exists", "CreateOrganization",
                                f"{cmd.org!r} is already named {state.name!r}")
    return [OrganizationCreated(at=now, by=by, org=cmd.org, name=cmd.name)]


def evolve(state: OrgState | None, event: Event) -> OrgState:
    if state is None and isinstance(event, OrganizationCreated):
        return OrgState(id=event.org, name=event.name, created_at=event.at, updated_at=event.at)
    raise IllegalTransition("organization", "exists" if state else "absent", event.tag)
