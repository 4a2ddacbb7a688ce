"""The event log on JetStream (the :class:`~openweights.eventlog.EventLog` port).

One message holds the events of one decision (a JSON array), so a decision is atomic.
``Nats-Expected-Last-Subject-Sequence`` makes two writers racing on one aggregate
unable to both win; ``Nats-Msg-Id`` makes a retried command append nothing new.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from openweights.adapters.nats.reader import read_stream
from openweights.errors import ConcurrencyConflict, Unavailable
from openweights.eventlog import Appended, OnBatch
from openweights.events import Event, encode
from openweights.subjects import Subjects

WRONG_LAST_SEQUENCE = 10071


class JetStreamEventLog:
    """The events stream of one namespace. Followers and bulk readers live in
    :mod:`openweights.adapters.nats.reader` and :mod:`openweights.adapters.nats.bulk`."""

    def __init__(self, nc: Client, js: JetStreamContext, subjects: Subjects,
                 timeout: float = 5.0) -> None:
        self.nc, self.js, self.subjects, self.timeout = nc, js, subjects, timeout

    async def append(
        self,
        subject: str,
        events: Sequence[Event],
        *,
        expected_last_subject_seq: int | None,
        msg_id: str | None = None,
    ) -> Appended:
        """See :meth:`openweights.eventlog.EventLog.append`."""
        headers: dict[str, str] = {}
        if expected_last_subject_seq is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expected_last_subject_seq)
        if msg_id is not None:
            # Made of a client's request id (any length): hashed, it fits in a header.
            headers["Nats-Msg-Id"] = hashlib.sha256(msg_id.encode()).hexdigest()
        try:
            ack = await self.js.publish(subject, encode(events), timeout=self.timeout,
                                        headers=headers or None)
        except nats.js.errors.APIError as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:
                raise ConcurrencyConflict(
                    f"{subject} changed since sequence {expected_last_subject_seq}"
                ) from exc
            raise
        except (nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError,
                nats.errors.ConnectionClosedError) as exc:
            raise Unavailable(f"JetStream did not acknowledge an append to {subject}") from exc
        return Appended(seq=ack.seq, duplicate=bool(ack.duplicate))

    async def last_seq(self) -> int:
        info = await self.js.stream_info(self.subjects.events_stream)
        return int(info.state.last_seq)

    async def last_subject_seq(self, subject: str) -> int:
        """Sequence of the newest message on ``subject`` (0 if none)."""
        try:
            msg = await self.js.get_last_msg(self.subjects.events_stream, subject, direct=True)
        except nats.js.errors.NotFoundError:
            return 0
        return int(msg.seq or 0)

    async def read(self, on_batch: OnBatch, *, filter_subjects: list[str] | None = None,
                   start_seq: int = 1) -> int:
        stats = await read_stream(self.nc, self.js, self.subjects.events_stream, on_batch,
                                  filter_subjects=filter_subjects, start_seq=start_seq)
        return stats.last_seq
