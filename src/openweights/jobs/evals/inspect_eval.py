"""The Inspect AI worker: ``python -m openweights.jobs.evals.inspect_eval
[PARAMS.json|JOB_ID]`` (REFERENCE 1.15).

Serves the job's model with vLLM's OpenAI-compatible server on a loopback port inside
the job (:mod:`openweights.jobs.vllm.serve`'s command and readiness check), then runs
``inspect_ai.eval`` against it in this process (model ``openai/<model>``, the server's
base URL and key, the options parsed into keyword arguments, never a command line),
with JSON logs under ``uploads/`` (they come back as the job's result files, as the
original's ``INSPECT_LOG_DIR=uploads/``). Each evaluation's scorers' metrics are one
``score`` event (:mod:`.scores`). A task file the SDK uploaded (``task_file``) is
written into the job's directory first. With a ``deployment`` the job starts no server:
it evaluates against the deployment's URL and key.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from openweights.jobs.evals.config import InspectAIConfig
from openweights.jobs.evals.options import parse_options
from openweights.jobs.evals.scores import score_event
from openweights.jobs.unsloth.failures import run_worker
from openweights.jobs.unsloth.report import Reporter

__all__ = ["LOG_DIR", "main", "metrics_of", "run_eval"]

LOG_DIR = "uploads"


class EvalFailed(ValueError):
    """Inspect ran the evaluation but it did not succeed (its log says why)."""


def metrics_of(log: Any) -> dict[str, float]:
    """``{"<scorer>/<metric>": value}`` of an Inspect ``EvalLog``'s results."""
    results = getattr(log, "results", None)
    out: dict[str, float] = {}
    for s in getattr(results, "scores", None) or []:
        for name, metric in s.metrics.items():
            value = getattr(metric, "value", metric)
            if isinstance(value, int | float) and value == value:
                out[f"{s.name}/{name}"] = float(value)
    return out


def _task(cfg: InspectAIConfig, reporter: Reporter) -> str:
    """The task spec Inspect resolves: the uploaded task file written here, or the
    registry name as given."""
    if cfg.task_file:
        name = cfg.eval_name.partition("@")[0]
        if Path(name).name != name:
            raise ValueError(f"eval_name {cfg.eval_name!r} must name the uploaded task file "
                             "by its file name")
        reporter.download(cfg.task_file, Path(name))
    elif "/" in cfg.eval_name:  # a registry name: its package must be installed here
        package = cfg.eval_name.split("/")[0]
        if importlib.util.find_spec(package.replace("-", "_")) is None:
            raise ValueError(f"eval_name {cfg.eval_name!r} is a task of the package "
                             f"{package!r}, which this worker image does not have: give a "
                             "task file (eval_name='tasks.py@task'), or an image with it")
    return cfg.eval_name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(cfg: InspectAIConfig, reporter: Reporter) -> tuple[Any, Any, str]:
    """vLLM's server for ``cfg.model`` on a loopback port: ``(process, its ApiConfig,
    base URL)``, ready (a chat completion passed)."""
    from openweights.jobs.vllm.config import ApiConfig
    from openweights.jobs.vllm.engine import adapter_rank, cpu_defaults, resolve_model
    from openweights.jobs.vllm.serve import server_command, wait_ready

    cpu_defaults()
    resolved = resolve_model(cfg.model, reporter)
    if resolved.is_adapter and resolved.base_path is not None:  # served on its base
        api = ApiConfig.model_validate({
            "model": resolved.base_name or cfg.model, "lora_adapters": [cfg.model],
            "max_lora_rank": adapter_rank(resolved.path), "max_model_len": cfg.max_model_len})
        base, adapters = resolved.base_path, {cfg.model: resolved.path}
    else:
        api = ApiConfig.model_validate({"model": cfg.model, "max_model_len": cfg.max_model_len})
        base, adapters = resolved.path, {}
    port = _free_port()
    proc = subprocess.Popen(server_command(api, base, adapters, "127.0.0.1", port),
                            stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(proc, url, api)
    except BaseException:
        _stop(proc)
        raise
    return proc, api, url


def _stop(proc: Any) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _inspect(cfg: InspectAIConfig, task: str, url: str, key: str) -> list[Any]:
    from inspect_ai import eval as inspect_eval

    kwargs = parse_options(cfg.options)
    if isinstance(kwargs.get("limit"), list):
        kwargs["limit"] = tuple(kwargs["limit"])
    os.environ["OPENAI_API_KEY"] = key  # the openai provider's key: the server's
    return list(inspect_eval(task, model=f"openai/{cfg.model}", model_base_url=url,
                             log_dir=LOG_DIR, log_format="json", display="none", **kwargs))


def run_eval(cfg: InspectAIConfig, reporter: Reporter) -> list[dict[str, Any]]:
    """Serve, evaluate, report; returns the score events it logged. Raises
    ``EvalFailed`` when an evaluation did not succeed."""
    task = _task(cfg, reporter)
    started = time.perf_counter()
    if cfg.base_url and cfg.api_key:  # a deployment serves it
        reporter.log({"type": "deployment", "job_id": cfg.deployment, "url": cfg.base_url})
        served = started
        logs = _inspect(cfg, task, cfg.base_url, cfg.api_key)
    else:
        proc, api, url = _start_server(cfg, reporter)
        served = time.perf_counter()
        reporter.log({"type": "model_loaded", "seconds": round(served - started, 3)})
        try:
            logs = _inspect(cfg, task, url, api.api_key)
        finally:
            _stop(proc)
    events = []
    for log in logs:
        if log.status != "success":
            error = getattr(getattr(log, "error", None), "message", None) or log.status
            raise EvalFailed(f"Inspect's evaluation {log.eval.task} ended {log.status}: "
                             f"{error}")
        results = log.results
        event = score_event(eval=log.eval.task, model=cfg.model, metrics=metrics_of(log),
                            samples=getattr(results, "completed_samples", None),
                            log=os.path.relpath(log.location, LOG_DIR),
                            seconds=round(time.perf_counter() - served, 3))
        reporter.log(event)
        events.append(event)
    return events


def main(argv: list[str] | None = None) -> int:
    return run_worker(InspectAIConfig, lambda cfg, _, reporter: run_eval(cfg, reporter), argv,
                      lambda cfg: f"openweights inspect_ai pid={os.getpid()} "
                                  f"model={cfg.model} eval={cfg.eval_name}")

if __name__ == "__main__":
    sys.exit(main())
