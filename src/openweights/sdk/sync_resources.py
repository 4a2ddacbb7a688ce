"""The blocking client's resources: each method runs its async twin on the client's loop
thread and returns the result (iterators pull the async ones item by item)."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from openweights.sdk.events import AsyncEvents
from openweights.sdk.files import AsyncFiles
from openweights.sdk.jobs import AsyncJobsResource
from openweights.sdk.loop import LoopThread, twin
from openweights.sdk.runs import AsyncRuns
from openweights.sdk.sync_models import Job, Run
from openweights.sdk.tenancy import AsyncSecrets, AsyncTokens
from openweights.sdk.types import (
    Event,
    FileInfo,
    LogChunk,
    NewToken,
    RevokedToken,
    SecretRemoved,
    SecretsSet,
    TokenInfo,
)
from openweights.sdk.workers import AsyncWorkers, WorkerInfo


class Files:
    def __init__(self, files: AsyncFiles, loop: LoopThread) -> None:
        self._a, self._loop = files, loop

    @twin(AsyncFiles.create)
    def create(self, file: IO[bytes], purpose: str, filename: str | None = None) -> FileInfo:
        return self._loop.run(self._a.create(file, purpose, filename))

    @twin(AsyncFiles.upload)
    def upload(self, path: str | Path, purpose: str) -> FileInfo:
        return self._loop.run(self._a.upload(path, purpose))

    @twin(AsyncFiles.get_by_id)
    def get_by_id(self, file_id: str) -> FileInfo:
        return self._loop.run(self._a.get_by_id(file_id))

    @twin(AsyncFiles.chunks)
    def chunks(self, file_id: str) -> Iterator[bytes]:
        return self._loop.iterate(self._a.chunks(file_id))

    @twin(AsyncFiles.content)
    def content(self, file_id: str) -> bytes:
        return self._loop.run(self._a.content(file_id))

    @twin(AsyncFiles.download)
    def download(self, file_id: str, path: str | Path) -> Path:
        return self._loop.run(self._a.download(file_id, path))

    @twin(AsyncFiles.validate)
    def validate(self, file: IO[bytes], purpose: str) -> bool:
        return self._loop.run(self._a.validate(file, purpose))


class JobsResource:
    def __init__(self, jobs: AsyncJobsResource, loop: LoopThread) -> None:
        self._a, self._loop = jobs, loop

    @twin(AsyncJobsResource.submit)
    def submit(self, *, id_prefix: str, script: str, docker_image: str,
               type: str = "custom", model: str | None = None,
               params: dict[str, Any] | None = None, requires_vram_gb: int | None = 0,
               allowed_hardware: list[str] | None = None,
               timeout: datetime | float | None = None,
               job_id_suffix: str | None = None, vram_defaulted: bool = False,
               fill_job_id: list[str] | None = None) -> Job:
        return Job._of(self._loop.run(self._a.submit(
            id_prefix=id_prefix, script=script, docker_image=docker_image, type=type,
            model=model, params=params, requires_vram_gb=requires_vram_gb,
            allowed_hardware=allowed_hardware, timeout=timeout,
            job_id_suffix=job_id_suffix, vram_defaulted=vram_defaulted,
            fill_job_id=fill_job_id)), self._loop)

    @twin(AsyncJobsResource.retrieve)
    def retrieve(self, job_id: str) -> Job:
        return Job._of(self._loop.run(self._a.retrieve(job_id)), self._loop)

    @twin(AsyncJobsResource.list)
    def list(self, limit: int = 10, status: str | None = None) -> list[Job]:
        return [Job._of(j, self._loop) for j in self._loop.run(self._a.list(limit, status))]

    @twin(AsyncJobsResource.find)
    def find(self, limit: int = 100, **params: Any) -> builtins.list[Job]:
        return [Job._of(j, self._loop) for j in self._loop.run(self._a.find(limit, **params))]

    @twin(AsyncJobsResource.cancel)
    def cancel(self, job_id: str) -> Job:
        return Job._of(self._loop.run(self._a.cancel(job_id)), self._loop)

    @twin(AsyncJobsResource.restart)
    def restart(self, job_id: str) -> Job:
        return Job._of(self._loop.run(self._a.restart(job_id)), self._loop)

    @twin(AsyncJobsResource.renew_lease)
    def renew_lease(self, job_id: str, seconds: float = 900.0) -> Job:
        return Job._of(self._loop.run(self._a.renew_lease(job_id, seconds)), self._loop)

    @twin(AsyncJobsResource.wait)
    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        return Job._of(self._loop.run(self._a.wait(job_id, timeout)), self._loop)


class Runs:
    def __init__(self, runs: AsyncRuns, loop: LoopThread) -> None:
        self._a, self._loop = runs, loop

    @twin(AsyncRuns.list)
    def list(self, job_id: str | None = None, worker_id: str | None = None,
             status: str | None = None, limit: int = 100) -> list[Run]:
        return [Run._of(r, self._loop)
                for r in self._loop.run(self._a.list(job_id, worker_id, status, limit))]

    @twin(AsyncRuns.retrieve)
    def retrieve(self, run_id: str) -> Run:
        return Run._of(self._loop.run(self._a.retrieve(run_id)), self._loop)

    @twin(AsyncRuns.read_logs)
    def read_logs(self, run_id: str, after_seq: int = 0) -> Iterator[LogChunk]:
        return self._loop.iterate(self._a.read_logs(run_id, after_seq))

    @twin(AsyncRuns.follow_logs)
    def follow_logs(self, run_id: str, after_seq: int = 0) -> Iterator[str]:
        return self._loop.iterate(self._a.follow_logs(run_id, after_seq))


class Events:
    def __init__(self, events: AsyncEvents, loop: LoopThread) -> None:
        self._a, self._loop = events, loop

    @twin(AsyncEvents.list)
    def list(self, job_id: str | None = None, run_id: str | None = None) -> list[Event]:
        return self._loop.run(self._a.list(job_id, run_id))

    @twin(AsyncEvents.latest)
    def latest(self, keys: str | builtins.list[str], job_id: str | None = None,
               run_id: str | None = None) -> dict[str, Any]:
        return self._loop.run(self._a.latest(keys, job_id, run_id))

    @twin(AsyncEvents.subscribe)
    def subscribe(self, job_id: str, after_seq: int = 0) -> Iterator[Event]:
        return self._loop.iterate(self._a.subscribe(job_id, after_seq))


class Tokens:
    def __init__(self, tokens: AsyncTokens, loop: LoopThread) -> None:
        self._a, self._loop = tokens, loop

    @twin(AsyncTokens.create)
    def create(self, name: str, role: str = "user",
               expires_in_s: int | None = None, worker_id: str | None = None) -> NewToken:
        return self._loop.run(self._a.create(name, role, expires_in_s, worker_id))

    @twin(AsyncTokens.list)
    def list(self) -> list[TokenInfo]:
        return self._loop.run(self._a.list())

    @twin(AsyncTokens.revoke)
    def revoke(self, token_id: str) -> RevokedToken:
        return self._loop.run(self._a.revoke(token_id))


class Secrets:
    def __init__(self, secrets: AsyncSecrets, loop: LoopThread) -> None:
        self._a, self._loop = secrets, loop

    @twin(AsyncSecrets.set)
    def set(self, **values: str) -> SecretsSet:
        return self._loop.run(self._a.set(**values))

    @twin(AsyncSecrets.list)
    def list(self) -> list[str]:
        return self._loop.run(self._a.list())

    @twin(AsyncSecrets.show)
    def show(self) -> dict[str, str]:
        return self._loop.run(self._a.show())

    @twin(AsyncSecrets.remove)
    def remove(self, name: str) -> SecretRemoved:
        return self._loop.run(self._a.remove(name))


class Workers:
    def __init__(self, workers: AsyncWorkers, loop: LoopThread) -> None:
        self._a, self._loop = workers, loop

    @twin(AsyncWorkers.list)
    def list(self, limit: int = 100, ended: bool = False) -> list[WorkerInfo]:
        return self._loop.run(self._a.list(limit, ended))
