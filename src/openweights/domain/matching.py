"""Which worker may run which job, and which job goes first. Pure.

A worker takes a job only with the job's image; with ``allowed_hardware`` only if the
worker's exact hardware is listed; otherwise only if the job's VRAM need (None = 0)
fits the worker's VRAM. Larger jobs go first, then older; a worker that already ran
the job's model is preferred (its weights are cached).
"""

from __future__ import annotations

from datetime import datetime

from openweights.domain.job import JobState
from openweights.domain.worker import WorkerState


def vram_need(job: JobState) -> int:
    return job.spec.requires_vram_gb or 0


def matches(job: JobState, worker: WorkerState) -> bool:
    if worker.org != job.org or worker.docker_image != job.spec.docker_image:
        return False
    if job.spec.allowed_hardware:
        return worker.hardware_type in job.spec.allowed_hardware
    return vram_need(job) <= worker.vram_gb


def priority(job: JobState) -> tuple[int, datetime, str]:
    """Sort key: larger VRAM need first, then the oldest submission."""
    return (-vram_need(job), job.updated_at, job.id)


def cached_model(model: str | None) -> str | None:
    """What a worker keeps cached after running a job: the ``org/repo`` of its model."""
    return "/".join(model.split("/")[:2]) if model else None


def pick_worker(job: JobState, idle: list[WorkerState],
                cached: dict[str, set[str]]) -> WorkerState | None:
    """The best idle worker for ``job``: one with its model cached, else the smallest
    that fits (leaving big machines for big jobs)."""
    candidates = [w for w in idle if matches(job, w)]
    if not candidates:
        return None
    model = cached_model(job.spec.model)
    return min(candidates, key=lambda w: (model not in cached.get(w.id, set()), w.vram_gb, w.id))
