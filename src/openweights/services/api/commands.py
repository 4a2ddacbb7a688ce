"""Deciding and appending: the one path every change of the api service takes.

Decide on the live fold's state, append with the aggregate's last sequence
(optimistic concurrency) and the caller's request id (deduplication); on a conflict,
catch up with the log and decide again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from openweights.adapters.nats.eventlog import EventLog
from openweights.adapters.nats.fold import LiveFold
from openweights.errors import ConcurrencyConflict, Conflict, Unavailable
from openweights.events import Actor, Event
from openweights.subjects import Subjects

Decide = Callable[[Any, datetime, Actor], list[Event]]
MAX_ATTEMPTS = 8


class Executor:
    def __init__(self, log: EventLog, fold: LiveFold, subjects: Subjects,
                 fold_timeout_s: float = 10.0) -> None:
        self.log, self.fold, self.subjects = log, fold, subjects
        self.fold_timeout_s = fold_timeout_s

    async def execute(self, org: str, kind: str, agg_id: str, decide: Decide, by: Actor,
                      request_id: str | None = None) -> tuple[list[Event], int, Any]:
        """``(events appended, their seq or 0, state after)``; domain errors propagate."""
        subject = self.subjects.aggregate(org, kind, agg_id)
        for attempt in range(MAX_ATTEMPTS):
            state = self.fold.get(org, kind, agg_id)
            expected = self.fold.last_subject_seq(subject)
            try:
                events = decide(state, datetime.now(UTC), by)
            except Conflict:
                # Refuse only on the log's latest state: the command may follow a change
                # this fold has not applied yet (an agent starting the run the scheduler
                # assigned a moment ago, announced to it before it reached us).
                latest = await self.log.last_subject_seq(subject)
                if latest <= expected:
                    raise
                await self._catch_up(latest)
                continue
            if not events:
                return [], 0, state
            # Keyed by the aggregate too: a request id reused for another aggregate is a
            # new command, not a retry (deduplicated, it was not applied: no state after).
            msg_id = f"{subject}:{request_id}:{attempt}" if request_id else None
            try:
                ack = await self.log.append(subject, events, expected_last_subject_seq=expected,
                                            msg_id=msg_id)
            except ConcurrencyConflict:
                await self._catch_up(await self.log.last_subject_seq(subject))
                continue
            await self._catch_up(ack.seq)
            return events, ack.seq, self.fold.get(org, kind, agg_id)
        raise ConcurrencyConflict(f"{subject} kept changing; retry the request")

    async def append_unconditional(self, subject: str, events: list[Event],
                                   request_id: str | None = None) -> int:
        """Appends that need no state check beyond what the caller did (run events)."""
        ack = await self.log.append(subject, events, expected_last_subject_seq=None,
                                    msg_id=request_id)
        return ack.seq

    async def _catch_up(self, seq: int) -> None:
        if self.fold.seq >= seq:
            return
        try:  # asyncio's timeout: once per command, anyio's scope costs a library lookup
            async with asyncio.timeout(self.fold_timeout_s):
                await self.fold.wait_seq(seq)
        except TimeoutError:
            raise Unavailable("the api service is behind the event log; retry shortly"
                              ) from None
