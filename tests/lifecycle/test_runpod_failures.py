"""What RunPod's refusals and failures do: a spending limit pauses every start, a refused
key pauses its organization until the key changes, a call that times out leaves a pod
reconciliation releases, a pod that never starts cools its hardware down, and leaked
pods of this deployment are released while every other pod survives. No job fails."""

from __future__ import annotations

from openweights.events import (
    JobWaitReasonChanged,
    WorkerMachineFailed,
    WorkerRequested,
    WorkerTerminated,
)
from openweights.secretbox import new_key
from tests.lifecycle.runpod_rig import RunPodRig, runpod  # noqa: F401 - the fixture

CREATE = "podFindAndDeployOnDemand"


def _reason_with(runpod: RunPodRig, text: str, timeout: float = 60) -> str:  # noqa: F811
    seen = runpod.lab.live.wait_event(JobWaitReasonChanged, timeout,
                                      lambda e: text in (e.reason or ""))
    return str(seen.event.reason)


def test_a_spending_limit_pauses_all_starts_then_they_resume(runpod: RunPodRig) -> None:  # noqa: F811
    runpod.configure(runpod_spend_pause_s=3.0)
    runpod.stub.spending_limit = True
    runpod.lab.start()
    job = runpod.submit("echo paid")
    reason = _reason_with(runpod, "spending limit")
    assert "no starts until" in reason
    # One refusal, not one per option or per pass: the pause holds every start.
    assert runpod.stub.created() == 1
    runpod.stub.spending_limit = False
    assert job.wait(timeout=60).status == "completed"
    assert runpod.stub.created() == 2


def test_a_refused_key_pauses_the_org_until_its_secret_changes(runpod: RunPodRig) -> None:  # noqa: F811
    runpod.configure(secret_key=new_key(), runpod_api_key=None)
    lab = runpod.lab
    lab.start()
    lab.ow.secrets.set(RUNPOD_API_KEY="not-a-runpod-key")  # RunPod answers 401
    job = runpod.submit("echo with a good key")
    assert "RunPod key was refused" in _reason_with(runpod, "key was refused")
    creates = runpod.stub.created()
    assert lab.ow.jobs.retrieve(job.id).status == "pending"  # never failed
    lab.ow.secrets.set(RUNPOD_API_KEY=runpod.stub.add_key("the-right-key"))
    assert job.wait(timeout=60).status == "completed"
    assert runpod.stub.created() == creates + 1  # the paused org tried nothing meanwhile
    failed = lab.live.of(WorkerMachineFailed)
    assert len(failed) == 1 and "refused" in failed[0].event.error


def test_a_create_that_times_out_leaves_a_pod_that_reconciliation_releases(
        runpod: RunPodRig) -> None:  # noqa: F811
    runpod.configure(runpod_timeout_s=1.0)
    runpod.stub.delay_create_s = 2.5
    lab = runpod.lab
    lab.start()
    job = runpod.submit("echo after a timeout")
    assert "no answer within 1 s" in _reason_with(runpod, "no answer")
    failed = lab.live.wait_event(WorkerMachineFailed, 30).event
    runpod.stub.delay_create_s = 0.0
    # RunPod made the pod anyway, after our call gave up: its worker is gone, so the
    # next reconciliation releases it.
    runpod.stub.wait(lambda: runpod.stub.created() >= 1, 30, "the late create")
    runpod.stub.wait(lambda: not any(failed.worker_id in p.name
                                     for p in runpod.stub.pods.values()), 30, "release")
    assert job.wait(timeout=60).status == "completed"


def test_a_pod_that_never_starts_is_terminated_and_cools_its_hardware_down(
        runpod: RunPodRig) -> None:  # noqa: F811
    runpod.configure(never_registered_s=2.0, hardware_failure_threshold=1,
                     hardware_cooldown_ladder_min="30")
    runpod.stub.never_start = True
    lab = runpod.lab
    lab.start()
    job = runpod.submit("echo on the second machine")
    gone = lab.live.wait_event(WorkerTerminated, 60,
                               lambda e: e.reason == "never registered").event
    runpod.stub.wait(lambda: not any(gone.worker_id in p.name
                                     for p in runpod.stub.pods.values()), 30, "release")
    runpod.stub.never_start = False
    assert job.wait(timeout=90).status == "completed"
    hardware = [s.event.hardware for s in lab.live.of(WorkerRequested)]
    assert hardware[0] == "1x A4500" and hardware[-1] == "1x A40"  # A4500 cooled down


def test_reconciliation_releases_leaked_pods_and_never_a_foreign_one(runpod: RunPodRig) -> None:  # noqa: F811
    lab, stub = runpod.lab, runpod.stub
    org = lab.settings.default_org
    leaked = stub.add_pod(f"{runpod.prefix}.{org}.{org}-0badc0de", runpod.key)
    foreign = [stub.add_pod(name, runpod.key) for name in (
        "my-notebook",  # a person's pod on the same account
        f"ow-another-deployment.{org}.{org}-12345678",  # another deployment's
        f"{runpod.prefix}.another-org.another-org-12345678",  # an org not of this stack
        f"{runpod.prefix}.{org}",  # not a name this deployment gives
    )]
    lab.start()
    stub.wait(lambda: leaked.id not in stub.pods, 30, "the leaked pod's release")
    # Two more whole passes over the account's pods, and the others are all still there.
    seen = stub.calls.count("myself.pods")
    stub.wait(lambda: stub.calls.count("myself.pods") >= seen + 2, 30, "two more passes")
    assert all(p.id in stub.pods for p in foreign)
    assert stub.calls.count("podTerminate") == 1
