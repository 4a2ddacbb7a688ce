"""The `ow` jobs and files commands against a running projector + api stack."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from openweights import OpenWeights
from openweights.adapters.nats.eventlog import JetStreamEventLog
from openweights.cli.main import app
from openweights.config import Settings
from openweights.domain import job
from openweights.domain.aggregates import JOB
from openweights.domain.commands import AssignJob, CompleteRun, FailRun, StartRun, SubmitJob
from openweights.events import Actor, Event, JobSpec, RunEventLogged
from openweights.sdk.sync_models import Job
from openweights.subjects import Subjects

ORG = "default"


def cli(stack: Settings, *args: str, input: str | bytes | None = None) -> Result:
    env = {"OW_NATS_URL": stack.nats_url, "OW_DATABASE_URL": stack.database_url,
           "OW_NAMESPACE": stack.namespace, "OW_HOME": str(stack.home), "COLUMNS": "200"}
    return CliRunner().invoke(app, list(args), env=env, input=input)


@contextmanager
def follow(stack: Settings, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`ow <args>` as its own process, so that a test can read its output as it streams."""
    env = {**os.environ, "OW_NATS_URL": str(stack.nats_url), "OW_HOME": str(stack.home),
           "OW_DATABASE_URL": str(stack.database_url), "OW_NAMESPACE": stack.namespace}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ow"), *args], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]


def read_lines(proc: subprocess.Popen[str], n: int) -> list[str]:
    return [proc.stdout.readline() for _ in range(n)]  # type: ignore[union-attr]


def submit(ow: OpenWeights, n: int) -> Job:
    return ow.jobs.submit(id_prefix="customjob", script="echo hi", docker_image="img",
                          params={"n": n})


class FakeAgent:
    """Plays scheduler and agent for one job, which this stack lacks: decisions made by
    the real domain, appended to the log, output published to the run's log subject."""

    def __init__(self, ow: OpenWeights, stack: Settings, job_id: str) -> None:
        self.ow, self.job_id, self.run_id = ow, job_id, f"run-{job_id}-1"
        self.subjects = Subjects(stack.namespace)
        self.nc = ow.call(ow.transport.connect())
        self.log = JetStreamEventLog(self.nc, self.nc.jetstream(), self.subjects)
        self.state: job.JobState | None = None
        self.by = Actor("agent", "w1")
        self.decide(SubmitJob(job_id=job_id, org=ORG, spec=JobSpec(
            type="custom", model="org/m", params={}, script="python train.py",
            docker_image="img", requires_vram_gb=0, allowed_hardware=None)))

    def decide(self, cmd: Any) -> None:
        events = job.decide(self.state, cmd, datetime.now(UTC), self.by)
        self.state = JOB.fold(events, self.state)
        self._append(self.subjects.job(ORG, self.job_id), events)

    def _append(self, subject: str, events: list[Event]) -> None:
        appended = self.ow.call(self.log.append(subject, events, expected_last_subject_seq=None))
        # Read our own write: the next query waits until the read models include it.
        self.ow.transport.seen_seq = max(self.ow.transport.seen_seq, appended.seq)
        self.ow.jobs.retrieve(self.job_id)

    def start(self) -> None:
        self.decide(AssignJob(worker_id="w1", run_id=self.run_id))
        self.decide(StartRun(run_id=self.run_id, worker_id="w1"))

    def metric(self, **data: Any) -> None:
        self._append(self.subjects.run(ORG, self.job_id), [RunEventLogged(
            at=datetime.now(UTC), by=self.by, job_id=self.job_id, run_id=self.run_id,
            data=data)])

    def print(self, text: str) -> None:
        self.ow.call(self.nc.jetstream().publish(self.subjects.log(ORG, self.run_id, "w1"),
                                                 text.encode()))

    def complete(self, log_file: str | None = None) -> None:
        self.decide(CompleteRun(run_id=self.run_id, worker_id="w1", log_file=log_file))


def test_ls_and_show_as_tables_and_json(stack: Settings, ow: OpenWeights) -> None:
    a, b = submit(ow, 1), submit(ow, 2)
    ow.jobs.cancel(b.id)

    table = cli(stack, "ls")
    assert table.exit_code == 0, table.output
    assert a.id in table.stdout and b.id in table.stdout and "canceled" in table.stdout
    listed = json.loads(cli(stack, "ls", "--json").stdout)
    assert {j["id"]: j["status"] for j in listed} == {a.id: "pending", b.id: "canceled"}
    only = json.loads(cli(stack, "ls", "--status", "canceled", "--json").stdout)
    assert [j["id"] for j in only] == [b.id]
    assert cli(stack, "ls", "--status", "pending", "--ids").stdout.split() == [a.id]
    assert cli(stack, "ls", "--status", "bogus").exit_code == 2

    shown = cli(stack, "show", a.id)
    assert shown.exit_code == 0, shown.output
    assert a.id in shown.stdout and '"n": 1' in shown.stdout and "runs" in shown.stdout
    data = json.loads(cli(stack, "show", a.id, "--json").stdout)
    assert (data["id"], data["status"], data["params"], data["runs"]) == (
        a.id, "pending", {"n": 1}, [])


def test_cancel_ids_from_args_and_stdin_skipping_ended_jobs(stack: Settings,
                                                            ow: OpenWeights) -> None:
    a, b, c, done = (submit(ow, n) for n in range(4))
    ow.jobs.cancel(done.id)

    r = cli(stack, "cancel", a.id, done.id)
    assert r.exit_code == 0, r.output
    assert f"canceled {a.id}" in r.stdout and f"skipped {done.id} (canceled)" in r.stdout

    pending = cli(stack, "ls", "--status", "pending", "--json").stdout
    r = cli(stack, "cancel", "--json", input=pending)
    assert r.exit_code == 0, r.output
    results = [json.loads(line) for line in r.stdout.splitlines()]
    assert sorted((x["id"], x["result"]) for x in results) == sorted(
        [(b.id, "canceled"), (c.id, "canceled")])
    assert {j.id: j.status for j in ow.jobs.list()} == dict.fromkeys(
        (a.id, b.id, c.id, done.id), "canceled")

    r = cli(stack, "cancel", input=f"{a.id}\ncustomjob-missing\n")
    assert r.exit_code == 1
    assert f"skipped {a.id}" in r.stdout and "failed customjob-missing" in r.stderr


def test_restart(stack: Settings, ow: OpenWeights) -> None:
    j = submit(ow, 1)
    ow.jobs.cancel(j.id)
    r = cli(stack, "restart", j.id)
    assert r.exit_code == 0, r.output
    assert f"restarted {j.id} (pending)" in r.stdout
    assert ow.jobs.retrieve(j.id).status == "pending"
    again = cli(stack, "restart", j.id, "--json")  # a pending job cannot be restarted
    assert again.exit_code == 1 and "error:" in again.stderr and "Traceback" not in again.output
    said = " ".join(again.stderr.split())  # the job, its state, what helps; no RestartJob
    assert f"job {j.id} is pending" in said and f"`ow cancel {j.id}`" in said, said
    assert "RestartJob" not in said and "refresh the object" not in said, said


def test_upload_and_fetch_round_trip(stack: Settings, tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 123)  # several chunks
    src = tmp_path / "blob.bin"
    src.write_bytes(data)

    up = cli(stack, "files", "upload", str(src), "--purpose", "custom_job_file")
    assert up.exit_code == 0, up.output
    file_id = up.stdout.strip()
    meta = json.loads(cli(stack, "files", "upload", str(src), "--purpose", "custom_job_file",
                          "--json").stdout)
    assert (meta["id"], meta["bytes"], meta["filename"]) == (file_id, len(data), "blob.bin")

    out = tmp_path / "out" / "copy.bin"
    out.parent.mkdir()
    r = cli(stack, "fetch", file_id, "-o", str(out))
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == data and sorted(p.name for p in out.parent.iterdir()) == [
        "copy.bin"]
    r = cli(stack, "fetch", file_id)
    assert r.exit_code == 0 and r.stdout_bytes == data


def test_logs_of_a_finished_run_print_its_log_file(stack: Settings, ow: OpenWeights,
                                                  tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text("step 1\nstep 2\ndone\n")
    file_id = ow.files.upload(log, purpose="log")["id"]
    agent = FakeAgent(ow, stack, "customjob-logged")
    assert cli(stack, "logs", agent.job_id).exit_code == 1  # no run yet
    agent.start()
    agent.complete(log_file=file_id)

    r = cli(stack, "logs", agent.job_id)
    assert r.exit_code == 0, r.output
    assert r.stdout == "step 1\nstep 2\ndone\n"
    assert cli(stack, "logs", agent.job_id, "--run-id", agent.run_id).stdout == r.stdout
    assert cli(stack, "logs", agent.job_id, "--follow").stdout == r.stdout
    missing = cli(stack, "logs", agent.job_id, "--run-id", "run-nope")
    assert missing.exit_code == 1 and "run-nope" in missing.stderr


def test_a_failed_job_shows_its_error_and_the_tail_of_its_log(
        stack: Settings, ow: OpenWeights, tmp_path: Path) -> None:
    # Issue 21, defect 4: the reason was only in `ow audit job`.
    log = tmp_path / "run.log"
    log.write_text("".join(f"step {i}\n" for i in range(1, 31)) + "Traceback: boom\n")
    agent = FakeAgent(ow, stack, "customjob-failing")
    agent.start()
    why = "Process exited with return code 3"
    agent.decide(FailRun(run_id=agent.run_id, worker_id="w1", error=why, exit_code=3,
                         log_file=ow.files.upload(log, purpose="log")["id"]))

    job = ow.jobs.retrieve(agent.job_id)
    assert (job.status, job.error, job["error"]) == ("failed", why, why)
    tail = job.log_tail()
    assert tail.splitlines() == [f"step {i}" for i in range(12, 31)] + ["Traceback: boom"]
    assert job.log_tail(2) == "step 30\nTraceback: boom\n"
    shown = cli(stack, "show", agent.job_id)
    assert shown.exit_code == 0, shown.output
    assert f"error: {why}" in shown.stdout and shown.stdout.endswith(tail), shown.stdout
    assert "step 11\n" not in shown.stdout and f"ow logs {agent.job_id}" in shown.stdout
    data = json.loads(cli(stack, "show", agent.job_id, "--json").stdout)
    assert (data["error"], data["log_tail"]) == (why, tail)
    assert json.loads(cli(stack, "ls", "--json").stdout)[0]["error"] == why
    # A restart clears it: the job waits again, for no reason of its last run.
    assert ow.jobs.restart(agent.job_id).error is None
    assert ow.jobs.retrieve(agent.job_id).error is None


def test_logs_of_a_running_job_and_follow_until_it_ends(stack: Settings,
                                                       ow: OpenWeights) -> None:
    agent = FakeAgent(ow, stack, "customjob-live")
    agent.start()
    assert cli(stack, "logs", agent.job_id).exit_code == 1  # nothing printed yet
    agent.print("line 1\n")
    agent.print("line 2\n")
    r = cli(stack, "logs", agent.job_id)
    assert r.exit_code == 0, r.output
    assert r.stdout == "line 1\nline 2\n"

    # Once the stored lines are out, the follower is subscribed: the rest comes live.
    with follow(stack, "logs", agent.job_id, "--follow") as proc:
        assert read_lines(proc, 2) == ["line 1\n", "line 2\n"]
        agent.print("line 3\n")
        assert read_lines(proc, 1) == ["line 3\n"]
        agent.complete()
        assert proc.wait(30) == 0, "ow logs --follow did not end with the job"
        assert proc.stdout.read() == ""  # type: ignore[union-attr]


def test_follow_logs_merges_stored_and_live_lines_once(stack: Settings,
                                                       ow: OpenWeights) -> None:
    agent = FakeAgent(ow, stack, "customjob-follow")
    agent.start()
    agent.print("stored\n")
    lines = ow.runs.follow_logs(agent.run_id)
    assert next(lines) == "stored\n"
    agent.print("live 1\n")  # subscribed by now: these arrive live (and are not stored twice)
    agent.print("live 2\n")
    assert next(lines) == "live 1\n"
    agent.complete()
    rest: list[str] = []
    with pytest.raises(StopIteration):
        while True:
            rest.append(next(lines))
    assert rest == ["live 2\n"]


def test_events_table_json_and_follow(stack: Settings, ow: OpenWeights) -> None:
    agent = FakeAgent(ow, stack, "customjob-events")
    agent.start()
    for step in range(3):
        agent.metric(step=step, loss=round(1 / (step + 1), 3))

    table = cli(stack, "events", agent.job_id)
    assert table.exit_code == 0, table.output
    assert "loss" in table.stdout and agent.run_id in table.stdout
    rows = [json.loads(line) for line in cli(stack, "events", agent.job_id, "--json")
            .stdout.splitlines()]
    assert [r["data"]["step"] for r in rows] == [0, 1, 2]
    assert {r["run_id"] for r in rows} == {agent.run_id}

    with follow(stack, "events", agent.job_id, "--follow", "--json") as proc:
        assert [json.loads(x)["data"]["step"] for x in read_lines(proc, 3)] == [0, 1, 2]
        agent.metric(step=3, loss=0.2)
        assert json.loads(read_lines(proc, 1)[0])["data"] == {"step": 3, "loss": 0.2}
        agent.complete()
        assert proc.wait(30) == 0, "ow events --follow did not end with the job"


def test_not_found_is_exit_1_with_one_line(stack: Settings) -> None:
    for args in (["show", "customjob-nope"], ["logs", "customjob-nope"],
                 ["events", "customjob-nope"], ["restart", "customjob-nope"],
                 ["fetch", "custom_job_file:file-nope"]):
        r = cli(stack, *args)
        assert r.exit_code == 1, (args, r.output)
        assert r.stderr.startswith("error:") and "not found" in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.output


def test_not_found_names_the_command_that_lists_its_kind(stack: Settings) -> None:
    # Issue 21, defect 6: every kind said "check the id; `ow ls` lists your jobs".
    for args, helps in ((["show", "customjob-nope"], "`ow ls` lists your jobs"),
                        (["fetch", "custom_job_file:file-nope"], "`ow files upload`"),
                        (["token", "revoke", "tok-0000000000000000"], "`ow token ls`"),
                        (["env", "rm", "NOPE"], "`ow env ls`")):
        r = cli(stack, *args)
        said = " ".join(r.stderr.split())
        assert r.exit_code == 1 and helps in said, (args, said)
        assert args[0] == "show" or "ow ls" not in said, (args, said)


def test_unreachable_stack_is_exit_2_with_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"OW_NATS_URL": f"nats://127.0.0.1:{port}", "OW_HOME": str(tmp_path),
           "COLUMNS": "300"}
    for args in (["ls"], ["show", "customjob-x"], ["cancel", "customjob-x"]):
        r = CliRunner().invoke(app, args, env=env)
        assert r.exit_code == 2, (args, r.output)
        assert r.stderr.count("\n") == 1 and "cannot reach openweights" in r.stderr
        assert f"127.0.0.1:{port}" in r.stderr and "ow up" in r.stderr
    r = CliRunner().invoke(app, ["ls"], env={"OW_NATS_URL": None, "OW_HOME": str(tmp_path)})
    assert r.exit_code == 2 and "no openweights stack found" in r.stderr
