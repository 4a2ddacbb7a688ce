"""One frozen settings object per process, read once at start from the environment.

Every service and the CLI build exactly one ``Settings`` in their composition root and
pass it down; nothing reads ``os.environ`` for configuration anywhere else.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    return Path.home() / ".openweights"


class Settings(BaseSettings):
    """Configuration shared by every openweights program (env prefix ``OW_``)."""

    model_config = SettingsConfigDict(env_prefix="OW_", frozen=True, extra="ignore")

    home: Path = Field(default_factory=default_home)
    # Unset: `ow up` starts embedded servers and records their URLs under `home`.
    nats_url: str | None = None
    database_url: str | None = None
    # Prefix of every stream name and subject; tests give each test its own.
    namespace: str = "ow"
    # JetStream placement: 1 replica and file storage locally, 3 replicas in production.
    stream_replicas: int = 1
    stream_storage: str = "file"
    # Retention of high-volume side streams (seconds; 0 = forever).
    log_max_age_s: int = 30 * 24 * 3600
    # Organization of clients without a token (stacks without auth) and of `ow up`'s
    # local admin token.
    default_org: str = "default"
    # Auth callout on: the api trusts the principal in a request's subject (NATS
    # permissions bind it to the connection's token) and refuses unknown principals.
    auth: bool = False
    # The server's static users and callout seed (`ow up` keeps them under OW_HOME).
    nats_auth_file: Path | None = None
    # Where clients and agents connect (without the services' credentials); defaults to
    # nats_url when that carries none.
    client_nats_url: str | None = None
    # Fernet key for organization secrets (`ow up` keeps one under OW_HOME).
    secret_key: str | None = None
    # Where file bytes live: the NATS object store (nothing more to run) or S3-compatible.
    file_store: str = "nats"
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_prefix: str = ""
    # Lifecycle deadlines (seconds): the original's defaults; tests shorten them.
    heartbeat_s: float = 5.0
    worker_lost_s: float = 120.0
    worker_lost_starting_s: float = 600.0
    run_start_timeout_s: float = 120.0
    scheduler_check_s: float = 5.0
    # A cancel or new timeout the scheduler folds within this long of its time is told
    # to the run's agent at once; an older one (a restart's replay) only when a
    # heartbeat names a run already over. 0: heartbeats only (tests of that path).
    run_notice_window_s: float = 60.0
    provisioner_check_s: float = 5.0
    idle_shutdown_s: float = 300.0
    min_worker_age_s: float = 600.0
    never_registered_s: float = 600.0
    worker_ttl_s: float = 24 * 3600.0
    max_consecutive_failures: int = 5
    max_workers: int = 8
    # The local backend: how many fake GPUs (and of which type) each agent pretends to have.
    local_fake_gpus: int = 0
    local_fake_gpu_type: str = "H100S"
    cancel_grace_s: float = 10.0
    log_json: bool | None = None
    request_timeout_s: float = 10.0
    # An upload that received nothing for this long is dropped (its slot and spool freed).
    upload_idle_s: float = 600.0

    @property
    def stream_prefix(self) -> str:
        return self.namespace.upper().replace("-", "_")


def settings_env(settings: Settings) -> dict[str, str]:
    """``OW_*`` variables that make a child process build the same settings."""
    out: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is not None:
            out[f"OW_{name.upper()}"] = str(value)
    return out
