"""The pid helpers the agent, its GPU reclaim and the local backend share, on real
processes. Exits are waited for with ``waitid(WNOWAIT)``: the child stays a zombie."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from openweights.procs import group_alive, pid_alive, pid_exists

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process leading its own group, reaped at the end of the test."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def _until_zombie(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped


def test_a_running_process_and_its_group_are_alive(sleeper: subprocess.Popen[bytes]) -> None:
    assert pid_exists(sleeper.pid) and pid_alive(sleeper.pid)
    assert group_alive(sleeper.pid)
    assert pid_alive(os.getpid())


def test_a_zombie_exists_but_is_not_alive_and_keeps_no_group_alive(
        sleeper: subprocess.Popen[bytes]) -> None:
    _until_zombie(sleeper)
    assert pid_exists(sleeper.pid), "still in the namespace: ours to reap (or kill)"
    assert not pid_alive(sleeper.pid)
    assert not group_alive(sleeper.pid)


def test_a_reaped_process_neither_exists_nor_is_alive(
        sleeper: subprocess.Popen[bytes]) -> None:
    sleeper.kill()
    sleeper.wait()
    assert not pid_exists(sleeper.pid)
    assert not pid_alive(sleeper.pid)
    assert not group_alive(sleeper.pid)


def test_a_group_lives_while_a_member_does_after_its_leader_exited() -> None:
    # The leader starts a member in its group and exits; the member sleeps on.
    leader = subprocess.Popen(["/bin/sh", "-c", "sleep 60 & echo $!"], start_new_session=True,
                              stdout=subprocess.PIPE)
    assert leader.stdout is not None
    member = int(leader.stdout.readline())
    leader.wait()
    try:
        assert group_alive(leader.pid)
    finally:
        os.kill(member, signal.SIGKILL)
        leader.stdout.close()
