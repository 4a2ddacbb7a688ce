"""What the SDK hands back, shared by the async and the blocking client.

Dicts users index (``ow.files.create(...)["id"]``, ``event["data"]``) are TypedDicts: the
wire's JSON as it arrives, with its keys typed. ``JobFields``/``RunFields`` hold a job's and a
run's fields; each client's ``Job``/``Run`` adds the methods that act on it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, NamedTuple, TypedDict, overload

from pydantic import BaseModel, ConfigDict

TERMINAL = frozenset({"completed", "failed", "canceled"})


class FileInfo(TypedDict):
    """A stored file, the same whether it was new or already stored."""

    id: str
    object: str
    bytes: int
    filename: str
    purpose: str
    created_at: int  # unix seconds


class Event(TypedDict):
    """A run event: what a job logged (``data``), or a file it returned (``data["file"]``)."""

    id: str  # "<seq>.<index>"
    seq: int
    job_id: str
    run_id: str
    data: dict[str, Any]
    file: str | None
    created_at: str  # ISO 8601


class LogChunk(NamedTuple):
    """Stored output of a run: ``text`` at log position ``seq``."""

    seq: int
    text: str


class NewToken(TypedDict):
    """A created token; ``token`` (the plain text) is returned this once only."""

    id: str
    token: str
    name: str
    role: str
    prefix: str
    expires_at: str | None
    worker_id: str | None  # a worker token's worker (`ow worker`)


class TokenInfo(TypedDict):
    id: str
    name: str
    role: str
    status: str
    token_prefix: str
    worker_id: str | None
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None


class RevokedToken(TypedDict):
    id: str
    status: str
    disconnected: int  # live connections closed


class SecretsSet(TypedDict):
    set: list[str]


class SecretRemoved(TypedDict):
    removed: str


class WorkerStatus(TypedDict):
    status: str


_StrKey = Literal["id", "type", "status", "script", "docker_image"]
_OptStrKey = Literal["model", "worker_id", "organization_id", "wait_reason", "error"]
_DictKey = Literal["params", "outputs"]
_TimeKey = Literal["timeout", "created_at", "updated_at"]


class JobFields(BaseModel):
    """A job: ``id, type, status, model, params, script, docker_image, requires_vram_gb,
    allowed_hardware, outputs, worker_id, timeout, created_at, updated_at``; ``job["key"]``
    reads a field as the original's dict-like jobs did. ``error``: why a failed job
    failed ("Process exited with return code 3"; ``job.log_tail()``: its log's end).
    ``wait_reason``: why a pending job is not placed yet ("no machine here can have
    200 GB of VRAM", "the organization is at its machine cap (4)"...); None when a
    worker is there or coming."""

    model_config = ConfigDict(extra="ignore")

    id: str
    type: str
    status: str
    model: str | None = None
    params: dict[str, Any] = {}
    script: str = ""
    docker_image: str = ""
    requires_vram_gb: int | None = None
    allowed_hardware: list[str] | None = None
    outputs: dict[str, Any] = {}
    worker_id: str | None = None
    timeout: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    organization_id: str | None = None
    error: str | None = None  # why it failed; None unless failed
    wait_reason: str | None = None

    @overload
    def __getitem__(self, key: _StrKey) -> str: ...
    @overload
    def __getitem__(self, key: _OptStrKey) -> str | None: ...
    @overload
    def __getitem__(self, key: _DictKey) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, key: _TimeKey) -> datetime | None: ...
    @overload
    def __getitem__(self, key: Literal["requires_vram_gb"]) -> int | None: ...
    @overload
    def __getitem__(self, key: Literal["allowed_hardware"]) -> list[str] | None: ...
    @overload
    def __getitem__(self, key: str) -> object: ...  # a name known only at run time

    def __getitem__(self, key: str) -> object:
        return getattr(self, key)

    @property
    def terminal(self) -> bool:
        """Whether the job has ended (completed, failed or canceled)."""
        return self.status in TERMINAL

    def _take(self, other: JobFields) -> None:
        """Become ``other`` (a fresher copy of this job), keeping this object's identity."""
        self.__dict__.update(other.__dict__)


class RunFields(BaseModel):
    """One attempt at a job: ``id, job_id, attempt, worker_id, status, log_file`` and times."""

    model_config = ConfigDict(extra="ignore")

    id: str
    job_id: str
    attempt: int = 1
    worker_id: str | None = None
    status: str
    log_file: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
