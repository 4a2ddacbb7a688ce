"""Which aggregate an event belongs to, and how to fold it.

Every event names its aggregate's id; ``aggregate_key`` maps an event to
``(kind, id)``, the two last tokens of its subject ``<ns>.<org>.<kind>.<id>``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openweights.domain import file, job, org, secret, token, worker
from openweights.events import (
    Event,
    FileCreated,
    OrganizationCreated,
    RunEventLogged,
    RunFileUploaded,
    SecretRemoved,
    SecretSet,
    TokenCreated,
    TokenRevoked,
)
from openweights.events.job import JOB_EVENTS
from openweights.events.worker import WORKER_EVENTS

KINDS = ("org", "token", "secret", "file", "job", "run", "worker")

EVOLVE: dict[str, Callable[[Any, Event], Any]] = {
    "org": org.evolve,
    "token": token.evolve,
    "secret": secret.evolve,
    "file": file.evolve,
    "job": job.evolve,
    "worker": worker.evolve,
}


def aggregate_key(event: Event) -> tuple[str, str]:
    """``(kind, id)`` of the aggregate ``event`` belongs to."""
    if isinstance(event, JOB_EVENTS):
        return "job", event.job_id  # type: ignore[attr-defined]
    if isinstance(event, WORKER_EVENTS):
        return "worker", event.worker_id  # type: ignore[attr-defined]
    match event:
        case RunEventLogged() | RunFileUploaded():
            return "run", event.job_id  # one subject for the run events of a job
        case FileCreated():
            return "file", event.file_id
        case TokenCreated() | TokenRevoked():
            return "token", event.token_id
        case SecretSet() | SecretRemoved():
            return "secret", event.name
        case OrganizationCreated():
            return "org", event.org
    raise TypeError(f"unknown event {type(event).__name__}")
