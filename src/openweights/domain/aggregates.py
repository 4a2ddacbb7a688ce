"""Every aggregate once: its kind, state type, ``decide``, ``evolve`` and events.

This table is the one place that knows which aggregate an event belongs to: the live
folds, the read models, the subjects a fold follows and the command path all ask it.
An aggregate's history is the subject ``<ns>.<org>.<kind>.<id>``; the ``run`` kind holds
no state of its own (the high-volume run events of a job's runs, folded only into read
models), so nothing folds or decides on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from openweights.domain import file, job, org, secret, token, worker
from openweights.domain.commands import (
    CreateFile,
    CreateOrganization,
    CreateToken,
    JobCommand,
    RemoveSecret,
    RevokeToken,
    SetSecret,
    SetSpendingLimit,
    WorkerCommand,
)
from openweights.events import Actor, Event
from openweights.events.codec import ALL_EVENTS
from openweights.events.job import JOB_EVENTS
from openweights.events.org import (
    FileCreated,
    OrganizationCreated,
    SecretRemoved,
    SecretSet,
    SpendingLimitSet,
    TokenCreated,
    TokenRevoked,
    TokenSpendingLimitSet,
)
from openweights.events.run import RUN_EVENTS
from openweights.events.worker import WORKER_EVENTS

S = TypeVar("S")
C = TypeVar("C")


@dataclass(frozen=True, eq=False)
class Aggregate(Generic[S, C]):
    """One kind of aggregate. ``decide(state, cmd, now, by) -> events`` (raises a
    :class:`~openweights.errors.Conflict` when the command does not apply) and
    ``evolve(state, event) -> state`` are its pure state machine; ``id_of`` names the
    aggregate an event of ``events`` belongs to."""

    kind: str
    state: type[S] | None
    events: tuple[type[Event], ...]
    id_of: Callable[[Any], str]
    decide: Callable[[S | None, C, datetime, Actor], list[Event]] | None = None
    evolve: Callable[[S | None, Event], S] | None = None

    def decide_all(self, state: S | None, cmds: Sequence[C], now: datetime,
                   by: Actor) -> list[Event]:
        """The events of ``cmds`` decided in order, each on the state the previous ones
        leave: one decision, appended as one message."""
        assert self.decide is not None and self.evolve is not None, f"{self.kind} decides nothing"
        events: list[Event] = []
        last = len(cmds) - 1
        for i, cmd in enumerate(cmds):
            step = self.decide(state, cmd, now, by)
            if i < last:                 # the state after the last command is never read
                for event in step:
                    state = self.evolve(state, event)
            events += step
        return events

    def fold(self, events: Sequence[Event], state: S | None = None) -> S | None:
        assert self.evolve is not None, f"{self.kind} has no state"
        for event in events:
            state = self.evolve(state, event)
        return state

    def __repr__(self) -> str:
        return f"<aggregate {self.kind}>"


JOB: Aggregate[job.JobState, JobCommand] = Aggregate(
    "job", job.JobState, JOB_EVENTS, lambda e: e.job_id, job.decide, job.evolve)
WORKER: Aggregate[worker.WorkerState, WorkerCommand] = Aggregate(
    "worker", worker.WorkerState, WORKER_EVENTS, lambda e: e.worker_id, worker.decide,
    worker.evolve)
FILE: Aggregate[file.FileState, CreateFile] = Aggregate(
    "file", file.FileState, (FileCreated,), lambda e: e.file_id, file.decide, file.evolve)
TOKEN: Aggregate[token.TokenState, CreateToken | RevokeToken | SetSpendingLimit] = Aggregate(
    "token", token.TokenState, (TokenCreated, TokenRevoked, TokenSpendingLimitSet),
    lambda e: e.token_id,
    token.decide, token.evolve)
SECRET: Aggregate[secret.SecretState, SetSecret | RemoveSecret] = Aggregate(
    "secret", secret.SecretState, (SecretSet, SecretRemoved), lambda e: e.name,
    secret.decide, secret.evolve)
ORG: Aggregate[org.OrgState, CreateOrganization | SetSpendingLimit] = Aggregate(
    "org", org.OrgState, (OrganizationCreated, SpendingLimitSet), lambda e: e.org,
    org.decide, org.evolve)
# One subject for the run events of every run of a job, keyed by the job's id.
RUN: Aggregate[None, None] = Aggregate("run", None, RUN_EVENTS, lambda e: e.job_id)

AGGREGATES: dict[str, Aggregate[Any, Any]] = {
    a.kind: a for a in (ORG, TOKEN, SECRET, FILE, JOB, RUN, WORKER)}
# Aggregates with a state that services fold (every kind but the run events).
STATEFUL: tuple[Aggregate[Any, Any], ...] = tuple(
    a for a in AGGREGATES.values() if a.evolve is not None)

_BY_EVENT: dict[type[Event], Aggregate[Any, Any]] = {
    cls: a for a in AGGREGATES.values() for cls in a.events}
assert set(_BY_EVENT) == set(ALL_EVENTS), "every event belongs to exactly one aggregate"


def aggregate_of(event: Event) -> Aggregate[Any, Any]:
    return _BY_EVENT[type(event)]


def aggregate_key(event: Event) -> tuple[str, str]:
    """``(kind, id)`` of the aggregate ``event`` belongs to: the two last tokens of its
    subject."""
    agg = _BY_EVENT[type(event)]
    return agg.kind, agg.id_of(event)
