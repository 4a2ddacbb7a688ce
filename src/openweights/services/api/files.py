"""File uploads and downloads through the api service.

Clients have no JetStream rights, so bytes pass through here in chunks: an upload is
``begin`` (once), ``chunk`` (raw bytes, in order), ``end``; the chunks and the end go to
the instance that began it. Chunks are spooled to disk while the dataset validator and
the hashes see them, so a large file is never whole in memory; nothing is stored or
appended unless the whole file is valid. Downloads read ranges of a local cache that
is filled from the file store once per content (content addressing makes it immutable).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

from openweights import ids
from openweights.api import protocol
from openweights.domain.aggregates import FILE, JOB
from openweights.domain.commands import CreateFile
from openweights.domain.file import FileState
from openweights.errors import InvalidRequest, NotFound
from openweights.services.api import views
from openweights.services.api.context import Context, Deps, Raw, Seq
from openweights.services.api.jobs import referenced_file_ids
from openweights.subjects import check_token


async def read_chunks(path: Path, size: int = protocol.CHUNK_BYTES) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as f:
        while chunk := await f.read(size):
            yield chunk


async def begin_upload(d: Deps, ctx: Context, req: protocol.UploadBegin) -> dict[str, Any]:
    ids.check_purpose(req.purpose)
    # An agent's log and results take slots of their own: never behind users' uploads.
    p = ctx.principal
    worker = (p.worker_id or p.id) if p.role == "worker" else None
    upload_id = d.uploads.begin(ctx.org, req.filename, req.purpose, worker)
    return {"upload_id": upload_id, "instance": d.instance,
            "chunk_bytes": protocol.CHUNK_BYTES}


async def receive_chunk(d: Deps, ctx: Context, data: bytes) -> dict[str, Any]:
    headers = ctx.raw.headers or {}
    upload_id = headers.get(protocol.HEADER_UPLOAD, "")
    up = d.uploads.get(ctx.org, upload_id)
    try:
        offset = int(headers.get(protocol.HEADER_OFFSET, "-1"))
    except ValueError:
        raise InvalidRequest(f"chunk offset {headers[protocol.HEADER_OFFSET]!r} is not a "
                             "number") from None
    return {"received": d.uploads.write(upload_id, up, offset, data)}


async def abort_upload(d: Deps, ctx: Context, req: protocol.UploadAbort) -> dict[str, Any]:
    d.uploads.get(ctx.org, req.upload_id)
    d.uploads.discard(req.upload_id)
    return {"aborted": req.upload_id}


async def end_upload(d: Deps, ctx: Context, req: protocol.UploadEnd) -> Seq:
    up = d.uploads.get(ctx.org, req.upload_id)
    try:
        up.validator.finish()
        up.handle.close()
        file_id = up.digest.file_id(up.purpose)
        existing = d.fold.get(ctx.org, FILE, file_id)
        if existing is not None:
            return Seq(views.file_from_state(existing), 0)
        await d.files.put(ctx.org, up.digest.sha256, read_chunks(up.path), size_hint=up.received)
        cmd = CreateFile(org=ctx.org, file_id=file_id, filename=up.filename, purpose=up.purpose,
                         bytes=up.received, sha256=up.digest.sha256)
        done = await d.executor.execute(ctx.org, FILE, file_id, cmd, ctx.actor, req.request_id)
        assert done.state is not None
        return Seq(views.file_from_state(done.state), done.seq)
    finally:
        d.uploads.discard(req.upload_id)


def _file(d: Deps, ctx: Context, file_id: str) -> FileState:
    """The file, if the caller may read it. Raises :class:`NotFound`."""
    state = d.fold.get(ctx.org, FILE, check_token(file_id, "file id"))
    if state is None or not _worker_may_read(d, ctx, file_id):
        raise NotFound(f"file {file_id!r} not found")
    return state


def _worker_may_read(d: Deps, ctx: Context, file_id: str) -> bool:
    """A worker reads only the files of jobs it is running (their mounts, inputs)."""
    if ctx.principal.role != "worker":
        return True
    return any(j.org == ctx.org and (run := j.open_run) is not None
               and run.worker_id == ctx.principal.worker_id
               and file_id in referenced_file_ids(j.spec.params)
               for j in d.fold.of_kind(JOB))


async def get_file(d: Deps, ctx: Context, req: protocol.FileGet) -> dict[str, Any]:
    return views.file_from_state(_file(d, ctx, req.file_id))


async def read_file(d: Deps, ctx: Context, req: protocol.FileRead) -> Raw:
    state = _file(d, ctx, req.file_id)
    path = d.uploads.cache / ctx.org / state.sha256
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{state.sha256}.{secrets.token_hex(4)}.part")
        await d.files.get_to_file(ctx.org, state.sha256, tmp)
        tmp.replace(path)
    length = max(0, min(req.length, protocol.CHUNK_BYTES))
    async with await anyio.open_file(path, "rb") as f:
        await f.seek(req.offset)
        data = await f.read(length)
    eof = req.offset + len(data) >= state.bytes
    return Raw(data, {protocol.HEADER_EOF: "1" if eof else "0"})
