"""The file aggregate: immutable content, addressed by its hash within an organization.

Creating the same file again changes nothing, so an upload is idempotent.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from openweights.domain.commands import CreateFile
from openweights.errors import IllegalTransition
from openweights.events import Actor, Event, FileCreated


class FileState(msgspec.Struct, frozen=True):
    id: str
    org: str
    filename: str
    purpose: str
    bytes: int
    sha256: str
    created_at: datetime


def decide(state: FileState | None, cmd: CreateFile, now: datetime, by: Actor) -> list[Event]:
    if state is not None:
        return []
    return [FileCreated(at=now, by=by, **msgspec.structs.asdict(cmd))]


def evolve(state: FileState | None, event: Event) -> FileState:
    if state is None and isinstance(event, FileCreated):
        return FileState(id=event.file_id, org=event.org, filename=event.filename,
                         purpose=event.purpose, bytes=event.bytes, sha256=event.sha256,
                         created_at=event.at)
    raise IllegalTransition("file", "exists" if state else "absent", event.tag)
