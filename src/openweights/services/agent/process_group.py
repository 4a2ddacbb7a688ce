"""Stopping a job's process group: SIGTERM, a grace period, then SIGKILL.

A job's command leads its own session and process group (the group id is the leader's
pid), so everything it started can be signalled at once, and is gone when these return.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Protocol

from openweights.procs import group_alive

__all__ = ["GroupLeader", "kill_group", "stop_group"]

# The kernel tears SIGKILLed processes down asynchronously; wait at most this long.
_KILL_WAIT_S = 2.0
_POLL_S = 0.02


class GroupLeader(Protocol):
    """The spawned shell: our child, and the leader of the job's process group."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> None:
        """Until the leader has exited and been reaped."""


async def stop_group(leader: GroupLeader, grace_s: float) -> None:
    """SIGTERM the job's process group; SIGKILL whatever is left after ``grace_s``."""
    if leader.returncode is not None and not group_alive(leader.pid):
        return  # the usual end: the command exited and left nothing running
    _signal_group(leader, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_wait_group_gone(leader), grace_s)
    await kill_group(leader)


async def kill_group(leader: GroupLeader) -> None:
    """SIGKILL the group; returns once its leader is reaped (and the rest gone, or
    ``_KILL_WAIT_S`` passed)."""
    _signal_group(leader, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_wait_group_gone(leader), _KILL_WAIT_S)
    await leader.wait()  # SIGKILL cannot be ignored: the leader ends and is reaped


async def _wait_group_gone(leader: GroupLeader) -> None:
    await leader.wait()
    # Polled: other members are not our children, so nothing signals their exit.
    while group_alive(leader.pid):  # noqa: ASYNC110
        await asyncio.sleep(_POLL_S)


def _signal_group(leader: GroupLeader, sig: int) -> None:
    # The group id is the leader's pid. Once the leader is reaped that pid can be reused
    # by an unrelated session leader, so only signal a group that still has members.
    if leader.returncode is not None and not group_alive(leader.pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader.pid, sig)
