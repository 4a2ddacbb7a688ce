"""The Inspect AI worker's pure parts: each scorer's metrics named ``<scorer>/<metric>``
from an Inspect log's results, and the uploaded task file written into the job's
directory under the name ``eval_name`` gives it (never a path elsewhere)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from openweights.jobs.evals.config import InspectAIConfig
from openweights.jobs.evals.inspect_eval import _task, metrics_of
from openweights.jobs.unsloth.report import LocalReporter


def _metric(value: object) -> SimpleNamespace:
    return SimpleNamespace(value=value)


def test_metrics_are_named_by_scorer_and_metric() -> None:
    log = SimpleNamespace(results=SimpleNamespace(scores=[
        SimpleNamespace(name="includes", metrics={"accuracy": _metric(0.5),
                                                  "stderr": _metric(0.25)}),
        SimpleNamespace(name="judge", metrics={"mean": _metric(3), "odd": _metric("n/a"),
                                               "nan": _metric(float("nan"))})]))
    assert metrics_of(log) == {"includes/accuracy": 0.5, "includes/stderr": 0.25,
                               "judge/mean": 3.0}
    assert metrics_of(SimpleNamespace(results=None)) == {}


def test_the_task_file_lands_in_the_job_directory(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    stored = tmp_path / "stored.py"
    stored.write_text("# a task\n")
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    monkeypatch.chdir(job_dir)
    reporter = LocalReporter(tmp_path / "out")
    try:
        cfg = InspectAIConfig(model="o/m", eval_name="tiny.py@qa", task_file=str(stored))
        assert _task(cfg, reporter) == "tiny.py@qa"
        assert (job_dir / "tiny.py").read_text() == "# a task\n"
        installed = InspectAIConfig(model="o/m", eval_name="pytest/some_task")
        assert _task(installed, reporter) == "pytest/some_task"  # a package found here
        missing = InspectAIConfig(model="o/m", eval_name="no_such_evals/gpqa_diamond")
        with pytest.raises(ValueError, match="package 'no_such_evals', which this worker"):
            _task(missing, reporter)
        with pytest.raises(ValueError, match="by its file name"):
            _task(InspectAIConfig(model="o/m", eval_name="../x.py", task_file=str(stored)),
                  reporter)
    finally:
        reporter.close()
