"""Stream configuration as code, applied idempotently at every start."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    RePublish,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from openweights.config import Settings
from openweights.subjects import Subjects


def stream_configs(settings: Settings, subjects: Subjects) -> list[StreamConfig]:
    storage = StorageType(settings.stream_storage)
    replicas = settings.stream_replicas
    return [
        # The log is the truth: kept forever, never purged or edited.
        StreamConfig(
            name=subjects.events_stream,
            description="openweights event log: every aggregate's history",
            subjects=[subjects.all_events],
            retention=RetentionPolicy.LIMITS,
            storage=storage,
            num_replicas=replicas,
            duplicate_window=120.0,
            deny_delete=True,
            deny_purge=True,
            allow_direct=True,
            republish=RePublish(src=f"{subjects.ns}.>", dest=f"{subjects.live_prefix}.>"),
        ),
        StreamConfig(
            name=subjects.logs_stream,
            description="job output lines, aged out; full logs are stored as files",
            subjects=[subjects.all_logs],
            retention=RetentionPolicy.LIMITS,
            storage=storage,
            num_replicas=replicas,
            max_age=float(settings.log_max_age_s) or None,
            discard=DiscardPolicy.OLD,
            allow_direct=True,
            republish=RePublish(src=f"{subjects.ns}log.>", dest=f"{subjects.ns}livelog.>"),
        ),
        StreamConfig(
            name=subjects.heartbeats_stream,
            description="the last heartbeat of every worker",
            subjects=[subjects.all_heartbeats],
            retention=RetentionPolicy.LIMITS,
            storage=storage,
            num_replicas=replicas,
            max_msgs_per_subject=1,
            allow_direct=True,
        ),
    ]


async def ensure_streams(js: JetStreamContext, settings: Settings, subjects: Subjects) -> None:
    for config in stream_configs(settings, subjects):
        try:
            await js.stream_info(config.name)  # type: ignore[arg-type]
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)
