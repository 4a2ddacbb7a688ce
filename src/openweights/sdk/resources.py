"""``ow.files``, ``ow.jobs``, ``ow.runs``, ``ow.events``.

Public methods document what they raise: every method may raise
:class:`~openweights.errors.StackUnavailable` / :class:`~openweights.errors.Unavailable`
when the service cannot be reached (after retrying), besides what is listed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio

from openweights.api import protocol
from openweights.datasets import is_valid_dataset
from openweights.errors import InvalidRequest
from openweights.sdk.live import follow_job_events, wait_job
from openweights.sdk.models import Job, Run

if TYPE_CHECKING:
    from openweights.sdk.client import _Client


class _Resource:
    def __init__(self, client: _Client) -> None:
        self._c = client

    @property
    def _t(self) -> Any:
        return self._c.transport


class Files(_Resource):
    async def _create(self, file: IO[bytes], purpose: str, filename: str) -> dict[str, Any]:
        t = self._t
        begun = await t.call("files.upload.begin", filename=filename, purpose=purpose)
        upload_id, instance = begun["upload_id"], begun["instance"]
        chunk_subject = f"{t.subject(protocol.UPLOAD_CHUNK)}.{instance}"
        offset = 0
        try:
            while chunk := await anyio.to_thread.run_sync(file.read, begun["chunk_bytes"]):
                msg = await t.request(chunk_subject, chunk, headers={
                    protocol.HEADER_UPLOAD: upload_id, protocol.HEADER_OFFSET: str(offset)})
                t.unwrap(msg.data)
                offset += len(chunk)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _quietly(t.request(f"{t.subject('files.upload.abort')}.{instance}",
                                         protocol.encoder.encode(
                                             protocol.UploadAbort(upload_id=upload_id))))
            raise
        msg = await t.request(f"{t.subject('files.upload.end')}.{instance}",
                              protocol.encoder.encode(protocol.UploadEnd(upload_id=upload_id)))
        result: dict[str, Any] = t.unwrap(msg.data)
        return result

    def create(self, file: IO[bytes], purpose: str) -> Any:
        """Upload an open binary file; returns ``{"id", "object", "bytes", "filename",
        "purpose", "created_at"}``, the same whether the file is new or already stored.

        Raises ``InvalidRequest`` whose message names the line and the reason when a
        dataset is invalid (checked by the service while it streams in); nothing is
        stored."""
        name = os.path.basename(getattr(file, "name", "") or "file")
        return self._c.call(self._create(file, purpose, name))

    async def _upload(self, path: str | Path, purpose: str) -> dict[str, Any]:
        with open(path, "rb") as f:
            return await self._create(f, purpose, os.path.basename(str(path)))

    def upload(self, path: str | Path, purpose: str) -> Any:
        """Upload the file at ``path`` (see :meth:`create`)."""
        return self._c.call(self._upload(path, purpose))

    async def _get(self, file_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._t.call("files.get", file_id=file_id)
        return result

    def get_by_id(self, file_id: str) -> Any:
        """The file's metadata. Raises ``NotFound``."""
        return self._c.call(self._get(file_id))

    async def _chunks(self, file_id: str) -> AsyncIterator[bytes]:
        t, offset = self._t, 0
        await t.connect()  # the org in t.subject() is known once connected
        while True:
            body = protocol.encoder.encode(protocol.FileRead(file_id=file_id, offset=offset))
            msg = await t.request(t.subject("files.read"), body)
            headers = msg.headers or {}
            if protocol.HEADER_EOF not in headers:
                t.unwrap(msg.data)  # an error reply: raises its typed error
                raise InvalidRequest(f"unexpected reply reading {file_id}")
            yield msg.data
            offset += len(msg.data)
            if headers[protocol.HEADER_EOF] == "1" or not msg.data:
                return

    async def _content(self, file_id: str) -> bytes:
        return b"".join([c async for c in self._chunks(file_id)])

    def content(self, file_id: str) -> Any:
        """The file's bytes. Raises ``NotFound``. Use :meth:`download` for large files."""
        return self._c.call(self._content(file_id))

    async def _download_to(self, file_id: str, path: str | Path) -> Path:
        path = Path(path)
        tmp = anyio.Path(path.with_name(path.name + ".part"))
        async with await anyio.open_file(tmp, "wb") as f:
            async for chunk in self._chunks(file_id):
                await f.write(chunk)
        await tmp.replace(path)
        return path

    def download(self, file_id: str, path: str | Path) -> Any:
        """Stream the file into ``path`` (never whole in memory). Raises ``NotFound``."""
        return self._c.call(self._download_to(file_id, path))

    async def _validate(self, file: IO[bytes], purpose: str) -> bool:
        chunks = iter(lambda: file.read(1 << 20), b"")
        return await anyio.to_thread.run_sync(is_valid_dataset, chunks, purpose)

    def validate(self, file: IO[bytes], purpose: str) -> Any:
        """Whether ``file`` is a valid dataset for ``purpose`` (checked locally)."""
        return self._c.call(self._validate(file, purpose))


class JobsResource(_Resource):
    def _job(self, data: dict[str, Any]) -> Job:
        return Job.model_validate(data).bind(self._c)

    async def _submit(self, **spec: Any) -> Job:
        return self._job(await self._t.call("jobs.submit", **spec))

    async def _retrieve(self, job_id: str) -> Job:
        return self._job(await self._t.call("jobs.get", read=True, job_id=job_id))

    def retrieve(self, job_id: str) -> Any:
        """The job. Raises ``NotFound`` (also for another organization's job)."""
        return self._c.call(self._retrieve(job_id))

    async def _list(self, limit: int, status: str | None) -> list[Job]:
        rows = await self._t.call("jobs.list", read=True, limit=limit, status=status)
        return [self._job(r) for r in rows]

    def list(self, limit: int = 10, status: str | None = None) -> Any:
        """Jobs, most recently updated first. Raises ``InvalidRequest`` for a bad status."""
        return self._c.call(self._list(limit, status))

    async def _find(self, limit: int, params: dict[str, Any]) -> list[Job]:
        rows = await self._t.call("jobs.find", read=True, params=params, limit=limit)
        return [self._job(r) for r in rows]

    def find(self, limit: int = 100, **params: Any) -> Any:
        """Jobs whose ``params`` contain every given key with the given value."""
        return self._c.call(self._find(limit, params))

    async def _cancel(self, job_id: str) -> Job:
        return self._job(await self._t.call("jobs.cancel", job_id=job_id))

    def cancel(self, job_id: str) -> Any:
        """Cancel a pending or running job. Raises ``NotFound``, ``IllegalTransition``."""
        return self._c.call(self._cancel(job_id))

    async def _restart(self, job_id: str) -> Job:
        return self._job(await self._t.call("jobs.restart", job_id=job_id))

    def restart(self, job_id: str) -> Any:
        """Run an ended job again (back to pending, outputs cleared)."""
        return self._c.call(self._restart(job_id))

    def renew_lease(self, job_id: str, seconds: float = 900.0) -> Any:
        """Keep a job alive for ``seconds`` more (API deployments end when not renewed)."""
        return self._c.call(self._t.call("jobs.lease", job_id=job_id, seconds=seconds))

    def wait(self, job_id: str, timeout: float | None = None) -> Any:
        """Block until the job ends (event-driven). Raises ``TimeoutError``."""
        return self._c.call(wait_job(self._c, job_id, timeout))


class Runs(_Resource):
    async def _list(self, job_id: str | None = None, worker_id: str | None = None,
                    status: str | None = None, limit: int = 100) -> list[Run]:
        rows = await self._t.call("runs.list", read=True, job_id=job_id, worker_id=worker_id,
                                  status=status, limit=limit)
        return [Run.model_validate(r).bind(self._c) for r in rows]

    def list(self, job_id: str | None = None, worker_id: str | None = None,
             status: str | None = None, limit: int = 100) -> Any:
        """Runs, oldest first (``runs[-1]`` is the latest)."""
        return self._c.call(self._list(job_id, worker_id, status, limit))

    async def _retrieve(self, run_id: str) -> Run:
        return Run.model_validate(await self._t.call("runs.get", read=True, run_id=run_id)
                                  ).bind(self._c)

    def retrieve(self, run_id: str) -> Any:
        return self._c.call(self._retrieve(run_id))


class Events(_Resource):
    async def _list(self, job_id: str | None = None, run_id: str | None = None,
                    after_seq: int = 0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:  # pages of 10,000: the original silently capped at 1,000
            page = await self._t.call("events.list", read=True, job_id=job_id, run_id=run_id,
                                      after_seq=after_seq)
            out += page
            if len(page) < 10_000:
                return out
            after_seq = page[-1]["seq"]

    def list(self, job_id: str | None = None, run_id: str | None = None) -> Any:
        """Run events of a job (all its runs) or of one run, oldest first.
        Raises ``InvalidRequest`` when neither id is given."""
        if job_id is None and run_id is None:
            raise InvalidRequest("events.list needs job_id or run_id")
        return self._c.call(self._list(job_id, run_id))

    async def _latest(self, keys: str | list[str], job_id: str | None,
                      run_id: str | None) -> dict[str, Any]:
        wanted = None if keys == "*" else ([keys] if isinstance(keys, str) else list(keys))
        result: dict[str, Any] = await self._t.call("events.latest", read=True, job_id=job_id,
                                                    run_id=run_id, keys=wanted)
        return result

    def latest(self, keys: str | list[str], job_id: str | None = None,
               run_id: str | None = None) -> Any:
        """The newest value of each key (``"*"``: every key) over the events."""
        return self._c.call(self._latest(keys, job_id, run_id))

    def subscribe(self, job_id: str, after_seq: int = 0) -> Any:
        """Live events of a job, from ``after_seq`` on, without gaps; ends with the job.

        Async client: an async iterator. Blocking client: an iterator."""
        agen = follow_job_events(self._c, job_id, after_seq)
        return agen if self._c.is_async else _blocking_iter(self._c, agen)


def _blocking_iter(client: Any, agen: AsyncIterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    while True:
        try:
            yield client.call(agen.__anext__())
        except StopAsyncIteration:
            return


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception:  # best effort cleanup of an upload that failed anyway
        return


class Tokens(_Resource):
    """API tokens of your organization (admin tokens only)."""

    def create(self, name: str, role: str = "user", expires_in_s: int | None = None) -> Any:
        """A new token; its plain text (``token``) is returned this once only."""
        return self._c.call(self._t.call("tokens.create", name=name, role=role,
                                         expires_in_s=expires_in_s))

    def list(self) -> Any:
        return self._c.call(self._t.call("tokens.list", read=True))

    def revoke(self, token_id: str) -> Any:
        """Revoke and disconnect every live connection made with it. Raises ``NotFound``."""
        return self._c.call(self._t.call("tokens.revoke", token_id=token_id))


class Secrets(_Resource):
    """Organization secrets (HF_TOKEN, MAX_WORKERS, ...), encrypted at rest."""

    def set(self, **values: str) -> Any:
        return self._c.call(self._t.call("secrets.set", values=values))

    def list(self) -> Any:
        """Names only."""
        return self._c.call(self._t.call("secrets.list"))

    def show(self) -> Any:
        """Names and values (admin tokens only)."""
        return self._c.call(self._t.call("secrets.show"))

    def remove(self, name: str) -> Any:
        return self._c.call(self._t.call("secrets.remove", name=name))
