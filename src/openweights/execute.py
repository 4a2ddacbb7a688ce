"""The one command path: decide on the current state, append, retry on conflict.

Every change the api service, the scheduler and the provisioner make goes through
:meth:`Executor.execute`: the aggregate's ``decide`` on the state a fold holds, an append
conditional on the sequence that state was folded at (optimistic concurrency) and keyed
by the caller's request id (deduplication); on a conflict, catch up with the log and
decide again, a bounded number of times. Domain errors propagate to the caller, typed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from openweights.clock import Clock, utc_now
from openweights.domain.aggregates import Aggregate
from openweights.errors import ConcurrencyConflict, Conflict, Unavailable
from openweights.eventlog import EventLog
from openweights.events import Actor, Event
from openweights.fold import Fold
from openweights.subjects import Subjects

S = TypeVar("S")
C = TypeVar("C")
MAX_ATTEMPTS = 8


class Executed(NamedTuple, Generic[S]):
    events: list[Event]  # what was appended ([] if the command changed nothing)
    # The log position the state reflects: the append's, or, when nothing was appended
    # (a retried command already applied), that of the subject's newest message; 0 for
    # an aggregate that does not exist. A reply carries it, so the client's next read
    # waits for the read models to include it.
    seq: int
    state: S | None  # the aggregate after it


class Executor:
    def __init__(self, log: EventLog, fold: Fold, subjects: Subjects, *,
                 clock: Clock = utc_now, fold_timeout_s: float = 10.0) -> None:
        self.log, self.fold, self.subjects = log, fold, subjects
        self.clock = clock
        self.fold_timeout_s = fold_timeout_s

    async def execute(self, org: str, agg: Aggregate[S, C], agg_id: str, cmds: C | Sequence[C],
                      by: Actor, request_id: str | None = None, *,
                      settle: bool = True) -> Executed[S]:
        """Decide ``cmds`` (one command, or several decided in order into one message)
        and append the events. ``settle``: return once the fold has applied them, so
        that the caller's next decision sees them (the scheduler, assigning many jobs in
        a row, does not wait). Raises what ``decide`` raises for the log's latest state,
        :class:`ConcurrencyConflict` if the aggregate kept changing, and
        :class:`Unavailable` if the log or the fold does not answer."""
        batch: Sequence[Any] = cmds if isinstance(cmds, list | tuple) else [cmds]
        subject = self.subjects.aggregate(org, agg.kind, agg_id)
        for attempt in range(MAX_ATTEMPTS):
            state = self.fold.get(org, agg, agg_id)
            expected = self.fold.last_subject_seq(subject)
            try:
                events = agg.decide_all(state, batch, self.clock(), by)
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
                return Executed([], expected, state)
            # Keyed by the aggregate and the commands too: a request id reused for another
            # aggregate, or for another decision of the same request (a timed-out run's
            # cancel, then its log), is a new command, not a retry.
            msg_id = f"{subject}:{request_id}:{_names(batch)}:{attempt}" if request_id else None
            try:
                ack = await self.log.append(subject, events, expected_last_subject_seq=expected,
                                            msg_id=msg_id)
            except ConcurrencyConflict:
                await self._catch_up(await self.log.last_subject_seq(subject))
                continue
            if not settle:
                return Executed(events, ack.seq, agg.fold(events, state))
            await self._catch_up(ack.seq)
            return Executed(events, ack.seq, self.fold.get(org, agg, agg_id))
        raise ConcurrencyConflict(f"{subject} kept changing; retry the request")

    async def append(self, subject: str, events: Sequence[Event],
                     msg_id: str | None = None) -> int:
        """An append no state decides (run events: their job's state was checked by the
        caller); returns its log position."""
        ack = await self.log.append(subject, events, expected_last_subject_seq=None,
                                    msg_id=msg_id)
        return ack.seq

    async def _catch_up(self, seq: int) -> None:
        if self.fold.seq >= seq:
            return
        try:  # asyncio's timeout: once per command, anyio's scope costs a library lookup
            async with asyncio.timeout(self.fold_timeout_s):
                await self.fold.wait_seq(seq)
        except TimeoutError:
            raise Unavailable("this service is behind the event log; retry shortly") from None


def _names(cmds: Sequence[Any]) -> str:
    return "+".join(type(c).__name__ for c in cmds)
