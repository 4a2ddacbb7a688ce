"""Jobs run end to end on "RunPod": the provisioner's RunPod backend against the stand-in,
whose pods run the real agent. Cheapest hardware first, the next option when RunPod has
none, and pods given back when idle; only this deployment's pods are ever terminated."""

from __future__ import annotations

from openweights.events import (
    JobWaitReasonChanged,
    WorkerMachineStarted,
    WorkerRequested,
    WorkerTerminated,
)
from openweights.hardware import GPUS
from tests.lifecycle.runpod_rig import RunPodRig, runpod  # noqa: F401 - the fixture

AGENT = "python -m openweights.services.agent"


def test_a_job_runs_on_the_cheapest_pod_which_is_given_back_when_idle(
        runpod: RunPodRig) -> None:  # noqa: F811
    runpod.configure(idle_shutdown_s=1.0, min_worker_age_s=2.0)
    lab = runpod.lab
    lab.start()
    job = runpod.submit('echo "gpus=$N_GPUS cuda=$CUDA_VISIBLE_DEVICES"')
    assert job.wait(timeout=90).status == "completed"
    assert lab.live.wait_line("gpus=", 10).text == "gpus=1 cuda=0"

    started = lab.live.wait_event(WorkerMachineStarted, 1).event
    assert isinstance(started, WorkerMachineStarted)
    pod = runpod.pod_of(started)
    org = lab.settings.default_org
    assert started.machine_id == f"{org}/{pod.id}"
    assert pod.name == f"{runpod.prefix}.{org}.{started.worker_id}"
    # The cheapest verified GPU, priced from the catalog in the start event.
    assert (pod.gpu_type_id, pod.gpu_count, started.price_per_hour) == (GPUS["A4500"], 1, 0.32)
    assert (pod.image, pod.docker_args) == ("dev", AGENT)
    assert pod.env["OW_WORKER_ID"] == started.worker_id and pod.env["OW_MANAGED"] == "1"
    # The machine holds no service credential, key or database of the operator's.
    for secret in ("OW_DATABASE_URL", "OW_SECRET_KEY", "OW_RUNPOD_API_KEY", "OW_HOME",
                   "RUNPOD_API_KEY", "OW_NATS_AUTH_FILE"):
        assert secret not in pod.env

    gone = lab.live.wait_event(WorkerTerminated, 60,
                               lambda e: e.worker_id == started.worker_id)
    assert gone.event.reason.startswith("idle since")
    runpod.stub.wait(lambda: pod.id not in runpod.stub.pods, 30, "terminated pod")


def test_no_capacity_tries_the_next_cheapest_and_the_job_says_so(runpod: RunPodRig) -> None:  # noqa: F811
    runpod.stub.no_capacity.add(GPUS["A4500"])
    lab = runpod.lab
    lab.start()
    job = runpod.submit("echo fine")
    assert job.wait(timeout=90).status == "completed"
    tried = [s.event.hardware for s in lab.live.of(WorkerRequested)]
    assert tried[:2] == ["1x A4500", "1x A40"] and "1x A40" in tried
    reasons = [s.event.reason for s in lab.live.of(JobWaitReasonChanged)
               if s.event.reason]
    assert any(r.startswith("no capacity for 1x A4500 since ") and r.endswith(
        "; trying 1x A40") for r in reasons), reasons
    assert lab.ow.jobs.retrieve(job.id).status == "completed"  # a shortage fails nothing


def test_a_pod_that_vanishes_makes_its_worker_lost_and_the_job_runs_again(
        runpod: RunPodRig, tmp_path) -> None:  # noqa: F811
    from openweights.events import RunStarted, WorkerLost

    lab = runpod.lab
    lab.start()
    release = tmp_path / "release"
    job = runpod.submit(f"while [ ! -e {release} ]; do sleep 0.05; done; echo done")
    lab.live.wait_event(RunStarted, 90)
    first = lab.live.wait_event(WorkerMachineStarted, 1).event
    assert isinstance(first, WorkerMachineStarted)
    runpod.stub.vanish(runpod.pod_of(first).id)
    lost = lab.live.wait_event(WorkerLost, 60, lambda e: e.worker_id == first.worker_id)
    assert "gone" in lost.event.reason
    lab.live.wait(lambda live: len(live.of(RunStarted)) == 2, 90, "the job's second run")
    release.touch()
    assert job.wait(timeout=60).status == "completed"


def test_the_jobs_default_vram_is_served_on_runpod_by_the_cheapest_fitting_gpu(
        runpod: RunPodRig) -> None:  # noqa: F811
    lab = runpod.lab
    lab.start()
    # 24 GB, the Jobs default nobody chose: refused on a CPU-only local stack, but RunPod
    # rents it, and the cheapest GPU whose VRAM less 5 GB covers it is an A40 (48 GB).
    job = runpod.submit("echo big enough", requires_vram_gb=24, vram_defaulted=True)
    assert job.wait(timeout=90).status == "completed"
    assert [s.event.hardware for s in lab.live.of(WorkerRequested)] == ["1x A40"]


def test_a_job_on_a_multi_gpu_pod_sees_all_its_gpus(runpod: RunPodRig) -> None:  # noqa: F811
    lab = runpod.lab
    lab.start()
    job = runpod.submit('echo "gpus=$N_GPUS cuda=$CUDA_VISIBLE_DEVICES"',
                        allowed_hardware=["2x A40"])
    assert job.wait(timeout=90).status == "completed"
    assert lab.live.wait_line("gpus=", 10).text == "gpus=2 cuda=0,1"
    started = lab.live.wait_event(WorkerMachineStarted, 1).event
    assert isinstance(started, WorkerMachineStarted)
    assert started.price_per_hour == 0.88
    assert (runpod.pod_of(started).gpu_type_id, runpod.pod_of(started).gpu_count) == (
        GPUS["A40"], 2)
