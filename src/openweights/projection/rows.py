"""Domain states <-> read-model rows. Column order is the order of the tables' columns.

The mapping is a bijection for every column the domain owns, which is what lets the
live projector load a row, evolve it, and write it back, and lets the property test
say "projected rows equal the pure fold of the domain".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from openweights.domain.file import FileState
from openweights.domain.job import JobState, RunState
from openweights.domain.org import OrgState
from openweights.domain.secret import SecretState
from openweights.domain.token import TokenState
from openweights.domain.worker import WorkerState
from openweights.events import JobSpec

Row = tuple[Any, ...]

COLUMNS: dict[str, tuple[str, ...]] = {
    "organizations": ("id", "name", "created_at", "updated_at", "spending_limit"),
    "api_tokens": ("id", "organization_id", "name", "role", "status", "token_hash",
                   "token_prefix", "worker_id", "created_at", "expires_at", "revoked_at",
                   "spending_limit"),
    "organization_secrets": ("organization_id", "name", "ciphertext", "created_at",
                             "updated_at"),
    "files": ("id", "organization_id", "filename", "purpose", "bytes", "sha256", "created_at"),
    "workers": ("id", "organization_id", "status", "managed", "backend", "docker_image",
                "hardware_type", "gpu_type", "gpu_count", "vram_gb", "pod_id", "ttl_until",
                "logfile", "reason", "cached_models", "created_at", "updated_at",
                "price_per_hour", "machine_started_at", "machine_ended_at"),
    "jobs": ("id", "organization_id", "type", "model", "params", "script", "docker_image",
             "requires_vram_gb", "allowed_hardware", "status", "worker_id", "outputs",
             "timeout", "created_at", "updated_at", "error", "wait_reason", "submitted_by"),
    "runs": ("id", "job_id", "attempt", "organization_id", "worker_id", "status", "log_file",
             "created_at", "updated_at", "started_at", "ended_at"),
    "events": ("seq", "idx", "organization_id", "job_id", "run_id", "data", "file",
               "created_at"),
}
PRIMARY_KEY: dict[str, tuple[str, ...]] = {
    "organizations": ("id",), "api_tokens": ("id",),
    "organization_secrets": ("organization_id", "name"), "files": ("id",),
    "workers": ("organization_id", "id"), "jobs": ("id",), "runs": ("id",),
    "events": ("seq", "idx"),
}
TABLES = tuple(COLUMNS)


def org_row(s: OrgState) -> Row:
    return (s.id, s.name, s.created_at, s.updated_at, s.spending_limit)


def token_row(s: TokenState) -> Row:
    return (s.id, s.org, s.name, s.role, s.status, s.token_hash, s.token_prefix, s.worker_id,
            s.created_at, s.expires_at, s.revoked_at, s.spending_limit)


def secret_row(s: SecretState) -> Row:
    return (s.org, s.name, s.ciphertext, s.created_at, s.updated_at)


def file_row(s: FileState) -> Row:
    return (s.id, s.org, s.filename, s.purpose, s.bytes, s.sha256, s.created_at)


def worker_row(s: WorkerState, cached_models: list[str]) -> Row:
    return (s.id, s.org, s.status, s.managed, s.backend, s.docker_image, s.hardware_type,
            s.gpu_type, s.gpu_count, s.vram_gb, s.machine_id, s.ttl_until, s.log_file,
            s.reason, cached_models, s.created_at, s.updated_at, s.price_per_hour,
            s.machine_started_at, s.machine_ended_at)


def job_row(s: JobState, outputs: dict[str, Any]) -> Row:
    p = s.spec
    return (s.id, s.org, p.type, p.model, p.params, p.script, p.docker_image,
            p.requires_vram_gb, p.allowed_hardware, s.status, s.worker_id, outputs, p.timeout,
            s.created_at, s.updated_at, s.error, s.wait_reason, s.submitted_by)


def run_row(s: RunState, org: str) -> Row:
    return (s.id, s.job_id, s.attempt, org, s.worker_id, s.status, s.log_file, s.created_at,
            s.updated_at, s.started_at, s.ended_at)


# -- rows back to states (the live projector loads what a batch touches) -------------
def _d(row: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {n: row[n] for n in names}


def org_state(row: Mapping[str, Any]) -> OrgState:
    return OrgState(**_d(row, "id", "name", "created_at", "updated_at", "spending_limit"))


def token_state(row: Mapping[str, Any]) -> TokenState:
    return TokenState(org=row["organization_id"], **_d(
        row, "id", "name", "role", "status", "token_hash", "token_prefix", "worker_id",
        "created_at", "expires_at", "revoked_at", "spending_limit"))


def secret_state(row: Mapping[str, Any]) -> SecretState:
    return SecretState(org=row["organization_id"],
                       **_d(row, "name", "ciphertext", "created_at", "updated_at"))


def file_state(row: Mapping[str, Any]) -> FileState:
    return FileState(org=row["organization_id"],
                     **_d(row, "id", "filename", "purpose", "bytes", "sha256", "created_at"))


def worker_state(row: Mapping[str, Any]) -> WorkerState:
    return WorkerState(
        org=row["organization_id"], machine_id=row["pod_id"], log_file=row["logfile"],
        **_d(row, "id", "status", "managed", "backend", "docker_image", "hardware_type",
             "gpu_type", "gpu_count", "vram_gb", "ttl_until", "reason", "created_at",
             "updated_at", "price_per_hour", "machine_started_at", "machine_ended_at"))


def run_state(row: Mapping[str, Any]) -> RunState:
    return RunState(**_d(row, "id", "job_id", "attempt", "worker_id", "status", "log_file",
                         "created_at", "updated_at", "started_at", "ended_at"))


def job_state(row: Mapping[str, Any], runs: list[Mapping[str, Any]]) -> JobState:
    ordered = sorted(runs, key=lambda r: r["attempt"])
    hardware = row["allowed_hardware"]
    spec = JobSpec(allowed_hardware=list(hardware) if hardware is not None else None,
                   **_d(row, "type", "model", "params", "script", "docker_image",
                        "requires_vram_gb", "timeout"))
    return JobState(org=row["organization_id"], spec=spec,
                    runs=tuple(run_state(r) for r in ordered),
                    **_d(row, "id", "status", "worker_id", "created_at", "updated_at",
                         "error", "wait_reason", "submitted_by"))


def as_dict(row: Row, table: str) -> dict[str, Any]:
    return dict(zip(COLUMNS[table], row, strict=True))


def to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)
