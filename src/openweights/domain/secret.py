"""The organization secret aggregate (one per name): ``set`` or ``removed``.

Values travel only as ciphertext; encryption happens at the edge, with the operator's key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from openweights.domain.commands import RemoveSecret, SetSecret
from openweights.errors import IllegalTransition
from openweights.events import Actor, Event, SecretRemoved, SecretSet


class SecretState(msgspec.Struct, frozen=True):
    org: str
    name: str
    ciphertext: str
    created_at: datetime
    updated_at: datetime
    status: Literal["set", "removed"] = "set"


def decide(state: SecretState | None, cmd: SetSecret | RemoveSecret, now: datetime,
           by: Actor) -> list[Event]:
    match cmd:
        case SetSecret():
            return [SecretSet(at=now, by=by, org=cmd.org, name=cmd.name,
                              ciphertext=cmd.ciphertext)]
        case RemoveSecret():
            if state is None or state.status == "removed":
                raise IllegalTransition("secret", "absent", "RemoveSecret")
            return [SecretRemoved(at=now, by=by, org=state.org, name=state.name)]
    raise TypeError(f"not a secret command: {cmd!r}")


def evolve(state: SecretState | None, event: Event) -> SecretState:
    match event:
        case SecretSet():
            created = state.created_at if state is not None and state.status == "set" else None
            return SecretState(org=event.org, name=event.name, ciphertext=event.ciphertext,
                               created_at=created or event.at, updated_at=event.at)
        case SecretRemoved() if state is not None and state.status == "set":
            return msgspec.structs.replace(state, status="removed", ciphertext="",
                                           updated_at=event.at)
    raise IllegalTransition("secret", state.status if state else "absent", event.tag)
