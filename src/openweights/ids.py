"""Content-addressed ids.

Jobs: ``<type prefix>-<12 hex>`` where the hex is the sha256 of the canonical JSON of
the job spec (sorted keys, no whitespace) followed by the organization id; a
``job_id_suffix`` param appends ``-<suffix>``. Files: ``<purpose>:file-<12 hex>`` over
the bytes followed by the organization id (as in the original OpenWeights).
Canonical JSON fixes the original's flaw of hashing dict insertion order, so ids
differ from the original's for the same spec.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec

from openweights.errors import InvalidRequest

_canonical = msgspec.json.Encoder(order="sorted")
_PREFIX = re.compile(r"^[a-z0-9][a-z0-9_-]{0,40}$")
_PURPOSE = re.compile(r"^[a-z0-9_][a-z0-9_-]{0,40}$")
FILE_ID = re.compile(r"^(?P<purpose>[a-z0-9_][a-z0-9_-]{0,40}):file-(?P<hex>[0-9a-f]{12})$")


def canonical_json(value: Any) -> bytes:
    return _canonical.encode(value)


def job_id(prefix: str, spec: dict[str, Any], org: str, suffix: str | None = None) -> str:
    if not _PREFIX.match(prefix):
        raise InvalidRequest(f"job id prefix {prefix!r} must be lowercase letters, digits, "
                             "'-' or '_' (at most 41)")
    digest = hashlib.sha256(canonical_json(spec) + org.encode()).hexdigest()[:12]
    out = f"{prefix}-{digest}"
    if suffix:
        if not re.match(r"^[A-Za-z0-9_-]{1,64}$", suffix):
            raise InvalidRequest(f"job_id_suffix {suffix!r} must be letters, digits, '-' or "
                                 "'_' (at most 64)")
        out += f"-{suffix}"
    return out


def check_purpose(purpose: str) -> str:
    if not isinstance(purpose, str) or not _PURPOSE.match(purpose):
        raise InvalidRequest(f"file purpose {purpose!r} must be lowercase letters, digits, "
                             "'-' or '_'")
    return purpose


class FileDigest:
    """Hashes a file while it streams by: its id (over bytes ‖ org) and its content sha256
    (the storage key: the same bytes in one organization are stored once)."""

    def __init__(self, org: str) -> None:
        self.org = org
        self._content = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._content.update(chunk)
        self.size += len(chunk)

    @property
    def sha256(self) -> str:
        return self._content.hexdigest()

    def file_id(self, purpose: str) -> str:
        with_org = self._content.copy()
        with_org.update(self.org.encode())
        return f"{check_purpose(purpose)}:file-{with_org.hexdigest()[:12]}"
