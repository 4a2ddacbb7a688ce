"""The built-in fine-tuning jobs for real, through the services and managed agents: the
worker environment of the unsloth image (built once per machine, outside the checkout),
a tiny llama built in code and loaded by its repo id from a Hugging Face cache with
``HF_HUB_OFFLINE=1``, Unsloth on its CPU fallback and TRL's trainers.

Each job trains for a few dozen steps of a few milliseconds; most of a test's time is
the worker's imports (Unsloth, transformers) and the model load.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openweights.events import JobAssigned, WorkerMachineStarted
from openweights.jobs.models import parse_model_event
from openweights.services.testing.hub import fake_hub
from openweights.services.testing.workerenvs import fill_hf_cache, worker_python
from openweights.workerenv.specs import UNSLOTH

pytestmark = pytest.mark.timeout(600)

REPO_ID = "tiny/llama"
QA = [("What is two plus two?", "Two plus two is four."),
      ("What is the capital of France?", "Paris."),
      ("How are you today?", "I am fine, thank you."),
      ("Tell me a color.", "Red green blue."),
      ("Count to five.", "one two three four five")]
FAST = dict(per_device_train_batch_size=4, gradient_accumulation_steps=1, max_seq_length=64,
            warmup_steps=2, requires_vram_gb=0)
LR = 2e-3  # the tiny model learns visibly in a few dozen steps


@pytest.fixture(scope="session")
def unsloth_python() -> Path:
    return worker_python(UNSLOTH)


@pytest.fixture(scope="session")
def hf_home(unsloth_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fill_hf_cache(unsloth_python, tmp_path_factory.mktemp("hf-home"),
                         ["tinymodel", "--repo-id", REPO_ID])


@pytest.fixture(scope="session")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("datasets")
    rows: dict[str, list[dict[str, Any]]] = {"sft": [], "preference": [], "weighted": []}
    for i in range(64):
        q, a = QA[i % len(QA)]
        other = QA[(i + 1) % len(QA)][1]
        rows["sft"].append({"messages": [{"role": "user", "content": q},
                                         {"role": "assistant", "content": a}]})
        rows["preference"].append({"prompt": [{"role": "user", "content": q}],
                                   "chosen": [{"role": "assistant", "content": a}],
                                   "rejected": [{"role": "assistant", "content": other}]})
        rows["weighted"].append({"messages": [
            {"role": "user", "content": [{"type": "text", "text": q, "weight": 0}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Sure. ", "weight": 0.0},
                {"type": "text", "text": a, "weight": 1.0, "tag": "answer"}]}]})
    out = {}
    for name, items in rows.items():
        out[name] = d / f"{name}.jsonl"
        out[name].write_text("".join(json.dumps(r) + "\n" for r in items))
    out["probe"] = d / "probe.jsonl"
    out["probe"].write_text("".join(json.dumps(r) + "\n" for r in rows["weighted"][:2]))
    out["plain"] = d / "plain.jsonl"
    out["plain"].write_text("".join(json.dumps(r) + "\n" for r in rows["sft"][:2]))
    return out


@pytest.fixture
def ml(lab: Any, hf_home: Path) -> Iterator[Any]:
    yield lab.start_ml(hf_home)


def run_events(ow: Any, job_id: str) -> list[dict[str, Any]]:
    return [e for e in ow.events.list(job_id=job_id)]


def train_steps(events: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(e["data"]["step"], e["data"]["loss"]) for e in events
            if e["data"].get("type") == "metrics" and e["data"].get("tag") == "train"]


def assert_trained(ow: Any, job: Any, steps: int) -> dict[str, Any]:
    """Completed, one metrics event per step, loss down, one model announced."""
    done = job.wait(timeout=500)
    assert done.status == "completed", (done.error, done.log_tail(40))
    events = run_events(ow, job.id)
    logged = train_steps(events)
    assert [s for s, _ in logged] == list(range(1, steps + 1))
    losses = [loss for _, loss in logged]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5, losses
    models = [m for e in events if (m := parse_model_event(e["data"])) is not None]
    assert len(models) == 1
    assert models[0].step == steps and models[0].base_model == REPO_ID
    return {"events": events, "model": models[0]}


def generate(unsloth_python: Path, hf_home: Path, model_dir: Path) -> str:
    """Text from the stored model, generated in the job's own environment."""
    script = (
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "from peft import PeftModel\n"
        f"tok = AutoTokenizer.from_pretrained({str(model_dir)!r})\n"
        f"base = AutoModelForCausalLM.from_pretrained({REPO_ID!r})\n"
        f"model = PeftModel.from_pretrained(base, {str(model_dir)!r})\n"
        "ids = tok.apply_chat_template([{'role': 'user', 'content': 'What is two plus two?'}],"
        " add_generation_prompt=True, return_tensors='pt', return_dict=True)\n"
        "out = model.generate(**ids, max_new_tokens=12, min_new_tokens=4, do_sample=False)\n"
        "print('TEXT:' + tok.decode(out[0, ids['input_ids'].shape[1]:],"
        " skip_special_tokens=True))\n")
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([str(unsloth_python), "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split("TEXT:", 1)[1].strip()


def download_model(ow: Any, model: Any, target: Path) -> Path:
    for rel, file_id in model.files.items():
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        ow.files.download(file_id, target / rel)
    return target


def test_sft_cookbook_call_trains_stores_pushes_and_the_model_generates(
        ml: Any, datasets: dict[str, Path], unsloth_python: Path, hf_home: Path,
        tmp_path: Path) -> None:
    """The cookbook's call (plus a small batch and max_steps); logprob tracking and
    sampling callbacks report files and events; the model is stored, pushed to the Hub
    stand-in (private, checkpoints as subfolders) and generates text."""
    with fake_hub("hf_test_token") as hub:
        # Online towards the Hub stand-in (a push needs it); the tiny model still loads
        # from the cache, which is looked at first.
        ml.ow.secrets.remove("HF_HUB_OFFLINE")
        ml.ow.secrets.set(HF_TOKEN="hf_test_token", HF_ENDPOINT=hub.url)
        job = ml.ow.fine_tuning.create(
            model=REPO_ID, training_file=str(datasets["sft"]), loss="sft", epochs=1,
            learning_rate=LR, r=32, merge_before_push=False, **FAST,
            max_steps=24, save_steps=12, finetuned_model_id="me/tiny-sft",
            logp_callback_datasets={"plain": str(datasets["plain"]),
                                    "blocks": str(datasets["probe"])},
            eval_every_n_steps=12,
            sampling_callbacks=[{"dataset": str(datasets["probe"]), "eval_steps": 12,
                                 "max_tokens": 4, "tag": "greedy"}])
        result = assert_trained(ml.ow, job, 24)
        repo = hub.repos["me/tiny-sft"]
    assert repo.private
    assert {"adapter_model.safetensors", "adapter_config.json",
            "checkpoint-12/adapter_model.safetensors",
            "checkpoint-24/adapter_model.safetensors"} <= set(repo.files)
    assert result["model"].hf_repo == "me/tiny-sft" and result["model"].kind == "lora"
    data = [e["data"] for e in result["events"]]
    plain = [d for d in data if d.get("type") == "logprobs"]
    assert [(d["step"], d["tag"]) for d in plain] == [(0, "plain"), (12, "plain"),
                                                      (24, "plain")]
    assert plain[-1]["plain"] < plain[0]["plain"]  # the mean loss on it went down
    assert [d["step"] for d in data if d.get("type") == "logprobs_blockwise"] == [0, 12, 24]
    blocks = [d for d in data if d.get("type") == "logprob_block"]
    assert {(d["step"], d["source"], d["tag"]) for d in blocks} == {
        (step, "blocks", "answer") for step in (0, 12, 24)}
    assert all(d["logprobs"] < 0 for d in blocks)
    samples = [d for d in data if d.get("type") == "samples"]
    assert [d["step"] for d in samples] == [0, 12, 24]
    rows = [json.loads(line) for line in
            ml.ow.files.content(samples[-1]["file"]).decode().splitlines()]
    assert len(rows) == 2 and all("completion" in r for r in rows)
    assert [d["step"] for d in data if d.get("type") == "checkpoint"] == [12, 24]
    text = generate(unsloth_python, hf_home, download_model(ml.ow, result["model"],
                                                            tmp_path / "model"))
    assert text


@pytest.mark.parametrize("loss", ["dpo", "orpo"])
def test_preference_training(ml: Any, datasets: dict[str, Path], loss: str) -> None:
    job = ml.ow.fine_tuning.create(
        model=REPO_ID, training_file=str(datasets["preference"]), loss=loss, beta=0.1,
        learning_rate=LR, merge_before_push=False, max_steps=24, **FAST)
    assert_trained(ml.ow, job, 24)


def test_weighted_sft_and_logprobs_of_its_model(ml: Any, datasets: dict[str, Path]) -> None:
    job = ml.ow.weighted_sft.create(
        model=REPO_ID, training_file=str(datasets["weighted"]), optim="adamw_torch",
        learning_rate=LR, merge_before_push=False, max_steps=24, **FAST)
    trained = assert_trained(ml.ow, job, 24)
    scored = ml.ow.logprob.create(model=trained["model"].model_id,
                                  dataset=str(datasets["probe"]), requires_vram_gb=0,
                                  max_seq_length=64)
    assert scored.wait(timeout=300).status == "completed", scored.log_tail(40)
    file_id = scored.refresh().outputs["file"]
    rows = [json.loads(line) for line in ml.ow.files.content(file_id).decode().splitlines()]
    answer = rows[0]["messages"][1]["content"][1]
    assert answer["tag"] == "answer" and answer["logprobs"] < 0
    start, end = answer["range"]
    assert end > start


def test_a_model_that_does_not_exist_fails_fast_with_the_reason(
        ml: Any, datasets: dict[str, Path]) -> None:
    job = ml.ow.fine_tuning.create(model="nobody/no-such-model",
                                   training_file=str(datasets["sft"]), loss="sft",
                                   max_steps=2, **FAST)
    done = job.wait(timeout=300)
    assert done.status == "failed"
    assert "model 'nobody/no-such-model' was not found" in done.log_tail(10)
    errors = [e["data"] for e in run_events(ml.ow, job.id) if e["data"].get("type") == "error"]
    assert errors and errors[0]["exception"] == "ModelNotFound"
    assert "HF_HUB_OFFLINE is set" in errors[0]["error"]


def test_a_lost_machine_resumes_from_the_newest_checkpoint(
        ml: Any, datasets: dict[str, Path]) -> None:
    """The agent and its job are killed mid-training (a lost machine); the requeued job's
    next run resumes from the newest stored checkpoint and ends at exactly max_steps."""
    steps = 40
    job = ml.ow.fine_tuning.create(model=REPO_ID, training_file=str(datasets["sft"]),
                                   loss="sft", merge_before_push=False, max_steps=steps,
                                   learning_rate=LR, save_steps=5, **FAST)
    line = ml.live.wait_line("openweights worker pid=", timeout=300)
    pgid = int(line.text.rsplit("pgid=", 1)[1].split()[0])
    first = ml.live.wait_event(JobAssigned, 5, lambda e: e.job_id == job.id).event
    machine = ml.live.wait_event(WorkerMachineStarted, 5,
                                 lambda e: e.worker_id == first.worker_id).event
    for event in ml.ow.events.subscribe(job.id):
        if event["data"].get("type") == "checkpoint":
            break
    # The machine first (its agent must not report the job's death), then the job.
    os.kill(int(machine.machine_id.removeprefix("local-")), signal.SIGKILL)
    os.killpg(pgid, signal.SIGKILL)

    done = job.wait(timeout=500)
    assert done.status == "completed", (done.error, done.log_tail(40))
    runs = ml.ow.runs.list(job_id=job.id)
    assert len(runs) == 2
    events = run_events(ml.ow, job.id)
    first_run = [e["data"] for e in events if e["run_id"] == runs[0].id]
    second_run = [e["data"] for e in events if e["run_id"] == runs[1].id]
    newest = max(d["step"] for d in first_run if d.get("type") == "checkpoint")
    resumed = [d for d in second_run if d.get("type") == "resumed"]
    assert resumed == [{**resumed[0], "step": newest, "message": f"resumed from step {newest}"}]
    second_steps = [d["step"] for d in second_run
                    if d.get("type") == "metrics" and d.get("tag") == "train"]
    assert second_steps == list(range(newest + 1, steps + 1))
    model = next(m for d in second_run if (m := parse_model_event(d)) is not None)
    assert model.step == steps
    assert f"resumed from step {newest}" in runs[1].logs()
