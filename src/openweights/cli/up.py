"""`ow up`: the whole system on this machine, in one process tree.

Starts what is not given (``OW_NATS_URL``/``OW_DATABASE_URL`` select existing servers),
prepares streams and schema, runs every service as a child process, restarts a child
that dies, and on Ctrl-C stops everything in reverse order. Data lives under
``$OW_HOME`` (default ``~/.openweights``), so the next `ow up` resumes with it intact.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import anyio
import structlog
from rich.console import Console
from rich.table import Table

from openweights.adapters.embedded import EmbeddedNats, EmbeddedPostgres, die_with_parent
from openweights.bootstrap import ensure_database, prepare
from openweights.config import Settings, settings_env
from openweights.errors import StackUnavailable
from openweights.stack import clear_stack, read_stack, write_stack

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
            [sys.executable, "-m", f"services.{self.name}"], env=self.env,
            stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=die_with_parent)
        logfile.close()
        self.started_at = time.monotonic()

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

    def start_servers(self) -> Settings:
        home = self.settings.home
        home.mkdir(parents=True, exist_ok=True)
        # One `ow up` per home: a second nats-server on the same store would corrupt it.
        self._lock = open(home / "up.lock", "w")  # noqa: SIM115 - held for our lifetime
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            running = read_stack(self.settings) or {}
            raise StackUnavailable(
                f"ow up is already running for {home} (pid {running.get('pid', '?')}); "
                "stop it with Ctrl-C first, or use another OW_HOME") from None
        nats_url, database_url = self.settings.nats_url, self.settings.database_url
        if nats_url is None:
            self.nats = EmbeddedNats(home / "nats").start()
            nats_url = self.nats.url
        if database_url is None:
            self.pg = EmbeddedPostgres(home / "postgres").start()
            anyio.run(ensure_database, self.pg.url, DATABASE)
            database_url = self.pg.database_url(DATABASE)
        return self.settings.model_copy(update={"nats_url": nats_url,
                                                "database_url": database_url})

    def start_services(self, settings: Settings) -> None:
        (settings.home / "logs").mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, **settings_env(settings))
        for name in SERVICES:
            child = Child(name, env)
            child.start(str(settings.home))
            self.children.append(child)

    def supervise(self, stop: anyio.Event | None = None) -> None:
        """Restart children that exit, until SIGINT/SIGTERM."""
        stopping = {"now": False}

        def on_signal(signum: int, frame: object) -> None:
            stopping["now"] = True

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, on_signal)
        while not stopping["now"]:
            for child in self.children:
                if child.proc is not None and child.proc.poll() is not None:
                    log.warning("service.exited", service=child.name,
                                code=child.proc.returncode, restarts=child.restarts)
                    child.restarts += 1
                    child.start(str(self.settings.home))
            signal.sigtimedwait([signal.SIGCHLD], 1.0)  # woken by a child's exit

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        if self.pg is not None:
            self.pg.stop()
        if self.nats is not None:
            self.nats.stop()
        clear_stack(self.settings)

    def show(self, settings: Settings) -> None:
        table = Table(title="openweights is up", show_header=True)
        table.add_column("part")
        table.add_column("where")
        table.add_row("nats-server", f"{settings.nats_url}" + (" (embedded)" if self.nats else ""))
        table.add_row("postgres", f"{settings.database_url}" + (" (embedded)" if self.pg else ""))
        table.add_row("data", str(settings.home))
        for child in self.children:
            pid = child.proc.pid if child.proc else "-"
            table.add_row(child.name, f"pid {pid}, log {settings.home / 'logs' / child.name}.log")
        self.console.print(table)
        self.console.print("Stop with Ctrl-C. Try the quickstart: [bold]ow demo[/bold]")


def run_up(settings: Settings, console: Console) -> None:
    stack = Stack(settings, console)
    try:
        full = stack.start_servers()
        applied = anyio.run(prepare, full)
        if applied:
            console.print(f"migrated: {', '.join(applied)}")
        write_stack(full, full.nats_url or "", full.database_url or "")
        stack.start_services(full)
        stack.show(full)
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
        stack.supervise()
    finally:
        stack.stop()  # first: printing may fail when the terminal is gone
        with contextlib.suppress(OSError):
            console.print("stopped; data kept in", str(settings.home))
