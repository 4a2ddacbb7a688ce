"""Running one job's command: spawn it, stream its output, stop it (see
:func:`run_job_process`).

The pieces live beside it: spawning (``spawn``), the warm shell (``warm_shell``), the
output pump (``output``), stopping the process group (``process_group``).

Invariant: when :func:`run_job_process` returns or raises, the command's whole process
group is gone (SIGTERM, then SIGKILL), its leader is reaped and the output reader has
finished, so a job never leaves anything running on the GPU behind it; with ``sweep``
(the run's isolation, ``openweights.isolation``), so is what left the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio

from openweights.services.agent.output import LazyLog, OnLine, OutputPump, call_back
from openweights.services.agent.process_group import kill_group, stop_group
from openweights.services.agent.spawn import Child, spawn
from openweights.services.agent.warm_shell import WarmShell

__all__ = ["OnStart", "ProcessOutcome", "Status", "Sweep", "run_job_process", "unstarted"]

OnStart = Callable[[int], Awaitable[None] | None]
Sweep = Callable[[], Awaitable[None]]  # kills what the run left anywhere; never raises
Status = Literal["completed", "failed", "canceled"]


@dataclass(frozen=True, slots=True)
class ProcessOutcome:
    """How a job's command ended.

    ``status`` is ``canceled`` whenever we stopped it (``reason`` "canceled" or
    "timeout"), else ``completed`` for exit 0 and ``failed`` otherwise (``reason``
    "exit 3", "signal 9"; "the job could not start: ..." when it never ran, with
    ``pid`` 0). ``exit_code`` is None when a signal ended the process (or none ran).
    Times are epoch seconds.
    """

    exit_code: int | None
    status: Status
    reason: str
    started_at: float
    ended_at: float
    pid: int


async def run_job_process(
    command: str, *, cwd: Path, env: Mapping[str, str], on_line: OnLine, log_path: Path,
    cancel: anyio.Event, deadline: float | None = None, grace_s: float = 10.0,
    on_start: OnStart | None = None, shell: WarmShell | None = None,
    prefix: Sequence[str] = (), sweep: Sweep | None = None,
) -> ProcessOutcome:
    """Run ``command`` with ``/bin/sh -c`` in ``cwd`` in its own session, until it exits;
    or in ``shell``, a :class:`WarmShell` started in ``cwd`` ahead of time (``env`` is
    then what the command must see: the shell exports the difference first). ``prefix``
    is what a shell spawned here starts under (the run's user); ``sweep`` runs once the
    group is gone, to kill what left it. A command that cannot be spawned (an
    environment exec refuses) is a failed outcome, not an error.

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
    with LazyLog(log_path) as log:
        process: Child
        started_at = time.time()
        try:
            process = (shell.run(command, env) if shell is not None
                       else await spawn(command, cwd, env, prefix))
        except (OSError, ValueError) as exc:  # E2BIG, a NUL in the environment...
            return unstarted(f"the command could not be spawned: {exc}")
        try:
            if on_start is not None:
                await call_back(on_start, process.pid)
            stop_reason = await _run_to_end(process, log, on_line, cancel, deadline, grace_s,
                                            sweep)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await kill_group(process)
                if sweep is not None:
                    await sweep()
            raise
        finally:
            process.close()  # the pipes; the shell is reaped by now
    return _outcome(process, stop_reason, started_at)


def unstarted(why: str) -> ProcessOutcome:
    """The outcome of a command that never ran, and ``why``."""
    now = time.time()
    return ProcessOutcome(exit_code=None, status="failed", reason=f"the job could not "
                          f"start: {why}", started_at=now, ended_at=now, pid=0)


async def _run_to_end(
    process: Child, log: LazyLog, on_line: OnLine,
    cancel: anyio.Event, deadline: float | None, grace_s: float, sweep: Sweep | None,
) -> str | None:
    assert process.stdout is not None
    pump = OutputPump(process.stdout, log, on_line)
    reader = asyncio.ensure_future(pump.run())
    try:
        stop_reason = await _wait_exit_or_stop(process, cancel, deadline, reader)
        # Also after a normal exit: what the command left running dies with the job.
        await stop_group(process, grace_s)
        if sweep is not None:  # and what left its group (before the pipe is drained:
            await sweep()  # such a process may hold it open)
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
