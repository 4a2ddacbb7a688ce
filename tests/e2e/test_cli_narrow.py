"""The CLI at 80 columns (issue 21, defect 8): ids are never cut, numbers print as
numbers, values are not cut mid-string, help pages have no `<bool>` and say what a
command does, and each command says what it did."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from openweights import OpenWeights
from openweights.cli.main import app
from openweights.config import Settings
from tests.e2e.test_cli import FakeAgent


def cli(stack: Settings, *args: str) -> Result:
    env = {"OW_NATS_URL": stack.nats_url, "OW_DATABASE_URL": stack.database_url,
           "OW_NAMESPACE": stack.namespace, "OW_HOME": str(stack.home), "COLUMNS": "80"}
    return CliRunner().invoke(app, list(args), env=env)


def test_ls_and_token_ls_print_whole_ids(stack: Settings, ow: OpenWeights) -> None:
    long = ow.jobs.submit(id_prefix="a-rather-long-experiment-name-for-a-sweep",
                          script="echo hi", docker_image="img", params={"n": 1})
    agent = FakeAgent(ow, stack, "customjob-0123456789ab-narrow-sweep-point-0001")
    agent.start()
    made = [ow.tokens.create(f"laptop of someone with a long name {i}") for i in range(2)]
    listed = cli(stack, "ls")
    assert listed.exit_code == 0, listed.output
    assert max(map(len, listed.output.splitlines())) <= 80
    for job_id in (long.id, agent.job_id):
        assert job_id in listed.output, listed.output
    assert re.search(r"\bw1\b", listed.output)  # the worker id, whole
    tokens = cli(stack, "token", "ls")
    assert tokens.exit_code == 0, tokens.output
    assert max(map(len, tokens.output.splitlines())) <= 80
    for t in made:
        assert t["id"] in tokens.output, tokens.output
    assert "…" not in tokens.output.replace(made[0]["prefix"] + "…", "").replace(
        made[1]["prefix"] + "…", "")


def test_audit_prints_sequences_as_integers_and_whole_values(stack: Settings,
                                                              ow: OpenWeights) -> None:
    words = " ".join(f"word{i}" for i in range(30)) + " THE-END"
    job = ow.jobs.submit(id_prefix="audited", script="echo hi", docker_image="img",
                         params={"text": words})
    ow.jobs.cancel(job.id)
    audit = cli(stack, "audit", "job", job.id)
    assert audit.exit_code == 0, audit.output
    seqs = [line.split("│")[1].strip() for line in audit.output.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()]
    assert seqs and all(s.isdigit() for s in seqs), seqs
    assert "THE-END" in audit.output


def test_help_pages_describe_commands_and_show_no_bool(stack: Settings) -> None:
    for args in ([], ["ls"], ["token"], ["token", "ls"], ["env", "rm"], ["fetch"],
                 ["audit", "job"], ["org", "create"]):
        page = cli(stack, *args, "--help")
        assert page.exit_code == 0, page.output
        assert "<bool>" not in page.output, (args, page.output)
    env_rm = cli(stack, "env", "rm", "--help").output
    assert "Remove a secret" in env_rm


def test_fetch_to_a_file_says_what_it_wrote(stack: Settings, ow: OpenWeights,
                                            tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(b"twelve bytes")
    file_id = ow.files.upload(src, "blob")["id"]
    fetched = cli(stack, "fetch", file_id, "-o", str(tmp_path / "copy.bin"))
    assert fetched.exit_code == 0, fetched.output
    assert (tmp_path / "copy.bin").read_bytes() == b"twelve bytes"
    assert file_id in fetched.output and "12 bytes" in fetched.output
    assert str((tmp_path / "copy.bin").resolve()) in fetched.output.replace("\n", "")


def test_download_lists_every_path_under_the_target_as_given(
        stack: Settings, ow: OpenWeights, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "result.json"
    src.write_bytes(b"{}")
    file_id = ow.files.upload(src, "result")["id"]
    agent = FakeAgent(ow, stack, "customjob-download-0001")
    agent.start()
    agent.metric(file=file_id, path="nested/result.json")
    agent.complete()
    monkeypatch.chdir(tmp_path)
    written = ow.jobs.retrieve(agent.job_id).download("out")
    assert [p.as_posix() for p in written] == [
        f"out/{agent.run_id}.log", "out/nested/result.json"], written
    assert (tmp_path / "out/nested/result.json").read_bytes() == b"{}"


def test_show_prints_its_runs_ids_whole(stack: Settings, ow: OpenWeights) -> None:
    agent = FakeAgent(ow, stack, "customjob-0123456789ab-show-narrow")
    agent.start()
    shown = cli(stack, "show", agent.job_id)
    assert shown.exit_code == 0, shown.output
    assert max(map(len, shown.output.splitlines())) <= 80
    assert agent.run_id in shown.output, shown.output  # copied into `ow logs`, say
    assert re.search(r"\bw1\b", shown.output)
