"""Spawning a job's shell, and learning of its exit.

Two ways, both plain asyncio (uvloop spawns about four times slower on the agent's
machines): ``os.posix_spawn`` watched through a pidfd (:class:`SpawnedChild`, what the
warm shell uses), and asyncio's subprocess machinery (:class:`AsyncioChild`, for a
job spawned as it comes). Either shell leads its own session and process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio

from openweights.services.agent.process_group import kill_group

__all__ = ["AsyncioChild", "Child", "SpawnedChild", "posix_spawn_shell", "spawn",
           "watch_children_with_pidfd"]


def watch_children_with_pidfd() -> None:
    """On Python 3.11, let the running asyncio loop learn of child exits through pidfds.

    3.11's default watcher starts a thread per child to block in ``waitpid``: a thread
    start and join on every job, which costs more CPU than the spawn itself. 3.12+
    uses pidfds already; where the kernel has no ``pidfd_open`` the default stays.
    """
    if sys.version_info >= (3, 12):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)


class AsyncioChild:
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


class SpawnedChild:
    """A shell started with ``posix_spawn`` and watched through a pidfd and the loop's
    own readers: what asyncio's subprocess machinery does for :class:`AsyncioChild` (a
    Popen, three pipe transports, protocols, a child watcher), at a fraction of the CPU.
    The warm shell uses it; it cannot set a working directory, so the shell ``cd``s
    itself."""

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


Child = AsyncioChild | SpawnedChild


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def posix_spawn_shell(command: str, env: Mapping[str, str],
                      prefix: Sequence[str] = ()) -> SpawnedChild:
    """``/bin/sh -c command`` in its own session, stdin and stdout+stderr on pipes; under
    ``prefix`` (the run's identity: ``setpriv ... --``) if given. The environment goes
    to exec as such, never on a command line."""
    argv = [*prefix, "/bin/sh", "-c", command]
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.posix_spawn(argv[0], argv, env, setsid=True,
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
    return SpawnedChild(pid, in_w, out_r, asyncio.get_running_loop())


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self.exit: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exit.done():
            self.exit.set_result(None)


async def spawn(command: str, cwd: Path, env: Mapping[str, str],
                prefix: Sequence[str] = ()) -> AsyncioChild:
    """``/bin/sh -c command`` in ``cwd``, in its own session, under ``prefix`` if given
    (see :func:`posix_spawn_shell`); stdin is /dev/null, stdout and stderr one pipe."""
    loop = asyncio.get_running_loop()
    spawning = asyncio.ensure_future(loop.subprocess_exec(
        lambda: _Protocol(loop), *prefix, "/bin/sh", "-c", command, cwd=cwd, env=dict(env),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True))
    try:
        transport, protocol = await asyncio.shield(spawning)
    except asyncio.CancelledError:
        # Cancelled mid-spawn: the child may exist all the same, and must not leak.
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            transport, protocol = await spawning
            await kill_group(AsyncioChild(transport, protocol))
            transport.close()
        raise
    return AsyncioChild(transport, protocol)
