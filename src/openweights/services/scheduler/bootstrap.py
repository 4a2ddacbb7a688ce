"""Composition root of the scheduler."""

from __future__ import annotations

from contextlib import AsyncExitStack

from nats.aio.client import Client
from nats.js import JetStreamContext

from openweights.adapters.nats.eventlog import JetStreamEventLog
from openweights.adapters.nats.fold import LiveFold
from openweights.clock import Clock
from openweights.config import Settings
from openweights.execute import Executor
from openweights.services.scheduler.scheduler import Scheduler
from openweights.subjects import Subjects


async def compose(settings: Settings, stack: AsyncExitStack, nc: Client, js: JetStreamContext,
                  clock: Clock, *, cls: type[Scheduler] = Scheduler) -> Scheduler:
    subjects = Subjects(settings.namespace)
    fold = LiveFold(nc, js, subjects)
    executor = Executor(JetStreamEventLog(nc, js, subjects), fold, subjects, clock=clock)
    return cls(settings, nc, js, fold, executor)
