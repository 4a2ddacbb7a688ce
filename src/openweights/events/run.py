"""High-volume run events: what a job logs (``ow.run.log``) and the files it returns.

They live on their own subject ``<ns>.<org>.run.<job_id>`` (all runs of a job) so that
a job's own history stays short; the projector writes them to the ``events`` table and
folds them into the job's ``outputs``.
"""

from __future__ import annotations

from typing import Any

from openweights.events.base import Event


class RunEventLogged(Event, frozen=True, tag="run.event_logged/1"):
    job_id: str
    run_id: str
    data: dict[str, Any]
    file: str | None = None


class RunFileUploaded(Event, frozen=True, tag="run.file_uploaded/1"):
    """The agent stored a file the job wrote under ``./uploads/`` (``path`` relative to it)."""

    job_id: str
    run_id: str
    path: str
    file: str


RUN_EVENTS = (RunEventLogged, RunFileUploaded)
