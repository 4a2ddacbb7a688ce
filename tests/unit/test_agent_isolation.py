"""Jobs' identity (``openweights.isolation``) and what a job is given, on real processes:
a fresh user per run where we are root, one organization where jobs cannot be isolated,
and commands that cannot be spawned failing their run instead of raising."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from openweights.config import Settings
from openweights.isolation import (
    IsolationUnavailable,
    JobRefused,
    SharedUser,
    UidRange,
    UserPerRun,
    choose,
    describe,
)
from openweights.procs import pid_alive
from openweights.services.agent.job_io import (
    JobEnvironmentRefused,
    check_env,
    collect_uploads,
    job_base_env,
)
from openweights.services.agent.process import run_job_process
from openweights.services.agent.warm_shell import WarmShell
from openweights.services.agent.workspace import Workspaces

pytestmark = pytest.mark.anyio
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="a user per run needs root")


class Lines:
    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def __call__(self, line: bytes) -> None:
        self.lines.append(line)

    def field(self, name: str) -> str:
        prefix = f"{name}=".encode()
        return next(ln for ln in self.lines if ln.startswith(prefix))[len(prefix):].decode()


async def run(command: str, cwd: Path, **kwargs: object) -> tuple[object, Lines]:
    out = Lines()
    kwargs.setdefault("env", {"PATH": os.defpath})
    with anyio.fail_after(20):
        outcome = await run_job_process(command, cwd=cwd, on_line=out,
                                        log_path=cwd.parent / f"{cwd.name}.log",
                                        cancel=anyio.Event(), grace_s=2, **kwargs)  # type: ignore[arg-type]
    return outcome, out


# -- what a job is given -----------------------------------------------------------------
def test_a_job_inherits_basics_only_and_reaches_the_api_without_credentials() -> None:
    settings = Settings(home=Path("/srv/ow"), namespace="ns1", default_org="acme",
                        nats_url="nats://svc:s3cret@10.0.0.1:4222", secret_key="key",
                        database_url="postgresql://x")
    environ = {"PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "CUDA_VISIBLE_DEVICES": "0",
               "OW_HOME": "/srv/ow", "OW_SECRET_KEY": "key", "OPENWEIGHTS_API_KEY": "admin",
               "AWS_SECRET_ACCESS_KEY": "aws", "HOME": "/root", "HTTPS_PROXY": "http://p:3128"}
    env = job_base_env(environ, settings, api_key="ow_worker")
    assert env == {"PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C",
                   "CUDA_VISIBLE_DEVICES": "0", "HTTPS_PROXY": "http://p:3128",
                   "OW_NATS_URL": "nats://10.0.0.1:4222", "OW_NAMESPACE": "ns1",
                   "OW_DEFAULT_ORG": "acme", "OW_REQUEST_TIMEOUT_S": "10.0",
                   "OPENWEIGHTS_API_KEY": "ow_worker"}


@pytest.mark.parametrize(("env", "says"), [
    ({"A": "x" * (128 * 1024)}, "'A' is 131074 bytes; Linux passes at most 131071"),
    ({"A": "nul\0inside"}, "'A' cannot be passed"),
    ({"A=B": "x"}, "'A=B' cannot be passed"),
    ({f"V{i}": "x" * 100_000 for i in range(40)}, "the job's environment is"),
])
def test_an_environment_no_process_can_be_given_is_refused_naming_why(
        env: dict[str, str], says: str) -> None:
    with pytest.raises(JobEnvironmentRefused) as refused:
        check_env(env)
    assert says in str(refused.value)
    assert "x" * 50 not in str(refused.value)  # names, never values


async def test_a_command_that_cannot_be_spawned_fails_its_run_instead_of_raising(
        tmp_path: Path) -> None:
    for env in ({"PATH": os.defpath, "BIG": "x" * (200 * 1024)}, {"BAD": "nul\0"}):
        outcome, _ = await run("echo never", tmp_path, env=env)
        assert (outcome.status, outcome.exit_code, outcome.pid) == ("failed", None, 0)  # type: ignore[attr-defined]
        assert outcome.reason.startswith("the job could not start: ")  # type: ignore[attr-defined]


def test_uploads_of_a_run_user_are_its_own_files_only(tmp_path: Path) -> None:
    (tmp_path / "uploads").mkdir()
    (tmp_path / "uploads" / "mine.txt").write_text("result")
    other = tmp_path / "agents-file"
    other.write_text("not the job's")
    if os.geteuid() == 0:
        os.chown(other, 12345, 12345)
    os.link(other, tmp_path / "uploads" / "linked.txt")  # a file of someone else's
    me = os.stat(tmp_path / "uploads" / "mine.txt").st_uid
    assert [r for r, _ in collect_uploads(tmp_path)] == ["linked.txt", "mine.txt"]
    if os.geteuid() == 0:
        assert [r for r, _ in collect_uploads(tmp_path, owner=me)] == ["mine.txt"]


# -- choosing --------------------------------------------------------------------------------
def test_the_strategy_follows_the_setting_and_says_why_jobs_are_not_isolated(
        tmp_path: Path) -> None:
    assert not choose(Settings(home=tmp_path, job_isolation="none")).isolated
    shared = choose(Settings(home=tmp_path, job_isolation="auto"), euid=1000)
    assert not shared.isolated and "runs as uid 1000, not as root" in shared.why_not
    assert "jobs are NOT isolated" in describe(shared) and shared.why_not in describe(shared)
    with pytest.raises(IsolationUnavailable, match="OW_JOB_ISOLATION=user, but"):
        choose(Settings(home=tmp_path, job_isolation="user"), euid=1000)
    with pytest.raises(IsolationUnavailable, match="none of auto, user, none"):
        choose(Settings(home=tmp_path, job_isolation="sometimes"))


def test_uids_are_handed_out_once_across_agents(tmp_path: Path) -> None:
    counter = tmp_path / "next-uid"
    one, two = UidRange(counter, 5000, 1000, block=4), UidRange(counter, 5000, 1000, block=4)
    taken = [one.take(), two.take(), one.take(), two.take(), one.take()]
    assert taken == [5000, 5004, 5001, 5005, 5002] and len(set(taken)) == len(taken)
    assert UidRange(counter, 5000, 1000, block=4).take() == 5008


# -- without isolation: one organization, the tree still dies ------------------------------
def test_without_isolation_the_first_organization_claims_the_stack(tmp_path: Path) -> None:
    shared = SharedUser(tmp_path, "not root")
    shared.admit("alpha")
    shared.admit("alpha")
    with pytest.raises(JobRefused) as refused:
        SharedUser(tmp_path, "not root").admit("beta")
    said = str(refused.value)
    assert "cannot isolate jobs (not root)" in said and "'alpha'" in said and "'beta'" in said


def test_without_isolation_what_a_job_orphaned_dies_at_its_end(tmp_path: Path) -> None:
    """In a process of its own that adopts orphans, as the agent does."""
    script = f"""
import anyio, os, sys
from pathlib import Path
from openweights.isolation import SharedUser, become_subreaper
from openweights.services.agent.process import run_job_process
assert become_subreaper()
iso, cwd = SharedUser(Path({str(tmp_path)!r}), "not root"), Path({str(tmp_path)!r})
async def main():
    lines = []
    env = {{"PATH": os.defpath, "OPENWEIGHTS_RUN_ID": "run-1"}}
    async def sweep():
        await iso.sweep(None, "run-1")
    await run_job_process("(setsid sleep 123 & echo $!)", cwd=cwd, env=env, on_line=lines.append,
                          log_path=cwd / "log", cancel=anyio.Event(), sweep=sweep)
    print(lines[0].decode())
anyio.run(main)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    assert not pid_alive(int(done.stdout.split()[-1]))


# -- as root: a fresh user per run -----------------------------------------------------------
@pytest.fixture
def per_run() -> Iterator[UserPerRun]:
    """Isolation with a jobs root others can pass (pytest's tmp_path cannot be)."""
    base = Path(tempfile.mkdtemp(prefix="ow-unit-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield UserPerRun.on_this_machine(Settings(home=base / "home", jobs_dir=base / "jobs"))
    finally:
        shutil.rmtree(base, ignore_errors=True)


@root_only
async def test_each_run_is_a_fresh_user_who_owns_only_its_directory(per_run: UserPerRun) -> None:
    spaces = Workspaces(per_run.jobs_root("w1"), per_run)
    first = await spaces.take()
    st = first.dir.stat()
    assert first.user is not None and (st.st_uid, st.st_mode & 0o777) == (first.user.uid, 0o700)
    assert first.log.stat().st_uid == 0 and first.log.stat().st_mode & 0o777 == 0o600
    secret = per_run.root / "secret"
    secret.write_text("the agent's")
    secret.chmod(0o600)
    command = (f"echo uid=$(id -u); cat {secret} || echo denied=yes; "
               f"ls {first.log.parent} || echo list=no")
    outcome, out = await run(command, first.dir, prefix=per_run.prefix(first.user))
    assert outcome.status == "completed"  # type: ignore[attr-defined]
    assert int(out.field("uid")) == first.user.uid
    assert out.field("denied") == "yes" and out.field("list") == "no"
    await spaces.give_back(first)  # untouched, but its user ran: a new one
    second = await spaces.take()
    assert second.user is not None and second.user.uid != first.user.uid
    assert second.dir.stat().st_uid == second.user.uid
    spaces.discard()


@root_only
async def test_what_a_run_left_anywhere_dies_at_its_end(per_run: UserPerRun) -> None:
    spaces = Workspaces(per_run.jobs_root("w2"), per_run)
    ws = await spaces.take()
    assert ws.user is not None
    env = {"PATH": os.defpath, "HOME": str(ws.dir)}
    shell = WarmShell.start(ws.dir, env, ws.user, per_run.prefix(ws.user))
    assert shell.fits(ws.dir, env, ws.user) and not shell.fits(ws.dir, env, None)

    async def sweep() -> None:
        await per_run.sweep(ws.user, "run-1")

    command = ("setsid sleep 123 & echo setsid=$!; (sleep 124 & echo orphan=$!) ; "
               "echo uid=$(id -u)")
    outcome, out = await run(command, ws.dir, env=env, shell=shell, sweep=sweep)
    assert outcome.status == "completed"  # type: ignore[attr-defined]
    assert int(out.field("uid")) == ws.user.uid
    for name in ("setsid", "orphan"):
        assert not pid_alive(int(out.field(name))), f"the {name} sleeper outlived its run"
    await spaces.give_back(ws)
    spaces.discard()
