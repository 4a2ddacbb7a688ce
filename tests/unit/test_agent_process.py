"""The agent's job process runner, on real tiny shell commands.

Tests wait on the output callback (an event per expected line), never on sleeps.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from openweights.services.agent.job_io import build_job_env, collect_uploads
from openweights.services.agent.output import LineSplitter, OnLine
from openweights.services.agent.process import ProcessOutcome, run_job_process
from openweights.services.agent.spawn import watch_children_with_pidfd
from openweights.services.agent.warm_shell import WarmShell

pytestmark = pytest.mark.anyio

WAIT_S = 10  # upper bound for anything a test waits on; never reached when green


class Output:
    """Collects lines and lets a test wait until ``n`` of them have arrived."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self._changed = anyio.Event()

    async def __call__(self, line: bytes) -> None:
        self.lines.append(line)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_lines(self, n: int) -> list[bytes]:
        with anyio.fail_after(WAIT_S):
            while len(self.lines) < n:
                await self._changed.wait()
        return self.lines


async def run(
    command: str, tmp_path: Path, on_line: OnLine | None = None,
    cancel: anyio.Event | None = None, **kwargs: Any,
) -> ProcessOutcome:
    kwargs.setdefault("env", dict(os.environ))
    with anyio.fail_after(WAIT_S):
        return await run_job_process(
            command, cwd=tmp_path, on_line=on_line or Output(),
            log_path=tmp_path / "job.log", cancel=cancel or anyio.Event(), **kwargs,
        )


def is_gone(pid: int) -> bool:
    """No such process, or only a zombie left for init to reap."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return True
    return stat_line[stat_line.rindex(b")") + 2 :].split()[0] in (b"Z", b"X")


# -- line splitting --------------------------------------------------------------------


def test_splitter_handles_all_terminators_across_chunks() -> None:
    splitter = LineSplitter()
    got = splitter.feed(b"a\nb\r\nc\rd\r") + splitter.feed(b"\ne\n\nf")
    assert got + splitter.flush() == [b"a", b"b", b"c", b"d", b"e", b"", b"f"]


def test_splitter_cuts_long_lines() -> None:
    splitter = LineSplitter(max_bytes=4)
    assert splitter.feed(b"abcdefghij") == [b"abcd", b"efgh"]
    assert splitter.feed(b"k\nxyzw\n") == [b"ijk", b"xyzw"]
    assert splitter.flush() == []


# -- running ---------------------------------------------------------------------------


async def test_lines_stream_before_the_process_exits(tmp_path: Path) -> None:
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    out, outcomes = Output(), []
    async with anyio.create_task_group() as tg:

        async def job() -> None:
            outcomes.append(await run(f"echo first; read x < {fifo}; echo second", tmp_path, out))

        tg.start_soon(job)
        assert await out.wait_lines(1) == [b"first"]
        assert outcomes == []  # still blocked on the FIFO
        await anyio.to_thread.run_sync(fifo.write_bytes, b"go\n")
    assert out.lines == [b"first", b"second"]
    assert outcomes[0].status == "completed"


async def test_exit_codes_map_to_status(tmp_path: Path) -> None:
    ok = await run("true", tmp_path)
    assert (ok.status, ok.reason, ok.exit_code) == ("completed", "exit 0", 0)
    bad = await run("exit 3", tmp_path)
    assert (bad.status, bad.reason, bad.exit_code) == ("failed", "exit 3", 3)
    killed = await run("kill -9 $$", tmp_path)
    assert (killed.status, killed.reason, killed.exit_code) == ("failed", "signal 9", None)
    assert ok.started_at <= ok.ended_at


async def test_on_start_gets_the_pid(tmp_path: Path) -> None:
    pids: list[int] = []
    outcome = await run("true", tmp_path, on_start=pids.append)
    assert pids == [outcome.pid]


async def test_cancel_kills_the_group_including_grandchildren(tmp_path: Path) -> None:
    out, cancel = Output(), anyio.Event()
    # The trailing echo keeps sh from exec'ing the inner sh: the sleeps are grandchildren.
    command = "sh -c 'sleep 1000 & echo $!; sleep 1000 & echo $!; wait'; echo unreachable"
    async with anyio.create_task_group() as tg:
        outcomes: list[ProcessOutcome] = []

        async def job() -> None:
            outcomes.append(await run(command, tmp_path, out, cancel, grace_s=5))

        tg.start_soon(job)
        pids = [int(line) for line in await out.wait_lines(2)]
        assert not any(is_gone(pid) for pid in pids)
        cancel.set()
    outcome = outcomes[0]
    assert (outcome.status, outcome.reason) == ("canceled", "canceled")
    assert all(is_gone(pid) for pid in [*pids, outcome.pid])
    assert b"unreachable" not in out.lines


async def test_term_ignoring_process_is_killed_after_the_grace(tmp_path: Path) -> None:
    out, cancel = Output(), anyio.Event()
    async with anyio.create_task_group() as tg:
        outcomes: list[ProcessOutcome] = []

        async def job() -> None:
            command = "trap '' TERM; sleep 1000 & echo $!; wait"
            outcomes.append(await run(command, tmp_path, out, cancel, grace_s=0.5))

        tg.start_soon(job)
        (sleeper,) = [int(line) for line in await out.wait_lines(1)]
        started = time.monotonic()
        cancel.set()
    assert time.monotonic() - started >= 0.5
    assert (outcomes[0].status, outcomes[0].reason, outcomes[0].exit_code) == (
        "canceled", "canceled", None,
    )
    assert is_gone(sleeper)


async def test_deadline_stops_with_timeout(tmp_path: Path) -> None:
    outcome = await run("sleep 1000", tmp_path, deadline=anyio.current_time() + 0.2, grace_s=1)
    assert (outcome.status, outcome.reason) == ("canceled", "timeout")


async def test_caller_cancellation_kills_the_group_and_propagates(tmp_path: Path) -> None:
    out, seen = Output(), []
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def job() -> None:
                try:
                    await run("sleep 1000 & echo $!; wait", tmp_path, out)
                except anyio.get_cancelled_exc_class():
                    seen.append("cancelled")
                    raise

            tg.start_soon(job)
            (sleeper,) = [int(line) for line in await out.wait_lines(1)]
            scope.cancel()
    assert seen == ["cancelled"]
    assert is_gone(sleeper)


async def test_leftover_background_processes_die_with_the_job(tmp_path: Path) -> None:
    out = Output()
    outcome = await run("sleep 1000 & echo $!", tmp_path, out, grace_s=1)
    assert outcome.status == "completed"
    assert is_gone(int(out.lines[0]))


async def test_a_process_that_left_the_group_cannot_hold_the_job_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("openweights.services.agent.output._DRAIN_S", 0.1)
    # setsid puts the sleeper in its own group, out of our reach, still holding the pipe;
    # the job ends only once the pid file shows the escape happened.
    command = "setsid sh -c 'echo $$ > pid; exec sleep 30' & until [ -s pid ]; do sleep 0.01; done"
    outcome = await run(command, tmp_path, grace_s=1)
    escaped = int((tmp_path / "pid").read_text())
    try:
        assert outcome.status == "completed"
        assert not is_gone(escaped)
    finally:
        os.kill(escaped, signal.SIGKILL)


async def test_log_file_holds_all_output_including_long_and_binary(tmp_path: Path) -> None:
    out = Output()
    command = (
        "echo one; echo two >&2; printf '\\377\\376abc\\n'; "
        "head -c 200000 /dev/zero | tr '\\0' x"
    )
    outcome = await run(command, tmp_path, out)
    assert outcome.status == "completed"
    assert out.lines[:3] == [b"one", b"two", b"\xff\xfeabc"]
    long_pieces = out.lines[3:]
    assert all(len(piece) <= 64 * 1024 for piece in long_pieces)
    assert b"".join(long_pieces) == b"x" * 200000
    assert (tmp_path / "job.log").read_bytes() == b"".join(line + b"\n" for line in out.lines)


async def test_an_output_callback_error_kills_the_group_and_propagates(tmp_path: Path) -> None:
    def broken(line: bytes) -> None:
        raise RuntimeError(f"cannot publish {line!r}")

    with pytest.raises(RuntimeError, match="cannot publish b'go'"):
        await run("echo $$ > pid; echo go; sleep 1000", tmp_path, broken)
    assert is_gone(int((tmp_path / "pid").read_text()))


async def test_sync_callbacks_are_accepted(tmp_path: Path) -> None:
    lines: list[bytes] = []
    await run("echo hi", tmp_path, lines.append)
    assert lines == [b"hi"]


# -- environment and uploads -----------------------------------------------------------


def test_job_env_layers_secrets_and_puts_python_first_on_path() -> None:
    env = build_job_env(
        {"PATH": "/usr/bin:/opt/venv/bin", "HOME": "/root", "HF_TOKEN": "agent"},
        run_id="run-1", n_gpus=2, secrets={"HF_TOKEN": "org", "OPENWEIGHTS_RUN_ID": "fake"},
        python_executable="/opt/venv/bin/python",
    )
    assert env["PATH"] == "/opt/venv/bin:/usr/bin"
    assert (env["HF_TOKEN"], env["HOME"], env["OPENWEIGHTS_RUN_ID"]) == ("org", "/root", "run-1")
    assert (env["N_GPUS"], env["PYTHONUNBUFFERED"]) == ("2", "1")
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"  # the job gets every GPU of the machine
    cpu = build_job_env({"PATH": "/usr/bin"}, run_id="r", n_gpus=0, secrets={})
    assert "CUDA_VISIBLE_DEVICES" not in cpu and cpu["N_GPUS"] == "0"


async def test_python_in_a_job_is_the_agents_python(tmp_path: Path) -> None:
    lines: list[bytes] = []
    env = build_job_env({"PATH": "/usr/bin:/bin"}, run_id="r", n_gpus=0, secrets={})
    await run_job_process(
        "command -v python", cwd=tmp_path, env=env, on_line=lines.append,
        log_path=tmp_path / "log", cancel=anyio.Event(),
    )
    assert lines == [os.path.join(os.path.dirname(sys.executable), "python").encode()]


def test_collect_uploads_walks_nested_dirs_and_skips_outside_links(tmp_path: Path) -> None:
    work, outside = tmp_path / "work", tmp_path / "secret.txt"
    outside.write_text("no")
    nested = work / "uploads" / "eval" / "deep"
    nested.mkdir(parents=True)
    (work / "uploads" / "b.txt").write_text("b")
    (nested / "a.json").write_text("{}")
    (work / "inside.txt").write_text("in")
    (work / "uploads" / "leak").symlink_to(outside)
    (work / "uploads" / "ok").symlink_to(work / "inside.txt")
    (work / "uploads" / "loop").symlink_to(work / "uploads", target_is_directory=True)
    got = collect_uploads(work)
    assert [rel for rel, _ in got] == ["b.txt", "eval/deep/a.json", "ok"]
    assert all(path.is_absolute() and path.is_file() for _, path in got)
    assert collect_uploads(tmp_path / "missing") == []


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12+ watches children with pidfds")
async def test_agents_on_311_watch_children_with_pidfds(tmp_path: Path) -> None:
    import asyncio

    previous = asyncio.get_child_watcher()
    try:
        watch_children_with_pidfd()
        assert isinstance(asyncio.get_child_watcher(), asyncio.PidfdChildWatcher)
        outcome = await run_job_process("exit 3", cwd=tmp_path, env=os.environ,
                                        on_line=lambda line: None, log_path=tmp_path / "log",
                                        cancel=anyio.Event())
    finally:  # the watcher is bound to this test's loop; later tests get their own
        asyncio.set_child_watcher(previous)
    assert (outcome.status, outcome.exit_code) == ("failed", 3)
    assert not (tmp_path / "log").exists()  # nothing printed: no log file


# -- the warm shell ----------------------------------------------------------------------


async def test_a_warm_shell_runs_the_job_as_sh_c_would(tmp_path: Path) -> None:
    """The job sees exactly its environment (added, changed and removed variables, any
    value), the shell's own variables are gone, stdin is empty, cwd is the workspace."""
    base = {**os.environ, "GONE": "1", "KEPT": "same", "CHANGED": "old"}
    env = {k: v for k, v in base.items() if k != "GONE"}
    env.update(CHANGED="it's \"new\" $HOME `x`\nsecond line", ADDED="a b")
    shell = WarmShell.start(tmp_path, base)
    assert shell.fits(tmp_path, env)
    out = Output()
    command = ('echo "${GONE-unset}|$KEPT|$ADDED|$0|$#"; echo "$CHANGED"; '
               'echo "${__ow_script-none}${__ow_how-none}${__ow_line-none}"; cat; pwd; exit 4')
    outcome = await run(command, tmp_path, out, env=env, shell=shell)
    assert (outcome.status, outcome.exit_code) == ("failed", 4)
    assert out.lines == [b"unset|same|a b|/bin/sh|0", b"it's \"new\" $HOME `x`",
                         b"second line", b"nonenonenone", str(tmp_path).encode()]


async def test_a_long_script_reaches_the_warm_shell_whole(tmp_path: Path) -> None:
    shell = WarmShell.start(tmp_path, os.environ)
    command = "\n".join(f"v{i}={i}" for i in range(400)) + '\necho "$v0 $v399"'
    assert len(command) > 512  # past the line-by-line limit: read through cat
    out = Output()
    outcome = await run(command, tmp_path, out, shell=shell)
    assert outcome.status == "completed" and out.lines == [b"0 399"]


async def test_a_warm_shell_fits_only_its_directory_and_nameable_variables(
        tmp_path: Path) -> None:
    shell = WarmShell.start(tmp_path, os.environ)
    try:
        assert shell.fits(tmp_path, {**os.environ, "OK_NAME": "x"})
        assert not shell.fits(tmp_path / "other", dict(os.environ))
        assert not shell.fits(tmp_path, {**os.environ, "not-a-name": "x"})
    finally:
        await shell.discard()


async def test_a_canceled_job_in_a_warm_shell_dies_with_its_group(tmp_path: Path) -> None:
    out, cancel = Output(), anyio.Event()
    shell = WarmShell.start(tmp_path, os.environ)
    async with anyio.create_task_group() as tg:
        outcomes: list[ProcessOutcome] = []

        async def job() -> None:
            outcomes.append(await run("sleep 1000 & echo $!; wait", tmp_path, out, cancel,
                                      shell=shell, grace_s=5))

        tg.start_soon(job)
        (sleeper,) = [int(line) for line in await out.wait_lines(1)]
        cancel.set()
    assert (outcomes[0].status, outcomes[0].reason) == ("canceled", "canceled")
    assert is_gone(sleeper) and is_gone(outcomes[0].pid)


async def test_a_discarded_warm_shell_is_gone(tmp_path: Path) -> None:
    shell = WarmShell.start(tmp_path, os.environ)
    pid = shell.pid
    assert not is_gone(pid)
    await shell.discard()
    assert is_gone(pid)
