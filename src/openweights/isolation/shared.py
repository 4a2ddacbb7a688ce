"""Not root: jobs as the agent's own user, one organization (see the package's docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from openweights.isolation.base import JobRefused, JobUser

__all__ = ["SharedUser", "become_subreaper"]

_CLAIM = "jobs-organization"  # under OW_HOME/agent: the one org a SharedUser stack runs
_PR_SET_CHILD_SUBREAPER = 36
_DEAD = (b"Z", b"X")


class SharedUser:
    """Jobs as the agent's own user (see the package's docstring)."""

    isolated = False

    def __init__(self, home: Path, why_not: str) -> None:
        self.home, self.why_not = home, why_not

    def jobs_root(self, worker_id: str) -> Path:
        root = self.home / "agent" / worker_id
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)
        return root

    def new_user(self) -> None:
        return None

    def give(self, user: JobUser | None, path: Path) -> None:
        return None  # the job is the agent's user: it owns what the agent makes

    def prefix(self, user: JobUser | None) -> Sequence[str]:
        return ()

    async def sweep(self, user: JobUser | None, run_id: str) -> None:
        """SIGKILL the agent's descendants that run ``run_id`` (their environment says so),
        orphans adopted as the subreaper included; then reap those that are ours."""
        marker = f"OPENWEIGHTS_RUN_ID={run_id}".encode()
        me = os.getpid()
        deadline = time.monotonic() + 2.0
        # The job's shell is reaped by now: what it left is our children (adopted) and
        # theirs. Most jobs leave none, which one syscall tells, not a walk of /proc.
        while _has_children() and time.monotonic() < deadline:
            found = [p for p in _descendants(me) if _environ_has(p, marker)]
            if not found:
                break
            for pid in found:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.01)  # the kernel tears them down asynchronously
        if _is_subreaper() and _has_children():
            _reap_zombie_children(me)

    def admit(self, org: str) -> None:
        """The first organization to run a job here claims the stack; others are refused."""
        claim = self.home / "agent" / _CLAIM
        claim.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            holder = claim.read_text().strip()
            if holder and holder != org:
                raise JobRefused(
                    f"this machine cannot isolate jobs ({self.why_not}), so it runs the "
                    f"jobs of one organization only, {holder!r}: a job of {org!r} could read "
                    f"their credentials and the stack's (the claim is {claim}; remove it once "
                    f"no job of {holder!r} runs here)") from None
            return
        with os.fdopen(fd, "w") as f:
            f.write(org)


def _descendants(root: int) -> list[int]:
    """Live descendants of ``root`` (from /proc: none where there is none)."""
    children: dict[int, list[int]] = defaultdict(list)
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            fields = _stat(entry.name) if entry.name.isdigit() else None
            if fields is not None and fields[0] not in _DEAD:
                children[int(fields[1])].append(int(entry.name))
    out, todo = [], list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _has_children() -> bool:
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)  # reaps nothing
    except ChildProcessError:
        return False
    return True


def _reap_zombie_children(me: int) -> None:
    """Orphans that ended by themselves were adopted by us: collect their exit."""
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            fields = _stat(entry.name) if entry.name.isdigit() else None
            if fields is not None and fields[0] == b"Z" and int(fields[1]) == me:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(int(entry.name), os.WNOHANG)


def _environ_has(pid: int, entry: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return entry in f.read().split(b"\0")
    except OSError:
        return False


def _stat(pid: str) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            line = f.read()
    except OSError:
        return None
    return line[line.rindex(b")") + 2:].split()  # state, ppid, ...


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def become_subreaper() -> bool:
    """Make this process adopt its descendants' orphans (Linux); whether it could."""
    try:
        return bool(_libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _is_subreaper() -> bool:
    value = ctypes.c_int(0)
    try:
        ok = _libc().prctl(_PR_SET_CHILD_SUBREAPER + 1, ctypes.byref(value), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    return ok and value.value == 1
