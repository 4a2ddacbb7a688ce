"""A :class:`~openweights.fold.Fold` following the JetStream events stream live."""

from __future__ import annotations

import anyio
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.js import JetStreamContext

from openweights.adapters.nats.reader import read_stream
from openweights.domain.aggregates import STATEFUL
from openweights.eventlog import StoredMessage
from openweights.fold import Fold
from openweights.subjects import Subjects


class LiveFold(Fold):
    def __init__(self, nc: Client, js: JetStreamContext, subjects: Subjects) -> None:
        super().__init__()
        self.nc, self.js, self.subjects = nc, js, subjects

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Fold from sequence 1 and keep following; ``started`` once caught up."""
        await read_stream(self.nc, self.js, self.subjects.events_stream, self._on_batch,
                          filter_subjects=self.subjects.state_filter(a.kind for a in STATEFUL),
                          follow=True, started=task_status.started)

    async def _on_batch(self, batch: list[StoredMessage]) -> None:
        self.apply(batch)
