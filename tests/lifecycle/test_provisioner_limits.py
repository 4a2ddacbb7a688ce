"""The provisioner's limits (issue 13): the operator's ``OW_MAX_WORKERS`` bounds every
organization's ``MAX_WORKERS`` and the total (finding 5), and an organization whose
machines keep dying starts its next ones later and later, while the job that kills them
fails after losing its machine three times in a row (finding 2).

The provisioner is the one its composition root builds, on the real log, with the local
backend's real agent processes; the test plays its loop, calling ``reconcile`` with the
services' clock and moving that clock instead of waiting for a backoff to pass. The
api, projector and scheduler run as usual (on the same clock).
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from openweights import AsyncOpenWeights
from openweights.config import Settings
from openweights.domain.aggregates import JOB, SECRET, WORKER
from openweights.domain.commands import SetSecret, SubmitJob
from openweights.domain.job import JobState
from openweights.domain.worker import WorkerState
from openweights.events import Event, JobFailed, JobSpec
from openweights.secretbox import new_key
from openweights.services.provisioner.backends.local import LocalBackend
from openweights.services.provisioner.bootstrap import compose
from openweights.services.provisioner.provisioner import ME, Provisioner
from openweights.services.runtime import nats_connection
from openweights.services.testing.clock import MovableClock
from openweights.services.testing.stack import services_thread

pytestmark = pytest.mark.anyio
WITHIN_S = 60.0
MAX_LOST_RUNS = 3  # domain/job.py: the lost runs in a row that fail a job




class Watch:
    """Wakes a waiting test at every event the provisioner's fold applies."""

    def __init__(self, prov: Provisioner) -> None:
        self.prov = prov
        self.events: list[Event] = []
        self._changed = anyio.Event()
        prov.fold.listeners.append(self._on_event)

    def _on_event(self, seq: int, org: str, event: Event, before: Any, after: Any) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, condition: Callable[[], Any], what: str) -> Any:
        with anyio.move_on_after(WITHIN_S):
            while not (result := condition()):
                await self._changed.wait()
            return result
        raise AssertionError(f"no {what} within {WITHIN_S} s")

    def workers(self, org: str) -> list[WorkerState]:
        return sorted((w for w in self.prov.fold.of_kind(WORKER) if w.org == org),
                      key=lambda w: w.created_at)

    def job(self, org: str, job_id: str) -> JobState:
        state = self.prov.fold.get(org, JOB, job_id)
        assert state is not None
        return state


@asynccontextmanager
async def provisioner(settings: Settings, clock: MovableClock) -> AsyncIterator[Watch]:
    """The real provisioner, its fold following the log, its loop left to the test."""
    async with nats_connection(settings, "test-provisioner") as (nc, js), \
            AsyncExitStack() as stack:
        prov = await compose(settings, stack, nc, js, clock,
                             backend=LocalBackend(settings, stop_grace_s=5))
        async with anyio.create_task_group() as tg:
            await tg.start(prov.fold.run)
            yield Watch(prov)
            tg.cancel_scope.cancel()


async def pending_jobs(prov: Provisioner, org: str, n: int, max_workers: str | None) -> None:
    """``n`` pending jobs of ``org`` and its MAX_WORKERS secret, decided on the real log."""
    if max_workers is not None:
        cmd = SetSecret(org=org, name="MAX_WORKERS", ciphertext=prov.box.encrypt(max_workers))
        await prov.executor.execute(org, SECRET, "MAX_WORKERS", cmd, ME)
    for i in range(n):
        spec = JobSpec(type="script", model=None, params={"i": i}, script="true",
                       docker_image="dev", requires_vram_gb=0, allowed_hardware=None)
        job_id = f"{org}-job-{i}"
        await prov.executor.execute(org, JOB, job_id, SubmitJob(job_id=job_id, org=org,
                                                                spec=spec), ME)


@pytest.fixture
def limited(fast_settings: Settings) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return fast_settings.model_copy(update={"secret_key": new_key(), **overrides})
    return make


async def test_an_orgs_max_workers_secret_cannot_raise_it_past_the_operators(
        limited: Callable[..., Settings]) -> None:
    settings, clock = limited(max_workers=2), MovableClock()
    with services_thread(settings, ("projector", "api"), clock=clock):
        async with provisioner(settings, clock) as watch:
            await pending_jobs(watch.prov, "beta", 3, max_workers="12")
            assert watch.prov.max_workers("beta") == 2
            await watch.prov.reconcile(clock())
            assert len(watch.workers("beta")) == 2  # not 3: the operator allows 2
            await watch.prov.reconcile(clock())
            assert len(watch.workers("beta")) == 2


async def test_the_operators_limit_bounds_the_total_shared_out_between_orgs(
        limited: Callable[..., Settings]) -> None:
    settings, clock = limited(max_workers=3), MovableClock()
    with services_thread(settings, ("projector", "api"), clock=clock):
        async with provisioner(settings, clock) as watch:
            await pending_jobs(watch.prov, "alpha", 3, max_workers="12")
            await pending_jobs(watch.prov, "beta", 3, max_workers=None)
            await pending_jobs(watch.prov, "gamma", 3, max_workers="0")  # it wants none
            await watch.prov.reconcile(clock())
            counts = {o: len(watch.workers(o)) for o in ("alpha", "beta", "gamma")}
            assert counts == {"alpha": 2, "beta": 1, "gamma": 0}  # 3 in all, round-robin
            await watch.prov.reconcile(clock())
            assert sum(len(watch.workers(o)) for o in counts) == 3


def _kill(machine_id: str) -> int:
    """SIGKILL a local machine (its agent); returns a pidfd that turns readable once
    it is gone."""
    fd = os.pidfd_open(int(machine_id.removeprefix("local-")))
    signal.pidfd_send_signal(fd, signal.SIGKILL)
    return fd


async def _start_and_kill(watch: Watch, clock: MovableClock, org: str, job_id: str,
                          n: int) -> WorkerState:
    """One reconcile starts the ``n``-th machine; once it runs the job it is killed and
    the next reconcile declares it lost."""
    await watch.prov.reconcile(clock())
    workers = watch.workers(org)
    assert len(workers) == n, f"expected machine {n}, have {[w.id for w in workers]}"
    w = workers[-1]
    assert w.machine_id is not None
    await watch.until(lambda: (run := watch.job(org, job_id).open_run) is not None
                      and run.worker_id == w.id and run.started_at is not None,
                      f"a run started on {w.id}")
    fd = _kill(w.machine_id)
    try:
        with anyio.fail_after(WITHIN_S):
            await anyio.wait_readable(fd)
    finally:
        os.close(fd)
    await watch.prov.reconcile(clock())  # its machine is gone: lost, its run given back
    assert watch.prov.fold.get(org, WORKER, w.id).status == "shutdown"  # type: ignore[union-attr]
    return w


async def test_a_job_that_kills_its_machines_slows_their_starts_then_fails(
        limited: Callable[..., Settings], tmp_path: Path) -> None:
    settings = limited(start_backoff_s=60.0, start_backoff_max_s=600.0)
    clock, org = MovableClock(), settings.default_org
    release = tmp_path / "release"  # its orphaned processes end once this exists
    script = f"for i in $(seq 600); do [ -e {release} ] && exit 0; sleep 0.2; done"
    try:
        with services_thread(settings, ("projector", "api", "scheduler"), clock=clock):
            async with provisioner(settings, clock) as watch, \
                    AsyncOpenWeights(settings=settings, retry_for_s=10) as ow:
                job = await ow.jobs.submit(id_prefix="crashloop", script=script,
                                           docker_image="dev")
                await watch.until(lambda: watch.prov.fold.get(org, JOB, job.id), "the job")
                for n, wait_s in ((1, 60.0), (2, 120.0)):
                    await _start_and_kill(watch, clock, org, job.id, n)
                    assert watch.job(org, job.id).status == "pending"
                    await watch.prov.reconcile(clock())  # it is terminated; no new start
                    assert len(watch.workers(org)) == n, "a machine started at once"
                    clock.advance(wait_s / 2)
                    await watch.prov.reconcile(clock())
                    assert len(watch.workers(org)) == n, "started before its backoff"
                    clock.advance(wait_s / 2)  # the next start is due now
                await _start_and_kill(watch, clock, org, job.id, MAX_LOST_RUNS)
                state = watch.job(org, job.id)
                assert state.status == "failed" and len(state.runs) == MAX_LOST_RUNS
                await watch.prov.reconcile(clock())
                assert len(watch.workers(org)) == MAX_LOST_RUNS  # nothing left to start for
                [failed] = [e for e in watch.events if isinstance(e, JobFailed)]
                assert failed.run_id == state.runs[-1].id
                assert f"lost their machine {MAX_LOST_RUNS} times in a row" in failed.error
                assert "its machine is gone" in failed.error
                assert (await ow.jobs.retrieve(job.id)).status == "failed"
    finally:
        release.touch()
