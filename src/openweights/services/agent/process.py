"""Running one job's command: spawn it, stream its output, stop it, collect its results.

I/O building blocks of the agent; the NATS wiring sits on top. Spawning relies on plain
asyncio (anyio's asyncio backend, which does not use uvloop unless asked): uvloop
spawns about four times slower on the agent's machines. A job normally runs in a
:class:`WarmShell` spawned before it was assigned, with ``os.posix_spawn``.

Invariant: when :func:`run_job_process` returns or raises, the command's whole process
group is gone (SIGTERM, then SIGKILL), its leader is reaped and the output reader has
finished, so a job never leaves anything running on the GPU behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import shlex
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

__all__ = [
    "MAX_LINE_BYTES", "LineSplitter", "OnLine", "OnStart", "ProcessOutcome", "Status",
    "WarmShell", "build_job_env", "collect_uploads", "run_job_process",
    "watch_children_with_pidfd",
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
    on_start: OnStart | None = None, shell: WarmShell | None = None,
) -> ProcessOutcome:
    """Run ``command`` with ``/bin/sh -c`` in ``cwd`` in its own session, until it exits;
    or in ``shell``, a :class:`WarmShell` started in ``cwd`` ahead of time (``env`` is
    then what the command must see: the shell exports the difference first).

    stdout and stderr are merged; each line is appended to ``log_path`` (flushed; the
    file is created on the first line) and passed to ``on_line`` as soon as it is read.
    ``on_start`` gets the pid right after the spawn. Setting ``cancel`` or passing
    ``deadline`` (``anyio.current_time()`` clock) stops the group: SIGTERM, then SIGKILL
    after ``grace_s``. Members left behind by a command that exits by itself are stopped
    the same way. If the caller is cancelled, the group is SIGKILLed and the
    cancellation re-raised. An error raised by ``on_line`` also kills the group and
    propagates.

    Plain asyncio inside, on purpose: this runs once per job, and each anyio primitive
    looks up the running async library (and each cancel formats the task's repr) -
    together about a fifth of an agent's CPU per no-op job.
    """
    with _LazyLog(log_path) as log:
        process: Child
        if shell is not None:
            process = shell.run(command, env)
        else:
            process = await _spawn(command, cwd, env)
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
            process.close()  # the pipes; the shell is reaped by now
    return _outcome(process, stop_reason, started_at)


class _Child:
    """The spawned shell. Its exit is a future of our own: on 3.11, asyncio's
    ``Process.wait()`` also waits for the pipes to close, which a process that left the
    group can keep open."""

    def __init__(self, transport: asyncio.SubprocessTransport, protocol: _Protocol) -> None:
        self.transport, self._exit = transport, protocol.exit
        self.pid: int = transport.get_pid()
        self.stdout = protocol.stdout

    @property
    def returncode(self) -> int | None:
        return self.transport.get_returncode()

    async def wait(self) -> None:
        """Until the shell itself exits (shielded: a caller's timeout leaves it be)."""
        await asyncio.shield(self._exit)

    def close(self) -> None:
        self.transport.close()


class _SpawnedChild:
    """A shell started with ``posix_spawn`` and watched through a pidfd and the loop's
    own readers: what asyncio's subprocess machinery does for ``_Child`` (a Popen, three
    pipe transports, protocols, a child watcher), at a fraction of the CPU. The warm
    shell uses it; it cannot set a working directory, so the shell ``cd``s itself."""

    def __init__(self, pid: int, stdin: int, stdout: int,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._loop, self._stdin, self._out = loop, stdin, stdout
        self._exit: asyncio.Future[None] = loop.create_future()
        self.stdout = asyncio.StreamReader(limit=2**16, loop=loop)
        self.stdout.set_transport(self)  # type: ignore[arg-type]  # pause/resume below
        self._pidfd = os.pidfd_open(pid)
        loop.add_reader(self._pidfd, self._on_exit)
        os.set_blocking(stdout, False)
        loop.add_reader(stdout, self._on_output)

    def _on_output(self) -> None:
        try:
            data = os.read(self._out, 2**16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.stdout.feed_data(data)
        else:
            self._close_stdout()
            self.stdout.feed_eof()

    # The StreamReader pauses us while its buffer is full, and resumes us once read.
    def pause_reading(self) -> None:
        if self._out >= 0:
            self._loop.remove_reader(self._out)

    def resume_reading(self) -> None:
        if self._out >= 0:
            self._loop.add_reader(self._out, self._on_output)

    def _on_exit(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: its status is lost
            pid, status = self.pid, 255 << 8
        if pid == 0:
            return
        self.returncode = os.waitstatus_to_exitcode(status)
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        self._exit.set_result(None)

    async def wait(self) -> None:
        await asyncio.shield(self._exit)

    def write_stdin(self, data: bytes) -> None:
        """Everything at once, then EOF (the shell reads it as it comes: a blocking
        write of a long script waits for the reader, never for the job)."""
        try:
            _write_all(self._stdin, data)
        except BrokenPipeError:
            pass  # the shell is gone; its exit says so
        finally:
            os.close(self._stdin)
            self._stdin = -1

    def _close_stdout(self) -> None:
        if self._out >= 0:
            self._loop.remove_reader(self._out)
            os.close(self._out)
            self._out = -1

    def close(self) -> None:
        self._close_stdout()
        if self._stdin >= 0:
            os.close(self._stdin)
            self._stdin = -1
        if self._pidfd >= 0:  # never exited (a warm shell discarded while spawning)
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1


Child = _Child | _SpawnedChild


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _posix_spawn(command: str, env: Mapping[str, str]) -> _SpawnedChild:
    """``/bin/sh -c command`` in its own session, stdin and stdout+stderr on pipes."""
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", command], env, setsid=True,
                             file_actions=[(os.POSIX_SPAWN_DUP2, in_r, 0),
                                           (os.POSIX_SPAWN_DUP2, out_w, 1),
                                           (os.POSIX_SPAWN_DUP2, out_w, 2)])
    except BaseException:
        for fd in (in_w, out_r):
            os.close(fd)
        raise
    finally:
        os.close(in_r)
        os.close(out_w)
    return _SpawnedChild(pid, in_w, out_r, asyncio.get_running_loop())


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self.exit: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exit.done():
            self.exit.set_result(None)


async def _spawn(command: str, cwd: Path, env: Mapping[str, str]) -> _Child:
    loop = asyncio.get_running_loop()
    spawning = asyncio.ensure_future(loop.subprocess_exec(
        lambda: _Protocol(loop), "/bin/sh", "-c", command, cwd=cwd, env=dict(env),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True))
    try:
        transport, protocol = await asyncio.shield(spawning)
    except asyncio.CancelledError:
        # Cancelled mid-spawn: the child may exist all the same, and must not leak.
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            transport, protocol = await spawning
            await _kill_group(_Child(transport, protocol))
            transport.close()
        raise
    return _Child(transport, protocol)


# The warm shell learns from the first line how the job's script comes: a short one
# line by line through ``read`` (builtin, nothing spawned, but a syscall per byte), a
# long one through ``cat`` (a process, but large reads). It then gives the job /dev/null
# as stdin and evaluates the script, its own variables unset first.
_WARM = (
    'cd -- "$__ow_dir" || exit 126; unset __ow_dir; '
    'IFS= read -r __ow_how; if [ "$__ow_how" = lines ]; then '
    'while IFS= read -r __ow_line || [ -n "$__ow_line" ]; do '
    '__ow_script="$__ow_script$__ow_line\n"; done; else __ow_script=$(cat); fi; '
    'exec </dev/null; eval "unset __ow_how __ow_script __ow_line\n$__ow_script"'
)
_READ_MAX = 512  # bytes: past this, reading byte by byte costs more than spawning cat
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class WarmShell:
    """A job's shell spawned before its job exists, waiting for the script on stdin.

    Spawning a process is the slowest step between an assignment arriving and the job
    running (about a millisecond, more while the box is busy); the agent spawns the next
    job's shell, in the next job's directory, while it waits for work. The job then
    starts as soon as its script is written. ``sh -c`` and the warm shell differ only
    in that the shell stays the parent of the last command instead of exec'ing it.
    """

    def __init__(self, child: _SpawnedChild, cwd: Path, env: Mapping[str, str]) -> None:
        self._child, self.cwd, self.env = child, cwd, dict(env)

    @property
    def pid(self) -> int:
        return self._child.pid

    @classmethod
    def start(cls, cwd: Path, env: Mapping[str, str]) -> WarmShell:
        return cls(_posix_spawn(_WARM, {**env, "__ow_dir": str(cwd)}), cwd, env)

    def fits(self, cwd: Path, env: Mapping[str, str]) -> bool:
        """Whether the job can run here: same directory, every variable it needs (or
        must not see) nameable in the shell, and the shell still waiting."""
        return (self.cwd == cwd and self._child.returncode is None
                and all(_NAME.match(k) for k in (env.keys() ^ self.env.keys()) | {
                    k for k, v in env.items() if self.env.get(k) != v}))

    def run(self, command: str, env: Mapping[str, str]) -> _SpawnedChild:
        """Hand the shell ``command`` with ``env``: unsets and exports, then the script."""
        exports = [f"export {k}={shlex.quote(v)}" for k, v in env.items()
                   if self.env.get(k) != v]
        unsets = [f"unset {k}" for k in self.env.keys() - env.keys()]
        script = ("\n".join([*unsets, *exports, command]) + "\n").encode()
        self._child.write_stdin((b"lines\n" if len(script) <= _READ_MAX else b"cat\n")
                                + script)
        return self._child

    async def discard(self) -> None:
        """Stop a shell no job will use (the agent stops, or the next job cannot)."""
        with anyio.CancelScope(shield=True):
            await _kill_group(self._child)
            self._child.close()


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
    process: Child, log: _LazyLog, on_line: OnLine,
    cancel: anyio.Event, deadline: float | None, grace_s: float,
) -> str | None:
    assert process.stdout is not None
    pump = _OutputPump(process.stdout, log, on_line)
    reader = asyncio.ensure_future(pump.run())
    try:
        stop_reason = await _wait_exit_or_stop(process, cancel, deadline, reader)
        # Also after a normal exit: what the command left running dies with the job.
        await _stop_group(process, grace_s)
        await pump.drain(reader)
    finally:
        if not reader.done():  # a pipe held open by a process that left the group
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    if not reader.cancelled():
        reader.result()  # the output callback's error, if any
    return stop_reason


async def _wait_exit_or_stop(
    process: Child, cancel: anyio.Event, deadline: float | None,
    reader: asyncio.Future[None],
) -> str | None:
    """None once the process exits by itself; "canceled" or "timeout" if we must stop it.
    Raises what the output reader raised, without waiting for the process."""
    loop = asyncio.get_running_loop()
    exited = asyncio.ensure_future(process.wait())  # the shield inside keeps the exit
    canceled = asyncio.ensure_future(cancel.wait())
    try:
        while True:
            waits = {exited, canceled} if reader.done() else {exited, canceled, reader}
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            done, _ = await asyncio.wait(waits, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if process.returncode is not None:
                return None
            if canceled.done():
                return "canceled"
            if reader.done() and reader.exception() is not None:
                reader.result()  # raises it
            if not done:
                return "timeout"
    finally:
        for waiter in (exited, canceled):
            waiter.cancel()


class _OutputPump:
    """Reads the pipe to its end, feeding the log and ``on_line``.

    Once the group is gone the pipe normally ends at once; only a process that escaped
    the group (setsid) can hold it open, so from then on a read idle for ``_DRAIN_S``
    ends the pump (and the whole drain lasts at most ``_DRAIN_MAX_S``). A slow
    ``on_line`` is never cut short by that: only reads time out.
    """

    def __init__(self, stream: asyncio.StreamReader, log: _LazyLog, on_line: OnLine) -> None:
        self._stream, self._log, self._on_line = stream, log, on_line
        self._reading_since: float | None = None  # loop time a pending read began

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        splitter = LineSplitter()
        while True:
            self._reading_since = loop.time()
            chunk = await self._stream.read(2**16)
            self._reading_since = None
            if not chunk:
                break
            await self._emit(splitter.feed(chunk))
        await self._emit(splitter.flush())

    async def drain(self, reader: asyncio.Future[None]) -> None:
        """Until ``reader`` (running :meth:`run`) ends, or a read stays idle too long."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + _DRAIN_MAX_S
        while not reader.done():
            since = self._reading_since
            idle_end = (since if since is not None else loop.time()) + _DRAIN_S
            now = loop.time()
            if now >= give_up or (since is not None and now >= idle_end):
                return  # the caller cancels the reader
            await asyncio.wait([reader], timeout=min(idle_end, give_up) - now)

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


async def _stop_group(process: Child, grace_s: float) -> None:
    """SIGTERM the job's process group; SIGKILL whatever is left after ``grace_s``."""
    if process.returncode is not None and not _group_alive(process.pid):
        return  # the usual end: the command exited and left nothing running
    _signal_group(process, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_wait_group_gone(process), grace_s)
    await _kill_group(process)


async def _kill_group(process: Child) -> None:
    _signal_group(process, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_wait_group_gone(process), _KILL_WAIT_S)
    await process.wait()  # SIGKILL cannot be ignored: the leader ends and is reaped


async def _wait_group_gone(process: Child) -> None:
    await process.wait()
    # Polled: other members are not our children, so nothing signals their exit.
    while _group_alive(process.pid):  # noqa: ASYNC110
        await asyncio.sleep(_POLL_S)


def _signal_group(process: Child, sig: int) -> None:
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


def _outcome(process: Child, stop_reason: str | None, started_at: float) -> ProcessOutcome:
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
    root: Path | None = None  # resolved only if there is a file: most jobs upload none
    found: list[tuple[str, Path]] = []
    for dirpath, _dirnames, filenames in os.walk(uploads, followlinks=False):
        for name in filenames:
            path = Path(dirpath, name)
            root = root or workdir.resolve()
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
