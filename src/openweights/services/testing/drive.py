"""Playing the scheduler and an agent for one job in tests: decisions made by the real
domain, appended to the job's subject with optimistic concurrency."""

from __future__ import annotations

from datetime import UTC, datetime

import nats

from openweights.adapters.nats.eventlog import EventLog
from openweights.adapters.nats.reader import StoredMessage, read_stream
from openweights.config import Settings
from openweights.domain import job as job_domain
from openweights.events import Actor, decode
from openweights.subjects import Subjects


async def drive_job(settings: Settings, job_id: str, *commands: object,
                    worker: str = "w1") -> int:
    """Append one decision per command to the job's subject (as ``worker``'s agent);
    returns the last log position."""
    subjects = Subjects(settings.namespace)
    subject = subjects.job(settings.default_org, job_id)
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        stored: list[StoredMessage] = []

        async def on_batch(batch: list[StoredMessage]) -> None:
            stored.extend(batch)

        await read_stream(nc, js, subjects.events_stream, on_batch, filter_subjects=[subject])
        state = job_domain.fold([e for m in stored for e in decode(m.data)])
        last = stored[-1].seq if stored else 0
        log = EventLog(nc, js, subjects)
        for cmd in commands:
            events = job_domain.decide(state, cmd, datetime.now(UTC),  # type: ignore[arg-type]
                                       Actor("agent", worker))
            last = (await log.append(subject, events, expected_last_subject_seq=last)).seq
            state = job_domain.fold(events, state)
        return last
    finally:
        await nc.close()
