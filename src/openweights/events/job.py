"""Events of the job aggregate, including its runs.

A run is the execution of a job by one worker. Its lifecycle changes atomically with
its job's (the fencing rule compares them), so run events live on the job's subject:
``<ns>.<org>.job.<job_id>``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from openweights.events.base import Event

RunEndStatus = Literal["completed", "failed", "canceled"]


class JobSpec(msgspec.Struct, frozen=True, gc=False):
    """What a job is and how it runs: written once, shared by the command that submits
    it, the events that record it and the job's state.

    ``type``, ``model`` and ``params`` are what the job *is* (they make its id); the
    placement fields (``script``, ``docker_image``, ``requires_vram_gb``,
    ``allowed_hardware``) may change in place when it is submitted again; ``timeout``
    is its deadline (a lease renews it)."""

    type: str
    model: str | None
    params: dict[str, Any]
    script: str
    docker_image: str
    requires_vram_gb: int | None
    allowed_hardware: list[str] | None
    timeout: datetime | None = None


PLACEMENT = ("script", "docker_image", "requires_vram_gb", "allowed_hardware")


class JobSubmitted(Event, frozen=True, tag="job.submitted/2"):
    job_id: str
    org: str
    spec: JobSpec


class JobReset(Event, frozen=True, tag="job.reset/2"):
    """A failed or canceled job submitted (or restarted) again: back to pending, outputs cleared."""

    job_id: str
    org: str
    spec: JobSpec


class JobRequirementsChanged(Event, frozen=True, tag="job.requirements_changed/1"):
    """A live job resubmitted with other placement fields; only those change."""

    job_id: str
    script: str
    docker_image: str
    requires_vram_gb: int | None
    allowed_hardware: list[str] | None


class JobAssigned(Event, frozen=True, tag="job.assigned/1"):
    """The scheduler gave the job to a worker; this opens run ``run_id``."""

    job_id: str
    worker_id: str
    run_id: str


class RunStarted(Event, frozen=True, tag="run.started/1"):
    """The worker started the job's process."""

    job_id: str
    run_id: str
    worker_id: str


class JobCompleted(Event, frozen=True, tag="job.completed/1"):
    job_id: str
    run_id: str
    worker_id: str
    log_file: str | None = None


class JobFailed(Event, frozen=True, tag="job.failed/1"):
    job_id: str
    run_id: str
    worker_id: str
    error: str
    exit_code: int | None = None
    log_file: str | None = None


class JobCanceled(Event, frozen=True, tag="job.canceled/1"):
    """Canceled by a client, or by its worker when its timeout passed (``reason``)."""

    job_id: str
    run_id: str | None = None
    reason: str = "requested"


class JobRequeued(Event, frozen=True, tag="job.requeued/1"):
    """Back to pending without a reset: its worker was lost, restarted or shut down."""

    job_id: str
    run_id: str
    worker_id: str
    run_status: RunEndStatus
    reason: str
    log_file: str | None = None


class RunLogStored(Event, frozen=True, tag="run.log_stored/1"):
    """The full log of an already ended run (e.g. after a cancel) was stored as a file."""

    job_id: str
    run_id: str
    worker_id: str
    log_file: str


class JobTimeoutExtended(Event, frozen=True, tag="job.timeout_extended/1"):
    """A client renewed its lease on the job (API deployments), or set a deadline."""

    job_id: str
    timeout: datetime | None


class JobWaitReasonChanged(Event, frozen=True, tag="job.wait_reason_changed/1"):
    """Why a pending job is not placed changed (the provisioner's finding: no machine
    here can have its VRAM, its organization is at its machine cap...); ``None``: a
    worker is there or coming. Appended only when the reason changes, never per check."""

    job_id: str
    reason: str | None


JOB_EVENTS = (
    JobSubmitted, JobReset, JobRequirementsChanged, JobAssigned, RunStarted, JobCompleted,
    JobFailed, JobCanceled, JobRequeued, RunLogStored, JobTimeoutExtended,
    JobWaitReasonChanged,
)
