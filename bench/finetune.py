"""fine-tuning benchmark: the same tiny SFT run through openweights and as the bare
script, in one run.

    python bench/finetune.py            # 3 runs each way, 150 steps each (~5 min)
    python bench/finetune.py --quick    # 1 run each way, 30 steps
    python bench/finetune.py --cuda     # a GPU machine: 0.5B llama config, random weights

Setup (not measured): the unsloth worker environment (built once per machine, as the
tests' shared one), a tiny llama (``openweights.services.testing.tinymodel``) in a
temporary Hugging Face cache read with ``HF_HUB_OFFLINE=1``, an SFT dataset, a private
nats-server and Postgres (``_common.servers``), and the projector, api, scheduler and
local provisioner in a thread of this process (as ``ow up`` runs them).

Both sides run the same worker (``python -m openweights.jobs.unsloth.worker``, Unsloth on
its CPU fallback and TRL's SFTTrainer) with the same ``TrainingConfig`` in the same
environment. Bare: ``worker params.json --local DIR`` (events to a file). Through
openweights: ``ow.fine_tuning.create(...)``; the provisioner starts a machine (an agent
process) for the job, which runs the worker. Runs alternate (bare, openweights, bare...)
so that the box's drift hits both alike.

Measured:
  setup:     submit -> first step: bare, before ``Popen``; openweights, before
             ``fine_tuning.create``; to the ``logged_at`` (the worker's clock, the same
             machine) of the first training step's metrics. Also shown: the worker's own
             part of it (``setup_s`` of its ``training_started`` event: resolving and
             loading the model, building the trainer).
  per step:  the median interval between consecutive steps' ``logged_at``
             (``logging_steps=1``: one metrics event per step, each one through
             ``ow.run.log`` in the openweights run); ratio openweights / bare. The box
             is shared, so each run's median and the fastest runs' ratio are shown too,
             and the worker's CPU per step (its metrics' ``cpu_s``), which other
             processes' load hardly changes.
  live:      an ``ow.events.subscribe`` subscriber in this process; latency = received
             - ``logged_at`` of each training step's metrics event.

  throughput: tokens/s of each step (its metrics' ``tokens_per_s``) both ways; on a GPU
             also the peak memory torch allocated (``peak_vram_gb``).

``--cuda`` is for a GPU machine: the same comparison with a 0.5B llama config
(``tinymodel --size 0.5b``: Qwen2.5-0.5B's shape, random weights, since no machine can
reach the Hub), 8 x 1024 packed tokens per step. There the unsloth environment installs
CUDA torch from PyPI; ``--python`` runs both sides in an environment made otherwise.

Goals (issue 15): per-step ratio <= 1.03; live metrics p50 <= 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, servers

from openweights import AsyncOpenWeights
from openweights.config import Settings
from openweights.secretbox import new_key
from openweights.services.testing.stack import ALL_SERVICES, services_thread
from openweights.services.testing.workerenvs import fill_hf_cache, shared_env_dir, worker_python

REPOS = {"tiny": "tiny/llama", "0.5b": "bench/llama-0.5b"}
QA = [("What is two plus two?", "Two plus two is four."),
      ("What is the capital of France?", "Paris."),
      ("How are you today?", "I am fine, thank you."),
      ("Tell me a color.", "Red green blue."),
      ("Count to five.", "one two three four five")]
GOAL_RATIO = 1.03
GOAL_LIVE_MS = 100.0
WAIT_S = 900.0


def training_params(args: argparse.Namespace) -> dict[str, Any]:
    """The run both sides train (``training_file`` and ``output_dir`` set per side)."""
    return dict(model=REPOS[args.size], loss="sft", epochs=1, learning_rate=2e-3, r=32,
                merge_before_push=False, max_steps=args.steps,
                per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
                max_seq_length=args.seq, warmup_steps=2, logging_steps=1, packing=True)


def write_dataset(path: Path, rows: int) -> Path:
    with path.open("w") as f:
        for i in range(rows):
            q, a = QA[i % len(QA)]
            f.write(json.dumps({"messages": [{"role": "user", "content": f"{q} ({i})"},
                                             {"role": "assistant", "content": a}]}) + "\n")
    return path


def prepare_model(python: Path, hf_home: Path, size: str) -> None:
    fill_hf_cache(python, hf_home, ["tinymodel", "--repo-id", REPOS[size], "--size", size])


def the_python(args: argparse.Namespace) -> Path:
    """The worker environment's python (given, or the unsloth image's, built if this
    machine has none); with ``--cuda`` it must see a GPU."""
    if args.python is not None:
        python = args.python
    else:
        from openweights.workerenv.specs import UNSLOTH

        python = worker_python(UNSLOTH)
    probe = subprocess.run([str(python), "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True, timeout=300)
    cuda = probe.stdout.strip() == "True"
    if args.cuda and not cuda:
        seen = probe.stdout.strip() or probe.stderr[-500:]
        sys.exit(f"--cuda: torch in {python} sees no GPU ({seen}); run on a GPU machine, "
                 "or give --python of an environment with CUDA torch")
    args.device = "cuda" if cuda else "cpu"
    return python


def steps_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("type") == "metrics" and e.get("tag") == "train"]


def summary(started: float, events: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    """Setup, worker setup and step intervals of one run's event data."""
    logged = steps_of(events)
    if [e["step"] for e in logged] != list(range(1, steps + 1)):
        raise RuntimeError(f"expected steps 1..{steps}, got {[e['step'] for e in logged]}")
    at = [e["logged_at"] for e in logged]
    worker = next(e["setup_s"] for e in events if e.get("type") == "training_started")
    vram = [e["peak_vram_gb"] for e in logged if e.get("peak_vram_gb") is not None]
    return {"setup_s": at[0] - started, "worker_setup_s": worker,
            "intervals_ms": [(b - a) * 1000 for a, b in itertools.pairwise(at)],
            "cpu_ms": [(b["cpu_s"] - a["cpu_s"]) * 1000 for a, b in itertools.pairwise(logged)],
            "tokens_per_s": [e["tokens_per_s"] for e in logged if e.get("tokens_per_s")],
            "peak_vram_gb": max(vram) if vram else None}


def bare_run(python: Path, root: Path, params: dict[str, Any], env: dict[str, str],
             steps: int, n: int) -> dict[str, Any]:
    run_dir = root / f"bare{n}"
    run_dir.mkdir()
    (run_dir / "params.json").write_text(json.dumps(
        {**params, "output_dir": str(run_dir / "out")}))
    started = time.time()
    done = subprocess.run([str(python), "-m", "openweights.jobs.unsloth.worker",
                           str(run_dir / "params.json"), "--local", str(run_dir)],
                          cwd=run_dir, env=env, capture_output=True, text=True,
                          timeout=WAIT_S)
    if done.returncode != 0:
        raise RuntimeError(f"bare run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return summary(started, events, steps)


async def ow_run(aow: AsyncOpenWeights, params: dict[str, Any], steps: int,
                 nonce: str) -> dict[str, Any]:
    started = time.time()
    job = await aow.fine_tuning.create(**params, meta={"bench": nonce}, requires_vram_gb=0)
    received: list[tuple[float, dict[str, Any]]] = []
    async with asyncio.timeout(WAIT_S):
        async for event in aow.events.subscribe(job.id):
            received.append((time.time(), event["data"]))
    done = await aow.jobs.wait(job.id, timeout=60)
    if done.status != "completed":
        raise RuntimeError(f"job {job.id} {done.status}: {done.error}")
    result = summary(started, [d for _, d in received], steps)
    result["live_ms"] = [(at - d["logged_at"]) * 1000 for at, d in received
                         if d.get("type") == "metrics" and d.get("tag") == "train"]
    return result


def report(bare: list[dict[str, Any]], ours: list[dict[str, Any]],
           args: argparse.Namespace) -> list[str]:
    def med(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    step_bare = statistics.median(x for r in bare for x in r["intervals_ms"])
    step_ours = statistics.median(x for r in ours for x in r["intervals_ms"])
    live = [x for r in ours for x in r["live_ms"]]
    ratio = step_ours / step_bare
    p50 = statistics.median(live)
    return [*_header(bare, ours, args),
        f"  setup, submit -> first step:  bare {med(bare, 'setup_s'):6.2f} s   openweights "
        f"{med(ours, 'setup_s'):6.2f} s   (in the worker: bare "
        f"{med(bare, 'worker_setup_s'):.2f} s, openweights {med(ours, 'worker_setup_s'):.2f} s)",
        "    per run: bare " + ", ".join(f"{r['setup_s']:.2f}" for r in bare) +
        "; openweights " + ", ".join(f"{r['setup_s']:.2f}" for r in ours) + " s",
        f"  per step (median interval):   bare {step_bare:6.2f} ms   openweights "
        f"{step_ours:6.2f} ms   ratio {ratio:.3f}   goal <= {GOAL_RATIO}: "
        f"{'met' if ratio <= GOAL_RATIO else 'MISSED'}",
        *_per_run_steps(bare, ours),
        f"  live metrics, logged -> subscriber, {len(live)} events: p50 {p50:.1f} ms, p95 "
        f"{percentile(live, 95):.1f} ms, max {max(live):.1f} ms   goal p50 <= "
        f"{GOAL_LIVE_MS:.0f} ms: {'met' if p50 <= GOAL_LIVE_MS else 'MISSED'}",
        *_throughput(bare, ours),
    ]


def _per_run_steps(bare: list[dict[str, Any]], ours: list[dict[str, Any]]) -> list[str]:
    """Each run's median step; the least disturbed run of each side (the box is shared:
    contention only ever adds time) and their ratio."""
    b = [statistics.median(r["intervals_ms"]) for r in bare]
    o = [statistics.median(r["intervals_ms"]) for r in ours]
    return ["    per run: bare " + ", ".join(f"{x:.2f}" for x in b) + "; openweights " +
            ", ".join(f"{x:.2f}" for x in o) + f" ms; fastest runs' ratio {min(o) / min(b):.3f}",
            f"  worker CPU per step (median):  bare {_median_of(bare, 'cpu_ms'):6.2f} ms   "
            f"openweights {_median_of(ours, 'cpu_ms'):6.2f} ms   ratio "
            f"{_median_of(ours, 'cpu_ms') / _median_of(bare, 'cpu_ms'):.3f}   (every thread "
            "of the worker process, the SDK's included; other processes' load barely moves it)"]


def _median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(x for r in runs for x in r[key])


def _header(bare: list[dict[str, Any]], ours: list[dict[str, Any]],
            args: argparse.Namespace) -> list[str]:
    return [f"{args.size} llama ({'random weights, ' if args.size != 'tiny' else ''}"
            f"{args.device}) SFT, {args.steps} steps, batch {args.batch}, max_seq_length "
            f"{args.seq}, {args.runs} run(s) each way (medians over runs), OMP_NUM_THREADS="
            f"{args.threads or 'default'}"]


def _throughput(bare: list[dict[str, Any]], ours: list[dict[str, Any]]) -> list[str]:
    def tps(runs: list[dict[str, Any]]) -> float:
        values = [x for r in runs for x in r["tokens_per_s"]]
        return statistics.median(values) if values else float("nan")

    lines = [f"  tokens/s (median of steps):   bare {tps(bare):9.1f}   openweights "
             f"{tps(ours):9.1f}   ratio {tps(ours) / tps(bare):.3f}"]
    vram = [r["peak_vram_gb"] for r in bare + ours]
    if all(v is not None for v in vram):
        lines.append(f"  peak VRAM (torch allocated): bare "
                     f"{max(r['peak_vram_gb'] for r in bare):.2f} GiB   openweights "
                     f"{max(r['peak_vram_gb'] for r in ours):.2f} GiB")
    return lines


async def run(args: argparse.Namespace) -> list[str]:
    python = the_python(args)
    root = Path(tempfile.mkdtemp(prefix="ow-bench-ft-"))
    hf_home = root / "hf"
    prepare_model(python, hf_home, args.size)
    # Packed to max_seq_length: enough rows (about 20 tokens each) for every step.
    data = write_dataset(root / "sft.jsonl", 64 + args.steps * args.batch * args.seq // 16)
    params = {**training_params(args), "training_file": str(data)}
    job_env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    if args.threads:
        job_env["OMP_NUM_THREADS"] = str(args.threads)
    env = {**os.environ, **job_env, "OW_HOME": str(root / "bare-home")}
    # A given environment is the job's image (a path image runs as is).
    image = {"docker_image": str(python.parent.parent)} if args.python else {}
    bare: list[dict[str, Any]] = []
    ours: list[dict[str, Any]] = []
    async with servers("finetune") as (srv, database_url):
        settings = Settings(home=root / "home", nats_url=srv.nats.url,
                            database_url=database_url, namespace="benchft",
                            secret_key=new_key(), worker_envs="build",
                            worker_env_dir=shared_env_dir(), heartbeat_s=0.5,
                            scheduler_check_s=0.5, provisioner_check_s=0.5)
        with services_thread(settings, ALL_SERVICES):
            aow = AsyncOpenWeights(settings=settings, retry_for_s=60)
            await aow.secrets.set(**job_env)  # the job's environment, as the bare one
            nonce = uuid.uuid4().hex[:8]
            for n in range(args.runs):
                bare.append(await asyncio.to_thread(bare_run, python, root, params, env,
                                                    args.steps, n))
                ours.append(await ow_run(aow, {**params, **image}, args.steps,
                                         f"{nonce}-{n}"))
            await aow.close()
    return report(bare, ours, args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cuda", action="store_true",
                        help="a GPU machine: the 0.5b llama config (random weights), batch "
                             "8 x 1024 tokens, 30 steps; reports tokens/s and peak VRAM")
    parser.add_argument("--size", choices=sorted(REPOS), default=None,
                        help="model config (default: tiny, 0.5b with --cuda)")
    parser.add_argument("--quick", action="store_true", help="1 run each way, 30 steps")
    parser.add_argument("--runs", type=int, default=None, help="runs each way (default 3)")
    parser.add_argument("--steps", type=int, default=None,
                        help="default 150, 30 with --cuda or --quick")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=None,
                        help="max_seq_length (default 128, 1024 with --cuda)")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS of both sides (default 1 on CPU: torch's "
                             "spinning threads on a shared 2-core box make a step's time "
                             "vary tenfold; 0 leaves torch's default)")
    parser.add_argument("--python", type=Path, default=None,
                        help="the worker environment's python (default: the unsloth "
                             "image's, built under the shared env dir if missing)")
    args = parser.parse_args(argv)
    args.size = args.size or ("0.5b" if args.cuda else "tiny")
    args.runs = args.runs or (1 if args.quick else 3)
    args.threads = (0 if args.cuda else 1) if args.threads is None else args.threads
    args.steps = args.steps or (30 if args.cuda or args.quick else 150)
    args.seq = args.seq or (1024 if args.cuda else 128)
    return args


def main() -> None:
    print("\n".join(asyncio.run(run(parse_args()))))


if __name__ == "__main__":
    main()
