"""What clients see: read-model rows and domain states as plain dicts.

A job's ``outputs`` grow with every key its runs log, without bound; its largest values
go by reference once they would make the job large (``$refs``: the output keys left
out, each read with ``events.latest``, which gives the same newest value), so a job
always fits in a reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from openweights.domain.file import FileState
from openweights.domain.job import JobState

# A job's outputs inline at most this much; the largest values go by reference.
INLINE_OUTPUTS_BYTES = 256 << 10
_encode = msgspec.json.Encoder().encode

JOB_FIELDS = ("id", "type", "status", "model", "params", "script", "docker_image",
              "requires_vram_gb", "allowed_hardware", "outputs", "worker_id", "timeout",
              "created_at", "updated_at", "organization_id", "wait_reason", "error")


def job_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in JOB_FIELDS}
    if out["allowed_hardware"] is not None:
        out["allowed_hardware"] = list(out["allowed_hardware"])
    return refer_large_outputs(out)


def job_from_state(s: JobState, outputs: dict[str, Any]) -> dict[str, Any]:
    """The same dict as :func:`job_from_row` makes of the job's row."""
    return refer_large_outputs({
        "id": s.id, "status": s.status, **msgspec.structs.asdict(s.spec), "outputs": outputs,
        "worker_id": s.worker_id, "created_at": s.created_at, "updated_at": s.updated_at,
        "organization_id": s.org, "wait_reason": s.wait_reason,
        "error": s.error})


def refer_large_outputs(job: dict[str, Any]) -> dict[str, Any]:
    """``job`` with its largest output values left out (named in ``$refs``) until the
    rest inlines in :data:`INLINE_OUTPUTS_BYTES`."""
    outputs = job["outputs"]
    if not outputs or len(total := _encode(outputs)) <= INLINE_OUTPUTS_BYTES:
        return job
    size = len(total)
    sizes = sorted(((len(_encode(v)), k) for k, v in outputs.items()), reverse=True)
    left_out = []
    for n, key in sizes:
        if size <= INLINE_OUTPUTS_BYTES:
            break
        left_out.append(key)
        size -= n
    out = set(left_out)
    job["outputs"] = {k: v for k, v in outputs.items() if k not in out}
    job["$refs"] = {"outputs": sorted(out)}
    return job


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
