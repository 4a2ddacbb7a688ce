"""compose.yaml's topology on this machine, without Docker (issue 19).

Three ``nats-server`` processes run deploy/nats/nats.conf verbatim on loopback (each
node's directory holds a copy of it and the generated ``nats_secrets.conf``, as compose
mounts them), with the auth callout on and the streams at 3 replicas; ``weed mini`` is
the S3 store with the generated identities; Postgres is pgserver (the operator's managed
Postgres). Every service gets the environment compose.yaml gives it, with the container
addresses swapped for loopback ones and the provisioner on the local backend: 2 api,
2 projectors, 2 schedulers, 1 provisioner. The one-shots run first, as in compose:
``python -m openweights.deploy bucket`` and ``init``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from openweights.adapters.embedded import EmbeddedPostgres, free_port, nats_server_binary
from openweights.bootstrap import create_organization, ensure_database
from openweights.config import Settings
from openweights.deploy.secrets import Topology, write

ROOT = Path(__file__).resolve().parents[4]  # the repository: compose.yaml, deploy/
NODES = ("nats-1", "nats-2", "nats-3")
INSTANCES = ("api-1", "api-2", "projector-1", "projector-2", "scheduler-1", "scheduler-2",
             "provisioner")
DATABASE = "openweights"


@dataclass
class Proc:
    """One child process, started again with the same argv, env and log."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    restarts: int = 0

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self, timeout: float = 15.0) -> None:
        self.signal(signal.SIGCONT)  # a paused process cannot exit
        self.signal(signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


def _weed_ports() -> dict[str, int]:
    """Free HTTP ports whose gRPC companions (+10000) are free too (weed dials them)."""
    rng, taken, out = random.Random(), set[int](), {}
    for part in ("master", "volume", "filer", "s3", "admin"):
        while True:
            port = rng.randrange(20_000, 55_000)
            pair = {port, port + 10_000}
            if not pair & taken and all(_bindable(p) for p in pair):
                taken |= pair
                out[part] = port
                break
    return out


def _bindable(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _expand(value: str, given: dict[str, str]) -> str:
    """compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``."""
    def one(m: re.Match[str]) -> str:
        name, op, rest = m.group(1), m.group(2) or "", m.group(3) or ""
        if name in given:
            return given[name]
        if op == ":-":
            return rest
        raise KeyError(f"compose.yaml needs {name}: {rest}")
    return re.sub(r"\$\{(\w+)(:-|:\?)?([^}]*)\}", one, value)


def _wait(check: Any, what: str, proc: Proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited: {proc.log.read_text()[-2000:]}")
        try:
            if check():
                return
        except Exception:
            pass  # not ready yet: poll again
        time.sleep(0.05)  # a poll interval while the server starts
    raise RuntimeError(f"{what} not ready in {timeout:.0f} s; see {proc.log}")


class ClusterStack:
    """The topology; ``settings`` are the services' (for the soak's checks)."""

    def __init__(self, home: Path, **overrides: Any) -> None:
        self.home, self.overrides = home, overrides
        self.secrets = home / "secrets"
        self.nodes: dict[str, Proc] = {}
        self.services: dict[str, Proc] = {}
        self.pg = EmbeddedPostgres(home / "postgres")
        self.client_url = ""
        self.token = ""
        self.settings: Settings
        self._supervising = False
        self._held: set[str] = set()

    def start(self) -> Settings:
        client, routes = [free_port() for _ in NODES], [free_port() for _ in NODES]
        write(self.secrets, Topology(nats_nodes=tuple(f"127.0.0.1:{p}" for p in client),
                                     nats_routes=tuple(f"127.0.0.1:{p}" for p in routes)))
        self.client_url = ",".join(f"nats://127.0.0.1:{p}" for p in client)
        self.pg.start()
        anyio.run(ensure_database, self.pg.url, DATABASE)
        (self.secrets / "ow_database_url").write_text(self.pg.database_url(DATABASE))
        for name, port, route in zip(NODES, client, routes, strict=True):
            self.nodes[name] = self._node(name, port, route)
            self.nodes[name].start()
        for name, node in self.nodes.items():
            http = node.env["NATS_HTTP"]
            _wait(lambda h=http: urllib.request.urlopen(f"http://{h}/healthz", timeout=1)
                  .status == 200, f"{name}'s JetStream", node)
        s3 = self._start_weed()
        self.settings = Settings(
            home=self.home / "ops", nats_url=(self.secrets / "ow_nats_url").read_text(),
            database_url=self.pg.database_url(DATABASE), stream_replicas=3, auth=True)
        for one_shot in ("bucket", "init"):
            subprocess.run([sys.executable, "-m", "openweights.deploy", one_shot],
                           env=self._env("init", s3), check=True, capture_output=True,
                           timeout=120)
        self.token = anyio.run(create_organization, self.settings, self.settings.default_org,
                               self.settings.default_org)["token"]
        for instance in INSTANCES:
            service = instance.split("-")[0]
            self.services[instance] = Proc(
                instance, [sys.executable, "-m", f"openweights.services.{service}"],
                self._env(service, s3, home=self.home / "svc" / instance),
                self.home / "logs" / f"{instance}.log")
            self.services[instance].start()
        anyio.run(self._wait_ready)
        return self.settings

    def client_settings(self) -> Settings:
        """What a token holder uses: every node's client URL."""
        return Settings(home=self.home / "client", nats_url=self.client_url)

    async def _wait_ready(self) -> None:
        """Until the api answers a token (its callout runs): as `ow up` waits."""
        from openweights.errors import OpenWeightsError
        from openweights.sdk.client import AsyncOpenWeights

        with anyio.fail_after(120):
            while True:
                aow = AsyncOpenWeights(api_key=self.token, settings=self.client_settings(),
                                       retry_for_s=5)
                try:
                    await aow.jobs.list(limit=1)
                    return
                except OpenWeightsError:
                    await anyio.sleep(0.2)  # the services are still starting: ask again
                finally:
                    await aow.close()

    def _node(self, name: str, port: int, route: int) -> Proc:
        conf_dir = self.home / name
        conf_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "deploy" / "nats" / "nats.conf", conf_dir / "nats.conf")
        shutil.copy(self.secrets / "nats_secrets.conf", conf_dir / "nats_secrets.conf")
        env = {**os.environ, "NATS_NAME": name, "NATS_LISTEN": f"127.0.0.1:{port}",
               "NATS_HTTP": f"127.0.0.1:{free_port()}",
               "NATS_CLUSTER_LISTEN": f"127.0.0.1:{route}", "NATS_STORE": str(conf_dir / "data")}
        return Proc(name, [nats_server_binary(), "-c", "nats.conf"], env,
                    self.home / "logs" / f"{name}.log", cwd=conf_dir)

    def _start_weed(self) -> str:
        import botocore.session

        ports, data = _weed_ports(), self.home / "seaweedfs"
        data.mkdir(parents=True, exist_ok=True)
        compose = _compose()["services"]["seaweedfs"]["command"]
        argv = [str(Path(sys.executable).parent / "weed"), *(
            a.replace("/data", str(data)).replace("/run/secrets", str(self.secrets))
            for a in compose), "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            *(f"-{part}.port={port}" for part, port in ports.items())]
        weed = Proc("seaweedfs", argv, dict(os.environ), self.home / "logs" / "weed.log")
        self.nodes["seaweedfs"] = weed
        weed.start()
        url = f"http://127.0.0.1:{ports['s3']}"
        s3 = botocore.session.get_session().create_client(
            "s3", endpoint_url=url, region_name="us-east-1",
            aws_access_key_id=(self.secrets / "ow_s3_access_key").read_text(),
            aws_secret_access_key=(self.secrets / "ow_s3_secret_key").read_text())
        _wait(lambda: s3.list_buckets() is not None, "SeaweedFS's S3", weed)
        return url

    def _env(self, service: str, s3: str, home: Path | None = None) -> dict[str, str]:
        """compose.yaml's environment of ``service``, on loopback, plus the overrides."""
        spec = _compose()["services"][service]
        given = {"OW_CLIENT_NATS_URL": self.client_url, "OW_S3_ENDPOINT_URL": s3}
        env = {k: _expand(str(v), given) for k, v in spec["environment"].items()}
        env["OW_SECRETS_DIR"] = str(self.secrets)
        if "OW_NATS_AUTH_FILE" in env:
            env["OW_NATS_AUTH_FILE"] = str(self.secrets / "nats_auth.json")
        if env.get("OW_BACKEND") == "runpod":
            env["OW_BACKEND"] = "local"  # machines are agent processes here
        env.update({f"OW_{k.upper()}": str(v) for k, v in self.overrides.items()})
        # The caller's own OW_* (a test session's database, say) must not leak in: a
        # variable would win over the secrets, as in a container it never can.
        base = {k: v for k, v in os.environ.items() if not k.startswith("OW_")}
        return {**base, **env, "OW_HOME": str(home or self.home / "ops")}

    def supervise(self) -> None:
        """Restart services that die, as compose's ``restart: unless-stopped`` does."""
        self._supervising = True

        def loop() -> None:
            while self._supervising:
                for name, proc in list(self.services.items()):
                    if not proc.alive() and name not in self._held:
                        proc.restarts += 1
                        proc.start()
                time.sleep(0.2)  # a supervisor's polling period

        threading.Thread(target=loop, name="ow-compose", daemon=True).start()

    def stop(self) -> None:
        self._supervising = False
        for proc in reversed(list(self.services.values())):
            proc.stop()
        for node in self.nodes.values():
            node.stop()
        self.pg.stop()


def _compose() -> dict[str, Any]:
    import yaml  # the dev extra; only this harness reads compose.yaml

    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data
