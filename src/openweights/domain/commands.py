"""Commands: what a party asks an aggregate to do (imperative names).

A command is validated input; ``decide`` turns it into events or a typed error. They
are also the payloads the api service receives, so they are msgspec Structs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from openweights.events.job import JobSpec
from openweights.events.org import TokenRole


class Command(msgspec.Struct, frozen=True, kw_only=True):
    pass


# -- jobs -----------------------------------------------------------------------------
class SubmitJob(Command, frozen=True):
    job_id: str
    org: str
    spec: JobSpec


class RestartJob(Command, frozen=True):
    pass


class CancelJob(Command, frozen=True):
    reason: str = "requested"
    # Set when a worker cancels its own run (timeout): fenced like its other updates.
    run_id: str | None = None
    worker_id: str | None = None


class AssignJob(Command, frozen=True):
    worker_id: str
    run_id: str


class StartRun(Command, frozen=True):
    run_id: str
    worker_id: str


class CompleteRun(Command, frozen=True):
    run_id: str
    worker_id: str
    log_file: str | None = None


class FailRun(Command, frozen=True):
    run_id: str
    worker_id: str
    error: str
    exit_code: int | None = None
    log_file: str | None = None


class RequeueJob(Command, frozen=True):
    run_id: str
    worker_id: str
    run_status: Literal["failed", "canceled"]
    reason: str
    log_file: str | None = None


class StoreRunLog(Command, frozen=True):
    run_id: str
    worker_id: str
    log_file: str


class ExtendJobTimeout(Command, frozen=True):
    timeout: datetime | None


class NoteWaitReason(Command, frozen=True):
    """Say why a pending job waits (None: it no longer does); the provisioner's."""

    reason: str | None


JobCommand = (
    SubmitJob | RestartJob | CancelJob | AssignJob | StartRun | CompleteRun | FailRun
    | RequeueJob | StoreRunLog | ExtendJobTimeout | NoteWaitReason
)


# -- workers --------------------------------------------------------------------------
class RequestWorker(Command, frozen=True):
    worker_id: str
    org: str
    backend: str
    hardware: str
    docker_image: str
    reason: str
    managed: bool = True


class RecordMachineStarted(Command, frozen=True):
    machine_id: str
    price_per_hour: float = 0.0  # USD per hour while the machine lives (its catalog price)


class RecordMachineFailed(Command, frozen=True):
    error: str


class RegisterWorker(Command, frozen=True):
    worker_id: str
    org: str
    docker_image: str
    hardware_type: str
    gpu_type: str | None
    gpu_count: int
    vram_gb: int
    managed: bool
    ttl_until: datetime | None = None


class RequestShutdown(Command, frozen=True):
    reason: str


class ReportStopped(Command, frozen=True):
    reason: str
    log_file: str | None = None


class DeclareLost(Command, frozen=True):
    last_seen: datetime | None
    reason: str


class TerminateWorker(Command, frozen=True):
    reason: str


class ExtendWorkerTTL(Command, frozen=True):
    ttl_until: datetime


WorkerCommand = (
    RequestWorker | RecordMachineStarted | RecordMachineFailed | RegisterWorker
    | RequestShutdown | ReportStopped | DeclareLost | TerminateWorker | ExtendWorkerTTL
)


# -- organizations, tokens, secrets, files ---------------------------------------------
class CreateOrganization(Command, frozen=True):
    org: str
    name: str


class CreateToken(Command, frozen=True):
    org: str
    token_id: str
    name: str
    role: TokenRole
    token_hash: str
    token_prefix: str
    expires_at: datetime | None = None
    worker_id: str | None = None


class RevokeToken(Command, frozen=True):
    pass


class SetSpendingLimit(Command, frozen=True):
    """A lifetime spending limit in USD for an organization or a token (None: none)."""

    limit_usd: float | None


class SetSecret(Command, frozen=True):
    org: str
    name: str
    ciphertext: str


class RemoveSecret(Command, frozen=True):
    pass


class CreateFile(Command, frozen=True):
    org: str
    file_id: str
    filename: str
    purpose: str
    bytes: int
    sha256: str
