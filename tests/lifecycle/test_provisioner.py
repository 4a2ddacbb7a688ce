"""The provisioner starts machines for demand, never more than ``max_workers``, and
releases idle managed ones; every decision is an event with its reason."""

from __future__ import annotations

import anyio

from openweights.cli.audit import history
from openweights.events import (
    JobCompleted,
    RunStarted,
    WorkerRegistered,
    WorkerRequested,
    WorkerShutdownRequested,
    WorkerTerminated,
)


def test_an_idle_managed_worker_is_shut_down_and_an_unmanaged_one_never(lab) -> None:
    settings = lab.configure(idle_shutdown_s=1.0, min_worker_age_s=2.0)
    lab.start()
    lab.spawn_agent("by-hand", image="not-the-jobs-image")  # unmanaged, idle from now on
    kept = lab.live.wait_event(WorkerRegistered, 30, lambda e: e.worker_id == "by-hand")

    job = lab.submit("echo some work")
    assert job.wait(timeout=60).status == "completed"
    gone = lab.live.wait_event(WorkerTerminated, 30)
    managed = gone.agg_id

    rows = anyio.run(history, settings, settings.default_org, "worker", managed)
    events = [(r["event"], r["by"]["kind"], r["changes"].get("reason")) for r in rows]
    assert [e[0] for e in events] == [
        "worker.requested/1", "worker.machine_started/2", "worker.registered/1",
        "worker.shutdown_requested/1", "worker.stopped/1", "worker.terminated/1"]
    _, _, _, (_, by, reason), _, _ = events
    assert by == "provisioner" and reason.startswith("idle since")

    # The unmanaged agent was older and idle for longer the whole time, yet it stays.
    assert kept.seq < lab.live.wait_event(WorkerRequested, 1).seq
    assert [r["event"] for r in anyio.run(history, settings, settings.default_org, "worker",
                                          "by-hand")] == ["worker.registered/1"]
    assert not [s for s in lab.live.of(WorkerShutdownRequested) if s.agg_id == "by-hand"]


def test_never_more_than_max_workers_even_in_the_pass_that_starts_them(lab, tmp_path) -> None:
    lab.configure(max_workers=2)
    lab.start("projector", "api", "scheduler")
    release = tmp_path / "release"
    jobs = lab.submit_many([f"while [ ! -e {release} ]; do sleep 0.02; done"] * 6)
    # Started after the jobs: its first pass sees six pending jobs and no worker at all.
    lab.start("provisioner")
    # Both machines busy and four jobs still waiting: every pass now has unmet demand.
    lab.live.wait(lambda live: len(live.of(RunStarted)) == 2, timeout=60, what="2 runs")
    release.touch()
    ids = {j.id for j in jobs}
    done = lab.live.wait(lambda live: {s.agg_id for s in live.of(JobCompleted)} >= ids
                         and live.of(JobCompleted), timeout=60, what="6 completed jobs")

    live: set[str] = set()
    most = 0
    for s in lab.read("worker"):  # every worker change, in log order
        if isinstance(s.event, WorkerRequested):
            live.add(s.agg_id)
        elif isinstance(s.event, WorkerTerminated):
            live.discard(s.agg_id)
        most = max(most, len(live))
    assert most == 2
    assert len({s.event.worker_id for s in done}) == 2  # both did work

    lab.sees(max(s.seq for s in done))
    lab.ow.jobs.list(limit=1)  # returns once the read models include the log up to there
    rows = lab.sql("SELECT status, count(*) AS n FROM workers GROUP BY status")
    assert {r["status"]: r["n"] for r in rows} == {"active": 2}
