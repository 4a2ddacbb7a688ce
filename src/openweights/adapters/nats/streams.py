"""Stream configuration as code, applied idempotently at every start.

Every stream bounds its messages (``max_msg_size``); the side streams (logs, heartbeats)
bound their total too, oldest discarded first, so whatever workers publish can never
take the disk the event log needs. The event log is bounded per message only: it is
kept forever. A stack made before these limits gets them at its next start (its streams
are updated in place).
"""

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
            max_msg_size=settings.event_max_msg_bytes,
            deny_delete=True,
            deny_purge=True,
            allow_direct=True,
            republish=RePublish(src=f"{subjects.ns}.>", dest=f"{subjects.live_prefix}.>"),
        ),
        StreamConfig(
            name=subjects.logs_stream,
            description="job output lines kept by the api's log gate, aged out and bounded; "
                        "full logs are stored as files",
            subjects=[subjects.all_kept_logs],
            retention=RetentionPolicy.LIMITS,
            storage=storage,
            num_replicas=replicas,
            max_age=float(settings.log_max_age_s) or None,
            max_bytes=settings.log_max_bytes,
            max_msg_size=settings.log_max_msg_bytes,
            max_msgs_per_subject=settings.log_max_msgs_per_run,  # one subject per run
            discard=DiscardPolicy.OLD,
            allow_direct=True,
            republish=RePublish(src=f"{subjects.kept_log_prefix}.>",
                                dest=f"{subjects.ns}livelog.>"),
        ),
        StreamConfig(
            name=subjects.heartbeats_stream,
            description="the last heartbeat of every worker",
            subjects=[subjects.all_heartbeats],
            retention=RetentionPolicy.LIMITS,
            storage=storage,
            num_replicas=replicas,
            max_msgs_per_subject=1,
            max_bytes=settings.heartbeat_max_bytes,
            max_msg_size=settings.heartbeat_max_msg_bytes,
            discard=DiscardPolicy.OLD,
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
