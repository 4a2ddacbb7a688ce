"""In-memory indexes the api service keeps beside its fold, each fed by the fold's
listener (``on_event``) so that no request scans every aggregate ever created.

Built once by the composition root and attached to the fold before it starts; a
restart rebuilds them with the fold.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from openweights.domain.aggregates import JOB, SECRET
from openweights.domain.job import JobState
from openweights.errors import NotFound, OpenWeightsError
from openweights.events import Event, JobAssigned, TokenCreated
from openweights.fold import Fold
from openweights.secretbox import SecretBox
from openweights.subjects import check_token


class TokenIndex:
    """Which organization a token belongs to, by its id (``whoami``) and by its hash (the
    auth callout: a connecting client presents the token itself)."""

    def __init__(self) -> None:
        self.org_of: dict[str, str] = {}  # token id -> organization
        self.by_hash: dict[str, tuple[str, str]] = {}  # token hash -> (org, token id)

    def on_event(self, seq: int, org: str, event: Event, before: Any, after: Any) -> None:
        if isinstance(event, TokenCreated):
            self.org_of[event.token_id] = org
            self.by_hash[event.token_hash] = (org, event.token_id)


class RunIndex:
    """The job of every run: run ids come in requests, states are kept per job."""

    def __init__(self, fold: Fold) -> None:
        self.fold = fold
        self.job_of: dict[tuple[str, str], str] = {}  # (org, run id) -> job id

    def on_event(self, seq: int, org: str, event: Event, before: Any, after: Any) -> None:
        if isinstance(event, JobAssigned):
            self.job_of[(org, event.run_id)] = event.job_id

    def job(self, org: str, run_id: str) -> JobState:
        """The job ``run_id`` is a run of. Raises :class:`NotFound`."""
        job_id = self.job_of.get((org, check_token(run_id, "run id")))
        state = self.fold.get(org, JOB, job_id) if job_id else None
        if state is None:
            raise NotFound(f"run {run_id!r} not found")
        return state


class Holdings:
    """The jobs whose open run each worker holds: checked on every job start."""

    def __init__(self) -> None:
        self.jobs_of: dict[tuple[str, str], set[str]] = defaultdict(set)  # (org, worker)

    def on_event(self, seq: int, org: str, event: Event, before: Any, after: Any) -> None:
        if isinstance(before, JobState) and (run := before.open_run) is not None:
            self.jobs_of[(org, run.worker_id)].discard(before.id)
        if isinstance(after, JobState) and (run := after.open_run) is not None:
            self.jobs_of[(org, run.worker_id)].add(after.id)

    def holds_any(self, org: str, worker_id: str) -> bool:
        return bool(self.jobs_of.get((org, worker_id)))


class OrgSecrets:
    """An organization's secrets, decrypted with the operator's key only when asked."""

    def __init__(self, fold: Fold, box: SecretBox) -> None:
        self.fold, self.box = fold, box

    def sealed(self, org: str) -> dict[str, str]:
        """Name -> ciphertext of the secrets ``org`` has set."""
        return {s.name: s.ciphertext for s in self.fold.of_kind(SECRET)
                if s.org == org and s.status == "set"}

    def plain(self, org: str) -> dict[str, str]:
        """Decrypted; raises if one was sealed under another key."""
        return {k: self.box.decrypt(v) for k, v in sorted(self.sealed(org).items())}

    def for_jobs(self, org: str) -> dict[str, str]:
        """What a job's environment gets: none if one was sealed under another key."""
        try:
            return self.plain(org)
        except OpenWeightsError:
            return {}

    def value(self, org: str, name: str) -> str | None:
        state = self.fold.get(org, SECRET, name)
        if state is None or state.status != "set":
            return None
        try:
            return self.box.decrypt(state.ciphertext)
        except OpenWeightsError:
            return None
