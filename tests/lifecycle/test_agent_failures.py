"""Agents that die, restart, stop or keep failing: every job still ends once, and the
log says what happened to it."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from openweights.events import (
    JobAssigned,
    JobCompleted,
    JobFailed,
    JobRequeued,
    WorkerLost,
    WorkerMachineStarted,
    WorkerRegistered,
    WorkerStopped,
    WorkerTerminated,
)


@pytest.fixture
def second_run(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A script that blocks on its first run (recording its process group) and succeeds
    on the next; the first run's processes are killed at the end, whoever left them."""
    marker, pidfile = tmp_path / "first-run", tmp_path / "first-run.pid"
    script = (f"if [ -e {marker} ]; then echo second run; else touch {marker}; "
              f"echo $$ > {pidfile}; echo started; sleep 30; fi")
    yield script, pidfile
    if pidfile.exists():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)


def _job_tags(lab, job_id: str) -> list[str]:
    return [s.event.tag for s in lab.read("job", job_id)]


def _assert_requeued_then_completed_by(lab, job_id: str, first: str, second: str,
                                       run_status: str, reason: str) -> None:
    # A wait reason is a note about the queue, not a step of the job's lifecycle: the
    # lost machine may back the org's next start off long enough for one to be noted.
    history = [s for s in lab.read("job", job_id) if s.event.tag != "job.wait_reason_changed/1"]
    assert [s.event.tag for s in history] == [
        "job.submitted/2", "job.assigned/1", "run.started/1", "job.requeued/1",
        "job.assigned/1", "run.started/1", "job.completed/1"]
    _, a1, _, requeued, a2, _, done = (s.event for s in history)
    assert (a1.worker_id, a2.worker_id, done.worker_id) == (first, second, second)
    assert (requeued.run_id, requeued.run_status) == (a1.run_id, run_status)
    assert reason in requeued.reason
    lab.sees(history[-1].seq)
    runs = lab.ow.runs.list(job_id=job_id)
    assert [(r.worker_id, r.status) for r in runs] == [(first, run_status),
                                                        (second, "completed")]
    assert "second run" in runs[-1].logs()


def test_sigkilled_managed_agent_its_job_is_requeued_and_completed_by_another(
        lab, second_run) -> None:
    """The provisioner notices the machine is gone (no heartbeat deadline needed)."""
    script, _ = second_run
    lab.start()
    job = lab.submit(script)
    lab.live.wait_line("started", timeout=60)
    first = lab.live.wait_event(JobAssigned, 5, lambda e: e.job_id == job.id).event.worker_id
    machine = lab.live.wait_event(WorkerMachineStarted, 5, lambda e: e.worker_id == first)
    os.kill(int(machine.event.machine_id.removeprefix("local-")), signal.SIGKILL)

    assert job.wait(timeout=60).status == "completed"
    second = lab.live.wait_event(JobCompleted, 5, lambda e: e.job_id == job.id).event.worker_id
    assert second != first
    _assert_requeued_then_completed_by(lab, job.id, first, second, "failed", "worker lost")
    lab.live.wait_event(WorkerTerminated, 10, lambda e: e.worker_id == first)
    assert [s.event.tag for s in lab.read("worker", first)][-2:] == [
        "worker.lost/1", "worker.terminated/1"]


def test_sigkilled_unmanaged_agent_is_declared_lost_after_its_heartbeat_deadline(
        lab, second_run) -> None:
    script, _ = second_run
    lab.start("projector", "api", "scheduler")
    doomed = lab.spawn_agent("doomed")
    job = lab.submit(script)
    lab.live.wait_line("started", timeout=30)
    lab.spawn_agent("heir")
    lab.live.wait_event(WorkerRegistered, 30, lambda e: e.worker_id == "heir")
    doomed.kill()

    assert job.wait(timeout=30).status == "completed"
    lost = lab.live.wait_event(WorkerLost, 5)
    assert lost.event.worker_id == "doomed" and lost.event.reason == "no heartbeat"
    _assert_requeued_then_completed_by(lab, job.id, "doomed", "heir", "failed", "worker lost")


def test_restarted_agent_first_returns_its_orphaned_job(lab, second_run) -> None:
    script, _ = second_run
    lab.configure(worker_lost_s=60.0)  # the restart, not the heartbeat deadline, acts
    lab.start("projector", "api", "scheduler")
    agent = lab.spawn_agent("phoenix")
    orphan = lab.submit(script)
    lab.live.wait_line("started", timeout=30)
    agent.kill()
    agent.wait(10)
    waiting = lab.submit("echo new work")  # pending: phoenix still holds the orphan's run

    lab.spawn_agent("phoenix")
    assert orphan.wait(timeout=30).status == "completed"
    assert waiting.wait(timeout=30).status == "completed"
    _assert_requeued_then_completed_by(lab, orphan.id, "phoenix", "phoenix", "failed",
                                       "worker restarted")
    log = lab.read("*")
    (restart,) = [s for s in log if isinstance(s.event, WorkerRegistered)][1:]
    (requeue,) = [s for s in log if isinstance(s.event, JobRequeued)]
    later_assignments = [s for s in log if isinstance(s.event, JobAssigned) and
                         s.seq > restart.seq]
    assert {s.agg_id for s in later_assignments} == {orphan.id, waiting.id}
    assert restart.seq < requeue.seq < min(s.seq for s in later_assignments)


def test_sigterm_mid_job_gives_the_job_back_with_its_partial_log(lab, second_run,
                                                                  alive) -> None:
    script, pidfile = second_run
    lab.start("projector", "api", "scheduler")
    agent = lab.spawn_agent("graceful")
    job = lab.submit(script)
    lab.live.wait_line("started", timeout=30)
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(20) == 0
    assert not alive(int(pidfile.read_text()))

    requeued = lab.live.wait_event(JobRequeued, 5)
    assert requeued.event.run_status == "canceled" and requeued.event.log_file
    stopped = lab.live.wait_event(WorkerStopped, 5, lambda e: e.worker_id == "graceful")
    lab.sees(stopped.seq)
    assert lab.ow.jobs.retrieve(job.id).status == "pending"
    (run,) = lab.ow.runs.list(job_id=job.id)
    assert run.status == "canceled" and run.logs() == "started\n"
    assert [s.event.tag for s in lab.read("worker", "graceful")] == [
        "worker.registered/1", "worker.stopped/1"]
    assert lab.sql("SELECT status FROM workers WHERE id = 'graceful'") == [
        {"status": "shutdown"}]

    lab.spawn_agent("successor")
    assert job.wait(timeout=30).status == "completed"
    _assert_requeued_then_completed_by(lab, job.id, "graceful", "successor", "canceled",
                                       "shutdown")


def test_five_consecutive_failures_stop_the_agent(lab) -> None:
    lab.configure(max_workers=1)  # one machine takes every failing job
    lab.start()
    jobs = lab.submit_many(["echo failing; exit 3"] * 5)
    terminated = lab.live.wait_event(WorkerTerminated, 60)
    worker = terminated.agg_id

    failed = lab.live.of(JobFailed)
    assert {s.agg_id for s in failed} == {j.id for j in jobs}
    assert {(s.event.worker_id, s.event.exit_code) for s in failed} == {(worker, 3)}
    # What a user sees of one: its reason and its output's end (issue 21, defect 4).
    seen = lab.ow.jobs.wait(jobs[0].id, timeout=30)
    assert seen.error == failed[0].event.error and "return code 3" in seen.error, seen
    assert seen.log_tail().splitlines()[-1] == "failing"
    history = [s.event for s in lab.read("worker", worker)]
    assert [e.tag for e in history] == [
        "worker.requested/1", "worker.machine_started/2", "worker.registered/1",
        "worker.stopped/1", "worker.terminated/1"]
    assert history[3].reason == "5 consecutive failed jobs"
    assert len(lab.live.of(WorkerRegistered)) == 1
