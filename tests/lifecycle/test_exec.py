"""`ow exec "<cmd>" --wait` (issue 21, missing commands): the command runs on a local
agent with the current directory's files mounted in its job directory; the exit code is
0 iff the job completed."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from openweights import OpenWeights
from openweights.cli.main import app
from openweights.config import Settings


def _ow(stack: Settings, *args: str) -> Result:
    env = {"OW_NATS_URL": stack.nats_url, "OW_DATABASE_URL": stack.database_url,
           "OW_NAMESPACE": stack.namespace, "OW_HOME": str(stack.home), "COLUMNS": "80"}
    return CliRunner().invoke(app, list(args), env=env)


def test_exec_runs_the_command_in_the_mounted_directory(
        full_stack: Settings, ow: OpenWeights, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / "data.txt").write_text("hello from the project\n")
    (project / "sub" / "helper.sh").write_text("echo helper ran\n")
    (project / ".git").mkdir()
    (project / ".git" / "HEAD").write_text("not mounted\n")
    monkeypatch.chdir(project)
    done = _ow(full_stack, "exec", "cat data.txt && sh sub/helper.sh && test ! -e .git",
               "--wait")
    assert done.exit_code == 0, done.output
    assert "2 file(s)" in done.output
    assert "hello from the project" in done.output and "helper ran" in done.output
    assert "completed" in done.output
    job_id = done.output.split()[1]
    assert ow.jobs.retrieve(job_id).status == "completed"

    failed = _ow(full_stack, "exec", "exit 3", "--wait")
    assert failed.exit_code == 1, failed.output
    assert "failed" in failed.output
