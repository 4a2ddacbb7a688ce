"""Stopping a running job: a client's cancel, or its own deadline passing. The process
group is stopped within seconds and the output printed so far is kept."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from openweights.events import JobCanceled, RunLogStored, WorkerRegistered


def _sleeper(pidfile: Path) -> str:
    # The command's shell leads the job's process group: its pid is the group id.
    return f"echo $$ > {pidfile}; echo started; sleep 60; echo never printed"


def _start_with_a_ready_agent(lab) -> None:
    """The stack and one registered agent: a job's deadline, counted from its submission,
    then measures the job, not how long a machine takes to start on a busy box."""
    lab.start()
    lab.spawn_agent("timeouts")
    lab.live.wait_event(WorkerRegistered, 60)


def _assert_stopped_with_partial_log(lab, job_id: str, pidfile: Path, alive) -> None:
    stored = lab.live.wait_event(RunLogStored, 15, lambda e: e.job_id == job_id)
    assert not alive(int(pidfile.read_text())), "the job's process outlived its cancel"
    lab.sees(stored.seq)
    (run,) = lab.ow.runs.list(job_id=job_id)
    assert run.status == "canceled" and run.log_file == stored.event.log_file
    assert run.logs() == "started\n"


def test_cancel_stops_a_running_job_and_keeps_its_partial_log(lab, tmp_path: Path,
                                                               alive) -> None:
    lab.start()
    pidfile = tmp_path / "pid"
    job = lab.submit(_sleeper(pidfile))
    lab.live.wait_line("started", timeout=60)

    began = time.monotonic()
    assert lab.ow.jobs.cancel(job.id).status == "canceled"
    _assert_stopped_with_partial_log(lab, job.id, pidfile, alive)
    assert time.monotonic() - began < 5
    (canceled,) = lab.live.of(JobCanceled)
    assert canceled.event.reason == "requested"
    assert lab.ow.jobs.retrieve(job.id).status == "canceled"


def test_a_job_past_its_timeout_ends_canceled_with_reason_timeout(lab, tmp_path: Path,
                                                                 alive) -> None:
    _start_with_a_ready_agent(lab)
    pidfile = tmp_path / "pid"
    deadline = datetime.now(UTC) + timedelta(seconds=3)
    job = lab.submit(_sleeper(pidfile), timeout=deadline)
    lab.live.wait_line("started", timeout=60)

    assert job.wait(timeout=15).status == "canceled"
    assert datetime.now(UTC) - deadline < timedelta(seconds=5)
    _assert_stopped_with_partial_log(lab, job.id, pidfile, alive)
    ends = [s.event for s in lab.read("job", job.id) if isinstance(s.event, JobCanceled)]
    assert [e.reason for e in ends] == ["timeout"]


def test_a_cancel_the_agent_was_not_told_of_reaches_it_through_its_heartbeat(
        lab, tmp_path: Path, alive) -> None:
    """No notice as the cancel is folded (as after a scheduler restart): the agent's
    next heartbeat names a run that is over, and the scheduler tells it then."""
    lab.configure(run_notice_window_s=0)
    lab.start()
    pidfile = tmp_path / "pid"
    job = lab.submit(_sleeper(pidfile))
    lab.live.wait_line("started", timeout=60)

    assert lab.ow.jobs.cancel(job.id).status == "canceled"
    _assert_stopped_with_partial_log(lab, job.id, pidfile, alive)


def test_a_timeout_moved_later_while_the_job_runs_lets_it_finish(lab, tmp_path: Path) -> None:
    _start_with_a_ready_agent(lab)
    deadline = datetime.now(UTC) + timedelta(seconds=2)
    job = lab.submit("echo started; sleep 4; echo finished", timeout=deadline)
    lab.live.wait_line("started", timeout=60)

    lab.ow.jobs.renew_lease(job.id, 60)  # before the first deadline: the agent is told
    assert job.wait(timeout=30).status == "completed"
    (run,) = lab.ow.runs.list(job_id=job.id)
    assert run.logs() == "started\nfinished\n"
