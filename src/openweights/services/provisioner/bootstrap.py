"""Composition root of the provisioner: the machine backend is chosen here."""

from __future__ import annotations

from contextlib import AsyncExitStack

import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext

from openweights.adapters.nats.eventlog import JetStreamEventLog
from openweights.adapters.nats.fold import LiveFold
from openweights.clock import Clock
from openweights.config import Settings
from openweights.domain.aggregates import SECRET
from openweights.errors import InvalidRequest, OpenWeightsError
from openweights.execute import Executor
from openweights.secretbox import SecretBox
from openweights.services.provisioner.backends.local import LocalBackend
from openweights.services.provisioner.port import MachineBackend
from openweights.services.provisioner.provisioner import Provisioner
from openweights.services.runtime import closing
from openweights.subjects import Subjects

log = structlog.get_logger("provisioner")


async def compose(settings: Settings, stack: AsyncExitStack, nc: Client, js: JetStreamContext,
                  clock: Clock, *, backend: MachineBackend | None = None) -> Provisioner:
    subjects = Subjects(settings.namespace)
    fold = LiveFold(nc, js, subjects)
    executor = Executor(JetStreamEventLog(nc, js, subjects), fold, subjects, clock=clock)
    box = SecretBox(settings.secret_key)
    machines = backend or make_backend(settings, fold, box)
    # Its machines stop before the connections close: an agent gives its job back then.
    closing(stack, machines.close)
    return Provisioner(settings, fold, executor, machines, box)


def make_backend(settings: Settings, fold: LiveFold, box: SecretBox) -> MachineBackend:
    """``OW_BACKEND``: local agent processes, or RunPod pods paid with each
    organization's ``RUNPOD_API_KEY`` secret (read at every call: a new key applies at
    once), else the operator's ``OW_RUNPOD_API_KEY``."""
    if settings.backend == "local":
        return LocalBackend(settings)
    if settings.backend != "runpod":
        raise InvalidRequest(f"OW_BACKEND={settings.backend!r}: use 'local' or 'runpod'")
    from openweights.services.provisioner.backends.runpod import RunPodBackend

    def key_of(org: str) -> str | None:
        state = fold.get(org, SECRET, "RUNPOD_API_KEY")
        if state is not None and state.status == "set":
            try:
                return box.decrypt(state.ciphertext)
            except OpenWeightsError as exc:
                log.warning("provisioner.bad_runpod_key", org=org, error=str(exc))
                return None
        return settings.runpod_api_key

    return RunPodBackend(settings, key_of)
