"""Running one job's command: spawn it, stream its output, stop it, collect its results.

I/O building blocks of the agent; the NATS wiring sits on top. Spawning relies on plain
asyncio (anyio's asyncio backend, which does not use uvloop unless asked): uvloop
spawns about four times slower on the agent's machines.

Invariant: when :func:`run_job_process` returns or raises, the command's whole process
group is gone (SIGTERM, then SIGKILL), its leader is reaped and the output reader has
finished, so a job never leaves anything running on the GPU behind it.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import anyio
from anyio.abc import ByteReceiveStream, Process

__all__ = [
    "MAX_LINE_BYTES", "LineSplitter", "OnLine", "OnStart", "ProcessOutcome", "Status",
    "build_job_env", "collect_uploads", "run_job_process", "watch_children_with_pidfd",
]

MAX_LINE_BYTES = 64 * 1024
# Output still in the pipe once the group is gone is read for at most this long: a
# process that left the group (setsid) could hold the pipe open forever.
_DRAIN_S = 2.0
_DRAIN_MAX_S = 60.0  # even if such a process keeps writing
# The kernel tears SIGKILLed processes down asynchronously; wait at most this long.
_KILL_WAIT_S = 2.0
_POLL_S = 0.02

OnLine = Callable[[bytes], Awaitable[None] | None]
OnStart = Callable[[int], Awaitable[None] | None]
Status = Literal["completed", "failed", "canceled"]


@dataclass(frozen=True, slots=True)
class ProcessOutcome:
    """How a job's command ended.

    ``status`` is ``canceled`` whenever we stopped it (``reason`` "canceled" or
    "timeout"), else ``completed`` for exit 0 and ``failed`` otherwise (``reason``
    "exit 3", "signal 9"). ``exit_code`` is None when a signal ended the process.
    Times are epoch seconds.
    """

    exit_code: int | None
    status: Status
    reason: str
    started_at: float
    ended_at: float
    pid: int


class LineSplitter:
    r"""Cuts a byte stream into lines, without their terminators.

    A line ends at ``\n``, ``\r\n`` or a lone ``\r`` (progress bars redraw with ``\r``;
    splitting there streams them live). A line longer than ``max_bytes`` is cut into
    pieces, so an endless line neither stalls the stream nor grows the buffer.
    """

    _EOL = re.compile(rb"[\r\n]")

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self._max = max_bytes
        self._buf = bytearray()
        self._after_cr = False  # the last chunk ended in \r: a leading \n belongs to it

    def feed(self, data: bytes) -> list[bytes]:
        if not data:
            return []
        if self._after_cr and data[:1] == b"\n":
            data = data[1:]
        self._after_cr = False
        self._buf += data
        lines: list[bytes] = []
        pos = 0
        while True:
            match = self._EOL.search(self._buf, pos, pos + self._max + 1)
            if match:
                lines.append(bytes(self._buf[pos : match.start()]))
                pos = self._skip_lf_after_cr(match.end())
            elif len(self._buf) - pos >= self._max:
                lines.append(bytes(self._buf[pos : pos + self._max]))
                pos += self._max
            else:
                break
        del self._buf[:pos]
        return lines

    def flush(self) -> list[bytes]:
        """The unterminated rest, at the end of the stream."""
        rest, self._buf = bytes(self._buf), bytearray()
        return [rest] if rest else []

    def _skip_lf_after_cr(self, end: int) -> int:
        if self._buf[end - 1] != 0x0D:
            return end
        if end == len(self._buf):
            self._after_cr = True
            return end
        return end + (self._buf[end] == 0x0A)


def watch_children_with_pidfd() -> None:
    """On Python 3.11, let the running asyncio loop learn of child exits through pidfds.

    3.11's default watcher starts a thread per child to block in ``waitpid``: a thread
    start and join on every job, which costs more CPU than the spawn itself. 3.12+
    uses pidfds already; where the kernel has no ``pidfd_open`` the default stays.
    """
    import asyncio

    if sys.version_info >= (3, 12):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)


async def run_job_process(
    command: str, *, cwd: Path, env: Mapping[str, str], on_line: OnLine, log_path: Path,
    cancel: anyio.Event, deadline: float | None = None, grace_s: float = 10.0,
    on_start: OnStart | None = None,
) -> ProcessOutcome:
    """Run ``command`` with ``/bin/sh -c`` in ``cwd`` in its own session, until it exits.

    stdout and stderr are merged; each line is appended to ``log_path`` (flushed; the
    file is created on the first line) and passed to ``on_line`` as soon as it is read.
    ``on_start`` gets the pid right after the spawn. Setting ``cancel`` or passing
    ``deadline`` (``anyio.current_time()`` clock) stops the group: SIGTERM, then SIGKILL
    after ``grace_s``. Members left behind by a command that exits by itself are stopped
    the same way. If the caller is cancelled, the group is SIGKILLed and the
    cancellation re-raised. Errors raised by ``on_line`` also kill the group and
    propagate (inside an ExceptionGroup).
    """
    with _LazyLog(log_path) as log:
        # Shielded: a cancellation landing mid-spawn would leak a running child.
        with anyio.CancelScope(shield=True):
            process = await anyio.open_process(
                ["/bin/sh", "-c", command], cwd=cwd, env=dict(env),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started_at = time.time()
        try:
            if on_start is not None:
                await _call(on_start, process.pid)
            stop_reason = await _run_to_end(process, log, on_line, cancel, deadline, grace_s)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _kill_group(process)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await process.aclose()
    return _outcome(process, stop_reason, started_at)


class _LazyLog:
    """``log_path`` opened for appending on the first write: a job that prints nothing
    leaves no file (and costs no file creation)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: BinaryIO | None = None

    def __enter__(self) -> _LazyLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()

    def write(self, data: bytes) -> None:
        if self._file is None:
            self._file = self._path.open("ab")
        self._file.write(data)
        self._file.flush()


async def _run_to_end(
    process: Process, log: _LazyLog, on_line: OnLine,
    cancel: anyio.Event, deadline: float | None, grace_s: float,
) -> str | None:
    assert process.stdout is not None
    pump = _OutputPump(process.stdout, log, on_line)
    async with anyio.create_task_group() as tg:
        tg.start_soon(pump.run)
        stop_reason = await _wait_exit_or_stop(process, cancel, deadline)
        # Also after a normal exit: what the command left running dies with the job.
        await _stop_group(process, grace_s)
        pump.group_gone()
        with anyio.move_on_after(_DRAIN_MAX_S):
            await pump.done.wait()
        tg.cancel_scope.cancel()
    return stop_reason


async def _wait_exit_or_stop(
    process: Process, cancel: anyio.Event, deadline: float | None
) -> str | None:
    """None once the process exits by itself; "canceled" or "timeout" if we must stop it."""
    async with anyio.create_task_group() as tg:
        tg.cancel_scope.deadline = math.inf if deadline is None else deadline
        tg.start_soon(_cancel_when_set, cancel, tg.cancel_scope)
        await process.wait()
        tg.cancel_scope.cancel()
    if process.returncode is not None:
        return None
    return "canceled" if cancel.is_set() else "timeout"


async def _cancel_when_set(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


class _OutputPump:
    """Reads the pipe to its end, feeding the log and ``on_line``.

    Once the group is gone the pipe normally ends at once; only a process that escaped
    the group (setsid) can hold it open, so from then on a read idle for ``_DRAIN_S``
    ends the pump. A slow ``on_line`` is never cut short by that: only reads time out.
    """

    def __init__(self, stream: ByteReceiveStream, log: _LazyLog, on_line: OnLine) -> None:
        self._stream, self._log, self._on_line = stream, log, on_line
        self._idle_limit = math.inf
        self._read_scope: anyio.CancelScope | None = None
        self.done = anyio.Event()

    def group_gone(self) -> None:
        self._idle_limit = _DRAIN_S
        if self._read_scope is not None:
            self._read_scope.deadline = anyio.current_time() + _DRAIN_S

    async def run(self) -> None:
        splitter = LineSplitter()
        while (chunk := await self._read()) is not None:
            await self._emit(splitter.feed(chunk))
        await self._emit(splitter.flush())
        self.done.set()

    async def _read(self) -> bytes | None:
        with anyio.move_on_after(self._idle_limit) as self._read_scope:
            try:
                return await self._stream.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                return None
            finally:
                self._read_scope = None
        return None

    async def _emit(self, lines: list[bytes]) -> None:
        if not lines:
            return
        # A local file: one blocking write+flush per read is cheaper than a thread hop.
        self._log.write(b"".join(line + b"\n" for line in lines))
        for line in lines:
            await _call(self._on_line, line)


async def _call(callback: Callable[..., object], arg: object) -> None:
    result = callback(arg)
    if inspect.isawaitable(result):
        await result


async def _stop_group(process: Process, grace_s: float) -> None:
    """SIGTERM the job's process group; SIGKILL whatever is left after ``grace_s``."""
    _signal_group(process, signal.SIGTERM)
    with anyio.move_on_after(grace_s):
        await _wait_group_gone(process)
    await _kill_group(process)


async def _kill_group(process: Process) -> None:
    _signal_group(process, signal.SIGKILL)
    with anyio.move_on_after(_KILL_WAIT_S):
        await _wait_group_gone(process)
    await process.wait()  # SIGKILL cannot be ignored: the leader ends and is reaped


async def _wait_group_gone(process: Process) -> None:
    await process.wait()
    # Polled: other members are not our children, so nothing signals their exit.
    while _group_alive(process.pid):  # noqa: ASYNC110
        await anyio.sleep(_POLL_S)


def _signal_group(process: Process, sig: int) -> None:
    # The group id is the leader's pid. Once the leader is reaped that pid can be reused
    # by an unrelated session leader, so only signal a group that still has members.
    if process.returncode is not None and not _group_alive(process.pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _group_alive(pgid: int) -> bool:
    """Whether a process that is not a zombie is still in the group.

    Zombies do not count: when the agent is a container's PID 1 nobody reaps orphaned
    grandchildren, and they would keep ``killpg(pgid, 0)`` succeeding forever.
    """
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
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read()
    except OSError:  # exited meanwhile
        return False
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    fields = stat_line[stat_line.rindex(b")") + 2 :].split()
    return int(fields[2]) == pgid and fields[0] not in (b"Z", b"X")


def _outcome(process: Process, stop_reason: str | None, started_at: float) -> ProcessOutcome:
    code = process.returncode
    assert code is not None
    exit_code = code if code >= 0 else None
    status: Status
    if stop_reason is not None:
        status, reason = "canceled", stop_reason
    elif code == 0:
        status, reason = "completed", "exit 0"
    else:
        status, reason = "failed", (f"exit {code}" if code > 0 else f"signal {-code}")
    return ProcessOutcome(
        exit_code=exit_code, status=status, reason=reason,
        started_at=started_at, ended_at=time.time(), pid=process.pid,
    )


def build_job_env(
    base: Mapping[str, str], *, run_id: str, n_gpus: int, secrets: Mapping[str, str],
    python_executable: str = sys.executable,
) -> dict[str, str]:
    """The job's environment: ``base``, then the org's ``secrets``, then what openweights
    sets (last, so a secret cannot fake the run id).

    The directory of ``python_executable`` goes first on ``PATH`` so that ``python`` in
    an entrypoint is the agent's own interpreter, which can import openweights.
    """
    env = {**base, **secrets}
    # Not resolved: a venv's python is a symlink, and its bin dir is what selects the venv.
    python_dir = os.path.dirname(os.path.abspath(python_executable))
    rest = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != python_dir]
    env.update(OPENWEIGHTS_RUN_ID=run_id, N_GPUS=str(n_gpus), PYTHONUNBUFFERED="1",
               PATH=os.pathsep.join([python_dir, *rest]))
    return env


def collect_uploads(workdir: Path) -> list[tuple[str, Path]]:
    """Every regular file under ``workdir/uploads`` as (posix path relative to uploads,
    absolute path), sorted. Symlinked files count only if they resolve inside
    ``workdir`` (a job must not upload the machine's files); symlinked directories are
    not followed, so a link loop cannot trap the walk."""
    uploads = (workdir / "uploads").absolute()
    root = workdir.resolve()
    found: list[tuple[str, Path]] = []
    for dirpath, _dirnames, filenames in os.walk(uploads, followlinks=False):
        for name in filenames:
            path = Path(dirpath, name)
            if _uploadable(path, root):
                found.append((path.relative_to(uploads).as_posix(), path))
    return sorted(found)


def _uploadable(path: Path, root: Path) -> bool:
    if path.is_symlink() and not path.resolve().is_relative_to(root):
        return False
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:  # dangling link, or removed meanwhile
        return False
