"""Playing the scheduler and an agent for one job in tests: decisions made by the real
domain through the one command path, on the job's state read from the log."""

from __future__ import annotations

import nats

from openweights.adapters.nats.eventlog import JetStreamEventLog
from openweights.adapters.nats.servers import connect_options
from openweights.config import Settings
from openweights.domain.aggregates import JOB
from openweights.domain.commands import JobCommand
from openweights.events import Actor
from openweights.execute import Executor
from openweights.fold import LogFold
from openweights.subjects import Subjects


async def drive_job(settings: Settings, job_id: str, *commands: JobCommand,
                    worker: str = "w1") -> int:
    """Decide and append each command on the job (as ``worker``'s agent), one message
    each; returns the last log position."""
    subjects = Subjects(settings.namespace)
    assert settings.nats_url is not None
    nc = await nats.connect(**connect_options(settings.nats_url))
    try:
        log = JetStreamEventLog(nc, nc.jetstream(), subjects)
        fold = await LogFold(log, [subjects.job(settings.default_org, job_id)]).load()
        executor = Executor(log, fold, subjects)
        last = fold.seq
        for cmd in commands:
            done = await executor.execute(settings.default_org, JOB, job_id, cmd,
                                          Actor("agent", worker))
            last = done.seq or last
        return last
    finally:
        await nc.close()
