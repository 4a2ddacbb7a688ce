"""Whether a process, or a process group, is still alive.

Zombies do not count as alive: when the agent is a container's PID 1 nobody reaps
orphaned grandchildren, and they would keep ``kill(pid, 0)`` succeeding forever. Where
there is no ``/proc`` (macOS) a process that takes signals counts as alive.
"""

from __future__ import annotations

import os

__all__ = ["group_alive", "pid_alive", "pid_exists"]

_DEAD = (b"Z", b"X")  # zombie, dead: exited, only not reaped yet


def pid_exists(pid: int) -> bool:
    """Whether ``pid`` names a process in this PID namespace (ours or another user's,
    zombies included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (exists and is no zombie)."""
    if not pid_exists(pid):
        return False
    fields = _stat(str(pid))
    return fields is None or fields[0] not in _DEAD


def group_alive(pgid: int) -> bool:
    """Whether a process that has not exited is still in the process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc"):
        return True
    with os.scandir("/proc") as entries:
        return any(_live_member(entry.name, pgid) for entry in entries)


def _live_member(pid: str, pgid: int) -> bool:
    if not pid.isdigit():
        return False
    fields = _stat(pid)
    return fields is not None and int(fields[2]) == pgid and fields[0] not in _DEAD


def _stat(pid: str) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, ppid, pgrp,
    ...); None if it cannot be read (no /proc, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            line = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    return line[line.rindex(b")") + 2 :].split()
