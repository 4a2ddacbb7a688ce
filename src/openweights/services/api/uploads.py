"""The uploads in progress on this api instance, spooled to disk as their chunks arrive.

An upload holds a slot, a spool file, its running hashes and its dataset validator
until it ends, is aborted, or stays idle past ``upload_idle_s`` (its client went away).
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
from openweights.datasets import DatasetValidator
from openweights.errors import InvalidRequest, NotFound, Unavailable

MAX_OPEN_UPLOADS = 64  # per api instance
MAX_OPEN_UPLOADS_PER_ORG = 32  # so that one organization cannot take every slot


@dataclass
class Upload:
    org: str
    filename: str
    purpose: str
    path: Path
    digest: ids.FileDigest
    validator: DatasetValidator
    received: int = 0
    handle: Any = field(default=None, repr=False)
    touched: float = field(default_factory=time.monotonic)  # begun, or the last chunk


class Uploads:
    def __init__(self, home: Path, instance: str, idle_s: float) -> None:
        self.instance, self.idle_s = instance, idle_s
        self.spool = home / "api" / "uploads"
        self.cache = home / "api" / "files"  # downloads, once per content
        self.spool.mkdir(parents=True, exist_ok=True)
        self.open: dict[str, Upload] = {}

    def begin(self, org: str, filename: str, purpose: str) -> str:
        """A new upload's id. Raises :class:`InvalidRequest` when the organization holds
        too many slots and :class:`Unavailable` when this instance has none left."""
        self._drop_idle()
        if sum(up.org == org for up in self.open.values()) >= MAX_OPEN_UPLOADS_PER_ORG:
            raise InvalidRequest(
                f"this organization has {MAX_OPEN_UPLOADS_PER_ORG} uploads in progress on "
                f"this service: end or abort one first (an upload idle for "
                f"{self.idle_s:.0f} s is dropped)")
        if len(self.open) >= MAX_OPEN_UPLOADS:
            raise Unavailable(f"{MAX_OPEN_UPLOADS} uploads are in progress on this service; "
                              "retry shortly")
        upload_id = f"{self.instance}-{secrets.token_hex(8)}"
        fd, name = tempfile.mkstemp(dir=self.spool, prefix=upload_id)
        self.open[upload_id] = Upload(org, os.path.basename(filename) or "file", purpose,
                                      Path(name), ids.FileDigest(org),
                                      DatasetValidator(purpose), handle=os.fdopen(fd, "wb"))
        return upload_id

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
