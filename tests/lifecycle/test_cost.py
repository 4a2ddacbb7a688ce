"""What work costs, end to end: a machine's price (its ``worker.machine_started/2``) times
its lifetime; a run, its share of that time; a job, its runs; figures served by the api
from the read models (``ow.costs.report``, ``job.cost``, ``ow cost``), and the same after
``ow replay`` rebuilt them from the log.

The history is decided by the real domain at chosen times (as the provisioner, the
scheduler, an agent and a client would decide it) and appended to the real log, so
every span is known to the microsecond and the expected figures are exact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import nats
import pytest

from openweights import OpenWeights
from openweights.adapters.nats.eventlog import JetStreamEventLog
from openweights.adapters.nats.streams import ensure_streams
from openweights.adapters.postgres.db import query
from openweights.config import Settings
from openweights.domain import cost
from openweights.domain.aggregates import JOB, WORKER
from openweights.domain.commands import (
    AssignJob,
    CancelJob,
    CompleteRun,
    RecordMachineStarted,
    RegisterWorker,
    RequestWorker,
    StartRun,
    SubmitJob,
    TerminateWorker,
)
from openweights.events import (
    Actor,
    Event,
    JobAssigned,
    JobCompleted,
    JobSpec,
    WorkerMachineStarted,
    WorkerRequested,
    WorkerTerminated,
)
from openweights.replay import rebuild, verify
from openweights.services.testing.stack import services_thread
from openweights.subjects import Subjects

PRICE = 2.99  # $/hour of the "1x H100S" machine
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ORG, WID = "default", "w-h100s"
JOB_A, JOB_B = "customjob-00000000000a", "customjob-00000000000b"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class History:
    """Decisions made with the real domain at given times, kept as stored messages."""

    def __init__(self, subjects: Subjects) -> None:
        self.s, self.states, self.messages = subjects, {}, []  # type: ignore[var-annotated]

    def worker(self, cmd: Any, seconds: float, by: Actor) -> None:
        self._decide(WORKER, self.s.worker(ORG, WID), WID, cmd, seconds, by)

    def job(self, job_id: str, cmd: Any, seconds: float, by: Actor) -> None:
        self._decide(JOB, self.s.job(ORG, job_id), job_id, cmd, seconds, by)

    def _decide(self, agg: Any, subject: str, key: str, cmd: Any, seconds: float,
                by: Actor) -> None:
        events: list[Event] = agg.decide(self.states.get(key), cmd, at(seconds), by)
        self.states[key] = agg.fold(events, self.states.get(key))
        self.messages.append((subject, events))


def machine_history(subjects: Subjects) -> History:
    """One 1x H100S machine, alive 3599 s; job A (token tok-a) holds it 1800 s and
    completes, job B (token tok-b) holds it 900 s and is canceled."""
    h = History(subjects)
    prov, sched = Actor("provisioner"), Actor("scheduler")
    agent, tok_a, tok_b = Actor("agent", WID), Actor("client", "tok-a"), Actor("client", "tok-b")
    h.worker(RequestWorker(worker_id=WID, org=ORG, backend="local", hardware="1x H100S",
                           docker_image="img", reason="pending job"), 0, prov)
    h.worker(RecordMachineStarted(machine_id="pod-1", price_per_hour=PRICE), 1, prov)
    h.worker(RegisterWorker(worker_id=WID, org=ORG, docker_image="img",
                            hardware_type="1x H100S", gpu_type="H100S", gpu_count=1,
                            vram_gb=80, managed=True), 60, agent)
    spec = JobSpec(type="custom", model=None, params={}, script="python train.py",
                   docker_image="img", requires_vram_gb=0, allowed_hardware=None)
    h.job(JOB_A, SubmitJob(job_id=JOB_A, org=ORG, spec=spec), 2, tok_a)
    h.job(JOB_B, SubmitJob(job_id=JOB_B, org=ORG, spec=spec), 3, tok_b)
    h.job(JOB_A, AssignJob(worker_id=WID, run_id="run-a1"), 100, sched)
    h.job(JOB_A, StartRun(run_id="run-a1", worker_id=WID), 101, agent)
    h.job(JOB_A, CompleteRun(run_id="run-a1", worker_id=WID), 1900, agent)
    h.job(JOB_B, AssignJob(worker_id=WID, run_id="run-b1"), 2000, sched)
    h.job(JOB_B, CancelJob(reason="requested"), 2900, tok_b)
    h.worker(TerminateWorker(reason="idle"), 3600, prov)
    return h


async def append(settings: Settings, h: History) -> int:
    subjects = Subjects(settings.namespace)
    nc = await nats.connect(settings.nats_url)
    try:
        await ensure_streams(nc.jetstream(), settings, subjects)
        log = JetStreamEventLog(nc, nc.jetstream(), subjects)
        last = 0
        for subject, events in h.messages:
            last = (await log.append(subject, events, expected_last_subject_seq=None)).seq
        return last
    finally:
        await nc.close()


async def report_from_schema(settings: Settings, schema: str, by: str,
                             now: datetime) -> dict[str, float]:
    """The report the api computes, over the rows of ``schema`` (a replay's)."""
    conn = await asyncpg.connect(settings.database_url,
                                 server_settings={"search_path": schema})
    try:
        machines = [cost.Machine(**dict(r)) for r in
                    await conn.fetch(query("api_cost_machines"), ORG, None)]
        runs = [cost.RunSpan(**dict(r)) for r in
                await conn.fetch(query("api_cost_runs"), ORG, None, None)]
    finally:
        await conn.close()
    return cost.report(by, machines, runs, now)


def figures(ow: OpenWeights, by: str, **kw: Any) -> dict[str, float]:
    return {r["key"]: r["usd"] for r in ow.costs.report(by, **kw)["rows"]}  # type: ignore[arg-type]


def test_a_job_on_a_1x_h100s_machine_costs_its_span_times_the_price_also_after_replay(
        settings: Settings) -> None:
    h = machine_history(Subjects(settings.namespace))
    last = anyio.run(append, settings, h)
    expected_a, expected_b = PRICE * 1800 / 3600, PRICE * 900 / 3600
    machine = PRICE * 3599 / 3600
    with services_thread(settings, ("projector", "api")):
        ow = OpenWeights(settings=settings, retry_for_s=10)
        try:
            ow.transport.seen_seq = last  # reads wait until the projector has it all
            assert ow.costs.report("job")["total_usd"] == pytest.approx(expected_a + expected_b)
            assert figures(ow, "job") == pytest.approx({JOB_A: expected_a, JOB_B: expected_b})
            assert ow.jobs.retrieve(JOB_A).cost == pytest.approx(expected_a)
            assert ow.costs.job(JOB_B) == pytest.approx(expected_b)
            assert figures(ow, "token") == pytest.approx({"tok-a": expected_a,
                                                          "tok-b": expected_b})
            assert figures(ow, "worker") == pytest.approx({WID: machine})
            assert figures(ow, "org") == pytest.approx({ORG: machine})
            # Since half-way through job B's run: only the half after it counts.
            since = figures(ow, "job", since=at(2450))
            assert since.get(JOB_A, 0.0) == 0.0
            assert since[JOB_B] == pytest.approx(PRICE * 450 / 3600)
            assert figures(ow, "org", since=at(2450)) == pytest.approx(
                {ORG: PRICE * (3600 - 2450) / 3600})
            live = {by: figures(ow, by) for by in ("job", "worker", "token", "org")}
        finally:
            ow.close()
        result, diffs = anyio.run(lambda: verify(settings))
        assert diffs == [] and result.last_seq >= last  # (+ the api's default org)
    anyio.run(lambda: rebuild(settings, "ow_cost_replay"))
    now = datetime.now(UTC)
    for by, figure in live.items():
        replayed = anyio.run(report_from_schema, settings, "ow_cost_replay", by, now)
        assert {k: v for k, v in replayed.items() if v} == figure, by


def test_ow_cost_prints_the_figures_as_a_table_and_json(settings: Settings) -> None:
    h = machine_history(Subjects(settings.namespace))
    last = anyio.run(append, settings, h)
    env = {**os.environ, "OW_NATS_URL": str(settings.nats_url), "OW_HOME": str(settings.home),
           "OW_DATABASE_URL": str(settings.database_url), "OW_NAMESPACE": settings.namespace,
           "COLUMNS": "100"}
    with services_thread(settings, ("projector", "api")):
        ow = OpenWeights(settings=settings, retry_for_s=10)
        try:
            ow.transport.seen_seq = last
            ow.costs.report("job")  # waits for the projector, so the CLI sees it all
        finally:
            ow.close()

        def ow_cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(Path(sys.executable).parent / "ow"), *args],
                                  env=env, capture_output=True, text=True, timeout=60)

        table = ow_cli("cost", "--by", "job")
        assert table.returncode == 0, table.stderr
        assert JOB_A in table.stdout and JOB_B in table.stdout
        assert f"${PRICE * 1800 / 3600:,.2f}" in table.stdout  # $1.50
        assert f"total ${PRICE * 2700 / 3600:,.2f}" in table.stdout  # $2.24
        data = json.loads(ow_cli("cost", "--by", "worker", "--json").stdout)
        assert data["by"] == "worker"
        assert data["rows"] == [{"key": WID, "usd": pytest.approx(PRICE * 3599 / 3600)}]
        bad = ow_cli("cost", "--by", "color")
        assert bad.returncode == 2 and "'color'" in bad.stderr


def test_a_job_on_the_local_backends_1x_h100s_costs_its_runs_span_at_the_recorded_price(
        lab: Any) -> None:
    """The real thing: the provisioner starts a (fake-GPU) 1x H100S machine and records
    its price; the job's cost is that price times its run's span, as recorded."""
    lab.configure(local_fake_gpus=1, local_fake_gpu_type="H100S",
                  idle_shutdown_s=1.0, min_worker_age_s=1.0)
    lab.start()
    job = lab.submit("echo costs something", requires_vram_gb=40)
    assert job.wait(timeout=60).status == "completed"
    gone = lab.live.wait_event(WorkerTerminated, 60)
    (started,) = [s.event for s in lab.read("worker", gone.agg_id)
                  if isinstance(s.event, WorkerMachineStarted)]
    (requested,) = [s.event for s in lab.read("worker", gone.agg_id)
                    if isinstance(s.event, WorkerRequested)]
    assert requested.hardware == "1x H100S"
    assert started.price_per_hour > 0  # a 1x H100S is priced like the provider's
    events = [s.event for s in lab.read("job", job.id)]
    (assigned,) = [e for e in events if isinstance(e, JobAssigned)]
    (completed,) = [e for e in events if isinstance(e, JobCompleted)]
    span_h = (completed.at - max(assigned.at, started.at)).total_seconds() / 3600
    lab.sees(gone.seq)
    assert lab.ow.jobs.retrieve(job.id).cost == pytest.approx(started.price_per_hour * span_h)
    terminated = gone.event
    life_h = (terminated.at - started.at).total_seconds() / 3600
    by_worker = figures(lab.ow, "worker")
    assert by_worker == pytest.approx({gone.agg_id: started.price_per_hour * life_h})
