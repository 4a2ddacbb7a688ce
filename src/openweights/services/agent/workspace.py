"""Fresh working directories for jobs, made one job ahead.

Creating and removing directories is journaled metadata: on a disk that Postgres and
JetStream keep fsyncing, one ``mkdir`` waits for the journal for about a millisecond.
So the next job's directory (with its empty ``uploads/``) and log file are made in a
worker thread while the agent waits for its next assignment, and the used ones are
removed the same way: the moment a job is picked up touches no metadata at all. A log
file the job never wrote to is reused as the next one's, and so is a directory the job
left as it found it (unless each run is a user of its own: the directory is then made
afresh, for the next run's user, in the same worker thread).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog

from openweights.isolation import JobIsolation, JobUser, SharedUser

log = structlog.get_logger("agent")

@dataclass(frozen=True, slots=True)
class Workspace:
    dir: Path  # the job's working directory: empty but for an empty ``uploads/``
    log: Path  # an empty file the job's output is appended to (the agent's, not the job's)
    user: JobUser | None = None  # whom the directory belongs to: the run's user, if any


class Workspaces:
    def __init__(self, root: Path, isolation: JobIsolation | None = None) -> None:
        self.root = root
        self.isolation: JobIsolation = isolation or SharedUser(root, "")
        self._spare: Workspace | None = None

    @property
    def spare(self) -> Workspace | None:
        """The workspace made ahead, if there is one."""
        return self._spare

    @property
    def next_dir(self) -> Path | None:
        """The directory of the workspace made ahead, if there is one."""
        return self._spare.dir if self._spare is not None else None

    async def prepare(self) -> None:
        """Make the next job's workspace now, if there is none ready."""
        if self._spare is None:
            self._spare = await anyio.to_thread.run_sync(self._make, None)

    async def take(self) -> Workspace:
        """A fresh workspace: the one made ahead, else one made now."""
        ws, self._spare = self._spare, None
        return ws if ws is not None else await anyio.to_thread.run_sync(self._make, None)

    async def give_back(self, ws: Workspace) -> None:
        """Remove a used workspace and make the next one; one the job left as it found
        it (an empty ``uploads/``, an empty log: most no-op and quick jobs) is the next
        one, with no thread hop and no metadata written, unless it belonged to the run's
        own user. Never raises: without a spare, ``take`` makes one (or says why not)."""
        if ws.user is None and _untouched(ws):
            self._spare = ws
            return
        try:
            self._spare = await anyio.to_thread.run_sync(self._recycle, ws)
        except OSError as exc:  # a full disk, say: the next job's ``take`` tries again
            log.warning("agent.workspace_failed", error=str(exc))
            self._spare = None

    def discard(self) -> None:
        """Remove the workspace made ahead (the agent is stopping)."""
        ws, self._spare = self._spare, None
        if ws is not None:
            _remove_dir(ws.dir)
            ws.log.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: a job's directory left behind
            self.root.rmdir()

    def _make(self, log: Path | None) -> Workspace:
        workdir = Path(tempfile.mkdtemp(prefix="job-", dir=self.root))  # 0700
        (workdir / "uploads").mkdir()
        user = self.isolation.new_user()
        if user is not None:
            self.isolation.give(user, workdir / "uploads")
            self.isolation.give(user, workdir)
        if log is None:
            fd, name = tempfile.mkstemp(prefix="job-", suffix=".log", dir=self.root)
            os.close(fd)
            log = Path(name)
        return Workspace(workdir, log, user)

    def _recycle(self, ws: Workspace) -> Workspace:
        _remove_dir(ws.dir)
        try:
            unused = ws.log.stat().st_size == 0
        except FileNotFoundError:  # uploaded, then removed
            unused = False
        if not unused:
            ws.log.unlink(missing_ok=True)
        return self._make(ws.log if unused else None)


def _untouched(ws: Workspace) -> bool:
    try:
        return (os.listdir(ws.dir) == ["uploads"] and not os.listdir(ws.dir / "uploads")
                and ws.log.stat().st_size == 0)
    except OSError:  # the job removed what it was given
        return False


def _remove_dir(path: Path) -> None:
    """Most jobs leave an empty ``uploads/`` behind (their results are uploaded, not
    kept): two ``rmdir`` then, instead of a tree walk."""
    try:
        os.rmdir(path / "uploads")
        os.rmdir(path)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
