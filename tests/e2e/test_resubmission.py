"""Submitting a job that already exists, state by state (issue 3's semantics).

- the same spec again returns the same job and appends nothing: it runs once;
- a ``failed`` or ``canceled`` job is reset to ``pending`` with its outputs cleared and
  gets a new run later;
- a ``pending``, ``in_progress`` or ``completed`` job is returned as is, except that a
  changed ``allowed_hardware``, ``requires_vram_gb``, ``docker_image`` or ``script`` is
  updated in place.

Each case is checked through the SDK and through the job's history in the log (what
``ow audit job`` shows). The tests play the scheduler and the agent by appending the
domain's decisions, as in ``test_sdk.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import anyio
import pytest
from pydantic import BaseModel

from openweights import AsyncOpenWeights, Jobs, OpenWeights, register
from openweights.cli.audit import history
from openweights.config import Settings
from openweights.domain.commands import AssignJob, CompleteRun, FailRun, StartRun
from openweights.services.testing.drive import drive_job

WORKER = "w1"


async def _drive(settings: Settings, job_id: str, *commands: object) -> int:
    return await drive_job(settings, job_id, *commands, worker=WORKER)


def drive(ow: OpenWeights, settings: Settings, job_id: str, *commands: object) -> None:
    """Append decisions as the scheduler and the agent would; ``ow`` then reads them."""
    seq = anyio.run(_drive, settings, job_id, *commands)
    ow.transport.seen_seq = max(ow.transport.seen_seq, seq)


def start(run_id: str) -> tuple[AssignJob, StartRun]:
    return AssignJob(worker_id=WORKER, run_id=run_id), StartRun(run_id=run_id, worker_id=WORKER)


def audit(settings: Settings, job_id: str) -> list[str]:
    """The job's history as ``ow audit job`` reads it: event tags, oldest first."""
    rows = anyio.run(history, settings, settings.default_org, "job", job_id)
    return [r["event"] for r in rows]


class TrainParams(BaseModel):
    n: int


@pytest.fixture
def train() -> Iterator[type[Jobs]]:
    @register("train")
    class Train(Jobs):
        params = TrainParams
        requires_vram_gb = 0
        base_image = "img:1"
        interpreter: ClassVar[str] = "python"

        def get_entrypoint(self, p: TrainParams) -> str:  # type: ignore[override]
            return f"{self.interpreter} train.py {p.n}"

    yield Train


PLACEMENT = ("script", "docker_image", "requires_vram_gb", "allowed_hardware")


def placement(job: Any) -> tuple[Any, ...]:
    return tuple(getattr(job, f) for f in PLACEMENT)


def test_same_spec_same_job_appends_nothing(ow: OpenWeights, stack: Settings,
                                            train: type[Jobs]) -> None:
    job = ow.train.create(n=1)
    again = ow.train.create(n=1)
    assert again.id == job.id and again.status == "pending"
    assert placement(again) == placement(job)
    assert audit(stack, job.id) == ["job.submitted/2"]
    assert [j.id for j in ow.jobs.list()] == [job.id]


@pytest.mark.anyio
async def test_concurrent_identical_submissions_make_one_job(stack: Settings,
                                                             train: type[Jobs]) -> None:
    ids: list[str] = []
    clients = [AsyncOpenWeights(settings=stack, retry_for_s=5) for _ in range(8)]
    try:
        async def submit(client: AsyncOpenWeights) -> None:
            ids.append((await client.train.create(n=7)).id)

        async with anyio.create_task_group() as tg:
            for client in clients:
                tg.start_soon(submit, client)
    finally:
        for client in clients:
            await client.close()
    assert len(set(ids)) == 1 and len(ids) == 8
    rows = await history(stack, stack.default_org, "job", ids[0])
    assert [r["event"] for r in rows] == ["job.submitted/2"]


@pytest.mark.parametrize("ending", ["failed", "canceled"])
def test_ended_badly_is_reset_with_outputs_cleared(ow: OpenWeights, stack: Settings,
                                                   train: type[Jobs], ending: str) -> None:
    job = ow.train.create(n=2)
    drive(ow, stack, job.id, *start("run-1"))
    ow.call(ow.transport.call("run.log", run_id="run-1", events=[{"loss": 0.5}]))
    if ending == "failed":
        drive(ow, stack, job.id, FailRun(run_id="run-1", worker_id=WORKER, error="exit 1"))
    else:
        ow.jobs.cancel(job.id)
    ended = ow.jobs.retrieve(job.id)
    assert ended.status == ending and ended.outputs == {"loss": 0.5}

    again = ow.train.create(n=2)
    assert (again.id, again.status, again.outputs) == (job.id, "pending", {})
    got = ow.jobs.retrieve(job.id)
    assert (got.status, got.outputs, got.worker_id) == ("pending", {}, None)
    assert placement(got) == placement(job)
    assert audit(stack, job.id)[-1] == "job.reset/2"

    drive(ow, stack, job.id, *start("run-2"))  # a new run later
    runs = ow.runs.list(job_id=job.id)
    assert [(r.id, r.attempt, r.status) for r in runs] == [
        ("run-1", 1, ending), ("run-2", 2, "in_progress")]
    assert ow.jobs.retrieve(job.id).status == "in_progress"
    assert ow.train.create(n=2).status == "in_progress"  # and now it is left alone


def test_pending_returned_as_is_or_updated_in_place(ow: OpenWeights, stack: Settings,
                                                    train: type[Jobs],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    job = ow.train.create(n=3)
    assert ow.train.create(n=3).updated_at == job.updated_at
    moved = ow.train.create(n=3, allowed_hardware=["2x H100S"])
    assert (moved.id, moved.status, moved.allowed_hardware) == (job.id, "pending", ["2x H100S"])
    monkeypatch.setattr(train, "interpreter", "python3")
    rescripted = ow.train.create(n=3, allowed_hardware=["2x H100S"])
    assert rescripted.script == "python3 train.py 3"
    got = ow.jobs.retrieve(job.id)
    assert (got.status, got.script, got.allowed_hardware) == (
        "pending", "python3 train.py 3", ["2x H100S"])
    assert (got.docker_image, got.requires_vram_gb) == ("img:1", 0)
    assert got.created_at == job.created_at
    assert audit(stack, job.id) == ["job.submitted/2", "job.requirements_changed/1",
                                    "job.requirements_changed/1"]


def test_in_progress_keeps_running_with_new_requirements(ow: OpenWeights, stack: Settings,
                                                         train: type[Jobs]) -> None:
    job = ow.train.create(n=4)
    drive(ow, stack, job.id, *start("run-1"))
    same = ow.train.create(n=4)
    assert (same.status, same.worker_id) == ("in_progress", WORKER)
    changed = ow.train.create(n=4, requires_vram_gb=40, docker_image="img:2")
    assert (changed.id, changed.status, changed.worker_id) == (job.id, "in_progress", WORKER)
    got = ow.jobs.retrieve(job.id)
    assert (got.status, got.requires_vram_gb, got.docker_image) == ("in_progress", 40, "img:2")
    assert [r.id for r in got.runs] == ["run-1"]
    rows = anyio.run(history, stack, stack.default_org, "job", job.id)
    assert [r["event"] for r in rows] == ["job.submitted/2", "job.assigned/1", "run.started/1",
                                          "job.requirements_changed/1"]
    assert rows[-1]["changes"]["requires_vram_gb"] == 40
    assert rows[-1]["changes"]["docker_image"] == "img:2"


def test_completed_is_returned_not_rerun(ow: OpenWeights, stack: Settings,
                                        train: type[Jobs],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    job = ow.train.create(n=5)
    drive(ow, stack, job.id, *start("run-1"))
    ow.call(ow.transport.call("run.log", run_id="run-1", events=[{"acc": 0.9}]))
    drive(ow, stack, job.id, CompleteRun(run_id="run-1", worker_id=WORKER))
    before = audit(stack, job.id)

    same = ow.train.create(n=5)
    assert (same.id, same.status, same.outputs) == (job.id, "completed", {"acc": 0.9})
    assert audit(stack, job.id) == before  # nothing appended: it ran once

    monkeypatch.setattr(train, "interpreter", "python3")
    changed = ow.train.create(n=5, allowed_hardware=["1x A100"])
    assert (changed.status, changed.script, changed.allowed_hardware) == (
        "completed", "python3 train.py 5", ["1x A100"])
    got = ow.jobs.retrieve(job.id)
    assert (got.status, got.outputs, got.script) == ("completed", {"acc": 0.9},
                                                    "python3 train.py 5")
    assert [(r.id, r.status) for r in got.runs] == [("run-1", "completed")]
    assert audit(stack, job.id) == [*before, "job.requirements_changed/1"]
