"""An event log in memory (the :class:`~openweights.eventlog.EventLog` port), for pure
tests of the command path: the same contract as JetStream's
(``tests/contract/test_event_log.py``), no server.

Followers (a :class:`~openweights.fold.Fold`'s ``apply``) are told of every append
before it returns, as a live fold would learn of it from the stream.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence

from openweights.errors import ConcurrencyConflict
from openweights.eventlog import Appended, OnBatch, StoredMessage
from openweights.events import Event, encode

Follower = Callable[[list[StoredMessage]], None]


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


class InMemoryEventLog:
    def __init__(self) -> None:
        self.messages: list[StoredMessage] = []
        self._last: dict[str, int] = {}
        self._ids: dict[str, int] = {}  # message id -> the sequence it was stored at
        self.followers: list[Follower] = []

    async def append(self, subject: str, events: Sequence[Event], *,
                     expected_last_subject_seq: int | None,
                     msg_id: str | None = None) -> Appended:
        # As JetStream: the expected sequence is checked first, then the message id, so
        # a retry is recognised as a duplicate when it was decided on the latest state.
        last = self._last.get(subject, 0)
        if expected_last_subject_seq is not None and expected_last_subject_seq != last:
            raise ConcurrencyConflict(f"{subject} changed since sequence "
                                      f"{expected_last_subject_seq}")
        key = hashlib.sha256(msg_id.encode()).hexdigest() if msg_id is not None else None
        if key is not None and key in self._ids:
            return Appended(self._ids[key], duplicate=True)
        message = StoredMessage(len(self.messages) + 1, time.time_ns(), subject,
                                encode(events))
        self.messages.append(message)
        self._last[subject] = message.seq
        if key is not None:
            self._ids[key] = message.seq
        for follow in self.followers:
            follow([message])
        return Appended(message.seq, duplicate=False)

    async def last_seq(self) -> int:
        return len(self.messages)

    async def last_subject_seq(self, subject: str) -> int:
        return self._last.get(subject, 0)

    async def read(self, on_batch: OnBatch, *, filter_subjects: list[str] | None = None,
                   start_seq: int = 1) -> int:
        batch = [m for m in self.messages[max(start_seq, 1) - 1:]
                 if not filter_subjects or any(subject_matches(p, m.subject)
                                               for p in filter_subjects)]
        if batch:
            await on_batch(batch)
            return batch[-1].seq
        return start_seq - 1
