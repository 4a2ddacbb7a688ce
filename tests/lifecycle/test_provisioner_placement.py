"""Demand placed per job, and the reason a job waits (issue 21, defects 2, 3 and the
waiting half of 4).

The real provisioner (its composition root, the local backend's agent processes) on the
real log, its loop played by the test as in ``test_provisioner_limits``; the projector
and api run, so what the SDK says of a waiting job is what the read models hold.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from openweights import AsyncOpenWeights
from openweights.config import Settings
from openweights.domain.aggregates import JOB, SECRET, WORKER
from openweights.domain.commands import (
    DeclareLost,
    RecordMachineFailed,
    RegisterWorker,
    RequestWorker,
    SetSecret,
    SubmitJob,
)
from openweights.events import JobSpec, JobWaitReasonChanged
from openweights.secretbox import new_key
from openweights.services.provisioner.provisioner import ME, Provisioner
from openweights.services.testing.stack import services_thread
from tests.lifecycle.test_provisioner_limits import MovableClock, Watch, provisioner

pytestmark = pytest.mark.anyio
ORG = "acme"

CAPPED = ("the organization is at its machine cap (1; an admin raises it with "
          "`ow env set MAX_WORKERS=N`)")


@pytest.fixture
def limited(fast_settings: Settings) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return fast_settings.model_copy(update={"secret_key": new_key(), **overrides})
    return make


async def submit(prov: Provisioner, job_id: str, vram: int) -> None:
    spec = JobSpec(type="script", model=None, params={"id": job_id}, script="true",
                   docker_image="dev", requires_vram_gb=vram, allowed_hardware=None)
    await prov.executor.execute(ORG, JOB, job_id, SubmitJob(job_id=job_id, org=ORG,
                                                            spec=spec), ME)


async def settled(prov: Provisioner) -> int:
    """A sentinel decided after everything the provisioner appended: once the fold has
    it, it has every earlier event too. Returns its log position."""
    cmd = SetSecret(org=ORG, name="SENTINEL", ciphertext=prov.box.encrypt(str(datetime.now())))
    return (await prov.executor.execute(ORG, SECRET, "SENTINEL", cmd, ME)).seq


def reason(watch: Watch, job_id: str) -> str | None:
    return watch.job(ORG, job_id).wait_reason


async def test_a_job_no_machine_can_serve_holds_back_no_other_job_of_its_image(
        limited: Callable[..., Settings]) -> None:
    """Defect 2: a 200 GB job and two CPU jobs of one image, room for four machines:
    the CPU jobs get theirs (before, the image's largest need sized every machine, none
    could start, and ``provisioner.no_hardware`` repeated every pass)."""
    settings, clock = limited(max_workers=4), MovableClock()
    with services_thread(settings, ("projector", "api"), clock=clock):
        async with provisioner(settings, clock) as watch:
            await submit(watch.prov, "big", 200)
            await submit(watch.prov, "cpu-1", 0)
            await submit(watch.prov, "cpu-2", 0)
            await watch.prov.reconcile(clock())
            workers = watch.workers(ORG)
            assert [w.hardware_type for w in workers] == ["cpu", "cpu"]
            assert all("cpu-" in (w.reason or "") for w in workers)
            await settled(watch.prov)
            assert reason(watch, "big") == "no machine here can have 200 GB of VRAM"
            assert reason(watch, "cpu-1") is None and reason(watch, "cpu-2") is None


async def test_a_dead_unmanaged_worker_keeps_no_machine_slot(
        limited: Callable[..., Settings]) -> None:
    """Defect 3: a worker started by hand (``ow worker``) and declared lost is
    ``shutdown`` for good, no machine of ours to release; it held the only slot."""
    settings, clock = limited(max_workers=1), MovableClock()
    with services_thread(settings, ("projector", "api"), clock=clock):
        async with provisioner(settings, clock) as watch:
            ex = watch.prov.executor
            await ex.execute(ORG, WORKER, "by-hand", RegisterWorker(
                worker_id="by-hand", org=ORG, docker_image="dev", hardware_type="cpu",
                gpu_type=None, gpu_count=0, vram_gb=0, managed=False), ME)
            await ex.execute(ORG, WORKER, "by-hand", DeclareLost(
                last_seen=None, reason="no heartbeat"), ME)
            await submit(watch.prov, "job", 0)
            await watch.prov.reconcile(clock())
            started = [w for w in watch.workers(ORG) if w.managed]
            assert len(started) == 1 and started[0].status == "starting"


async def test_a_waiting_job_says_why_once_in_the_sdk(
        limited: Callable[..., Settings]) -> None:
    """Defect 4, waiting: each pending job that is not placed says why, as data (one
    event per change, none per pass), read back through the api."""
    settings, clock = limited(max_workers=1), MovableClock()
    with services_thread(settings, ("projector", "api"), clock=clock):
        async with provisioner(settings, clock) as watch, \
                AsyncOpenWeights(settings=settings.model_copy(update={"default_org": ORG}),
                                 retry_for_s=10) as ow:
            for job_id, vram in (("big", 200), ("first", 0), ("second", 0)):
                await submit(watch.prov, job_id, vram)
            await watch.prov.reconcile(clock())
            seq = await settled(watch.prov)
            assert [w.reason for w in watch.workers(ORG)] == [
                "pending job first needs a cpu machine of dev"]
            assert reason(watch, "first") is None
            assert reason(watch, "second") == CAPPED
            notes = [e for e in watch.events if isinstance(e, JobWaitReasonChanged)]
            assert len(notes) == 2
            for _ in range(3):
                await watch.prov.reconcile(clock())
            await settled(watch.prov)
            assert [e for e in watch.events if isinstance(e, JobWaitReasonChanged)] == notes
            ow.transport.seen_seq = max(ow.transport.seen_seq, seq)
            big = await ow.jobs.retrieve("big")
            assert big.status == "pending"
            assert big.wait_reason == "no machine here can have 200 GB of VRAM"
            assert (await ow.jobs.retrieve("first")).wait_reason is None
            listed = {j.id: j.wait_reason for j in await ow.jobs.list()}
            assert listed["second"] == CAPPED


async def test_a_job_of_an_org_whose_starts_back_off_says_so(
        limited: Callable[..., Settings]) -> None:
    settings, clock = limited(start_backoff_s=60.0), MovableClock()
    with services_thread(settings, ("projector", "api"), clock=clock):
        async with provisioner(settings, clock) as watch:
            ex = watch.prov.executor
            await ex.execute(ORG, WORKER, "doomed", RequestWorker(
                worker_id="doomed", org=ORG, backend="local", hardware="cpu",
                docker_image="dev", reason="test"), ME)
            await ex.execute(ORG, WORKER, "doomed", RecordMachineFailed(error="no pod"), ME)
            await submit(watch.prov, "job", 0)
            await watch.prov.reconcile(clock())
            await settled(watch.prov)
            assert len(watch.workers(ORG)) == 1  # the failed one only
            why = reason(watch, "job")
            assert why is not None and why.startswith(
                "hardware cooling down after failed starts (next start after ")
            clock.advance(61)
            await watch.prov.reconcile(clock())
            await settled(watch.prov)
            assert len(watch.workers(ORG)) == 2 and reason(watch, "job") is None
            assert datetime.now(UTC) < clock()
