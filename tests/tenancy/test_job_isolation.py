"""A job of org B tries everything a process can try on the local backend (issue 13,
finding 1): the real services, the local provisioner's agents, real jobs.

Org A's job runs (its secret and a marker in its in-progress log and its directory) while
org B's job tries to read the stack's key files, A's directory and log, other processes'
environments, to signal A's job, to find the services' credentials in its own
environment, and leaves a ``setsid`` sleeper and a double-forked orphan behind. As a
fresh unprivileged user per run (``OW_JOB_ISOLATION=user``; the agents run as root)
every attempt fails and the sleepers die with the job. Where jobs cannot be isolated
(``OW_JOB_ISOLATION=none``) the second organization's job is refused, saying why.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest

from openweights import OpenWeights
from openweights.adapters.embedded import EmbeddedNats
from openweights.adapters.nats.reader import StoredMessage, read_stream
from openweights.adapters.nats.server_config import NatsAuthConfig
from openweights.events import JobFailed, decode
from openweights.procs import pid_alive
from openweights.services.testing.stack import services_thread
from openweights.stack import write_stack
from tests.tenancy.conftest import A, B, World, open_world, retry

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(os.geteuid() != 0, reason="a user per run needs root")]

ALPHA_JOB = """echo "alpha private $ALPHA_TOKEN" > alpha-file.txt
echo "ALPHA dir=$PWD pid=$$ agent=$PPID secret=$ALPHA_TOKEN"
exec sleep 600
"""


@contextmanager
def stack_with_agents(auth_nats: EmbeddedNats, postgres_url: str,
                      isolation: str) -> Iterator[tuple[World, Path]]:
    """A two-org world whose ``OW_HOME`` others could enter (like a home under /home),
    holding what `ow up` keeps there, with the scheduler and the local provisioner."""
    base = Path(tempfile.mkdtemp(prefix="ow-isolation-", dir="/tmp"))
    base.chmod(0o755)
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, base, ignore_errors=True)
        world = stack.enter_context(open_world(auth_nats, postgres_url, base))
        home = world.settings.home
        _keep_like_ow_up(world, home)
        fast = world.settings.model_copy(update={
            "heartbeat_s": 0.5, "scheduler_check_s": 0.5, "provisioner_check_s": 0.5,
            "cancel_grace_s": 2.0, "job_isolation": isolation, "jobs_dir": base / "jobs"})
        stack.enter_context(services_thread(fast, ("scheduler", "provisioner")))
        yield world, base


def _keep_like_ow_up(world: World, home: Path) -> None:
    """The files `ow up` keeps under OW_HOME: keys and tokens 0600, stack.json as it is."""
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)
    assert world.settings.nats_auth_file is not None and world.settings.secret_key
    for name, text in (("nats-auth.json", world.settings.nats_auth_file.read_text()),
                       ("secret.key", world.settings.secret_key),
                       ("admin.token", world.tokens["a_admin"])):
        (home / name).write_text(text)
        (home / name).chmod(0o600)
    write_stack(world.settings, world.server.url, str(world.settings.database_url),
                token_file=str(home / "admin.token"))


def _first_line(ow: OpenWeights, job_id: str, prefix: str) -> str:
    """The job's first output line starting with ``prefix``, as it is printed."""
    run = retry(lambda: ow.runs.list(job_id=job_id)[-1], "the job's run")
    for chunk in ow.runs.follow_logs(run.id):
        for line in chunk.splitlines():
            if line.startswith(prefix):
                return line
    raise AssertionError(f"the run ended without printing {prefix!r}")


def _fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)


def _attacker(home: Path, alpha: dict[str, str], alpha_log: Path, jobs_root: Path) -> str:
    """Org B's job: one line per attempt, READ/DENIED (and so on), then its environment."""
    targets = [home / "nats-auth.json", home / "secret.key", home / "admin.token",
               home / "stack.json", Path(alpha["dir"]) / "alpha-file.txt", alpha_log,
               Path(f"/proc/{alpha['pid']}/environ"), Path(f"/proc/{alpha['agent']}/environ"),
               Path(f"/proc/{os.getpid()}/environ")]
    reads = "\n".join(f"try_read '{t}'" for t in targets)
    lists = "\n".join(f"try_list '{d}'" for d in (home, jobs_root, alpha["dir"],
                                                   home / "logs" / "agents"))
    return f"""try_read() {{
  if cat -- "$1" >/dev/null 2>&1; then echo "READ $1"; else echo "DENIED $1"; fi; }}
try_list() {{
  if ls -- "$1" >/dev/null 2>&1; then echo "LISTED $1"; else echo "DENIED $1"; fi; }}
try_write() {{
  if echo beta 2>/dev/null > "$1"; then echo "WROTE $1"; else echo "DENIED $1"; fi; }}
{reads}
{lists}
try_write '{alpha["dir"]}/beta-was-here'
try_write '{home}/beta-was-here'
if kill -0 {alpha["pid"]} 2>/dev/null; then echo "SIGNALED alpha"; else echo "DENIED signal"; fi
setsid sh -c 'echo $$ > sleeper.pid; exec sleep 123' &
( sh -c 'echo $$ > orphan.pid; exec sleep 124' & )
while [ ! -s sleeper.pid ] || [ ! -s orphan.pid ]; do :; done
echo "LEFT sleeper=$(cat sleeper.pid) orphan=$(cat orphan.pid)"
echo "WHO uid=$(id -u) home=$HOME pwd=$PWD"
env | sed 's/^/ENV /'
"""


def _job_events(world: World, org: str, job_id: str) -> list[Any]:
    async def read() -> list[Any]:
        nc = await nats.connect(str(world.settings.nats_url), allow_reconnect=False)
        events: list[Any] = []

        async def on_batch(batch: list[StoredMessage]) -> None:
            for m in batch:
                events.extend(decode(m.data))
        try:
            await read_stream(nc, nc.jetstream(), world.subjects.events_stream, on_batch,
                              filter_subjects=[world.subjects.job(org, job_id)])
        finally:
            await nc.close()
        return events
    return anyio.run(read)


def test_a_job_of_org_b_can_touch_nothing_of_the_stack_or_of_org_a(
        auth_nats: EmbeddedNats, postgres_url: str) -> None:
    with stack_with_agents(auth_nats, postgres_url, "user") as (world, _):
        a, b = world.ow("a_admin"), world.ow("b_admin")
        alpha_token, beta_token = f"alpha-{uuid.uuid4().hex}", f"beta-{uuid.uuid4().hex}"
        a.secrets.set(ALPHA_TOKEN=alpha_token)
        b.secrets.set(BETA_TOKEN=beta_token)
        alpha_job = a.jobs.submit(id_prefix="alpha", script=ALPHA_JOB, docker_image="dev")
        alpha = _fields(_first_line(a, alpha_job.id, "ALPHA "))
        assert alpha["secret"] == alpha_token  # A's job has A's secret
        worker_root = Path(alpha["dir"]).parent  # A's agent's: its runs' dirs and logs
        jobs_root = worker_root.parent
        (alpha_log,) = [p for p in worker_root.glob("job-*.log")
                        if p.stat().st_size > 0]  # its in-progress output
        assert alpha_token.encode() in alpha_log.read_bytes()
        home = world.settings.home

        beta_job = b.jobs.submit(id_prefix="beta", docker_image="dev",
                                 script=_attacker(home, alpha, alpha_log, jobs_root))
        assert beta_job.wait(timeout=120).status == "completed"
        log = b.runs.list(job_id=beta_job.id)[-1].logs()
        lines = log.splitlines()
        assert not [ln for ln in lines if ln.startswith(("READ", "LISTED", "WROTE",
                                                         "SIGNALED"))], log
        assert len([ln for ln in lines if ln.startswith("DENIED")]) == 16, log

        left = _fields(next(ln for ln in lines if ln.startswith("LEFT ")))
        for pid in left.values():  # its end has been reported: they are gone by then
            assert not pid_alive(int(pid)), f"pid {pid} outlived its job"
        who = _fields(next(ln for ln in lines if ln.startswith("WHO ")))
        assert int(who["uid"]) >= 1000 and who["home"] == who["pwd"] != str(home)

        env = dict(ln.removeprefix("ENV ").split("=", 1) for ln in lines
                   if ln.startswith("ENV ") and "=" in ln)
        _assert_only_its_own(env, world, alpha_token, beta_token)
        assert stat.S_IMODE(home.stat().st_mode) == 0o700  # the agent hardened it
        assert alpha_token.encode() not in log.encode()

        a.jobs.cancel(alpha_job.id)
        assert a.jobs.retrieve(alpha_job.id).wait(timeout=60).status == "canceled"
        assert not pid_alive(int(alpha["pid"]))


def _assert_only_its_own(env: dict[str, str], world: World, alpha_token: str,
                         beta_token: str) -> None:
    """B's job holds its org's secret, its run's ids, its worker's token and the client
    URL; nothing of the stack's or of A's."""
    assert env["BETA_TOKEN"] == beta_token and env["OPENWEIGHTS_RUN_ID"]
    assert "ALPHA_TOKEN" not in env
    for name in ("OW_HOME", "OW_DATABASE_URL", "OW_SECRET_KEY", "OW_NATS_AUTH_FILE",
                 "OW_CLIENT_NATS_URL", "OW_AUTH"):
        assert name not in env, name
    assert env["OW_NATS_URL"] == world.server.url
    auth = NatsAuthConfig.load_or_create(Path(str(world.settings.nats_auth_file)))
    forbidden = [alpha_token, str(world.settings.secret_key), world.tokens["a_admin"],
                 world.tokens["b_admin"], *(auth.password(u) for u in ("svc", "sys", "auth"))]
    for value in env.values():
        assert not any(secret in value for secret in forbidden)


def test_without_isolation_a_second_organization_is_refused_saying_why(
        auth_nats: EmbeddedNats, postgres_url: str) -> None:
    with stack_with_agents(auth_nats, postgres_url, "none") as (world, _):
        a, b = world.ow("a_admin"), world.ow("b_admin")
        first = a.jobs.submit(id_prefix="alpha", script="echo alpha ran", docker_image="dev")
        assert first.wait(timeout=120).status == "completed"
        refused = b.jobs.submit(id_prefix="beta", script="echo beta ran", docker_image="dev")
        assert refused.wait(timeout=120).status == "failed"
        log = b.runs.list(job_id=refused.id)[-1].logs()
        assert "beta ran" not in log
        assert "cannot isolate jobs (OW_JOB_ISOLATION=none)" in log
        assert f"one organization only, {A!r}" in log and repr(B) in log
        (failed,) = [e for e in _job_events(world, B, refused.id) if isinstance(e, JobFailed)]
        assert "cannot isolate jobs" in (failed.error or "")
        again = a.jobs.submit(id_prefix="alpha", script="echo alpha again", docker_image="dev")
        assert again.wait(timeout=60).status == "completed"
