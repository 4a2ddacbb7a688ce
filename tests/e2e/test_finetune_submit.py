"""Submitting the built-in jobs through the real services: the original's cookbook calls
run unchanged, ids are content-addressed ``ftjob-``/``sftjob-``/``lpjob-`` with the job id
in the finetuned model id, bad datasets are refused naming the line with nothing
appended, and the models a run announces are listed by ``ow.models``."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import nats
import pytest
from click.testing import Result
from typer.testing import CliRunner

from openweights import OpenWeights
from openweights.cli.main import app
from openweights.config import Settings
from openweights.errors import InvalidRequest, NotFound
from openweights.images import WORKER_UNSLOTH
from openweights.jobs.models import model_event
from openweights.subjects import Subjects

CONV = [{"messages": [{"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello"}]}]
PREF = [{"prompt": [{"role": "user", "content": "hi"}],
         "chosen": [{"role": "assistant", "content": "hello"}],
         "rejected": [{"role": "assistant", "content": "go away"}]}]


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


async def _last_seq(settings: Settings) -> int:
    nc = await nats.connect(settings.nats_url)
    try:
        info = await nc.jetstream().stream_info(Subjects(settings.namespace).events_stream)
        return int(info.state.last_seq)
    finally:
        await nc.close()


@pytest.fixture
def files(ow: OpenWeights, tmp_path: Path) -> dict[str, str]:
    return {
        "conv": ow.files.upload(_jsonl(tmp_path / "train.jsonl", CONV), "conversations")["id"],
        "pref": ow.files.upload(_jsonl(tmp_path / "pref.jsonl", PREF), "preferences")["id"],
    }


def test_the_cookbook_sft_call(ow: OpenWeights, files: dict[str, str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ORG", "my-hf-org")
    job = ow.fine_tuning.create(model="unsloth/Qwen3-4B", training_file=files["conv"],
                                loss="sft", epochs=1, learning_rate=1e-4, r=32,
                                merge_before_push=False)
    assert job.id.startswith("ftjob-") and len(job.id) == len("ftjob-") + 12
    assert (job.type, job.status, job.model) == ("fine-tuning", "pending", "unsloth/Qwen3-4B")
    params = job.params["validated_params"]
    assert params["finetuned_model_id"] == f"my-hf-org/Qwen3-4B-{job.id}"
    assert (params["r"], params["merge_before_push"], params["optim"]) == (32, False,
                                                                         "adamw_8bit")
    assert job.script == "python -m openweights.jobs.unsloth.worker"
    assert job.docker_image == WORKER_UNSLOTH
    assert job.requires_vram_gb == 18  # 4B: 8 GB of weights × 1.5 + 6
    again = ow.fine_tuning.create(model="unsloth/Qwen3-4B", training_file=files["conv"],
                                  loss="sft", epochs=1, learning_rate=1e-4, r=32,
                                  merge_before_push=False)
    assert again.id == job.id  # content-addressed: runs once
    other = ow.fine_tuning.create(model="unsloth/Qwen3-4B", training_file=files["conv"],
                                  loss="sft", r=16, job_id_suffix="small")
    assert other.id.endswith("-small") and other.id != job.id
    assert other.params["validated_params"]["finetuned_model_id"].endswith(other.id)


def test_the_cookbook_preference_weighted_and_logprob_calls(
        ow: OpenWeights, files: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_ORG", raising=False)  # no HF org: models are named after
    monkeypatch.delenv("HF_USER", raising=False)  # the openweights organization
    dpo = ow.fine_tuning.create(
        model="unsloth/Meta-Llama-3.1-8B", training_file=files["pref"], loss="dpo", epochs=1,
        learning_rate=1e-5, beta=0.1, requires_vram_gb=None,
        allowed_hardware=["1x A100", "1x A100S", "1x H100S", "1x H100N"])
    assert dpo.requires_vram_gb is None and dpo.allowed_hardware == [
        "1x A100", "1x A100S", "1x H100S", "1x H100N"]
    orpo = ow.fine_tuning.create(model="unsloth/Meta-Llama-3.1-8B",
                                 training_file=files["pref"], loss="orpo")
    assert orpo.id != dpo.id and orpo.requires_vram_gb == 30
    org = ow.org_name or ow.organization_id
    assert orpo.params["validated_params"]["finetuned_model_id"] == \
        f"{org}/Meta-Llama-3.1-8B-{orpo.id}"
    sft = ow.weighted_sft.create(
        model="unsloth/Qwen3-4B", training_file=files["conv"], loss="sft", epochs=20,
        learning_rate=1e-4, r=32, optim="adamw_torch", eval_every_n_steps=1,
        logp_callback_datasets={"in-distribution": files["conv"]}, requires_vram_gb=16)
    assert sft.id.startswith("sftjob-") and sft.requires_vram_gb == 16
    assert sft.script == "python -m openweights.jobs.weighted_sft.worker"
    lp = ow.logprob.create(model="unsloth/Qwen3-8B", dataset=files["conv"])
    assert lp.id.startswith("lpjob-") and lp.requires_vram_gb == 36
    assert lp.params["validated_params"]["batch_size"] == 8
    sampled = ow.fine_tuning.create(
        model="unsloth/Qwen3-4B", training_file=files["conv"], loss="sft",
        learning_rate=1e-4, eval_every_n_steps=1, base_image="nielsrolf/ow-default:v0.7",
        sampling_callbacks=[{"dataset": files["conv"], "eval_steps": 10, "tag": "samples",
                             "temperature": 1, "max_tokens": 100}])
    assert sampled.docker_image == "nielsrolf/ow-default:v0.7"


def test_a_local_dataset_is_uploaded_with_the_purpose_it_needs(
        ow: OpenWeights, tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "pref.jsonl", PREF)
    job = ow.fine_tuning.create(model="org/tiny-1B", training_file=str(path), loss="dpo",
                                requires_vram_gb=0)
    file_id = job.params["validated_params"]["training_file"]
    assert file_id.startswith("preference:file-")
    assert ow.files.content(file_id) == path.read_bytes()


@pytest.mark.parametrize(("case", "says"), [
    ("wrong purpose", "it must be uploaded with purpose 'preference' or 'preferences'"),
    ("bad row", "line 2"),
    ("missing path", "neither a file id nor a file here"),
    ("typo", "lerning_rate"),
    ("bad lr", "learning_rate"),
    ("bad model id", "finetuned_model_id"),
    ("unknown field", "no_such"),
])
def test_bad_input_is_refused_and_nothing_is_appended(
        ow: OpenWeights, stack: Settings, files: dict[str, str], tmp_path: Path,
        case: str, says: str) -> None:
    bad_rows = tmp_path / "bad.jsonl"
    bad_rows.write_text(json.dumps(CONV[0]) + "\n" + json.dumps({"messages": [
        {"role": "robot", "content": "x"}]}) + "\n")
    params: dict[str, object] = {"model": "org/tiny", "training_file": files["conv"],
                                 "loss": "sft", "requires_vram_gb": 0}
    params |= {
        "wrong purpose": {"loss": "dpo"},
        "bad row": {"training_file": str(bad_rows)},
        "missing path": {"test_file": str(tmp_path / "nope.jsonl")},
        "typo": {"lerning_rate": 1e-4},
        "bad lr": {"learning_rate": "1e-4 +"},
        "bad model id": {"finetuned_model_id": "{org_id}/{model_name}--{job_id}"},
        "unknown field": {"finetuned_model_id": "{org_id}/{no_such}"},
    }[case]
    before = anyio.run(_last_seq, stack)
    with pytest.raises(InvalidRequest, match=says.replace("(", r"\(").replace(")", r"\)")):
        ow.fine_tuning.create(**params)
    assert anyio.run(_last_seq, stack) == before
    assert [j for j in ow.jobs.list(limit=100) if j.id.startswith("ftjob-")] == []


def cli(stack: Settings, *args: str) -> Result:
    env = {"OW_NATS_URL": stack.nats_url, "OW_DATABASE_URL": stack.database_url,
           "OW_NAMESPACE": stack.namespace, "OW_HOME": str(stack.home), "COLUMNS": "200"}
    return CliRunner().invoke(app, list(args), env=env)


def test_models_a_run_announces_are_listed(ow: OpenWeights, stack: Settings,
                                           tmp_path: Path) -> None:
    weights = tmp_path / "adapter_model.safetensors"
    weights.write_bytes(b"\x00weights")
    config = tmp_path / "adapter_config.json"
    config.write_text(json.dumps({"base_model_name_or_path": "org/base"}))
    files = {"adapter_model.safetensors": ow.files.upload(weights, "model")["id"],
             "adapter_config.json": ow.files.upload(config, "model")["id"]}
    ow.run.log({"loss": 1.0})
    ow.run.log(model_event(model_id="me/base-ftjob-0", base_model="org/base", kind="lora",
                           files=files, step=3))
    ow.run.log({"type": "model", "model_id": "me/broken"})  # not a model: not listed
    ow.run.log(model_event(model_id="me/base-ftjob-0", base_model="org/base", kind="lora",
                           files=files, step=5))  # announced again: the newest wins
    ow.run.flush()
    listed = ow.models.list()
    assert [m["id"] for m in listed] == ["me/base-ftjob-0"]
    model = ow.models.retrieve("me/base-ftjob-0")
    assert (model["kind"], model["step"], model["files"], model["job_id"]) == (
        "lora", 5, files, ow.run.job_id)
    assert ow.models.list(job_id="sjob-none") == []
    out = ow.models.download("me/base-ftjob-0", tmp_path / "model")
    assert (out / "adapter_model.safetensors").read_bytes() == b"\x00weights"
    with pytest.raises(NotFound, match="ow models ls"):
        ow.models.retrieve("me/never")

    shown = cli(stack, "models", "ls")
    assert shown.exit_code == 0 and "me/base-ftjob-0" in shown.output, shown.output
    assert "lora" in shown.output and "org/base" in shown.output
    as_json = json.loads(cli(stack, "models", "ls", "--json").output)
    assert [m["id"] for m in as_json] == ["me/base-ftjob-0"]
