"""One frozen settings object per process, read once at start from the environment.

Every service and the CLI build exactly one ``Settings`` in their composition root and
pass it down; nothing reads ``os.environ`` for configuration anywhere else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)


def default_home() -> Path:
    return Path.home() / ".openweights"


class Settings(BaseSettings):
    """Configuration shared by every openweights program (env prefix ``OW_``)."""

    model_config = SettingsConfigDict(env_prefix="OW_", frozen=True, extra="ignore")

    home: Path = Field(default_factory=default_home)
    # A directory of files named after settings (``ow_database_url``, ...), each holding
    # that setting's value: compose's secrets (/run/secrets), so that no password is in
    # the environment or the compose file. A variable of the same name wins.
    secrets_dir: Path | None = None
    # Worker environments (``openweights.workerenv``): where they are built and cached
    # (unset: ``home/envs``; outside the checkout, so a fresh clone reuses them), and
    # whether a built-in image runs in its built one ("build") or every image in the
    # agent's own environment ("agent": the test suite's custom jobs need no ML).
    worker_env_dir: Path | None = None
    worker_envs: Literal["build", "agent"] = "build"
    # Unset: `ow up` starts embedded servers and records their URLs under `home`.
    nats_url: str | None = None
    database_url: str | None = None
    # Prefix of every stream name and subject; tests give each test its own.
    namespace: str = "ow"
    # JetStream placement: 1 replica and file storage locally, 3 replicas in production.
    stream_replicas: int = 1
    stream_storage: str = "file"
    # Retention of high-volume side streams (seconds; 0 = forever). A finished run's
    # whole output is its log file; the stream holds recent lines for live views.
    log_max_age_s: int = 7 * 24 * 3600
    # Disk: every stream bounds its messages; the side streams bound their total too
    # (oldest discarded first), so logs and heartbeats can never take the event log's
    # disk. The event log itself is kept forever (DESIGN.md invariant 1).
    event_max_msg_bytes: int = 8 << 20
    log_max_msg_bytes: int = 128 << 10  # a longer line is cut to this by the log gate
    log_max_bytes: int = 1 << 30
    log_max_msgs_per_run: int = 200_000
    heartbeat_max_msg_bytes: int = 16 << 10
    heartbeat_max_bytes: int = 64 << 20
    # The api's log gate (services/api/loggate.py): per run and per organization, a
    # rate (bytes/s with a burst) and a size (bytes kept); lines beyond are dropped
    # (with one note per second saying so) or, for an org over its size, its oldest
    # purged. One instance should run it where several api instances share a stack.
    log_gate: bool = True
    log_run_bytes_per_s: int = 1 << 20
    log_run_burst_bytes: int = 16 << 20
    log_run_max_bytes: int = 256 << 20
    log_org_bytes_per_s: int = 4 << 20
    log_org_burst_bytes: int = 64 << 20
    log_org_max_bytes: int = 256 << 20
    # run.log (metrics, the live run events): bytes/s per run and per organization.
    run_events_run_bytes_per_s: int = 1 << 20
    run_events_org_bytes_per_s: int = 4 << 20
    run_events_burst_s: float = 16.0  # the burst allowed, in seconds of the rate
    # Replies: a list page is cut at this many bytes (a cursor continues it), and a
    # job larger than reply_inline_bytes is sent in a page by reference (jobs.get).
    reply_page_bytes: int = 2 << 20
    reply_inline_bytes: int = 256 << 10
    # Upload slots per api instance: user uploads (fair per organization: each upload
    # an org holds keeps one more slot free for the others, up to a cap per org), and
    # a separate pool for agents' logs and results, so these never wait behind users.
    upload_slots: int = 64
    upload_slots_per_org: int = 16
    agent_upload_slots: int = 64
    agent_upload_slots_per_worker: int = 2
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
    # Machines the provisioner keeps live at most, in all and for any one organization
    # (an org's MAX_WORKERS secret only lowers its own).
    max_workers: int = 8
    # An organization whose machine died unasked (lost, failed to start, never
    # registered) waits this long before its next start, twice as long after each
    # further death, up to start_backoff_max_s (services/provisioner/pacing.py).
    start_backoff_s: float = 10.0
    start_backoff_max_s: float = 600.0
    # The local backend: how many fake GPUs (and of which type) each agent pretends to have.
    local_fake_gpus: int = 0
    local_fake_gpu_type: str = "H100S"
    # Jobs' identity (openweights/isolation/): "auto" gives every run a fresh
    # unprivileged user where the agent is root, and else runs one organization's
    # jobs only; "user" insists on the former, "none" asks for the latter.
    job_isolation: str = "auto"
    # Where a root agent makes its jobs' directories (default /var/tmp/openweights/jobs).
    jobs_dir: Path | None = None
    cancel_grace_s: float = 10.0
    log_json: bool | None = None
    request_timeout_s: float = 10.0
    # An upload that received nothing for this long is dropped (its slot and spool freed).
    upload_idle_s: float = 600.0
    # Where the provisioner's machines come from: "local" agent processes or "runpod"
    # pods (services/provisioner/backends/runpod.py; the SDK honours RUNPOD_API_BASE_URL).
    backend: str = "local"
    # The RunPod key of an organization without a RUNPOD_API_KEY secret (None: it has none).
    runpod_api_key: str | None = None
    # Pod names start with this ("<deployment>.<org>.<worker id>"): what reconciliation may
    # release. Two deployments on one RunPod account need distinct ones (default ow-<ns>).
    runpod_deployment: str | None = None
    runpod_cloud_type: str = "ALL"  # ALL, SECURE or COMMUNITY
    runpod_container_disk_gb: int = 500
    runpod_volume_gb: int = 500
    runpod_ports: str = "8000/http,10101/http,22/tcp"
    runpod_cuda_versions: str = "12.8"  # comma-separated; empty: any
    runpod_timeout_s: float = 30.0  # one API call; longer is a failed call
    runpod_catalog_refresh_s: float = 900.0  # get_gpus at most this often
    runpod_poll_s: float = 30.0  # how old a pod listing alive() may answer from
    runpod_reconcile_s: float = 60.0  # leaked pods of this deployment are looked for
    runpod_spend_pause_s: float = 300.0  # no start at all after a spending-limit refusal
    # A hardware type that failed this many starts in a row cools down for the next rung
    # of the ladder (minutes; the last repeats), escalating per wave until a start works.
    hardware_failure_threshold: int = 3
    hardware_cooldown_ladder_min: str = "1,2,5,10,20,40,80,160,360"
    # The dashboard (`python -m openweights.services.dashboard`, started by `ow up`): where
    # it listens, and how many signed-in tokens keep a client connected at once.
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8124
    dashboard_sessions: int = 256

    @classmethod
    def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        secrets_dir = os.environ.get("OW_SECRETS_DIR")  # read when a Settings is built
        if not secrets_dir:
            return init_settings, env_settings
        if not Path(secrets_dir).is_dir():
            raise ValueError(f"OW_SECRETS_DIR={secrets_dir} is not a directory: mount the "
                             "secrets there or unset it")
        return init_settings, env_settings, SecretsSettingsSource(settings_cls, secrets_dir)

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
