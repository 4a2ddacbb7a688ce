"""`ow up`: the whole system on this machine, in one process tree.

Starts what is not given (``OW_NATS_URL``/``OW_DATABASE_URL`` select existing servers),
prepares streams and schema, runs every service as a child process, restarts whatever
dies (nats-server, Postgres or a service) with backoff (`supervisor.py`), and on Ctrl-C
stops everything in reverse order. Data lives under ``$OW_HOME`` (default
``~/.openweights``), so the next `ow up` resumes with it intact; nats-server listens on
the port the last `ow up` there used (``ports.json``) unless another program took it,
so long-lived clients find it again. One `ow up` per home: a second is refused and
touches nothing of the running one. Its own log is ``$OW_HOME/logs/up.log``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import anyio
import structlog
from rich.console import Console
from rich.table import Table

from openweights.adapters.embedded import (
    EmbeddedNats,
    EmbeddedPostgres,
    describe_exit,
    die_with_parent,
    free_port,
    port_free,
)
from openweights.adapters.nats.server_config import NatsAuthConfig
from openweights.bootstrap import ensure_database, ensure_local_admin_token, prepare
from openweights.cli.supervisor import Part, Supervisor
from openweights.config import Settings, settings_env
from openweights.errors import OpenWeightsError, StackUnavailable
from openweights.isolation import choose, describe, harden_home
from openweights.logs import configure_logging
from openweights.secretbox import load_or_create_key
from openweights.stack import clear_stack, read_stack, record_port, recorded_port, write_stack

log = structlog.get_logger("up")

SERVICES = ("projector", "api", "scheduler", "provisioner")
DATABASE = "openweights"


@dataclass
class Child:
    name: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self, home: str) -> None:
        logfile = open(os.path.join(home, "logs", f"{self.name}.log"), "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"openweights.services.{self.name}"], env=self.env,
            stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=die_with_parent)
        logfile.close()
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_status(self) -> str:
        code = self.proc.returncode if self.proc is not None else None
        return "exited" if code is None else describe_exit(code)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Stack:
    def __init__(self, settings: Settings, console: Console) -> None:
        self.settings, self.console = settings, console
        self.nats: EmbeddedNats | None = None
        self.pg: EmbeddedPostgres | None = None
        self.children: list[Child] = []
        self._lock: TextIO | None = None
        self.dashboard_url: str | None = None
        # `ow up --runpod-stub`: RunPod's stand-in, a process here, and its one key
        self.runpod_stub: subprocess.Popen[str] | None = None
        self.runpod_key: str | None = None

    def lock(self) -> None:
        """Hold ``$OW_HOME/up.lock`` for our lifetime: one `ow up` per home (a second
        nats-server on the same store would corrupt it). Raises :class:`StackUnavailable`
        naming the running one, before this `ow up` has touched anything of it."""
        home = self.settings.home
        home.mkdir(parents=True, exist_ok=True)
        lock = open(home / "up.lock", "a")  # noqa: SIM115 - held for our lifetime
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            running = read_stack(self.settings) or {}
            raise StackUnavailable(
                f"ow up is already running for {home} (pid {running.get('pid', '?')}) and "
                "keeps running: use it, stop it with Ctrl-C first, or set OW_HOME to "
                "another directory") from None
        self._lock = lock

    def start_servers(self) -> Settings:
        assert self._lock is not None, "lock() first"
        home = self.settings.home
        nats_url, database_url = self.settings.nats_url, self.settings.database_url
        update: dict[str, object] = {}
        if nats_url is None:
            # The embedded server runs auth callout: services use their own static user,
            # everyone else a token (the local admin token is created below).
            auth_file = home / "nats-auth.json"
            auth = NatsAuthConfig.load_or_create(auth_file)
            self.nats = EmbeddedNats(home / "nats", port=self.nats_port(), auth=auth).start()
            nats_url = self.nats.service_url
            update.update(auth=True, nats_auth_file=auth_file, client_nats_url=self.nats.url)
        if database_url is None:
            self.pg = EmbeddedPostgres(home / "postgres", private=home).start()
            anyio.run(ensure_database, self.pg.url, DATABASE)
            database_url = self.pg.database_url(DATABASE)
        if self.settings.secret_key is None:
            update["secret_key"] = load_or_create_key(home / "secret.key")
        if self.runpod_key is not None:
            update.update(backend="runpod", runpod_api_key=self.runpod_key)
        return self.settings.model_copy(update={"nats_url": nats_url,
                                                "database_url": database_url, **update})

    def nats_port(self) -> int:
        """The port of the last `ow up` on this home while it is free, else a new one
        (said: clients that remember the old port must be told the new one)."""
        last = recorded_port(self.settings, "nats")
        if last is not None and port_free(last):
            return last
        port = free_port()
        if last is not None:
            log.warning("stack.port_taken", server="nats-server", port=last, new_port=port)
            self.say(f"nats-server's port {last} (of the last `ow up` here) is taken by "
                     f"another program; using {port}: point clients that remember {last} "
                     "at it")
        record_port(self.settings, "nats", port)
        return port

    def start_services(self, settings: Settings) -> None:
        (settings.home / "logs").mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, **settings_env(settings))
        for name in SERVICES:
            child = Child(name, env)
            child.start(str(settings.home))
            self.children.append(child)
        port = settings.dashboard_port
        if not port_free(port):
            port = free_port()
            self.say(f"the dashboard's port {settings.dashboard_port} is taken by another "
                     f"program; it listens on {port} (OW_DASHBOARD_PORT chooses)")
        self.dashboard_url = f"http://{settings.dashboard_host}:{port}"
        dashboard = Child("dashboard", dashboard_env(settings, port))
        dashboard.start(str(settings.home))
        self.children.append(dashboard)

    def parts(self) -> list[Part]:
        """What the supervisor keeps alive: the servers first, then the services."""
        parts = []
        if (nats := self.nats) is not None:
            parts.append(Part("nats-server", nats.alive, nats.start, nats.exit_status,
                              lambda: f"pid {nats.pid}, same port {nats.port}"))
        if (pg := self.pg) is not None:
            parts.append(Part("postgres", pg.alive, pg.restart,
                              where=lambda: f"pid {pg.pid}, same socket"))
        return parts + [_service_part(child, str(self.settings.home))
                        for child in self.children]

    def supervise(self) -> None:
        """Keep every part alive (restarts with backoff), until SIGINT/SIGTERM/SIGHUP."""
        stopping = {"now": False}

        def on_signal(signum: int, frame: object) -> None:
            stopping["now"] = True

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, on_signal)
        supervisor = Supervisor(self.parts(), self.say)
        while not stopping["now"]:
            # Woken by a child's exit; Postgres (not our child) is looked at each second.
            signal.sigtimedwait([signal.SIGCHLD], supervisor.check())

    def say(self, text: str) -> None:
        with contextlib.suppress(OSError):  # the terminal may be gone
            self.console.print(f"{time.strftime('%H:%M:%S')} {text}", markup=False,
                               highlight=False, soft_wrap=True)

    def start_runpod_stub(self) -> None:
        """A RunPod stand-in on this machine (development, demos), in its own process (the
        library runs the services' code only as processes): its pods' containers are
        agent processes here. The provisioner's SDK finds it through RUNPOD_API_BASE_URL,
        which the services inherit."""
        self.runpod_key = f"stand-in-{secrets.token_hex(8)}"
        log = open(self.settings.home / "logs" / "runpod-stub.log", "a")  # noqa: SIM115
        self.runpod_stub = subprocess.Popen(
            [sys.executable, "-m", "openweights.services.testing.runpod_stub",
             "--root", str(self.settings.home / "runpod-stub"), "--key", self.runpod_key],
            stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
        assert self.runpod_stub.stdout is not None
        url = self.runpod_stub.stdout.readline().strip()  # its first line: where it listens
        if not url:
            raise StackUnavailable(
                "the RunPod stand-in did not start (exit status "
                f"{self.runpod_stub.wait()}); see {log.name}")
        os.environ["RUNPOD_API_BASE_URL"] = url
        self.say(f"RunPod is a stand-in at {url} (--runpod-stub): pods are agent processes "
                 "on this machine")

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        if self.runpod_stub is not None:  # after the provisioner, which terminates its pods
            self.runpod_stub.terminate()  # it stops its pods' processes, then exits
            try:
                self.runpod_stub.wait(30)
            except subprocess.TimeoutExpired:
                self.runpod_stub.kill()
                self.runpod_stub.wait()
        if self.pg is not None:
            self.pg.stop()
        if self.nats is not None:
            self.nats.stop()
        clear_stack(self.settings)  # only if it is ours

    def show(self, settings: Settings) -> None:
        table = Table(title="openweights is up", show_header=True)
        table.add_column("part")
        table.add_column("where")
        client_url = settings.client_nats_url or settings.nats_url
        table.add_row("nats-server", f"{client_url}" + (" (embedded, auth callout)"
                                                        if self.nats else ""))
        table.add_row("postgres", f"{settings.database_url}" + (" (embedded)" if self.pg else ""))
        table.add_row("data", str(settings.home))
        for child in self.children:
            pid = child.proc.pid if child.proc else "-"
            table.add_row(child.name, f"pid {pid}, log {settings.home / 'logs' / child.name}.log")
        self.console.print(table)
        if self.dashboard_url:
            token = settings.home / "admin.token"
            self.console.print(f"Dashboard: {self.dashboard_url} (sign in with a token"
                               + (f", e.g. the one in {token})" if settings.auth else ")"),
                               markup=False, highlight=False, soft_wrap=True)
        self.console.print("Stop with Ctrl-C. Try the quickstart: [bold]ow demo[/bold]")


# What the dashboard must not have: it acts only with its users' tokens (services' NATS
# credentials, the database, the secrets key, the file store's keys stay with the services).
_NOT_FOR_DASHBOARD = ("OW_NATS_URL", "OW_CLIENT_NATS_URL", "OW_DATABASE_URL", "OW_SECRET_KEY",
                      "OW_NATS_AUTH_FILE", "OW_S3_ACCESS_KEY", "OW_S3_SECRET_KEY",
                      "OW_SECRETS_DIR")


def dashboard_env(settings: Settings, port: int) -> dict[str, str]:
    """The dashboard's environment: the client URL token holders use, nothing more."""
    env = {k: v for k, v in os.environ.items() if k not in _NOT_FOR_DASHBOARD}
    env.update({k: v for k, v in settings_env(settings).items() if k not in _NOT_FOR_DASHBOARD})
    env["OW_NATS_URL"] = str(settings.client_nats_url or settings.nats_url)
    env["OW_DASHBOARD_PORT"] = str(port)
    return env


def _service_part(child: Child, home: str) -> Part:
    return Part(child.name, child.alive, lambda: child.start(home), child.exit_status,
                lambda: f"pid {child.proc.pid if child.proc else '-'}")


async def wait_ready(settings: Settings, token_file: str | None) -> None:
    """Return once the api service answers a client (and, with auth, admits its token)."""
    from openweights.sdk.client import AsyncOpenWeights
    from openweights.stack import resolve

    key = Path(token_file).read_text().strip() if token_file else None
    client_settings = resolve(settings).model_copy(
        update={"nats_url": settings.client_nats_url or settings.nats_url})
    with anyio.fail_after(120):
        while True:
            aow = AsyncOpenWeights(api_key=key, settings=client_settings, retry_for_s=5)
            try:
                await aow.jobs.list(limit=1)
                return
            except OpenWeightsError:
                await anyio.sleep(0.2)  # the services are still starting: ask again
            finally:
                with contextlib.suppress(Exception):
                    await aow.close()


def run_up(settings: Settings, console: Console, *, runpod_stub: bool = False) -> None:
    stack = Stack(settings, console)
    stack.lock()  # a refused `ow up` ends here, before the `finally` that stops a stack
    harden_home(settings.home)  # keys, tokens, the servers' data: the operator's alone
    (settings.home / "logs").mkdir(parents=True, exist_ok=True)
    up_log = open(settings.home / "logs" / "up.log", "a", buffering=1)  # noqa: SIM115
    configure_logging(json=True, file=up_log)
    try:
        if runpod_stub:
            stack.start_runpod_stub()
        full = stack.start_servers()
        # After Postgres's start: as root, pgserver opens the directories above its data
        # to everyone, which decides whether a job's user can run the agent's Python.
        console.print(describe(choose(full)), markup=False)  # what its agents' jobs may do
        applied = anyio.run(prepare, full)
        if applied:
            console.print(f"migrated: {', '.join(applied)}")
        token_file = anyio.run(ensure_local_admin_token, full) if full.auth else None
        write_stack(full, full.client_nats_url or full.nats_url or "",
                    full.database_url or "", token_file=token_file)
        stack.start_services(full)
        anyio.run(wait_ready, full, token_file)
        stack.show(full)
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
        stack.supervise()
    finally:
        stack.stop()  # first: printing may fail when the terminal is gone
        with contextlib.suppress(OSError):
            console.print("stopped; data kept in", str(settings.home))
