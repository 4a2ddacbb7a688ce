"""`ow up` as a user runs it: a real subprocess on its own OW_HOME (a fresh tmp dir) with
its own embedded nats-server and Postgres on free ports.

It keeps its servers alive (issue 13, finding 12): a killed nats-server or Postgres is
restarted with backoff, on the same port, the services ride through the outage, a
client that was connected before reconnects to the same address and a job submitted
afterwards completes; the next `ow up` on the home listens where the last one did. A
second `ow up` on the same home is refused and leaves the first one working (issue 21,
finding 1). Every wait reads `ow up`'s output or asks the stack, with a deadline.
"""

from __future__ import annotations

import grp
import json
import os
import queue
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest

from openweights import OpenWeights
from openweights.config import Settings

# Each test starts `ow up` (about 10 s here, several times that on a loaded 2-core box).
pytestmark = pytest.mark.timeout(240)
UP_S = 90.0  # `ow up` with migrations, on a loaded 2-core machine
# Short lifecycle intervals (like tests/lifecycle's fast_settings): a job is placed and
# an agent started within a second. An assignment published while its agent was still
# reconnecting to the restarted server is lost (core NATS); the start deadline requeues it.
FAST = {"OW_HEARTBEAT_S": "0.5", "OW_SCHEDULER_CHECK_S": "0.5",
        "OW_PROVISIONER_CHECK_S": "0.5", "OW_WORKER_LOST_S": "6",
        "OW_RUN_START_TIMEOUT_S": "10"}


class Up:
    """One `ow up` process; its output lines are read as they come."""

    def __init__(self, home: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OW_", "RUNPOD_")) and k != "OPENWEIGHTS_API_KEY"}
        env.update(FAST, OW_HOME=str(home), COLUMNS="200")
        self.home, self.env, self.output = home, env, []
        self.proc = subprocess.Popen([sys.executable, "-m", "openweights.cli.main", "up",
                                      *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, env=env)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        """The next output line that contains ``text``."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"`ow up` did not say {text!r} within {timeout} s; it "
                                     "said:\n" + "".join(self.output[-40:])) from None
            if line is None:
                raise AssertionError(f"`ow up` exited ({self.proc.wait()}) before it said "
                                     f"{text!r}:\n" + "".join(self.output[-40:]))
            self.output.append(line)
            if text in line:
                return line

    def started(self) -> Up:
        self.wait_for("openweights is up", UP_S)
        return self

    def stack(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.home / "stack.json").read_text())
        return data

    def nats_port(self) -> int:
        port = urlsplit(self.stack()["nats_url"]).port
        assert port is not None
        return port

    def children(self) -> dict[str, int]:
        """pid of nats-server and of each service, by name."""
        out = {}
        for child in psutil.Process(self.proc.pid).children():
            cmd = child.cmdline()
            if child.name() == "nats-server":
                out["nats-server"] = child.pid
            elif len(cmd) > 2 and cmd[1] == "-m" and cmd[2].startswith("openweights.services."):
                out[cmd[2].rpartition(".")[2]] = child.pid
        return out

    def services(self) -> dict[str, int]:
        return {k: v for k, v in self.children().items() if k != "nats-server"}

    def postmaster_pid(self) -> int:
        return int((self.home / "postgres" / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        if self.proc.poll() is None:
            # Its servers too: the next `ow up` (or a squatter) wants their port.
            children = psutil.Process(self.proc.pid).children(recursive=True)
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            psutil.wait_procs(children, timeout=30)


@pytest.fixture
def home() -> Iterator[Path]:
    # Not under pytest's basetemp: as root, pgserver runs Postgres as its own user, and
    # every other pytest run on the machine resets /tmp/pytest-of-root to 0700.
    path = Path(tempfile.mkdtemp(prefix="ow-test-up-"))
    yield path / "home"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def up(home: Path) -> Iterator[Up]:
    running = Up(home)
    try:
        yield running.started()
    finally:
        running.stop()


def client(home: Path) -> OpenWeights:
    """A client of the stack recorded in ``home`` (its local admin token)."""
    return OpenWeights(settings=Settings(home=home, nats_url=None, database_url=None,
                                         namespace="ow"), retry_for_s=30)


def run_job(ow: OpenWeights, n: int) -> None:
    job = ow.jobs.submit(id_prefix="uptest", script=f"echo job {n}", docker_image="dev",
                         params={"n": n})
    job.wait(timeout=60)
    assert job.status == "completed", job
    assert job.id in {j.id for j in ow.jobs.list(limit=50)}  # the read models have it


def test_a_killed_nats_server_is_restarted_on_its_port_and_everyone_reconnects(
        up: Up, home: Path) -> None:
    ow = client(home)
    try:
        run_job(ow, 1)
        before, services = up.stack(), up.services()
        port = up.nats_port()
        os.kill(up.children()["nats-server"], signal.SIGKILL)
        up.wait_for("nats-server was killed by SIGKILL")
        assert f"same port {port}" in up.wait_for("nats-server restarted")
        assert up.stack() == before
        run_job(ow, 2)  # the client of before the outage
        assert ow.transport.nc is not None and ow.transport.nc.connected_url.port == port
        assert up.services() == services, "the services rode through, none restarted"
    finally:
        ow.close()


def test_a_killed_postgres_is_restarted_and_the_services_ride_through(
        up: Up, home: Path) -> None:
    ow = client(home)
    try:
        run_job(ow, 1)
        before, services = up.stack(), up.services()
        os.kill(up.postmaster_pid(), signal.SIGKILL)
        up.wait_for("postgres exited")
        up.wait_for("postgres restarted")
        assert up.stack() == before
        run_job(ow, 2)
        assert up.services() == services, "the services rode through, none restarted"
        _assert_home_closed(home)  # pgserver opened it again at the restart: closed again
    finally:
        ow.close()


def _assert_home_closed(home: Path) -> None:
    """Only its owner may list OW_HOME; as root, Postgres's own user may pass it."""
    st = home.stat()
    if os.geteuid() == 0:
        assert (stat.S_IMODE(st.st_mode), grp.getgrgid(st.st_gid).gr_name) == (0o710,
                                                                             "pgserver")
    else:
        assert stat.S_IMODE(st.st_mode) == 0o700


def test_a_crashing_service_is_restarted_with_backoff(up: Up) -> None:
    os.kill(up.services()["projector"], signal.SIGKILL)
    assert "restarting it in 0.5s" in up.wait_for("projector was killed by SIGKILL")
    up.wait_for("projector restarted")
    os.kill(up.services()["projector"], signal.SIGKILL)  # again at once: a crash loop
    assert "restarting it in 1.0s" in up.wait_for("projector was killed by SIGKILL")
    up.wait_for("projector restarted")


@pytest.mark.timeout(420)  # three `ow up`s
def test_the_next_ow_up_listens_where_the_last_one_did_unless_the_port_is_taken(
        home: Path) -> None:
    first = Up(home).started()
    port = first.nats_port()
    first.stop()
    second = Up(home).started()
    try:
        assert second.nats_port() == port
    finally:
        second.stop()
    with socket.socket() as squatter:  # another program took the port meanwhile
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # over TIME_WAIT
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        third = Up(home)
        try:
            said = third.wait_for(f"port {port}", UP_S)
            third.started()
            new = third.nats_port()
            assert new != port and "is taken" in said and str(new) in said
        finally:
            third.stop()
    assert json.loads((home / "ports.json").read_text())["nats"] == new


def test_a_second_ow_up_on_the_same_home_is_refused_and_leaves_the_first_working(
        up: Up, home: Path) -> None:
    before, children = up.stack(), up.children()
    second = subprocess.run([sys.executable, "-m", "openweights.cli.main", "up"],
                            env=up.env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 2, second
    assert up.stack() == before  # stack.json of the running one is intact
    assert "already running" in second.stderr and str(up.proc.pid) in second.stderr
    assert "stopped" not in second.stdout  # it stopped nothing
    assert up.children() == children
    ow = client(home)  # a new client finds the running stack through stack.json
    try:
        run_job(ow, 1)
    finally:
        ow.close()


def test_ow_up_with_the_runpod_stub_runs_jobs_on_pods_and_stops_them(home: Path) -> None:
    """`ow up --runpod-stub`: the provisioner runs on the RunPod backend against a
    stand-in that `ow up` runs as its own process; a job runs on a pod (its container an
    agent process here), and stopping `ow up` leaves no stand-in or pod behind."""
    up = Up(home, "--runpod-stub")
    try:
        url = up.wait_for("RunPod is a stand-in at", UP_S).split(" at ")[1].split()[0]
        up.started()
        stand_in = [c for c in psutil.Process(up.proc.pid).children()
                    if "openweights.services.testing.runpod_stub" in c.cmdline()]
        assert len(stand_in) == 1, up.output
        ow = client(home)
        try:
            run_job(ow, 1)
            pods = [w for w in ow.workers.list(ended=True) if w["backend"] == "runpod"]
            assert pods and pods[0]["gpu_type"], ow.workers.list(ended=True)
        finally:
            ow.close()
        descendants = psutil.Process(stand_in[0].pid).children(recursive=True)
        assert descendants, "the job's pod is an agent process under the stand-in"
    finally:
        up.stop()
    assert not stand_in[0].is_running() and not any(p.is_running() for p in descendants)
    assert url.startswith("http://127.0.0.1:")
