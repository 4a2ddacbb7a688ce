"""The organization secret aggregate (one per name): ``set`` or ``removed``.

Values travel only as ciphertext; encryption happens at the edge, with the operator's key.
Every job of the organization gets every secret in its environment, so their sizes are
bounded (:func:`check_sizes`, at the edge, where the plaintext is): one value by
:data:`MAX_VALUE_BYTES` (well under Linux's 128 KiB limit on one environment string) and
all of them, names included, by :data:`MAX_ORG_BYTES` (well under the 2 MiB a process's
arguments and environment share).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal

import msgspec

from openweights.domain.commands import RemoveSecret, SetSecret
from openweights.errors import IllegalTransition, InvalidRequest
from openweights.events import Actor, Event, SecretRemoved, SecretSet

MAX_VALUE_BYTES = 64 * 1024
MAX_ORG_BYTES = 256 * 1024


def check_sizes(held: Mapping[str, int], values: Mapping[str, str]) -> None:
    """Refuse setting ``values`` (name -> plaintext) over an organization holding ``held``
    (name -> size in bytes of each value it has set) when a value or the total of names
    and values would pass its limit. Raises :class:`InvalidRequest` naming both."""
    for name, value in sorted(values.items()):
        size = len(value.encode())
        if size > MAX_VALUE_BYTES:
            raise InvalidRequest(
                f"secret {name} is {size} bytes; a secret value may be at most "
                f"{MAX_VALUE_BYTES} bytes (64 KiB): upload large data as a file "
                "(ow.files.upload) and keep its id in the secret instead")
    sizes = {**held, **{k: len(v.encode()) for k, v in values.items()}}
    total = sum(len(k.encode()) + v for k, v in sizes.items())
    if total > MAX_ORG_BYTES:
        raise InvalidRequest(
            f"the organization's secrets would take {total} bytes (names and values); they "
            f"may take at most {MAX_ORG_BYTES} bytes (256 KiB): remove ones no longer "
            "needed (ow env rm NAME) or keep large values in files")


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
