"""Aggregate states folded live from the log, for services that decide in memory.

The api service and the scheduler keep every aggregate's state (and the sequence of
its newest message, for optimistic appends) by folding the log through the domain's
``evolve``: a restart is a replay. ``wait_seq`` gives read-your-writes after an append.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.js import JetStreamContext

from openweights.adapters.nats.reader import StoredMessage, read_stream
from openweights.domain.registry import EVOLVE
from openweights.events import Event, decode
from openweights.subjects import Subjects

Key = tuple[str, str, str]  # (org, kind, id)
Listener = Callable[[int, str, Event, Any, Any], None]  # seq, org, event, before, after


class LiveFold:
    def __init__(self, nc: Client, js: JetStreamContext, subjects: Subjects) -> None:
        self.nc, self.js, self.subjects = nc, js, subjects
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

    def get(self, org: str, kind: str, agg_id: str) -> Any:
        return self.states.get((org, kind, agg_id))

    def last_subject_seq(self, subject: str) -> int:
        return self.subject_seq.get(subject, 0)

    def of_kind(self, kind: str) -> list[Any]:
        """Every state of ``kind`` (all orgs): in time of that kind's count, not of
        every aggregate's (a run start reads the org's few secrets among many jobs)."""
        return [s for s in self._by_kind.get(kind, {}).values() if s is not None]

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Fold from sequence 1 and keep following; ``started`` once caught up."""
        await read_stream(self.nc, self.js, self.subjects.events_stream, self._on_batch,
                          filter_subjects=self.subjects.state_filter(), follow=True,
                          started=task_status.started)

    async def _on_batch(self, batch: list[StoredMessage]) -> None:
        for m in batch:
            org, kind, agg_id = Subjects.parse(m.subject)
            key = (org, kind, agg_id)
            evolve = EVOLVE[kind]
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
