"""Where a job's mounted files may go: the rule ``jobs.submit`` enforces and agents rely on.

A job's ``params["mounted_files"]`` maps a target path to a file id; the agent
downloads each file to that path inside the job's fresh working directory before the
command starts. A target is a relative path of at most :data:`MAX_TARGET_CHARS`
characters whose every part is a plain name (no ``..``, no control characters, at most
:data:`MAX_PART_BYTES` bytes): it cannot leave the job's directory, cannot be the
directory itself, and cannot be (or lie under) a name the agent keeps for itself
(:data:`RESERVED`). ``.`` parts and repeated slashes are ignored, as the agent's path
joining ignores them, so ``./a//b`` is ``a/b``; two targets that are the same file, or
one a file and the other a path through it, are refused as well, since one of the two
downloads would fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from openweights.errors import InvalidRequest

# ``uploads/``: the agent makes it empty in every job directory; what a job leaves there
# is uploaded as its results (a mounted file there would come back as a result).
RESERVED = frozenset({"uploads"})
MAX_TARGET_CHARS = 1024
MAX_PART_BYTES = 255  # a file name's limit on Linux file systems
EXAMPLE = '{"data/train.jsonl": "conversations:file-0123456789ab"}'


def mount_target(target: Any) -> tuple[str, ...]:
    """The parts of ``target``, a mount target as written in a job's params. Raises
    :class:`InvalidRequest` saying what is wrong with it."""
    where = f"params.mounted_files target {target!r}"
    if not isinstance(target, str) or not target.strip():
        raise InvalidRequest(f"{where}: a target is a non-empty path inside the job's "
                             "directory, like 'data/train.jsonl'")
    if len(target) > MAX_TARGET_CHARS:
        raise InvalidRequest(f"{where[:80]}...: a target is at most {MAX_TARGET_CHARS} "
                             "characters long")
    if any(ord(c) < 32 or ord(c) == 127 for c in target):
        raise InvalidRequest(f"{where}: control characters are not allowed in a target")
    if target.startswith("/"):
        raise InvalidRequest(f"{where}: a target is relative to the job's directory; drop "
                             "the leading '/'")
    raw = target.split("/")
    if ".." in raw:
        raise InvalidRequest(f"{where}: '..' would leave the job's directory; name a path "
                             "inside it")
    parts = PurePosixPath(target).parts
    if not parts:
        raise InvalidRequest(f"{where}: that is the job's directory itself; name a file "
                             "inside it, like 'data.jsonl'")
    if parts[0] in RESERVED:
        raise InvalidRequest(f"{where}: {parts[0]!r} is reserved in the job's directory "
                             f"(reserved: {', '.join(sorted(RESERVED))}); mount it elsewhere")
    if long := next((p for p in parts if len(p.encode()) > MAX_PART_BYTES), None):
        raise InvalidRequest(f"{where}: the name {long[:40]!r}... is longer than "
                             f"{MAX_PART_BYTES} bytes")
    return parts


def mount_targets(mounted: Any) -> dict[tuple[str, ...], str]:
    """``params["mounted_files"]`` checked: target parts -> file id (as given, not yet
    known to exist). Raises :class:`InvalidRequest` for the first thing wrong."""
    if not isinstance(mounted, Mapping):
        raise InvalidRequest("params.mounted_files maps a path in the job's directory to a "
                             f"file id, like {EXAMPLE}; got a {type(mounted).__name__}")
    out: dict[tuple[str, ...], str] = {}
    for target, file_id in mounted.items():
        parts = mount_target(target)
        if not isinstance(file_id, str):
            raise InvalidRequest(f"params.mounted_files[{target!r}] must be a file id "
                                 f"(a string, like {EXAMPLE}), not {type(file_id).__name__}")
        if parts in out:
            raise InvalidRequest(f"params.mounted_files: {target!r} is the same path as "
                                 "another target; mount one file there")
        out[parts] = file_id
    for parts in out:
        for n in range(1, len(parts)):
            if parts[:n] in out:
                raise InvalidRequest(
                    f"params.mounted_files: {'/'.join(parts)!r} lies under "
                    f"{'/'.join(parts[:n])!r}, which is mounted as a file; a path cannot "
                    "be both")
    return out
