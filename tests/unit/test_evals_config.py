"""The evaluation jobs' params (REFERENCE 1.15, 1.16): the original's defaults, Inspect's
options parsed into ``inspect_ai.eval`` arguments against an allowlist (never a shell
string), refusals naming the option, and the score event and its table."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from openweights.jobs.evals.config import InspectAIConfig, MMLUProConfig
from openweights.jobs.evals.job import split_task_file
from openweights.jobs.evals.options import InvalidOption, parse_options
from openweights.jobs.evals.scores import parse_score_event, score_event, score_table


def test_defaults_are_the_originals() -> None:
    i = InspectAIConfig(model="org/m", eval_name="inspect_evals/gpqa_diamond")
    assert (i.max_model_len, i.options, i.task_file) == (8192, " ", None)
    m = MMLUProConfig(model="org/m")
    assert (m.ntrain, m.selected_subjects, m.save_dir, m.global_record_file, m.gpu_util) == \
        (5, "all", "uploads", "eval_record_collection.csv", "0.9")
    assert (m.max_model_len, m.max_new_tokens, m.dataset) == (4096, 2048, "TIGER-Lab/MMLU-Pro")


def test_the_cookbook_options_parse() -> None:
    assert parse_options("--top-p 0.9") == {"top_p": 0.9}
    assert parse_options(" ") == {} and parse_options(None) == {}


def test_options_become_eval_arguments() -> None:
    got = parse_options("--limit 10 --epochs=2 -T subset=hard -T n=3 --task-arg 'x=a b' "
                        "--temperature 0 --max-tokens 64 --seed 7 --stop-seqs a,b "
                        "--logprobs --no-fail-on-error --sample-id 1,x2 --reasoning-effort low")
    assert got == {"limit": 10, "epochs": 2, "task_args": {"subset": "hard", "n": 3, "x": "a b"},
                   "temperature": 0.0, "max_tokens": 64, "seed": 7, "stop_seqs": ["a", "b"],
                   "logprobs": True, "fail_on_error": False, "sample_id": [1, "x2"],
                   "reasoning_effort": "low"}
    assert parse_options("--limit 3-5") == {"limit": [3, 5]}


@pytest.mark.parametrize(("options", "says"), [
    ("--limit 10; rm -rf /", "--limit '10;'"),
    ("--limit 10 && curl evil", "'&&'"),
    ("$(curl evil)", "'$(curl'"),
    ("--model openai/gpt-4", "openweights sets the job's model itself"),
    ("-M base_url=http://x", "-M is not accepted"),
    ("--log-dir /tmp", "--log-dir is not accepted"),
    ("--sandbox docker", "option --sandbox is not accepted"),
    ("--limit", "--limit needs a value"),
    ("--limit zero", "--limit 'zero'"),
    ("--epochs 0", "positive"),
    ("--temperature nan", "finite"),
    ("-T novalue", "key=value"),
    ("--logprobs=yes", "flag"),
    ("--reasoning-effort max", "one of minimal"),
    ("--limit '10", "shell words"),
])
def test_bad_options_are_refused_naming_them(options: str, says: str) -> None:
    with pytest.raises(InvalidOption) as err:
        parse_options(options)
    assert says in str(err.value)
    with pytest.raises(ValidationError) as verr:
        InspectAIConfig(model="org/m", eval_name="t", options=options)
    assert says in str(verr.value)


@pytest.mark.parametrize(("cls", "params", "says"), [
    (InspectAIConfig, {"eval_name": "t", "bogus": 1}, "bogus"),
    (InspectAIConfig, {"eval_name": ""}, "eval_name"),
    (InspectAIConfig, {"eval_name": "t", "model": "no-slash"}, "org/name"),
    (MMLUProConfig, {"ntrain": -1}, "ntrain"),
    (MMLUProConfig, {"nshots": 5}, "nshots"),
    (MMLUProConfig, {"save_dir": "/etc"}, "relative"),
    (MMLUProConfig, {"save_dir": "results"}, "uploads/"),
    (MMLUProConfig, {"global_record_file": "../x.csv"}, "relative"),
    (MMLUProConfig, {"gpu_util": "2"}, "gpu_util"),
])
def test_bad_params_are_refused(cls: type, params: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError) as err:
        cls(**({"model": "org/m"} | params))
    assert says in str(err.value)


def test_selected_subjects_match_as_the_original() -> None:
    subjects = ["biology", "computer science", "math", "other"]
    assert MMLUProConfig(model="o/m").subjects(subjects) == subjects
    assert MMLUProConfig(model="o/m", selected_subjects="computer_science,math").subjects(
        subjects) == ["computer science", "math"]
    assert MMLUProConfig(model="o/m", selected_subjects="bio").subjects(subjects) == ["biology"]


def test_task_files_are_told_from_registry_names() -> None:
    assert split_task_file("inspect_evals/gpqa_diamond") is None
    path, task = split_task_file("tasks/tiny.py@arith")  # type: ignore[misc]
    assert (path.name, task) == ("tiny.py", "@arith")


def test_the_score_event_and_its_table() -> None:
    e = score_event(eval="mmlu_pro", model="o/m", metrics={"accuracy": 0.5}, samples=4,
                    subjects={"math": {"correct": 2, "total": 4}})
    assert e["type"] == "score" and e["subjects"]["math"]["correct"] == 2
    assert parse_score_event(e).metrics == {"accuracy": 0.5}  # type: ignore[union-attr]
    assert parse_score_event({"type": "score", "eval": "x"}) is None
    assert parse_score_event({"type": "metrics"}) is None
    with pytest.raises(ValidationError):
        score_event(eval="x", model="o/m", metrics={"acc": float("nan")})
    columns, rows = score_table([
        {"model": "o/b", "eval": "tiny", "metrics": {"match/accuracy": 1.0}},
        {"model": "o/a", "eval": "mmlu_pro", "metrics": {"accuracy": 0.25}},
        {"model": "o/a", "eval": "tiny", "metrics": {"match/accuracy": 0.5}}])
    assert columns == ["tiny/match/accuracy", "mmlu_pro/accuracy"]
    assert rows == {"o/b": {"tiny/match/accuracy": 1.0},
                    "o/a": {"mmlu_pro/accuracy": 0.25, "tiny/match/accuracy": 0.5}}


def test_the_vllm_worker_environment_has_what_the_evaluations_import() -> None:
    from openweights.workerenv.requirements import requirements_for
    from openweights.workerenv.specs import VLLM

    reqs = set(requirements_for(VLLM))
    assert {"inspect-ai==0.3.285", "datasets"} <= reqs
