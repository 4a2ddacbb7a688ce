"""The read models folded in memory: ``ReadModel.apply(seq, events, subject)``.

Both the live projector (which first loads the rows a batch touches) and ``ow replay``
(which starts empty) fold the log through this class, so they cannot disagree. It
tracks which rows changed so the caller writes only those.

Workers are keyed by ``(organization, worker id)``: an id is chosen by whoever starts
the agent, so two organizations may each have one of the same name. Their events do
not all carry the organization; the message's subject (``<ns>.<org>.<kind>.<id>``) does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from openweights.domain import file, job, org, secret, token, worker
from openweights.domain.aggregates import AGGREGATES, SECRET, aggregate_of
from openweights.domain.file import FileState
from openweights.domain.job import JobState
from openweights.domain.matching import cached_model
from openweights.domain.org import OrgState
from openweights.domain.secret import SecretState
from openweights.domain.token import TokenState
from openweights.domain.worker import WorkerState
from openweights.events import (
    Event,
    FileCreated,
    JobCompleted,
    JobReset,
    OrganizationCreated,
    RunEventLogged,
    RunFileUploaded,
    SecretRemoved,
    SecretSet,
    TokenCreated,
    TokenRevoked,
)
from openweights.events.org import SpendingLimitSet, TokenSpendingLimitSet
from openweights.projection import rows
from openweights.projection.rows import TABLES, Row

_RUN, _JOB, _WORKER, _TENANCY = "run", "job", "worker", "tenancy"
# How each event is folded here, by its aggregate; every other kind is tenancy's.
_KIND: dict[type, str] = {
    cls: {"run": _RUN, "job": _JOB, "worker": _WORKER}.get(agg.kind, _TENANCY)
    for agg in AGGREGATES.values() for cls in agg.events}
# The table of each aggregate's rows.
_TABLE = {"org": "organizations", "token": "api_tokens", "secret": "organization_secrets",
          "file": "files", "job": "jobs", "run": "jobs", "worker": "workers"}
assert set(_TABLE) == set(AGGREGATES), "every aggregate needs a table"


def newest_values(outputs: dict[str, Any], data: dict[str, Any]) -> None:
    """Fold one event row's ``data`` into ``outputs``: the newest value of each key wins,
    a null is not a value. The one definition of a job's outputs; ``events.latest``
    (``schema/queries/api_events_latest.sql``) computes the same over the same rows (an
    upload is the row ``{"path", "file"}``), except that a restart clears the outputs."""
    if None in data.values():
        outputs.update({k: v for k, v in data.items() if v is not None})
    else:
        outputs.update(data)


def org_of(subject: str) -> str:
    """The organization of an aggregate subject ``<ns>.<org>.<kind>.<id>``."""
    return subject.split(".", 2)[1]


@dataclass
class ReadModel:
    orgs: dict[str, OrgState] = field(default_factory=dict)
    tokens: dict[str, TokenState] = field(default_factory=dict)
    secrets: dict[tuple[str, str], SecretState | None] = field(default_factory=dict)
    files: dict[str, FileState] = field(default_factory=dict)
    workers: dict[tuple[str, str], WorkerState] = field(default_factory=dict)
    cached_models: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    jobs: dict[str, JobState] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Appended event rows and the keys of changed rows since the last ``take_changes``.
    new_events: list[Row] = field(default_factory=list)
    dirty: dict[str, set[Any]] = field(default_factory=lambda: {
        "organizations": set(), "api_tokens": set(), "organization_secrets": set(),
        "files": set(), "workers": set(), "jobs": set()})

    # -- what a batch touches (the live projector loads these first) -------------------
    @staticmethod
    def keys_of(messages: Iterable[tuple[str, list[Event]]]) -> dict[str, set[Any]]:
        """The rows that ``(subject, events)`` messages touch, per table."""
        keys: dict[str, set[Any]] = {table: set() for table in _TABLE.values()}
        for subject, events in messages:
            for e in events:
                agg = aggregate_of(e)
                if agg is SECRET:
                    key: Any = (e.org, e.name)  # type: ignore[attr-defined]
                elif agg.kind == "worker":
                    key = (org_of(subject), agg.id_of(e))
                else:
                    key = agg.id_of(e)
                keys[_TABLE[agg.kind]].add(key)
                if type(e) is JobCompleted:  # the worker's cached models change
                    keys["workers"].add((org_of(subject), e.worker_id))
        return keys

    # -- the fold ----------------------------------------------------------------------
    def apply(self, seq: int, events: list[Event], subject: str) -> None:
        """Fold one message: its log position, its events and its aggregate's subject."""
        # Dispatch on the exact type: run events are most of the log, and a chain of
        # isinstance checks against tuples of classes cost a third of the fold.
        for idx, e in enumerate(events):
            kind = _KIND[type(e)]
            if kind is _RUN:
                self._apply_run_event(seq, idx, e)  # type: ignore[arg-type]
            elif kind is _JOB:
                self._apply_job(e)
            elif kind is _WORKER:
                key = (org_of(subject), e.worker_id)  # type: ignore[attr-defined]
                self.workers[key] = worker.evolve(self.workers.get(key), e)
                self.dirty["workers"].add(key)
            else:
                self._apply_tenancy(e)

    def _apply_job(self, e: Event) -> None:
        job_id: str = e.job_id  # type: ignore[attr-defined]
        jobs = self.jobs
        state = jobs[job_id] = job.evolve(jobs.get(job_id), e)
        self.dirty["jobs"].add(job_id)
        cls = type(e)
        if cls is JobCompleted:
            key = (state.org, e.worker_id)  # type: ignore[attr-defined]
            name = cached_model(state.spec.model)
            models = self.cached_models.setdefault(key, [])
            if name and name not in models and key in self.workers:
                models.append(name)
                self.dirty["workers"].add(key)
        elif cls is JobReset:
            self.outputs[job_id] = {}

    def _apply_run_event(self, seq: int, idx: int, e: RunEventLogged | RunFileUploaded) -> None:
        job_id = e.job_id
        state = self.jobs.get(job_id)
        outputs = self.outputs.get(job_id)
        if outputs is None:
            outputs = self.outputs[job_id] = {}
        if type(e) is RunEventLogged:
            data, file_id = e.data, e.file
        else:
            assert isinstance(e, RunFileUploaded)
            data, file_id = {"path": e.path, "file": e.file}, e.file
        newest_values(outputs, data)
        if state is None:
            self.new_events.append((seq, idx, "", job_id, e.run_id, data, file_id, e.at))
        else:
            self.new_events.append((seq, idx, state.org, job_id, e.run_id, data, file_id, e.at))
            self.dirty["jobs"].add(job_id)

    def _apply_tenancy(self, e: Event) -> None:
        match e:
            case OrganizationCreated() | SpendingLimitSet():
                self.orgs[e.org] = org.evolve(self.orgs.get(e.org), e)
                self.dirty["organizations"].add(e.org)
            case TokenCreated() | TokenRevoked() | TokenSpendingLimitSet():
                self.tokens[e.token_id] = token.evolve(self.tokens.get(e.token_id), e)
                self.dirty["api_tokens"].add(e.token_id)
            case SecretSet() | SecretRemoved():
                key = (e.org, e.name)
                after = secret.evolve(self.secrets.get(key), e)
                self.secrets[key] = after if after.status == "set" else None
                self.dirty["organization_secrets"].add(key)
            case FileCreated():
                self.files[e.file_id] = file.evolve(self.files.get(e.file_id), e)
                self.dirty["files"].add(e.file_id)
            case _:
                raise TypeError(f"no projection for {type(e).__name__}")

    # -- rows ----------------------------------------------------------------------------
    def row(self, table: str, key: Any) -> Row | None:
        """The current row of ``table`` at ``key`` (``None``: the row must not exist)."""
        match table:
            case "jobs":
                return rows.job_row(self.jobs[key], self.outputs.get(key, {}))
            case "workers":
                return rows.worker_row(self.workers[key], self.cached_models.get(key, []))
            case "files":
                return rows.file_row(self.files[key])
            case "api_tokens":
                return rows.token_row(self.tokens[key])
            case "organizations":
                return rows.org_row(self.orgs[key])
            case "organization_secrets":
                s = self.secrets.get(key)
                return rows.secret_row(s) if s is not None else None
        raise KeyError(table)

    def run_rows(self, job_ids: Iterable[str]) -> list[Row]:
        out: list[Row] = []
        for job_id in job_ids:
            state = self.jobs[job_id]
            out.extend(rows.run_row(r, state.org) for r in state.runs)
        return out

    def all_rows(self) -> dict[str, list[Row]]:
        """Every row, for a replay into empty tables."""
        return {t: list(self.iter_rows(t)) for t in TABLES}

    def iter_rows(self, table: str) -> Iterator[Row]:
        """Every row of ``table``, made as it is consumed (a COPY that streams them)."""
        if table == "runs":
            for state in self.jobs.values():
                org = state.org
                for run in state.runs:
                    yield rows.run_row(run, org)
        elif table == "events":
            yield from self.new_events
        else:
            for k in self._keys(table):
                if (r := self.row(table, k)) is not None:
                    yield r

    def _keys(self, table: str) -> Iterable[Any]:
        keyed: dict[str, Iterable[Any]] = {
            "jobs": self.jobs, "workers": self.workers, "files": self.files,
            "api_tokens": self.tokens, "organizations": self.orgs,
            "organization_secrets": self.secrets}
        return keyed[table]

    def take_changes(self) -> tuple[dict[str, list[Row]], dict[str, list[Any]], list[Row]]:
        """``(upserts per table incl. runs, deletes per table, new event rows)``; resets."""
        upserts: dict[str, list[Row]] = {}
        deletes: dict[str, list[Any]] = {}
        for table, keys in self.dirty.items():
            for key in keys:
                r = self.row(table, key)
                if r is None:
                    deletes.setdefault(table, []).append(key)
                else:
                    upserts.setdefault(table, []).append(r)
        upserts["runs"] = self.run_rows(self.dirty["jobs"])
        new_events, self.new_events = self.new_events, []
        for keys in self.dirty.values():
            keys.clear()
        return upserts, deletes, new_events
