"""`ow worker` end to end (issue 14, Your own machines): an admin mints a worker token for
a named machine; `OPENWEIGHTS_API_KEY=<it> ow worker`, started as its own process against
the auth-callout stack, joins as an unmanaged worker, runs a job, and on SIGINT hands its
running job back (requeued) and leaves. The provisioner runs all along and never starts,
stops or bills it: no machine start is recorded for it and it costs nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest

from openweights.adapters.embedded import die_with_parent
from openweights.adapters.nats.reader import StoredMessage, read_stream
from openweights.events import (
    Event,
    JobCompleted,
    JobRequeued,
    RunStarted,
    WorkerMachineStarted,
    WorkerRegistered,
    WorkerRequested,
    WorkerStopped,
    WorkerTerminated,
    decode,
)
from openweights.services.testing.stack import services_thread

# The auth-callout stack of the tenancy tests: a worker token is real only with auth on.
from tests.tenancy.conftest import A, World, auth_nats, retry, world  # noqa: F401

BOX = "box-1"


def history(w: World, kind: str, agg_id: str) -> list[Event]:
    async def read() -> list[Event]:
        nc = await nats.connect(w.settings.nats_url, allow_reconnect=False)
        out: list[Event] = []

        async def on_batch(batch: list[StoredMessage]) -> None:
            out.extend(e for m in batch for e in decode(m.data))
        try:
            await read_stream(nc, nc.jetstream(), w.subjects.events_stream, on_batch,
                              filter_subjects=[w.subjects.aggregate(A, kind, agg_id)])
        finally:
            await nc.close()
        return out
    return anyio.run(read)


def has(w: World, kind: str, agg_id: str, cls: type[Event]) -> list[Event]:
    """The events of ``cls`` in the aggregate's history; raises until there is one."""
    found = [e for e in history(w, kind, agg_id) if isinstance(e, cls)]
    assert found, f"no {cls.__name__} for {agg_id} yet"
    return found


@pytest.fixture
def ow_worker(world: World, tmp_path: Path) -> Iterator[Any]:  # noqa: F811
    """Start `ow worker` with a freshly minted worker token; yields a starter."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(token: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "OPENWEIGHTS_API_KEY": token, "OW_NATS_URL": world.server.url,
               "OW_NAMESPACE": world.ns, "OW_HOME": str(tmp_path / "box"),
               "OW_HEARTBEAT_S": "0.5", "OW_REQUEST_TIMEOUT_S": "5"}
        for name in ("OW_WORKER_ID", "OW_MANAGED", "OW_DOCKER_IMAGE", "OW_DATABASE_URL"):
            env.pop(name, None)
        log = open(tmp_path / "ow-worker.log", "ab")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen([str(Path(sys.executable).parent / "ow"), "worker",
                                 "--image", "img"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=die_with_parent)
        log.close()
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_ow_worker_joins_by_hand_runs_a_job_and_leaves_on_sigint_unbilled(
        world: World, ow_worker: Any, tmp_path: Path) -> None:  # noqa: F811
    admin = world.ow("a_admin")
    minted = world.cli("a_admin", "token", "create", "--name", "my box", "--role", "worker",
                       "--worker", BOX, "--json")
    assert minted.exit_code == 0, minted.output
    token = json.loads(minted.output)
    assert token["role"] == "worker" and token["worker_id"] == BOX
    refused = world.cli("a_user", "token", "create", "--name", "x", "--worker", "other")
    assert refused.exit_code != 0  # minting is an admin's

    settings = world.settings.model_copy(update={"max_workers": 0})  # it starts nothing
    with services_thread(settings, ("scheduler", "provisioner"), clock=world.clock):
        proc = ow_worker(token["token"])
        (registered,) = retry(lambda: has(world, "worker", BOX, WorkerRegistered), "joined", 60)
        assert registered.managed is False and registered.hardware_type  # nvidia-smi or cpu
        listed = retry(lambda: next(w for w in admin.workers.list() if w["id"] == BOX),
                       "listed")
        assert listed["managed"] is False and listed["status"] == "active"

        done = admin.jobs.submit(id_prefix="hello", script="echo hello from my box",
                                 docker_image="img")
        assert done.wait(timeout=60).status == "completed"
        assert has(world, "job", done.id, JobCompleted)[0].worker_id == BOX  # type: ignore[attr-defined]
        assert "hello from my box" in done.log_tail()

        long = admin.jobs.submit(id_prefix="long", script="echo started; sleep 300",
                                 docker_image="img")
        retry(lambda: has(world, "job", long.id, RunStarted), "the long job started", 60)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 0
        (requeued,) = has(world, "job", long.id, JobRequeued)
        assert requeued.worker_id == BOX  # type: ignore[attr-defined]
        assert admin.jobs.retrieve(long.id).status == "pending"
        has(world, "worker", BOX, WorkerStopped)
        assert all(w["status"] != "active" for w in admin.workers.list(ended=True)
                   if w["id"] == BOX)

    kinds = {type(e) for e in history(world, "worker", BOX)}
    assert not kinds & {WorkerRequested, WorkerMachineStarted, WorkerTerminated}
    assert admin.costs.report("worker")["rows"] == []  # never billed
    assert admin.jobs.retrieve(done.id).cost == 0.0
