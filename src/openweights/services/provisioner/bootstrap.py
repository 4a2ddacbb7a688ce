"""Composition root of the provisioner: the machine backend is chosen here."""

from __future__ import annotations

from contextlib import AsyncExitStack

from nats.aio.client import Client
from nats.js import JetStreamContext

from openweights.adapters.nats.eventlog import JetStreamEventLog
from openweights.adapters.nats.fold import LiveFold
from openweights.clock import Clock
from openweights.config import Settings
from openweights.execute import Executor
from openweights.secretbox import SecretBox
from openweights.services.provisioner.backends.local import LocalBackend
from openweights.services.provisioner.port import MachineBackend
from openweights.services.provisioner.provisioner import Provisioner
from openweights.services.runtime import closing
from openweights.subjects import Subjects


async def compose(settings: Settings, stack: AsyncExitStack, nc: Client, js: JetStreamContext,
                  clock: Clock, *, backend: MachineBackend | None = None) -> Provisioner:
    subjects = Subjects(settings.namespace)
    fold = LiveFold(nc, js, subjects)
    executor = Executor(JetStreamEventLog(nc, js, subjects), fold, subjects, clock=clock)
    machines = backend or LocalBackend(settings)
    # Its machines stop before the connections close: an agent gives its job back then.
    closing(stack, machines.close)
    return Provisioner(settings, fold, executor, machines, SecretBox(settings.secret_key))
