"""The whole stack as separate processes that a test or bench can kill and restart.

The same children `ow up` runs (``python -m openweights.services.<name>``), plus the embedded
nats-server and Postgres, which restart on their own data (and nats on its own port),
so clients and services reconnect to the same addresses.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import anyio

from openweights.adapters.embedded import EmbeddedNats, EmbeddedPostgres
from openweights.bootstrap import ensure_database, prepare
from openweights.config import Settings, settings_env
from openweights.services.testing.stack import ALL_SERVICES

DATABASE = "openweights"


class ProcessStack:
    def __init__(self, home: Path, services: tuple[str, ...] = ALL_SERVICES,
                 **overrides: Any) -> None:
        from openweights.cli.up import Child

        self.home = home
        self.overrides = overrides
        self.nats = EmbeddedNats(home / "nats")
        self.pg = EmbeddedPostgres(home / "postgres")
        self.children: dict[str, Child] = {}
        self.service_names = services
        self.settings: Settings
        self._supervising = False
        self._held: set[str] = set()

    def start(self) -> Settings:
        from openweights.cli.up import Child

        self.nats.start()
        self.pg.start()
        anyio.run(ensure_database, self.pg.url, DATABASE)
        self.settings = Settings(home=self.home, nats_url=self.nats.url,
                                 database_url=self.pg.database_url(DATABASE), **self.overrides)
        anyio.run(prepare, self.settings)
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **settings_env(self.settings)}
        for name in self.service_names:
            child = Child(name, env)
            child.start(str(self.home))
            self.children[name] = child
        return self.settings

    def supervise(self) -> None:
        """Restart services that exit on their own, as `ow up` does (a daemon thread)."""
        import threading

        self._supervising = True

        def loop() -> None:
            import time

            while self._supervising:
                for name, child in list(self.children.items()):
                    if child.proc is not None and child.proc.poll() is not None and (
                            name not in self._held):
                        child.restarts += 1
                        child.start(str(self.home))
                time.sleep(0.2)  # a supervisor's polling period

        threading.Thread(target=loop, name="ow-supervisor", daemon=True).start()

    def kill(self, name: str) -> None:
        """SIGKILL a service: what a crash looks like."""
        proc = self.children[name].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def restart(self, name: str) -> None:
        self._held.add(name)  # the supervisor must not start a second copy meanwhile
        try:
            self.kill(name)
            self.children[name].start(str(self.home))
        finally:
            self._held.discard(name)

    def alive(self, name: str) -> bool:
        proc = self.children[name].proc
        return proc is not None and proc.poll() is None

    def stop_nats(self) -> None:
        self.nats.stop()

    def start_nats(self) -> None:
        self.nats.start()  # same data directory, same port

    def stop_postgres(self) -> None:
        self.pg.stop()

    def start_postgres(self) -> None:
        self.pg.start()

    def stop(self) -> None:
        self._supervising = False
        for child in reversed(list(self.children.values())):
            child.stop()
        self.pg.stop()
        self.nats.stop()
