"""File uploads and downloads through the api service.

Clients have no JetStream rights, so bytes pass through here in chunks: an upload is
``begin`` (once), ``chunk`` (raw bytes, in order), ``end``; the chunks and the end go to
the instance that began it. Chunks are spooled to disk while the dataset validator and
the hashes see them, so a large file is never whole in memory; nothing is stored or
appended unless the whole file is valid. Downloads read ranges of a local cache that
is filled from the file store once per content (content addressing makes it immutable).
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from openweights import ids
from openweights.api import protocol
from openweights.datasets import DatasetValidator
from openweights.domain import file as file_domain
from openweights.domain.commands import CreateFile
from openweights.domain.file import FileState
from openweights.errors import InvalidRequest, NotFound, Unavailable
from openweights.services.api import views
from openweights.services.api.service import ApiService, Context, Raw, Seq
from openweights.subjects import check_token

MAX_OPEN_UPLOADS = 64  # per api instance
MAX_OPEN_UPLOADS_PER_ORG = 32  # so that one organization cannot take every slot


@dataclass
class Upload:
    org: str
    filename: str
    purpose: str
    path: Path
    digest: ids.FileDigest
    validator: DatasetValidator
    received: int = 0
    handle: Any = field(default=None, repr=False)
    touched: float = field(default_factory=time.monotonic)  # begun, or the last chunk


async def read_chunks(path: Path, size: int = protocol.CHUNK_BYTES) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as f:
        while chunk := await f.read(size):
            yield chunk


def install(api: ApiService) -> None:
    instance = api.instance
    spool = api.settings.home / "api" / "uploads"
    cache = api.settings.home / "api" / "files"
    spool.mkdir(parents=True, exist_ok=True)
    uploads: dict[str, Upload] = {}

    @api.route("files.upload.begin")
    async def begin(ctx: Context, req: protocol.UploadBegin) -> dict[str, Any]:
        ids.check_purpose(req.purpose)
        _drop_idle()
        idle_s = api.settings.upload_idle_s
        if sum(up.org == ctx.org for up in uploads.values()) >= MAX_OPEN_UPLOADS_PER_ORG:
            raise InvalidRequest(
                f"this organization has {MAX_OPEN_UPLOADS_PER_ORG} uploads in progress on "
                f"this service: end or abort one first (an upload idle for {idle_s:.0f} s "
                "is dropped)")
        if len(uploads) >= MAX_OPEN_UPLOADS:
            raise Unavailable(f"{MAX_OPEN_UPLOADS} uploads are in progress on this service; "
                              "retry shortly")
        upload_id = f"{instance}-{secrets.token_hex(8)}"
        fd, name = tempfile.mkstemp(dir=spool, prefix=upload_id)
        uploads[upload_id] = Upload(ctx.org, os.path.basename(req.filename) or "file",
                                    req.purpose, Path(name), ids.FileDigest(ctx.org),
                                    DatasetValidator(req.purpose), handle=os.fdopen(fd, "wb"))
        return {"upload_id": upload_id, "instance": instance,
                "chunk_bytes": protocol.CHUNK_BYTES}

    def _upload(ctx: Context, upload_id: str) -> Upload:
        up = uploads.get(upload_id)
        if up is None or up.org != ctx.org:
            raise NotFound(f"upload {upload_id!r} not found (it may have been aborted)")
        return up

    def _drop_idle() -> None:
        """Uploads whose client went away (crashed, lost its connection) would hold their
        slot and spool file forever."""
        limit = time.monotonic() - api.settings.upload_idle_s
        for upload_id in [i for i, up in uploads.items() if up.touched < limit]:
            _discard(upload_id)

    def _discard(upload_id: str) -> None:
        up = uploads.pop(upload_id, None)
        if up is not None:
            up.handle.close()
            up.path.unlink(missing_ok=True)

    @api.route(protocol.UPLOAD_CHUNK)
    async def chunk(ctx: Context, data: bytes) -> dict[str, Any]:
        headers = ctx.raw.headers or {}
        up = _upload(ctx, headers.get(protocol.HEADER_UPLOAD, ""))
        try:
            offset = int(headers.get(protocol.HEADER_OFFSET, "-1"))
        except ValueError:
            raise InvalidRequest(f"chunk offset {headers[protocol.HEADER_OFFSET]!r} is not a "
                                 "number") from None
        if offset + len(data) <= up.received and offset >= 0:
            return {"received": up.received}  # a retried chunk we already have
        if offset != up.received:
            raise InvalidRequest(f"chunk at offset {offset}, expected {up.received}")
        try:
            up.validator.feed(data)
        except InvalidRequest:
            _discard(headers.get(protocol.HEADER_UPLOAD, ""))
            raise
        up.digest.update(data)
        up.handle.write(data)
        up.received += len(data)
        up.touched = time.monotonic()
        return {"received": up.received}

    @api.route("files.upload.abort")
    async def abort(ctx: Context, req: protocol.UploadAbort) -> dict[str, Any]:
        _upload(ctx, req.upload_id)
        _discard(req.upload_id)
        return {"aborted": req.upload_id}

    @api.route("files.upload.end")
    async def end(ctx: Context, req: protocol.UploadEnd) -> Seq:
        up = _upload(ctx, req.upload_id)
        try:
            up.validator.finish()
            up.handle.close()
            file_id = up.digest.file_id(up.purpose)
            existing = api.fold.get(ctx.org, "file", file_id)
            if existing is not None:
                return Seq(views.file_from_state(existing), 0)
            await api.files.put(ctx.org, up.digest.sha256, read_chunks(up.path),
                                size_hint=up.received)
            cmd = CreateFile(org=ctx.org, file_id=file_id, filename=up.filename,
                             purpose=up.purpose, bytes=up.received, sha256=up.digest.sha256)
            _, seq, state = await api.executor.execute(
                ctx.org, "file", file_id,
                lambda s, now, by: file_domain.decide(s, cmd, now, by), ctx.actor,
                req.request_id)
            return Seq(views.file_from_state(state), seq)
        finally:
            _discard(req.upload_id)

    def _file(ctx: Context, file_id: str) -> FileState:
        state = api.fold.get(ctx.org, "file", check_token(file_id, "file id"))
        if state is None:
            raise NotFound(f"file {file_id!r} not found")
        return state  # type: ignore[no-any-return]

    @api.route("files.get")
    async def get(ctx: Context, req: protocol.FileGet) -> dict[str, Any]:
        state = _file(ctx, req.file_id)
        _worker_may_read(ctx, req.file_id)
        return views.file_from_state(state)

    def _worker_may_read(ctx: Context, file_id: str) -> None:
        """A worker reads only the files of jobs it is running (their mounts, inputs)."""
        from openweights.services.api.jobs import referenced_file_ids

        if ctx.principal.role != "worker":
            return
        for j in api.fold.of_kind("job"):
            run = j.open_run
            if (j.org == ctx.org and run is not None and run.worker_id == ctx.principal.worker_id
                    and file_id in referenced_file_ids(j.params)):
                return
        raise NotFound(f"file {file_id!r} not found")

    @api.route("files.read")
    async def read(ctx: Context, req: protocol.FileRead) -> Raw:
        state = _file(ctx, req.file_id)
        _worker_may_read(ctx, req.file_id)
        path = cache / ctx.org / state.sha256
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{state.sha256}.{secrets.token_hex(4)}.part")
            await api.files.get_to_file(ctx.org, state.sha256, tmp)
            tmp.replace(path)
        length = max(0, min(req.length, protocol.CHUNK_BYTES))
        async with await anyio.open_file(path, "rb") as f:
            await f.seek(req.offset)
            data = await f.read(length)
        eof = req.offset + len(data) >= state.bytes
        return Raw(data, {protocol.HEADER_EOF: "1" if eof else "0"})
