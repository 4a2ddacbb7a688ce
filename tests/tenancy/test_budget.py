"""Spending limits (issue 14, Cost and budgets): an admin sets a lifetime limit for a
token or the organization; once what it spent reaches the limit, its new submissions are
refused with an error stating spend and limit (nothing appended), and the scheduler
cancels its pending and running work, the reason recorded in each ``job.canceled``.

Org A's machine is priced at $3.60 an hour (its ``worker.machine_started/2``, as the
provisioner records it); the services decide with the world's movable clock, so an hour
of machine time passes without waiting for it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio
import nats
import pytest

from openweights.adapters.nats.reader import StoredMessage, read_stream
from openweights.domain import worker
from openweights.domain.aggregates import WORKER
from openweights.domain.commands import RecordMachineStarted, RequestWorker
from openweights.errors import Forbidden, NotFound, SpendingLimitReached
from openweights.events import Actor, JobCanceled, decode
from openweights.services.testing.stack import services_thread
from tests.tenancy.conftest import A, World, retry

PRICE = 3.6  # $/hour: $0.001 a second


def _call(ow: Any, endpoint: str, **fields: Any) -> Any:
    return ow.call(ow.transport.call(endpoint, **fields))


def priced_machine(world: World, worker_id: str) -> None:
    """What the provisioner records for a machine it started, then its agent registers."""
    by, now, state = Actor("provisioner"), world.clock(), None
    events = []
    for cmd in (RequestWorker(worker_id=worker_id, org=A, backend="local",
                              hardware="1x H100S", docker_image="i", reason="test"),
                RecordMachineStarted(machine_id=f"pod-{worker_id}", price_per_hour=PRICE)):
        step = worker.decide(state, cmd, now, by)
        state = WORKER.fold(step, state)
        events += step
    anyio.run(world._append, A, "worker", worker_id, events, 0)
    w = world.ow(world.worker_token(A, worker_id))
    retry(lambda: _call(w, "agent.register", worker_id=worker_id, docker_image="i",
                        hardware_type="1x H100S", gpu_type="H100S", gpu_count=1,
                        vram_gb=80), "the machine's worker known")


def cancel_reasons(world: World, job_id: str) -> list[str]:
    async def read() -> list[str]:
        nc = await nats.connect(world.settings.nats_url, allow_reconnect=False)
        reasons: list[str] = []

        async def on_batch(batch: list[StoredMessage]) -> None:
            reasons.extend(e.reason for m in batch for e in decode(m.data)
                           if isinstance(e, JobCanceled))
        try:
            await read_stream(nc, nc.jetstream(), world.subjects.events_stream, on_batch,
                              filter_subjects=[world.subjects.job(A, job_id)])
        finally:
            await nc.close()
        return reasons
    return anyio.run(read)


def test_a_token_over_its_limit_is_refused_and_its_running_work_canceled(
        world: World) -> None:
    admin, user = world.ow("a_admin"), world.ow("a_user")
    user_id = world.tid("a_user")
    with pytest.raises(Forbidden):
        user.costs.set_limit(100.0, token_id=user_id)  # an admin's to set
    assert admin.costs.set_limit(1.0, token_id=user_id)["limit_usd"] == 1.0
    running = user.jobs.submit(id_prefix="running", script="s", docker_image="i")
    waiting = user.jobs.submit(id_prefix="waiting", script="s", docker_image="i")
    by_admin = admin.jobs.submit(id_prefix="admins", script="s", docker_image="i")
    priced_machine(world, "w-h100s")
    world.start_run(A, running.id, "w-h100s", "run-1")
    retry(lambda: _call(admin, "runs.get", run_id="run-1"), "the run projected")

    world.clock.advance(1200)  # 20 minutes on a $3.60/h machine: $1.20 of a $1.00 limit
    with pytest.raises(SpendingLimitReached) as refused:
        user.jobs.submit(id_prefix="more", script="s2", docker_image="i")
    message = str(refused.value)
    assert f"token {user_id}" in message and "of $1.00" in message
    spent = float(message.split("spent $")[1].split(" ")[0])
    assert 1.2 <= spent < 1.3  # the run's share so far (real seconds pass too)
    assert admin.jobs.list(limit=10).__len__() == 3  # nothing appended for the refusal
    with pytest.raises(NotFound):
        admin.jobs.retrieve(f"customjob-{'0' * 12}")  # (and no half-made job either)
    admin.jobs.submit(id_prefix="admins2", script="s", docker_image="i")  # others may

    with services_thread(world.settings, ("scheduler",), clock=world.clock):
        assert user.jobs.retrieve(running.id).wait(timeout=30).status == "canceled"
        assert user.jobs.retrieve(waiting.id).wait(timeout=30).status == "canceled"
    for job_id in (running.id, waiting.id):
        (reason,) = cancel_reasons(world, job_id)
        assert reason.startswith(f"spending limit reached: token {user_id} spent $1.2")
        assert reason.endswith("of its $1.00 limit")
    # The admin's job is not the user's: it runs on the machine the canceled run freed.
    assert admin.jobs.retrieve(by_admin.id).status in ("pending", "in_progress")
    assert cancel_reasons(world, by_admin.id) == []

    admin.costs.set_limit(None, token_id=user_id)  # lifted: the user may submit again
    retry(lambda: user.jobs.submit(id_prefix="again", script="s3", docker_image="i"),
          "the limit lifted in the api's fold")


def test_an_organization_over_its_limit_refuses_every_token_and_cancels_all_its_work(
        world: World) -> None:
    admin, user = world.ow("a_admin"), world.ow("a_user")
    job = admin.jobs.submit(id_prefix="one", script="s", docker_image="i")
    priced_machine(world, "w-org")
    admin.costs.set_limit(0.5, token_id=None)
    world.clock.advance(600)  # the machine alone (idle or not) costs the org $0.60
    for ow in (admin, user):
        with pytest.raises(SpendingLimitReached, match=rf"organization {A} .*spent \$0\.6"):
            ow.jobs.submit(id_prefix="two", script="s2", docker_image="i")
    report = admin.costs.report("org")
    assert report["org_limit_usd"] == 0.5 and report["total_usd"] >= 0.6
    with services_thread(world.settings, ("scheduler",), clock=world.clock):
        assert admin.jobs.retrieve(job.id).wait(timeout=30).status == "canceled"
    (reason,) = cancel_reasons(world, job.id)
    assert reason.startswith(f"spending limit reached: organization {A} spent $0.6")
    assert datetime.now(UTC) < world.clock()  # (the spend came from the moved clock)
