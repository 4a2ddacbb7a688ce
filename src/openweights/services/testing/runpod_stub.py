"""A stand-in for RunPod's GraphQL API, for tests and ``ow up --runpod-stub``.

It answers the queries the ``runpod`` SDK sends (``RUNPOD_API_BASE_URL`` + ``/graphql``)
the way RunPod does, and keeps state: a created pod's "container" is a real process on
this machine, the pod's ``dockerArgs`` run with the pod's environment in a directory of
its own whose ``bin`` has ``python`` (this interpreter, as if the image had openweights)
and an ``nvidia-smi`` that reports the pod's GPUs. Terminating a pod sends its container
SIGTERM and, after ``grace_s``, SIGKILL, as RunPod stops containers.

Failure injection (attributes): ``no_capacity`` (GPU ids RunPod has none of),
``spending_limit``, ``fail_next`` (messages the next creates fail with), ``delay_s``
(every answer that late: timeouts; ``delay_create_s`` creates only), ``never_start``
(pods are created but their container never runs), ``unlisted`` (GPU ids missing
from the inventory); methods:
``revoke`` (a key now gets 401), ``vanish`` (a pod disappears with its machine),
``freeze`` (its container stops reacting), ``add_pod`` (a pod made elsewhere: a leak, or
someone else's).

``python -m openweights.services.testing.runpod_stub --port N --key K`` serves until
killed and prints its base URL.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from openweights.adapters.embedded import die_with_parent
from openweights.hardware import GPU_VRAM_GB, GPUS
from openweights.services.testing.graphql_values import operation

NO_CAPACITY = ("There are no longer any instances available with the requested "
               "specifications. Please refresh and try again.")
SPENDING = "You have exceeded your spend limit. Please add funds to continue."


@dataclass
class Pod:
    id: str
    account: str
    name: str
    image: str
    gpu_type_id: str | None
    gpu_count: int
    env: dict[str, str]
    docker_args: str = ""
    desired_status: str = "RUNNING"
    proc: subprocess.Popen[bytes] | None = None
    created: float = field(default_factory=time.time)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "imageName": self.image,
                "desiredStatus": self.desired_status, "gpuCount": self.gpu_count,
                "env": [f"{k}={v}" for k, v in self.env.items()],
                "dockerArgs": self.docker_args, "machineId": f"m-{self.id}",
                "costPerHr": 0.0, "uptimeSeconds": int(time.time() - self.created),
                "runtime": {"ports": []} if self.proc is not None else None,
                "machine": {"gpuDisplayName": self.gpu_type_id, "podHostId": self.id}}


class RunPodStub:
    def __init__(self, root: Path, *, grace_s: float = 5.0) -> None:
        self.root, self.grace_s = root, grace_s
        self.keys: dict[str, str] = {}  # key -> account
        self.pods: dict[str, Pod] = {}
        self.no_capacity: set[str] = set()
        self.unlisted: set[str] = set()
        self.spending_limit = False
        self.never_start = False
        self.fail_next: list[str] = []
        self.delay_s = 0.0
        self.delay_create_s = 0.0
        self.calls: list[str] = []
        self.gone: dict[str, subprocess.Popen[bytes]] = {}  # terminated containers
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # a pod came or went
        # One long-lived thread starts every container: their parent-death signal fires
        # when the thread that started them ends, and the server's threads are per request.
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="runpod-stub-spawn")
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="runpod-stub")

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> RunPodStub:
        if port or host != "127.0.0.1":
            self._server.server_close()
            self._server = ThreadingHTTPServer((host, port), self._handler())
            self._server.daemon_threads = True
            self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_key(self, key: str, account: str = "main") -> str:
        self.keys[key] = account
        return key

    def revoke(self, key: str) -> None:
        self.keys.pop(key, None)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            procs = [p.proc for p in self.pods.values() if p.proc] + list(self.gone.values())
        for proc in procs:
            _signal(proc, signal.SIGKILL)
            proc.wait()
        self._spawner.shutdown()

    # -- failure injection and inspection ----------------------------------------------
    def add_pod(self, name: str, key: str, gpu_type_id: str = "NVIDIA A40") -> Pod:
        """A pod created elsewhere (its container runs nothing)."""
        pod = Pod(_pod_id(), self.keys[key], name, "someone/else", gpu_type_id, 1, {})
        with self._lock:
            self.pods[pod.id] = pod
        return pod

    def vanish(self, pod_id: str) -> None:
        """The pod is gone at once, its container killed (a host RunPod lost)."""
        with self._changed:
            pod = self.pods.pop(pod_id)
            self._changed.notify_all()
        if pod.proc is not None:
            _signal(pod.proc, signal.SIGKILL)
            self.gone[pod_id] = pod.proc

    def freeze(self, pod_id: str) -> None:
        proc = self.pods[pod_id].proc
        if proc is not None:
            _signal(proc, signal.SIGSTOP)

    def process_exited(self, pod_id: str) -> bool:
        pod = self.pods.get(pod_id)
        proc = pod.proc if pod is not None else self.gone.get(pod_id)
        return proc is None or proc.poll() is not None

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Until ``condition()`` holds, checked whenever a pod is created or goes."""
        with self._changed:
            if not self._changed.wait_for(condition, timeout):
                raise TimeoutError(f"RunPod stand-in: no {what} within {timeout} s")

    def created(self) -> int:
        return self.calls.count("podFindAndDeployOnDemand")

    def pods_named(self, prefix: str) -> list[Pod]:
        with self._lock:
            return [p for p in self.pods.values() if p.name.startswith(prefix)]

    # -- the API -------------------------------------------------------------------------
    def answer(self, key: str | None, query: str) -> tuple[int, dict[str, Any]]:
        if self.delay_s:
            time.sleep(self.delay_s)  # what a slow RunPod looks like to the caller
        account = self.keys.get(key or "")
        field_name, inp = operation(query)
        try:
            if account is None:
                return 401, {"error": "Unauthorized"}
            try:
                data = self._dispatch(account, field_name, inp)
            except _Refused as exc:
                return 200, {"errors": [{"message": str(exc)}]}
            return 200, {"data": data}
        finally:
            with self._changed:
                self.calls.append(field_name)
                self._changed.notify_all()

    def _dispatch(self, account: str, field_name: str, inp: dict[str, Any]) -> dict[str, Any]:
        if field_name == "gpuTypes":
            rows = [{"id": gid, "displayName": short, "memoryInGb": GPU_VRAM_GB[short]}
                    for short, gid in GPUS.items() if gid not in self.unlisted]
            return {"gpuTypes": [r for r in rows if inp.get("id") in (None, r["id"])]}
        if field_name == "myself.pods":
            with self._lock:
                pods = [p.as_json() for p in self.pods.values() if p.account == account]
            return {"myself": {"pods": pods}}
        if field_name == "pod":
            pod = self.pods.get(str(inp.get("podId")))
            return {"pod": pod.as_json() if pod and pod.account == account else None}
        if field_name == "podTerminate":
            self._terminate(account, str(inp.get("podId")))
            return {"podTerminate": None}
        if field_name == "podFindAndDeployOnDemand":
            return {field_name: self._create(account, inp).as_json()}
        raise _Refused(f"the stand-in does not know {field_name}")

    def _create(self, account: str, inp: dict[str, Any]) -> Pod:
        gpu = str(inp.get("gpuTypeId"))
        time.sleep(self.delay_create_s)  # a create RunPod takes long to answer
        if self.fail_next:
            raise _Refused(self.fail_next.pop(0))
        if self.spending_limit:
            raise _Refused(SPENDING)
        if gpu not in GPUS.values() or gpu in self.unlisted:
            raise _Refused(f"GPU type {gpu!r} is not available")
        if gpu in self.no_capacity:
            raise _Refused(NO_CAPACITY)
        env = {e["key"]: e["value"] for e in inp.get("env") or []}
        pod = Pod(_pod_id(), account, str(inp["name"]), str(inp["imageName"]), gpu,
                  int(inp.get("gpuCount") or 1), env, str(inp.get("dockerArgs") or ""))
        with self._lock:
            self.pods[pod.id] = pod
        if not self.never_start:
            pod.proc = self._spawner.submit(self._run_container, pod).result()
        return pod

    def _terminate(self, account: str, pod_id: str) -> None:
        with self._lock:
            pod = self.pods.get(pod_id)
            if pod is None or pod.account != account:
                raise _Refused(f"pod {pod_id} not found")
            del self.pods[pod_id]
        if pod.proc is not None:
            self.gone[pod_id] = pod.proc
            threading.Thread(target=_stop, args=(pod.proc, self.grace_s), daemon=True).start()

    def _run_container(self, pod: Pod) -> subprocess.Popen[bytes]:
        home = self.root / pod.id
        bin_dir = home / "bin"
        bin_dir.mkdir(parents=True)
        _script(bin_dir / "python", f'exec {shlex.quote(sys.executable)} "$@"')
        short = next(s for s, g in GPUS.items() if g == pod.gpu_type_id)
        mib = GPU_VRAM_GB[short] * 1024
        line = f"{pod.gpu_type_id}, {mib}, {mib - 500}, 35, 0"
        _script(bin_dir / "nvidia-smi", 'case "$*" in *--query-gpu*) '
                + "; ".join([f"echo '{line}'"] * pod.gpu_count) + ";; esac")
        env = {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
               "LANG": "C.UTF-8", "RUNPOD_POD_ID": pod.id,
               "RUNPOD_GPU_COUNT": str(pod.gpu_count), **pod.env}
        with open(home / "container.log", "ab") as out:
            return subprocess.Popen(shlex.split(pod.docker_args), env=env, cwd=home,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=die_with_parent)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                auth = self.headers.get("Authorization", "")
                status, reply = stub.answer(auth.removeprefix("Bearer ").strip() or None,
                                            str(body.get("query", "")))
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class _Refused(Exception):
    pass


def _pod_id() -> str:
    return secrets.token_hex(7)


def _script(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _signal(proc: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def _stop(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """docker stop: SIGTERM, and SIGKILL when the grace is over."""
    _signal(proc, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGKILL)
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--key", action="append", default=[])
    parser.add_argument("--root", type=Path, required=True)
    args = parser.parse_args()
    stub = RunPodStub(args.root).start(port=args.port)
    for key in args.key:
        stub.add_key(key)
    print(stub.url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stub.close()


if __name__ == "__main__":
    main()
