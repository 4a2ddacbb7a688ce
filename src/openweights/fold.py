"""Aggregate states folded from the log, in memory, for services that decide on them.

The api service, the scheduler and the provisioner keep every aggregate's state (and
the sequence of its subject's newest message, for optimistic appends) by folding the
log through the domain's ``evolve``: a restart is a replay. Messages arrive in batches
(``apply``) from whichever follows the log: JetStream's live follower
(:class:`openweights.adapters.nats.fold.LiveFold`) or the in-memory log's followers.
``wait_seq`` gives read-your-writes after an append.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from openweights.domain.aggregates import AGGREGATES, Aggregate
from openweights.eventlog import EventLog, StoredMessage
from openweights.events import Event, decode
from openweights.subjects import Subjects

S = TypeVar("S")
Key = tuple[str, str, str]  # (org, kind, id)
Listener = Callable[[int, str, Event, Any, Any], None]  # seq, org, event, before, after


class Fold:
    def __init__(self) -> None:
        self.states: dict[Key, Any] = {}
        self._by_kind: dict[str, dict[Key, Any]] = {}  # the same states, per kind
        self.subject_seq: dict[str, int] = {}
        # (org, kind) -> sequence of that org's newest message of that kind: a version of,
        # say, an org's secrets that two services folding the same log agree on.
        self.kind_seq: dict[tuple[str, str], int] = {}
        self.seq = 0
        self.listeners: list[Listener] = []
        # asyncio's own: set once per delivered batch, where anyio's costs a lookup of
        # the running library each time (the services run on asyncio only).
        self._advanced = asyncio.Event()

    def get(self, org: str, agg: Aggregate[S, Any], agg_id: str) -> S | None:
        return self.states.get((org, agg.kind, agg_id))

    def of_kind(self, agg: Aggregate[S, Any]) -> list[S]:
        """Every state of ``agg``'s kind (all orgs): in time of that kind's count, not of
        every aggregate's (a run start reads the org's few secrets among many jobs)."""
        return [s for s in self._by_kind.get(agg.kind, {}).values() if s is not None]

    def last_subject_seq(self, subject: str) -> int:
        return self.subject_seq.get(subject, 0)

    def version(self, org: str, agg: Aggregate[Any, Any]) -> int:
        """The sequence of ``org``'s newest message of ``agg``'s kind (0 if none)."""
        return self.kind_seq.get((org, agg.kind), 0)

    def apply(self, batch: list[StoredMessage]) -> None:
        """Fold a batch of messages of stateful subjects, in log order."""
        for m in batch:
            org, kind, agg_id = Subjects.parse(m.subject)
            key = (org, kind, agg_id)
            evolve = AGGREGATES[kind].evolve
            assert evolve is not None, f"{m.subject}: the {kind} kind has no state to fold"
            of_kind = self._by_kind.setdefault(kind, {})
            for event in decode(m.data):
                before = self.states.get(key)
                after = evolve(before, event)
                self.states[key] = of_kind[key] = after
                for listener in self.listeners:
                    listener(m.seq, org, event, before, after)
            self.subject_seq[m.subject] = self.kind_seq[(org, kind)] = m.seq
            self.seq = m.seq
        self._advanced.set()
        self._advanced = asyncio.Event()

    async def wait_seq(self, seq: int) -> None:
        """Return once every message up to ``seq`` (of the folded subjects) is applied.

        Messages of subjects this fold does not follow never arrive, so callers pass the
        sequence of a message on a followed subject.
        """
        while self.seq < seq:
            await self._advanced.wait()


class LogFold(Fold):
    """A fold of some subjects that reads them from the log when it must catch up, for
    one-shot tools with no live follower (``ow org create``, the test drivers)."""

    def __init__(self, log: EventLog, filter_subjects: list[str]) -> None:
        super().__init__()
        self.log, self.filter_subjects = log, filter_subjects

    async def load(self) -> LogFold:
        await self.log.read(self._on_batch, filter_subjects=self.filter_subjects,
                            start_seq=self.seq + 1)
        return self

    async def wait_seq(self, seq: int) -> None:
        if self.seq < seq:
            await self.load()

    async def _on_batch(self, batch: list[StoredMessage]) -> None:
        self.apply(batch)
