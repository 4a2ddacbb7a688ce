"""The uploads in progress on this api instance, spooled to disk as their chunks arrive.

An upload holds a slot, a spool file, its running hashes and its dataset validator
until it ends, is aborted, or stays idle past ``upload_idle_s`` (its client went away).

Slots come from two pools: users' uploads, and agents' (a run's log and results), so an
agent never waits behind users. In each pool the slots are shared fairly between
organizations: an organization holding ``k`` uploads may begin another only while more
than ``k`` slots are free, so whenever any slot is free an organization holding none
gets it, and the ones holding most are held back first.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openweights import ids
from openweights.config import Settings
from openweights.datasets import DatasetValidator
from openweights.errors import InvalidRequest, NotFound, Unavailable


@dataclass(frozen=True)
class Slots:
    """How many uploads may be open at once on one instance."""

    users: int = 64
    per_org: int = 16  # users' uploads of one organization, at most
    agents: int = 64
    per_worker: int = 2  # an agent uploads one file at a time; 2 lets a retry overlap

    @classmethod
    def of(cls, s: Settings) -> Slots:
        return cls(s.upload_slots, s.upload_slots_per_org, s.agent_upload_slots,
                   s.agent_upload_slots_per_worker)


@dataclass
class Upload:
    org: str
    filename: str
    purpose: str
    path: Path
    digest: ids.FileDigest
    validator: DatasetValidator
    worker: str | None = None  # the agent's worker id: a slot of the agents' pool
    received: int = 0
    handle: Any = field(default=None, repr=False)
    touched: float = field(default_factory=time.monotonic)  # begun, or the last chunk


class Uploads:
    def __init__(self, home: Path, instance: str, idle_s: float,
                 slots: Slots | None = None) -> None:
        self.instance, self.idle_s, self.slots = instance, idle_s, slots or Slots()
        self.spool = home / "api" / "uploads"
        self.cache = home / "api" / "files"  # downloads, once per content
        self.spool.mkdir(parents=True, exist_ok=True)
        self.open: dict[str, Upload] = {}

    def begin(self, org: str, filename: str, purpose: str, worker: str | None = None) -> str:
        """A new upload's id (``worker``: an agent's, from the agents' pool). Raises
        :class:`InvalidRequest` when the organization (or the worker) holds as many as it
        may and :class:`Unavailable` when its fair share of the slots is taken."""
        self._drop_idle()
        self._admit(org, worker)
        upload_id = f"{self.instance}-{secrets.token_hex(8)}"
        fd, name = tempfile.mkstemp(dir=self.spool, prefix=upload_id)
        self.open[upload_id] = Upload(org, os.path.basename(filename) or "file", purpose,
                                      Path(name), ids.FileDigest(org),
                                      DatasetValidator(purpose), worker=worker,
                                      handle=os.fdopen(fd, "wb"))
        return upload_id

    def _admit(self, org: str, worker: str | None) -> None:
        agents = worker is not None
        pool = [up for up in self.open.values() if (up.worker is not None) == agents]
        held = sum(up.org == org for up in pool)
        if agents:
            mine = sum(up.org == org and up.worker == worker for up in pool)
            if mine >= self.slots.per_worker:
                raise InvalidRequest(
                    f"worker {worker!r} has {mine} uploads in progress on this service: "
                    f"end or abort one first (an upload idle for {self.idle_s:.0f} s is "
                    "dropped)")
        elif held >= self.slots.per_org:
            raise InvalidRequest(
                f"this organization has {held} uploads in progress on this service, the "
                f"most it may: end or abort one first (an upload idle for "
                f"{self.idle_s:.0f} s is dropped)")
        cap = self.slots.agents if agents else self.slots.users
        if cap - len(pool) <= held:  # each upload held keeps one more slot free for others
            raise Unavailable(
                f"{len(pool)} of the {cap} {'agent' if agents else 'user'} upload slots on "
                f"this service are in use and this organization holds {held} of them: "
                "retry shortly (its share grows as uploads end)")

    def get(self, org: str, upload_id: str) -> Upload:
        """Raises :class:`NotFound` for an unknown upload or another organization's."""
        up = self.open.get(upload_id)
        if up is None or up.org != org:
            raise NotFound(f"upload {upload_id!r} not found (it may have been aborted)")
        return up

    def write(self, upload_id: str, up: Upload, offset: int, data: bytes) -> int:
        """Take the chunk at ``offset``; returns the bytes received so far. A retried
        chunk already taken is acknowledged again. Raises :class:`InvalidRequest` for a
        chunk out of order or invalid data (the upload is dropped then)."""
        if offset + len(data) <= up.received and offset >= 0:
            return up.received
        if offset != up.received:
            raise InvalidRequest(f"chunk at offset {offset}, expected {up.received}")
        try:
            up.validator.feed(data)
        except InvalidRequest:
            self.discard(upload_id)
            raise
        up.digest.update(data)
        up.handle.write(data)
        up.received += len(data)
        up.touched = time.monotonic()
        return up.received

    def discard(self, upload_id: str) -> None:
        up = self.open.pop(upload_id, None)
        if up is not None:
            up.handle.close()
            up.path.unlink(missing_ok=True)

    def _drop_idle(self) -> None:
        """Uploads whose client went away (crashed, lost its connection) would hold their
        slot and spool file forever."""
        limit = time.monotonic() - self.idle_s
        for upload_id in [i for i, up in self.open.items() if up.touched < limit]:
            self.discard(upload_id)
