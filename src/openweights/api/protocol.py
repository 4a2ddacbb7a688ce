"""Requests and replies of the api service: versioned msgspec structs, JSON on the wire.

A request goes to ``<ns>api.<org>.<endpoint>``; the organization comes from the subject
(which NATS permissions bind to the caller's credentials), never from the body. A reply
is ``{"ok": <result>, "seq": <log position>}`` or ``{"error": {"code", "message"}}``;
``seq`` lets the client ask later queries to reflect its own writes (``min_seq``).
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal

import msgspec

from openweights.subjects import check_token

PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 1 << 20  # larger data goes up as a file
MAX_NESTING = 64  # objects and arrays inside one another, at most
CHUNK_BYTES = 1 << 20


# Bounds the read models need: a value the projector cannot write would stop it at that
# event for good, so it is refused here. Counts go to `integer` columns (CHECK >= 0);
# positions and offsets to `bigint` or a file offset; instants are compared with the
# services' aware clocks (a naive one makes the comparison raise).
Count = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
Position = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Instant = Annotated[datetime, msgspec.Meta(tz=True)]


# Fields naming an aggregate (its id becomes a subject token: ``<ns>.<org>.<kind>.<id>``,
# ``<ns>log.<org>.<worker>.<run>``...), checked by every request's decoder, so that no
# handler sees a dot, wildcard or whitespace in one.
SUBJECT_IDS = frozenset({"job_id", "run_id", "worker_id", "file_id", "token_id"})


@cache
def _subject_ids(cls: type) -> tuple[str, ...]:
    return tuple(n for n in cls.__struct_fields__ if n in SUBJECT_IDS)  # type: ignore[attr-defined]


class Request(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    v: int = PROTOCOL_VERSION
    # Idempotency key of this call; a retry of the same call reuses it.
    request_id: str | None = None
    # Queries wait until the read models include this log position (read-your-writes);
    # -1: every message stored before the request (a live view that just subscribed).
    min_seq: int = 0

    def __post_init__(self) -> None:
        # Raises InvalidRequest (a ValueError: decoding reports it as invalid, with the
        # field's name), and in the SDK before anything is sent.
        for name in _subject_ids(type(self)):
            value = getattr(self, name)
            if value is not None:
                check_token(value, name)


class ErrorBody(msgspec.Struct):
    code: str
    message: str


class Reply(msgspec.Struct, omit_defaults=True):
    ok: Any = None
    seq: int = 0
    error: ErrorBody | None = None
    # A page cut to fit a reply (by count or by bytes): more of what was asked follows;
    # send the same request again with these fields changed (a cursor) to read it.
    next: dict[str, Any] | None = None


# -- files ------------------------------------------------------------------------------
class UploadBegin(Request, kw_only=True):
    filename: str
    purpose: str
    size: int | None = None


class UploadEnd(Request, kw_only=True):
    upload_id: str


class UploadAbort(Request, kw_only=True):
    upload_id: str


class FileGet(Request, kw_only=True):
    file_id: str


class FileRead(Request, kw_only=True):
    file_id: str
    offset: Position = 0
    length: int = CHUNK_BYTES


# -- jobs -------------------------------------------------------------------------------
class JobSubmit(Request, kw_only=True):
    id_prefix: str
    type: str = "custom"
    model: str | None = None
    params: dict[str, Any] = {}
    script: str
    docker_image: str
    requires_vram_gb: Count | None = 0
    allowed_hardware: list[str] | None = None
    timeout: Instant | None = None
    # Or the deadline as seconds from now on the services' clock (``create(timeout=)``).
    timeout_s: float | None = None
    job_id_suffix: str | None = None
    # The VRAM need is ``Jobs.requires_vram_gb``'s default, which the job class did not
    # choose: refused where no machine can ever have it (the CPU-only local stack).
    vram_defaulted: bool = False
    # Dotted paths of string params (``validated_params.finetuned_model_id``) whose
    # ``{job_id}`` the service fills with the job's id once it has hashed the params: the
    # id covers the template, the stored value is final (fine-tuning's model id).
    fill_job_id: list[str] = []


class JobRef(Request, kw_only=True):
    job_id: str


class JobList(Request, kw_only=True):
    limit: int = 10
    status: str | None = None
    type: str | None = None  # only jobs of this type
    search: str | None = None  # only jobs whose id or model contains this (any case)
    cursor: str | None = None  # from a reply's ``next``: where the last page ended


class JobHistory(Request, kw_only=True):
    job_id: str
    after_seq: Position = 0  # from a reply's ``next``: the last message a page held
    limit: int = 1000


class JobLease(Request, kw_only=True):
    """Keep a job (an API deployment) alive: its timeout moves to now + ``seconds``."""

    job_id: str
    seconds: float = 900.0


class JobFind(Request, kw_only=True):
    params: dict[str, Any]
    limit: int = 100
    cursor: str | None = None


class ModelList(Request, kw_only=True):
    """Models jobs produced (``openweights.jobs.models``), newest first."""

    limit: int = 100
    job_id: str | None = None  # only this job's
    cursor: str | None = None


class ModelRef(Request, kw_only=True):
    model_id: str


class EvalResults(Request, kw_only=True):
    """The newest score of each model and evaluation (``openweights.jobs.evals.scores``),
    newest first."""

    limit: int = 1000
    model: str | None = None  # only this model's
    cursor: str | None = None


class RunList(Request, kw_only=True):
    job_id: str | None = None
    worker_id: str | None = None
    status: str | None = None
    limit: int = 100
    cursor: str | None = None


class RunRef(Request, kw_only=True):
    run_id: str


class EventList(Request, kw_only=True):
    job_id: str | None = None
    run_id: str | None = None
    after_seq: Position = 0
    # With after_seq: the events of that message after this index (a page can end
    # inside one message); None: every event of a later message.
    after_idx: Count | None = None
    limit: int = 10_000


class EventLatest(Request, kw_only=True):
    job_id: str | None = None
    run_id: str | None = None
    keys: list[str] | None = None  # None: every key
    after_key: str | None = None  # with every key: those after this one (a page's end)


class RunLog(Request, kw_only=True):
    """Events a running job logs (batched by the SDK)."""

    run_id: str
    events: list[dict[str, Any]]
    file: str | None = None


class ScriptRunStart(Request, kw_only=True):
    script: str
    host: str = ""


class ScriptRunEnd(Request, kw_only=True):
    run_id: str
    status: Literal["completed", "failed", "canceled"]
    error: str | None = None


class LogRead(Request, kw_only=True):
    run_id: str
    after_seq: Position = 0
    limit: int = 10_000


# -- agents -----------------------------------------------------------------------------
class AgentRegister(Request, kw_only=True):
    worker_id: str
    docker_image: str
    hardware_type: str
    gpu_type: str | None = None
    gpu_count: Count = 0
    vram_gb: Count = 0
    managed: bool = False
    ttl_until: Instant | None = None


class AgentRun(Request, kw_only=True):
    worker_id: str
    job_id: str
    run_id: str


class AgentStart(AgentRun, kw_only=True):
    """Starting a run. ``secrets_seq``: the version of the org's secrets the agent holds
    (-1: none); the reply carries the secrets only when the api's are another version."""

    secrets_seq: int = -1


class AgentRunEnd(AgentRun, kw_only=True):
    """How a run ended, as its agent saw it."""

    outcome: Literal["completed", "failed", "timeout", "canceled", "requeue"]
    error: str | None = None
    exit_code: int | None = None
    log_file: str | None = None
    reason: str = ""
    # The run's start was not reported (a quick job): record it before the outcome, in
    # the same append. Only with "completed" or "failed".
    with_start: bool = False


class AgentUploaded(AgentRun, kw_only=True):
    files: list[dict[str, str]]  # [{"path": relative path under uploads/, "file": file id}]


class AgentStopped(Request, kw_only=True):
    worker_id: str
    reason: str
    log_file: str | None = None


class AgentTTL(Request, kw_only=True):
    worker_id: str
    ttl_until: Instant


class Assignment(msgspec.Struct, kw_only=True, tag="assignment", tag_field="type"):
    """What the scheduler sends an agent (core NATS; the log has JobAssigned)."""

    org: str
    job_id: str
    run_id: str
    worker_id: str
    script: str
    docker_image: str
    model: str | None
    params: dict[str, Any]
    timeout: datetime | None = None
    # The version of the org's secrets when assigned (``Fold.version``); -1: unknown.
    # An agent holding that version starts the command while the api confirms the start.
    secrets_seq: int = -1


class RunNotice(msgspec.Struct, kw_only=True, tag="run_notice", tag_field="type"):
    """What the scheduler tells an agent about a run it was assigned: ``canceled`` (stop
    the run; ``reason`` "timeout" for a passed timeout) or ``timeout`` (the job's
    timeout is now ``timeout``). Sent on the agent's subject as the scheduler folds the
    change, and ``canceled`` again for an ended run that a heartbeat still names."""

    org: str
    job_id: str
    run_id: str
    worker_id: str
    kind: Literal["canceled", "timeout"]
    reason: str | None = None
    timeout: datetime | None = None


class Heartbeat(msgspec.Struct, kw_only=True):
    """An agent's heartbeat (``<ns>hb.<org>.<worker_id>``): the run it is running."""

    worker_id: str
    at: datetime
    job_id: str | None = None
    run_id: str | None = None


ToAgent = Assignment | RunNotice


# -- tenancy ----------------------------------------------------------------------------
class TokenCreateReq(Request, kw_only=True):
    name: str
    role: Literal["admin", "user", "worker"] = "user"
    expires_in_s: int | None = None
    # A worker token (``ow worker``): acts only for this worker id, on a machine of yours.
    worker_id: str | None = None


class TokenListReq(Request, kw_only=True):
    pass


class TokenRevokeReq(Request, kw_only=True):
    token_id: str


class SecretSetReq(Request, kw_only=True):
    values: dict[str, str]


class SecretNamesReq(Request, kw_only=True):
    pass


class SecretRemoveReq(Request, kw_only=True):
    name: str


class AgentSecrets(Request, kw_only=True):
    worker_id: str


class CostReport(Request, kw_only=True):
    """What work cost (USD), grouped ``by`` job, worker, token or org; spans cut to the
    part after ``since``; one job's only with ``job_id``."""

    by: Literal["job", "worker", "token", "org"] = "job"
    since: datetime | None = None
    job_id: str | None = None
    limit: int = 1000


class SpendingLimitSetReq(Request, kw_only=True):
    """A lifetime spending limit in USD (None: none) for a token, or the organization."""

    limit_usd: float | None
    token_id: str | None = None


class WorkerList(Request, kw_only=True):
    """An organization's machines, newest first; ended ones (shut down, terminated)
    only with ``ended``."""

    limit: int = 100
    ended: bool = False


ENDPOINTS: dict[str, type[Request]] = {
    "files.upload.begin": UploadBegin,
    "files.upload.end": UploadEnd,
    "files.upload.abort": UploadAbort,
    "files.get": FileGet,
    "files.read": FileRead,
    "jobs.submit": JobSubmit,
    "jobs.get": JobRef,
    "jobs.list": JobList,
    "jobs.find": JobFind,
    "jobs.cancel": JobRef,
    "jobs.restart": JobRef,
    "jobs.lease": JobLease,
    "jobs.history": JobHistory,
    "runs.list": RunList,
    "runs.get": RunRef,
    "events.list": EventList,
    "models.list": ModelList,
    "models.get": ModelRef,
    "evals.results": EvalResults,
    "events.latest": EventLatest,
    "run.log": RunLog,
    "run.script.start": ScriptRunStart,
    "run.script.end": ScriptRunEnd,
    "logs.read": LogRead,
    "agent.register": AgentRegister,
    "agent.run.start": AgentStart,
    "agent.run.end": AgentRunEnd,
    "agent.run.uploaded": AgentUploaded,
    "agent.stopped": AgentStopped,
    "agent.ttl": AgentTTL,
    "agent.secrets": AgentSecrets,
    "workers.list": WorkerList,
    "costs.report": CostReport,
    "costs.limit.set": SpendingLimitSetReq,
    "tokens.create": TokenCreateReq,
    "tokens.list": TokenListReq,
    "tokens.revoke": TokenRevokeReq,
    "secrets.set": SecretSetReq,
    "secrets.list": SecretNamesReq,
    "secrets.show": SecretNamesReq,
    "secrets.remove": SecretRemoveReq,
}
# Raw-payload endpoint (bytes body, metadata in headers): files.upload.chunk
UPLOAD_CHUNK = "files.upload.chunk"
# Sent to ``<endpoint>.<instance>``: the api instance that began the upload.
INSTANCE_ENDPOINTS = frozenset({UPLOAD_CHUNK, "files.upload.end", "files.upload.abort"})
HEADER_UPLOAD = "Ow-Upload-Id"
HEADER_OFFSET = "Ow-Offset"
HEADER_EOF = "Ow-Eof"

encoder = msgspec.json.Encoder()
reply_decoder = msgspec.json.Decoder(Reply)
DECODERS = {name: msgspec.json.Decoder(cls) for name, cls in ENDPOINTS.items()}
