"""Nothing a job holds crashes its agent (issue 13, finding 2): a job that cannot be made
ready fails, its run's log and error say why, and the same agent takes the next job.

The jobs are appended to the log directly, as the api's submit checks now refuse them:
jobs from before those checks, or ones whose file is gone since, reach agents all the
same.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import anyio
import nats
import pytest

from openweights.adapters.nats.eventlog import JetStreamEventLog
from openweights.config import Settings
from openweights.domain import job
from openweights.domain.commands import SubmitJob
from openweights.events import (
    Actor,
    JobCompleted,
    JobFailed,
    JobSpec,
    WorkerLost,
    WorkerRegistered,
    WorkerStopped,
)
from openweights.subjects import Subjects

BAD_JOBS: list[tuple[Any, str]] = [
    ({"../outside.txt": "file-000000000000"}, "'..' would leave the job's directory"),
    ({"data/train.jsonl": "file-000000000000"}, "could not be downloaded"),
    (["not", "a", "map"], "maps a path in the job's directory to a file id"),
    ({"uploads": "file-000000000000"}, "'uploads' is reserved"),
]


def _append_job(settings: Settings, job_id: str, params: dict[str, Any]) -> None:
    """Submit a job the way the log would hold one the api never checked."""
    spec = JobSpec(type="custom", model=None, params=params, script="echo never runs",
                   docker_image="dev", requires_vram_gb=None, allowed_hardware=None)
    cmd = SubmitJob(job_id=job_id, org=settings.default_org, spec=spec)
    events = job.decide(None, cmd, datetime.now(UTC), Actor("operator", "tests"))
    subjects = Subjects(settings.namespace)

    async def main() -> None:
        nc = await nats.connect(str(settings.nats_url), allow_reconnect=False)
        try:
            await JetStreamEventLog(nc, nc.jetstream(), subjects).append(
                subjects.job(settings.default_org, job_id), events, expected_last_subject_seq=0)
        finally:
            await nc.close()

    anyio.run(main)


@pytest.mark.timeout(180)
def test_jobs_that_cannot_be_prepared_fail_saying_why_and_the_agent_goes_on(lab) -> None:
    lab.start()
    workers = set()
    for mounted, reason in BAD_JOBS:
        job_id = f"bad-{uuid.uuid4().hex[:12]}"
        _append_job(lab.settings, job_id, {"mounted_files": mounted})
        failed = lab.live.wait_event(JobFailed, 90, lambda e, j=job_id: e.job_id == j).event
        assert reason in (failed.error or ""), failed.error
        assert "could not start" in failed.error
        workers.add(failed.worker_id)
        lab.sees(lab.read("job", job_id)[-1].seq)
        (run,) = lab.ow.runs.list(job_id=job_id)
        assert reason in run.logs()  # the run's log says it too
    good = lab.submit("echo still here")
    assert good.wait(timeout=60).status == "completed"
    done = lab.live.wait_event(JobCompleted, 5, lambda e: e.job_id == good.id).event
    assert workers == {done.worker_id}  # one agent took them all, and is alive
    assert len(lab.live.of(WorkerRegistered)) == 1
    assert not lab.live.of((WorkerLost, WorkerStopped))
