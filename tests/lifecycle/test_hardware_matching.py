"""Which agent runs which job: exact ``allowed_hardware``, else the VRAM need fits, and
the smallest fitting machine is preferred. Agents pretend to have GPUs
(``OW_LOCAL_FAKE_GPUS``); one is a plain CPU machine."""

from __future__ import annotations

from openweights.events import JobAssigned, JobCompleted, RunStarted, WorkerRegistered

AGENTS = {"cpu": 0, "gpu1": 1, "gpu2": 2}  # worker id -> fake H100S count (80 GB each)


def _start(lab) -> None:
    lab.start("projector", "api", "scheduler")
    for wid, gpus in AGENTS.items():
        lab.spawn_agent(wid, gpus=gpus)
    seen = lab.live.wait(lambda live: {s.agg_id: s.event for s in live.of(WorkerRegistered)}
                         if len(live.of(WorkerRegistered)) == len(AGENTS) else None,
                         timeout=30, what="registered agents")
    assert {w: (e.hardware_type, e.vram_gb) for w, e in seen.items()} == {
        "cpu": ("cpu", 0), "gpu1": ("1x H100S", 80), "gpu2": ("2x H100S", 160)}


def _ran_on(lab, job_id: str) -> str:
    seen = lab.live.wait_event(JobCompleted, timeout=30, where=lambda e: e.job_id == job_id)
    return seen.event.worker_id


def test_vram_need_picks_the_smallest_idle_agent_that_fits(lab) -> None:
    _start(lab)
    cases = [({"requires_vram_gb": 0}, "cpu"), ({"requires_vram_gb": None}, "cpu"),
             ({"requires_vram_gb": 40}, "gpu1"), ({"requires_vram_gb": 80}, "gpu1"),
             ({"requires_vram_gb": 100}, "gpu2"), ({"allowed_hardware": ["2x H100S"]}, "gpu2")]
    for need, worker in cases:  # one at a time: every agent is idle when it is placed
        assert _ran_on(lab, lab.submit("true", **need).id) == worker, need


def test_allowed_hardware_is_an_exact_match_not_a_minimum(lab, tmp_path) -> None:
    _start(lab)
    release = tmp_path / "release"
    blocker = lab.submit(f"while [ ! -e {release} ]; do sleep 0.02; done",
                         allowed_hardware=["1x H100S"])
    assert lab.live.wait_event(RunStarted, 30, lambda e: e.job_id == blocker.id
                               ).event.worker_id == "gpu1"

    exact = lab.submit("true", allowed_hardware=["1x H100S"])
    # Submitted later, so every pass that assigns it has also considered ``exact``
    # while the bigger gpu2 (and cpu) sat idle.
    probe = lab.submit("true", requires_vram_gb=1)
    assert _ran_on(lab, probe.id) == "gpu2"
    assert not [s for s in lab.read("job", exact.id) if isinstance(s.event, JobAssigned)]

    release.touch()
    assert _ran_on(lab, blocker.id) == "gpu1"
    assert _ran_on(lab, exact.id) == "gpu1"


def test_a_job_no_agent_can_run_stays_pending(lab) -> None:
    _start(lab)
    too_big = lab.submit("true", requires_vram_gb=1000)
    no_such_machine = lab.submit("true", allowed_hardware=["4x H100S", "1x A100"])
    other_image = lab.submit("true", image="someone/else:1")
    # Passes that assign later jobs have seen the three above and skipped them.
    for _ in range(3):
        probe = lab.submit("true", requires_vram_gb=80)
        _ran_on(lab, probe.id)
    for j in (too_big, no_such_machine, other_image):
        assert [s.event.tag for s in lab.read("job", j.id)] == ["job.submitted/2"]
        assert lab.ow.jobs.retrieve(j.id).status == "pending"
