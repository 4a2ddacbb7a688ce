"""The built-in training configs: the original's params and defaults (REFERENCE 1.10,
1.11, 1.17), refusals that name the problem, learning-rate expressions, the finetuned
model id template, and the model announcement event."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from openweights.jobs.common import check_repo_id, format_model_id, resolve_learning_rate
from openweights.jobs.logprob.config import LogProbConfig
from openweights.jobs.models import model_event, parse_model_event
from openweights.jobs.unsloth.config import TrainingConfig
from openweights.jobs.weighted_sft.config import WeightedSFTConfig

CONV = "conversations:file-0123456789ab"
PREF = "preference:file-0123456789ab"


def test_defaults_are_the_originals() -> None:
    c = TrainingConfig(model="unsloth/Qwen3-4B", training_file=CONV, loss="sft")
    assert (c.max_seq_length, c.load_in_4bit, c.r, c.lora_alpha, c.lora_dropout) == \
        (2048, False, 16, 16, 0.0)
    assert (c.epochs, c.max_steps, c.per_device_train_batch_size,
            c.gradient_accumulation_steps, c.warmup_steps) == (1, None, 2, 8, 5)
    assert (c.learning_rate, c.optim, c.weight_decay, c.lr_scheduler_type, c.seed) == \
        (1e-4, "adamw_8bit", 0.01, "linear", 3407)
    assert (c.beta, c.save_steps, c.output_dir, c.eval_every_n_steps, c.eval_batch_size) == \
        (0.1, 5000, "./tmp", 5000, 8)
    assert c.use_rslora and c.merge_before_push and c.push_to_private and c.packing
    assert c.train_on_responses_only and c.is_peft and c.lora_bias == "none"
    assert c.finetuned_model_id == "{org_id}/{model_name}-{job_id}"
    assert c.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                "up_proj", "down_proj"]
    assert c.logp_callback_datasets == {} and c.sampling_callbacks is None
    # No test file: nothing to evaluate on, whatever the strategy says.
    assert c.test_file_eval_strategy == "no"
    with_test = TrainingConfig(model="m/x", training_file=CONV, test_file=CONV, loss="sft")
    assert with_test.test_file_eval_strategy == "epoch"


def test_the_dump_reads_back_the_same() -> None:
    c = TrainingConfig(model="m/x", training_file=PREF, loss="dpo", learning_rate="-5",
                       sampling_callbacks=[{"dataset": CONV, "temperature": 1}])
    dumped = c.model_dump(mode="json")
    assert TrainingConfig.model_validate(dumped) == c
    assert dumped["learning_rate"] == "-5"  # kept as given, evaluated by the worker
    assert c.learning_rate_value() == pytest.approx(1e-5)
    assert dumped["sampling_callbacks"][0]["eval_steps"] == 10


@pytest.mark.parametrize(("params", "says"), [
    ({"lr": 1e-4}, "lr"),
    ({"loss": "ppo"}, "loss"),
    ({"loss": "dpo"}, "purpose 'preference' or 'preferences'"),
    ({"training_file": PREF}, "purpose 'conversations'"),
    ({"test_file": PREF}, "test_file"),
    ({"optim": "lion"}, "optim must be one of"),
    ({"lr_scheduler_type": "step"}, "lr_scheduler_type"),
    ({"lora_dropout": 1.5}, "lora_dropout"),
    ({"learning_rate": -1e-4}, "positive"),
    ({"learning_rate": "__import__('os')"}, "not a number or arithmetic"),
    ({"eval_every_n_steps": 0}, "positive"),
    ({"finetuned_model_id": "just-a-name"}, "org/name"),
    ({"logp_callback_datasets": {"t": CONV}, "load_in_4bit": True}, "4-bit"),
    ({"logp_callback_datasets": {"t": PREF}}, "logp_callback_datasets['t']"),
    ({"sampling_callbacks": [{"dataset": CONV, "max_tokens": 0}]}, "max_tokens"),
    ({"sampling_callbacks": [{"dataset": CONV, "bogus": 1}]}, "bogus"),
])
def test_bad_params_are_refused_naming_the_problem(params: dict[str, object],
                                                    says: str) -> None:
    base: dict[str, object] = {"model": "m/x", "training_file": CONV, "loss": "sft"}
    with pytest.raises(ValidationError) as err:
        TrainingConfig(**(base | params))
    assert says in str(err.value)


def test_the_cookbook_calls_validate_unchanged() -> None:
    TrainingConfig(model="unsloth/Qwen3-4B", training_file=CONV, loss="sft", epochs=1,
                   learning_rate=1e-4, r=32, merge_before_push=False)
    TrainingConfig(model="unsloth/Meta-Llama-3.1-8B", training_file=PREF, loss="dpo",
                   epochs=1, learning_rate=1e-5, beta=0.1)
    TrainingConfig(model="unsloth/Meta-Llama-3.1-8B", training_file=PREF, loss="orpo")
    TrainingConfig(model="unsloth/Qwen3-4B", training_file=CONV, loss="sft", epochs=4,
                   learning_rate=1e-4, r=32, eval_every_n_steps=1,
                   logp_callback_datasets={"in-distribution": CONV})
    w = WeightedSFTConfig(model="unsloth/Qwen3-4B", training_file=CONV, loss="sft",
                          epochs=20, learning_rate=1e-4, r=32, optim="adamw_torch",
                          eval_every_n_steps=1,
                          logp_callback_datasets={"in-distribution": CONV})
    assert w.eval_steps_value() == 1
    LogProbConfig(model="unsloth/Qwen3-4B", dataset=CONV, batch_size=8)


def test_weighted_sft_differs_where_the_original_does() -> None:
    w = WeightedSFTConfig(model="m/x", training_file=CONV, logging_steps=3,
                          sampling_callbacks=[{"dataset": CONV}])
    assert (w.loss, w.optim, w.eval_every_n_steps, w.eval_steps_value()) == \
        ("sft", "adamw_torch", "log", 3)
    assert w.sampling_callbacks is not None and w.sampling_callbacks[0].eval_steps == "log"
    for bad in ({"loss": "dpo"}, {"optim": "adamw_8bit"}, {"beta": 0.1}, {"packing": True},
                {"load_in_4bit": True}):  # 4-bit with the default merge_before_push
        with pytest.raises(ValidationError):
            WeightedSFTConfig(**({"model": "m/x", "training_file": CONV} | bad))
    with pytest.raises(ValidationError, match="purpose 'conversations'"):
        LogProbConfig(model="m/x", dataset=PREF)


@pytest.mark.parametrize(("given", "lr"), [
    (1e-4, 1e-4), ("1e-4", 1e-4), ("2 * 1e-5", 2e-5), ("10**-3", 1e-3), ("-4", 1e-4),
    ("(1 + 1) / 4e4", 5e-5),
])
def test_learning_rate_expressions(given: float | str, lr: float) -> None:
    assert resolve_learning_rate(given) == pytest.approx(lr)


@pytest.mark.parametrize("bad", ["0", 0.0, "1/0", "x", "1e-4 +", "[1]", True, "10**1000"])
def test_bad_learning_rates(bad: float | str) -> None:
    with pytest.raises(ValueError, match="learning_rate"):
        resolve_learning_rate(bad)


def test_the_model_id_template() -> None:
    params = {"model": "unsloth/Qwen3-4B", "loss": "sft", "r": 32}
    assert format_model_id("{org_id}/{model_name}-{job_id}", org_id="me",
                           model="unsloth/Qwen3-4B", params=params) == "me/Qwen3-4B-{job_id}"
    assert format_model_id("{org_id}/{model_name}-{loss}-{tag}", org_id="me",
                           model="unsloth/Qwen3-4B", params=params,
                           extra={"tag": "v2"}) == "me/Qwen3-4B-sft-v2"
    with pytest.raises(ValueError, match="tag"):
        format_model_id("{org_id}/{tag}", org_id="me", model="a/b", params=params)
    assert check_repo_id("me/Qwen3-4B-ftjob-0123456789ab") == "me/Qwen3-4B-ftjob-0123456789ab"
    for bad in ("None/x", "unsloth/x", "a/b/c", "me/a--b", "me/a b", "me/x."):
        with pytest.raises(ValueError):
            check_repo_id(bad)


def test_the_model_announcement() -> None:
    event = model_event(model_id="me/x", base_model="m/x", kind="lora",
                        files={"adapter_config.json": "model:file-0123456789ab"}, step=3)
    parsed = parse_model_event(event)
    assert parsed is not None and parsed.model_id == "me/x" and parsed.step == 3
    assert parse_model_event({"loss": 1.0}) is None
    assert parse_model_event({**event, "kind": "full"}) is None
    with pytest.raises(ValidationError, match="relative"):
        model_event(model_id="me/x", base_model="m/x", kind="merged",
                    files={"../etc/passwd": "model:file-0123456789ab"})


def test_the_configs_import_no_ml_package() -> None:
    code = ("import sys, openweights.jobs.unsloth.config, openweights.jobs.weighted_sft.config,"
            " openweights.jobs.logprob.config, openweights.jobs.models;"
            " bad = {'torch', 'transformers', 'unsloth', 'trl', 'peft', 'datasets', 'vllm'}"
            " & set(sys.modules); print(sorted(bad)); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
