"""What every event carries: who caused it and when.

Events are frozen msgspec Structs named in the past tense. Each has an explicit wire
tag ``"<aggregate>.<what_happened>/<version>"`` that never changes once released; a
new shape gets a new version and an upcaster in :mod:`openweights.events.upcast`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

ActorKind = Literal[
    "client", "api", "scheduler", "agent", "provisioner", "operator", "system"
]


class Actor(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """Who caused an event: a kind of party and its id (token id, worker id, host...)."""

    kind: ActorKind
    id: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}" if self.id else self.kind


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="event", gc=False):
    """Base of every event: ``at`` (UTC) and ``by`` are set by whoever decided it."""

    at: datetime
    by: Actor

    @property
    def tag(self) -> str:
        return type(self).__struct_config__.tag  # type: ignore[return-value]

    def changes(self) -> dict[str, Any]:
        """The fields this event sets, for audit output (everything but metadata; the
        fields of a nested struct, such as a job's spec, as its own)."""
        out: dict[str, Any] = {}
        for name, value in msgspec.structs.asdict(self).items():
            if name in ("at", "by"):
                continue
            if isinstance(value, msgspec.Struct):
                out.update(msgspec.structs.asdict(value))
            else:
                out[name] = value
        return out
