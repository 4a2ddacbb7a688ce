"""Root: a fresh unprivileged user per run (see the package's docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

from openweights.config import Settings
from openweights.isolation.base import IsolationUnavailable, JobUser

__all__ = ["FIRST_UID", "STATE_DIR", "UID_COUNT", "UidRange", "UserPerRun"]

# Where root agents keep the uid counter and, unless OW_JOBS_DIR says otherwise, the
# jobs' directories: one place per machine, so that no two agents hand out one uid.
STATE_DIR = Path("/var/tmp/openweights") if Path("/var/tmp").is_dir() else Path(
    "/tmp/openweights")
# No account has these: well above the ranges distributions give users and services,
# and below 2**31 (some tools take uids as signed 32-bit numbers).
FIRST_UID, UID_COUNT = 2_000_000_000, 100_000_000


class UidRange:
    """Uids handed out once each on this machine: a counter in a root-only file, under an
    exclusive lock, taken ``block`` at a time (one file write per ``block`` runs)."""

    def __init__(self, counter: Path, first: int = FIRST_UID, count: int = UID_COUNT,
                 block: int = 32) -> None:
        self.counter, self.first, self.count, self.block = counter, first, count, block
        self._next, self._end = 0, 0
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            if self._next >= self._end:
                self._next = self._reserve()
                self._end = self._next + self.block
            uid, self._next = self._next, self._next + 1
            return uid

    def _reserve(self) -> int:
        fd = os.open(self.counter, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, 32, 0).strip()
            n = int(raw) if raw.isdigit() else 0
            os.pwrite(fd, str(n + self.block).encode().ljust(24), 0)
        finally:
            os.close(fd)  # releases the lock
        return self.first + (n % (self.count - self.count % self.block))


class UserPerRun:
    """Jobs as fresh unprivileged users (see the package's docstring). The agent is root."""

    isolated = True
    why_not = ""

    def __init__(self, root: Path, uids: UidRange, setpriv: str) -> None:
        self.root, self.uids, self.setpriv = root, uids, setpriv

    @classmethod
    def on_this_machine(cls, settings: Settings, *, python: str | None = None) -> UserPerRun:
        """Raises :class:`IsolationUnavailable` naming what this machine lacks; with
        ``python``, also where a job's user cannot run that interpreter (the agent's,
        which jobs get as ``python``: one under a private home, say)."""
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise IsolationUnavailable("util-linux's setpriv is not installed")
        for kind in ("uid", "gid"):
            if not _mapped(Path(f"/proc/self/{kind}_map"), FIRST_UID, UID_COUNT):
                raise IsolationUnavailable(
                    f"{kind}s {FIRST_UID}-{FIRST_UID + UID_COUNT - 1} are not mapped in this "
                    f"user namespace (/proc/self/{kind}_map)")
        root = settings.jobs_dir or STATE_DIR / "jobs"
        try:
            _private_dir(STATE_DIR, 0o711)
            root.parent.mkdir(parents=True, exist_ok=True)
            _private_dir(root, 0o711)
        except OSError as exc:
            raise IsolationUnavailable(f"cannot make the jobs' directory {root}: {exc}") from exc
        made = cls(root, UidRange(STATE_DIR / "next-uid"), setpriv)
        made._probe(["/bin/sh", "-c", "exit 0"], "setpriv cannot switch to an unprivileged user")
        if python is not None:
            # From a shell, as jobs do: setpriv itself execs with its capabilities still
            # held; and with an import from disk (the interpreter's core is built in).
            made._probe(["/bin/sh", "-c", 'exec "$0" -c "import json, openweights"', python],
                        f"an unprivileged user cannot run {python}, the `python` jobs get "
                        "(install openweights in a Python every user can run, or set "
                        "OW_JOB_ISOLATION=user to isolate jobs without it)")
        return made

    def _probe(self, argv: list[str], failure: str) -> None:
        probe = [*self.prefix(JobUser(FIRST_UID, FIRST_UID)), *argv]
        try:
            done = subprocess.run(probe, capture_output=True, timeout=30, check=False,
                                  cwd="/")
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise IsolationUnavailable(f"{failure}: {exc}") from exc
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip().splitlines()
            raise IsolationUnavailable(f"{failure}: {said[-1][-200:] if said else done.returncode}")

    def jobs_root(self, worker_id: str) -> Path:
        return _private_dir(self.root / worker_id, 0o711)

    def new_user(self) -> JobUser:
        uid = self.uids.take()
        return JobUser(uid, uid)

    def give(self, user: JobUser | None, path: Path) -> None:
        assert user is not None, "every run has a user of its own here"
        os.chown(path, user.uid, user.gid, follow_symlinks=False)

    def prefix(self, user: JobUser | None) -> Sequence[str]:
        assert user is not None, "every run has a user of its own here"
        return (self.setpriv, f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
                "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--")

    async def sweep(self, user: JobUser | None, run_id: str) -> None:
        """``kill(-1, SIGKILL)`` as the run's user: every process it may signal, that is
        every process of that uid, dies (the kill itself excepted, which exits)."""
        assert user is not None, "every run has a user of its own here"
        argv = [*self.prefix(user), "/bin/sh", "-c", "kill -9 -1"]
        await _spawn_and_wait(argv)

    def admit(self, org: str) -> None:
        return None  # every run is its own user: any organization's job may run


async def _spawn_and_wait(argv: Sequence[str]) -> None:
    """Run ``argv`` (no shell, empty environment) and wait for its exit through a pidfd:
    a fraction of what asyncio's subprocess machinery costs, once per job."""
    pid, pidfd = _spawn(argv)
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, on_exit)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        _reap(pid)


def _spawn(argv: Sequence[str]) -> tuple[int, int]:
    """(pid, pidfd): ``posix_spawn`` returns once the child exec'd (vfork)."""
    pid = os.posix_spawn(argv[0], list(argv), {})
    return pid, os.pidfd_open(pid)


def _reap(pid: int) -> None:
    """Collect the exit of a child whose pidfd said it ended (so: without waiting)."""
    os.waitpid(pid, 0)


def _private_dir(path: Path, mode: int) -> Path:
    """``path``, a directory of ours (made if missing) that no one else can write to or
    have replaced by a link, with ``mode``. Raises :class:`IsolationUnavailable`."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, mode)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise IsolationUnavailable(
            f"{path} is not a directory of uid {os.geteuid()} (someone else may have made "
            "it to see the jobs' files): remove it, or set OW_JOBS_DIR elsewhere")
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
    return path


def _mapped(uid_map: Path, first: int, count: int) -> bool:
    """Whether ids ``first`` .. ``first + count - 1`` lie in one extent of the map."""
    try:
        lines = uid_map.read_text().splitlines()
    except OSError:
        return True  # no user namespaces here: every id is the machine's
    for line in lines:
        inside, _, length = (int(x) for x in line.split())
        if inside <= first and first + count <= inside + length:
            return True
    return False
