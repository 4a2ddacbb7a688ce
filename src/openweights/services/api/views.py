"""What clients see: read-model rows and domain states as plain dicts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from openweights.domain.file import FileState
from openweights.domain.job import JobState

JOB_FIELDS = ("id", "type", "status", "model", "params", "script", "docker_image",
              "requires_vram_gb", "allowed_hardware", "outputs", "worker_id", "timeout",
              "created_at", "updated_at", "organization_id")


def job_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in JOB_FIELDS}
    if out["allowed_hardware"] is not None:
        out["allowed_hardware"] = list(out["allowed_hardware"])
    return out


def job_from_state(s: JobState, outputs: dict[str, Any]) -> dict[str, Any]:
    """The same dict as :func:`job_from_row` makes of the job's row."""
    return {"id": s.id, "status": s.status, **msgspec.structs.asdict(s.spec),
            "outputs": outputs, "worker_id": s.worker_id, "created_at": s.created_at,
            "updated_at": s.updated_at, "organization_id": s.org}


def run_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "job_id", "attempt", "worker_id", "status", "log_file",
                                "created_at", "updated_at", "started_at")}


def event_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": f"{row['seq']}.{row['idx']}", "seq": row["seq"], "job_id": row["job_id"],
            "run_id": row["run_id"], "data": row["data"], "file": row["file"],
            "created_at": row["created_at"]}


def file_from_state(s: FileState) -> dict[str, Any]:
    """The same dict whether the file is new or already existed (the original differed)."""
    return {"id": s.id, "object": "file", "bytes": s.bytes, "filename": s.filename,
            "purpose": s.purpose, "created_at": int(s.created_at.timestamp())}
