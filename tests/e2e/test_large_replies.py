"""No call fails because its reply got big (issue 13, finding 6).

On the code before the fix a reply over the server's ``max_payload`` (8 MB) failed as
an internal error with a traceback in the api log: ``ow ls`` for 9 jobs of ~1 MB params,
``events.list`` (and so ``job.download``) once a page of events passed 8 MB. Now pages
are bounded by bytes as well as by count (the reply's ``next`` reads on), a job too
large for a page or an output value too large to inline goes by reference, and a reply
that still cannot fit is a clear error naming its size.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog

from openweights import OpenWeights
from openweights.adapters.embedded import free_port, nats_server_binary, wait_accepting
from openweights.adapters.nats.server_config import render_nats_conf
from openweights.config import Settings
from openweights.domain.commands import AssignJob, StartRun
from openweights.errors import ReplyTooLarge
from openweights.services.testing.drive import drive_job
from openweights.services.testing.stack import services_thread
from tests.e2e.test_cli import cli

MB = 1_000_000


def _started_job(ow: OpenWeights, settings: Settings, params: dict[str, Any]) -> Any:
    job = ow.jobs.submit(id_prefix="big", script="echo", docker_image="img", params=params)
    anyio.run(drive_job, settings, job.id, AssignJob(worker_id="w1", run_id=f"run-{job.id}"),
              StartRun(run_id=f"run-{job.id}", worker_id="w1"))
    return job


def _log(ow: OpenWeights, run_id: str, data: dict[str, Any]) -> None:
    ow.call(ow.transport.call("run.log", run_id=run_id, events=[data]))


def _failures(logged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logged if e.get("log_level") in ("error", "critical")
            or e.get("exc_info") or e.get("event") == "api.handler_failed"]


def test_lists_and_events_over_8_mb_arrive_in_pages(settings: Settings,
                                                    tmp_path: Path) -> None:
    with structlog.testing.capture_logs() as logged, services_thread(settings), \
            OpenWeights(settings=settings, retry_for_s=5) as ow:
        blob = "p" * MB
        ids = {ow.jobs.submit(id_prefix="bigp", script="echo", docker_image="img",
                              params={"blob": blob, "i": i}).id for i in range(9)}
        listed = ow.jobs.list(limit=20)
        assert {j.id for j in listed} == ids
        assert all(j.params["blob"] == blob for j in listed)
        shown = cli(settings, "ls")
        assert shown.exit_code == 0, shown.output
        assert len(cli(settings, "ls", "--ids").output.split()) == 9
        assert len(ow.jobs.find(i=3)) == 1

        # 10 events of 0.9 MB each: 9 MB of events in one job, and 9 MB of outputs.
        job = _started_job(ow, settings, {"small": True})
        run_id = f"run-{job.id}"
        for i in range(10):
            _log(ow, run_id, {f"k{i}": str(i) * (9 * MB // 10)})
        events = ow.events.list(job_id=job.id)
        assert [len(e["data"][f"k{i}"]) for i, e in enumerate(events)] == [9 * MB // 10] * 10
        latest = ow.events.latest("*", job_id=job.id)
        assert sorted(latest) == [f"k{i}" for i in range(10)]
        assert ow.events.latest(["k9", "k0", "never"], job_id=job.id) == {
            "k9": "9" * (9 * MB // 10), "k0": "0" * (9 * MB // 10), "never": None}
        job.refresh()  # its outputs: 9 MB, the largest by reference
        assert job.outputs == latest
        written = job.download(tmp_path / "download")
        assert [p.name for p in written] == [f"{run_id}.log"]
        assert len(ow.runs.list(job_id=job.id)) == 1
    assert _failures(logged) == []


@pytest.fixture
def small_nats(tmp_path: Path) -> Iterator[str]:
    """A nats-server whose messages carry at most 64 KB (its max_payload)."""
    port, data = free_port(), tmp_path / "small-nats"
    data.mkdir()
    conf, log = data / "nats.conf", data / "nats.log"
    conf.write_text(render_nats_conf("127.0.0.1", port, data / "js", None, max_payload="64KB"))
    proc = subprocess.Popen([nats_server_binary(), "-c", str(conf), "-l", str(log)],
                            stdin=subprocess.DEVNULL)
    try:
        wait_accepting("127.0.0.1", port, proc, log)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_reply_that_cannot_fit_is_a_clear_error(settings: Settings, small_nats: str) -> None:
    settings = settings.model_copy(update={"nats_url": small_nats})
    with structlog.testing.capture_logs() as logged, services_thread(settings), \
            OpenWeights(settings=settings, retry_for_s=5) as ow:
        job = _started_job(ow, settings, {"blob": "p" * 20_000})
        for i in range(4):
            _log(ow, f"run-{job.id}", {f"k{i}": "v" * 20_000})
        # Pages fit the smaller messages: 4 events of 20 KB in 56 KB pages.
        assert len(ow.events.list(job_id=job.id)) == 4
        assert len(ow.events.latest("*", job_id=job.id)) == 4
        # The job itself (100 KB: its outputs inline up to 256 KB) does not fit one.
        with pytest.raises(ReplyTooLarge, match=r"jobs.get would be \d+ bytes.*ask for less"):
            ow.jobs.retrieve(job.id)
    assert _failures(logged) == []
    assert any(e.get("event") == "api.reply_too_large" for e in logged)
