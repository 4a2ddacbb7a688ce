"""The provisioner at scale on the RunPod backend: 10,000 pending jobs, 200 machines.

    python bench/provisioning.py [--jobs 10000] [--machines 200] [--repeat 5]

Builds the state in an in-memory event log (no servers: what is measured is the
provisioner's own work): ``--jobs`` pending jobs (VRAM needs of 0, 8 and 16 GB; every
tenth with an ``allowed_hardware`` list) and ``--machines`` RunPod workers of another
image, each with its pod in the RunPod stand-in (plus 20 leaked pods of this deployment
and 20 foreign ones), at the machine cap so that every job is placed and waits. Reports,
as medians over ``--repeat`` runs:

- selection: ``placement.place`` for all pending jobs (each job's hardware options from
  the catalog, cheapest first), and the catalog alone per job;
- a provisioner pass (``Provisioner.reconcile``: release checks of every machine from
  one pod listing, selection, wait reasons), with a cold and a warm listing;
- a reconciliation pass (``runpod_reconcile.release_leaked``: list the account's pods
  over HTTP, find the ones no live worker owns), the first one releasing the 20 leaks.
The ratio line relates the passes to the selection in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from openweights.adapters.memory import InMemoryEventLog
from openweights.config import Settings
from openweights.domain import job, worker
from openweights.domain.aggregates import JOB, WORKER
from openweights.domain.commands import (
    RecordMachineStarted,
    RegisterWorker,
    RequestWorker,
    SubmitJob,
)
from openweights.events import Actor, JobSpec
from openweights.execute import Executor
from openweights.fold import LogFold
from openweights.logs import configure_logging
from openweights.secretbox import SecretBox
from openweights.services.provisioner.backends.runpod import RunPodBackend
from openweights.services.provisioner.backends.runpod_reconcile import release_leaked
from openweights.services.provisioner.placement import place
from openweights.services.provisioner.provisioner import Provisioner
from openweights.services.testing.runpod_stub import RunPodStub
from openweights.subjects import Subjects

ORG = "bench"


async def build(n_jobs: int, n_machines: int, stub: RunPodStub, key: str,
                settings: Settings) -> tuple[InMemoryEventLog, RunPodBackend]:
    log, s, now = InMemoryEventLog(), Subjects(settings.namespace), datetime.now(UTC)
    backend = RunPodBackend(settings, lambda org: key)
    for i in range(n_jobs):
        cmd = SubmitJob(job_id=f"job-{i:06d}", org=ORG, spec=JobSpec(
            type="custom", model=None, params={"i": i}, script="true", docker_image="img",
            requires_vram_gb=i % 3 * 8,
            allowed_hardware=["1x H100S", "1x A100"] if i % 10 == 0 else None))
        await log.append(s.job(ORG, cmd.job_id), job.decide(None, cmd, now, Actor("client")),
                         expected_last_subject_seq=None)
    for w in range(n_machines):
        wid = f"{ORG}-{w:08x}"
        pod = stub.add_pod(backend.pod_name(ORG, wid), key)
        state = None
        for c in (RequestWorker(worker_id=wid, org=ORG, backend="runpod", hardware="1x A4500",
                                docker_image="other", reason="bench"),
                  RecordMachineStarted(machine_id=f"{ORG}/{pod.id}", price_per_hour=0.32),
                  RegisterWorker(worker_id=wid, org=ORG, docker_image="other",
                                 hardware_type="1x A4500", gpu_type="A4500", gpu_count=1,
                                 vram_gb=20, managed=True)):
            events = worker.decide(state, c, now, Actor("provisioner"))
            state = WORKER.fold(events, state)
            await log.append(s.worker(ORG, wid), events, expected_last_subject_seq=None)
    for i in range(20):  # leaked pods of this deployment, and someone else's
        stub.add_pod(backend.pod_name(ORG, f"{ORG}-leak{i:04d}"), key)
        stub.add_pod(f"notebook-{i}", key)
    return log, backend


async def timed(fn: object, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            await result
        out.append(time.perf_counter() - started)
    return out


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:8.1f} ms"


async def main(n_jobs: int, n_machines: int, repeat: int) -> None:
    configure_logging(json=True, file=open(os.devnull, "w"))  # noqa: SIM115
    root = Path(tempfile.mkdtemp(prefix="ow-bench-prov-"))
    stub = RunPodStub(root).start()
    os.environ["RUNPOD_API_BASE_URL"] = stub.url
    key = stub.add_key("bench")
    settings = Settings(home=root / "home", namespace="bench", backend="runpod",
                        max_workers=n_machines, runpod_poll_s=3600)
    try:
        t0 = time.perf_counter()
        log, backend = await build(n_jobs, n_machines, stub, key, settings)
        fold = await LogFold(log, [">"]).load()
        executor = Executor(log, fold, Subjects(settings.namespace))
        prov = Provisioner(settings, fold, executor, backend, SecretBox(None))  # type: ignore[arg-type]
        print(f"built {n_jobs} pending jobs, {n_machines} machines, "
              f"{len(stub.pods)} pods in {time.perf_counter() - t0:.1f} s")
        pending = [j for j in fold.of_kind(JOB) if j.status == "pending"]
        workers = fold.of_kind(WORKER)
        select = await timed(lambda: place(pending, workers, set(), backend.hardware_options),
                             repeat)
        per_job = await timed(lambda: [backend.hardware_options(j.spec.requires_vram_gb,
                                                                j.spec.allowed_hardware)
                                       for j in pending], repeat)
        cold = await timed(lambda: prov.reconcile(datetime.now(UTC)), 1)
        warm = await timed(lambda: prov.reconcile(datetime.now(UTC)), repeat)
        first_sweep = await timed(lambda: release_leaked(backend, prov), 1)
        sweep = await timed(lambda: release_leaked(backend, prov), repeat)
        leaked_left = len(stub.pods_named(backend.pod_name(ORG, f"{ORG}-leak")))
        print(f"selection (place, {len(pending)} jobs)        {ms(select)}")
        print(f"  catalog options only                 {ms(per_job)}"
              f"  ({statistics.median(per_job) / len(pending) * 1e6:.1f} µs per job)")
        print(f"provisioner pass, cold pod listing     {ms(cold)}")
        print(f"provisioner pass, warm                 {ms(warm)}")
        print(f"reconciliation pass, releasing 20 leaks {ms(first_sweep)}"
              f"  (leaks left: {leaked_left}; foreign pods kept: "
              f"{len(stub.pods_named('notebook-'))})")
        print(f"reconciliation pass, {len(stub.pods)} pods          {ms(sweep)}")
        alive = sum(w.status == "active" for w in fold.of_kind(WORKER))
        noted = sum(j.wait_reason is not None for j in fold.of_kind(JOB))
        print(f"after the passes: {alive} machines still active (none lost), "
              f"{noted} jobs with a wait reason")
        print(f"ratio: warm pass / selection = "
              f"{statistics.median(warm) / statistics.median(select):.2f}, "
              f"reconciliation / selection = "
              f"{statistics.median(sweep) / statistics.median(select):.2f}")
    finally:
        stub.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--machines", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    a = parser.parse_args()
    asyncio.run(main(a.jobs, a.machines, a.repeat))
