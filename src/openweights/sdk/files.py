"""``aow.files``: upload, read and download files (streamed, never whole in memory).

Every method may raise :class:`~openweights.errors.StackUnavailable` /
:class:`~openweights.errors.Unavailable` when the service cannot be reached (after
retrying), besides what it lists.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import IO

import anyio

from openweights.api import protocol
from openweights.datasets import is_valid_dataset
from openweights.errors import InvalidRequest
from openweights.sdk.transport import Transport
from openweights.sdk.types import FileInfo


class AsyncFiles:
    def __init__(self, transport: Transport) -> None:
        self._t = transport

    async def create(self, file: IO[bytes], purpose: str,
                     filename: str | None = None) -> FileInfo:
        """Upload an open binary file (named ``filename``, default: its own name);
        returns ``{"id", "object", "bytes", "filename", "purpose", "created_at"}``, the same
        whether the file is new or already stored.

        Raises ``InvalidRequest`` whose message names the line and the reason when a
        dataset is invalid (checked by the service while it streams in); nothing is
        stored."""
        name = filename or os.path.basename(getattr(file, "name", "") or "file")
        t = self._t
        begun = await t.call("files.upload.begin", filename=name, purpose=purpose)
        upload_id, instance = begun["upload_id"], begun["instance"]
        try:
            await self._send_chunks(file, upload_id, instance, begun["chunk_bytes"])
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _quietly(t.request(f"{t.subject('files.upload.abort')}.{instance}",
                                         protocol.encoder.encode(
                                             protocol.UploadAbort(upload_id=upload_id))))
            raise
        msg = await t.request(f"{t.subject('files.upload.end')}.{instance}",
                              protocol.encoder.encode(protocol.UploadEnd(upload_id=upload_id)))
        result: FileInfo = t.unwrap(msg.data)
        return result

    async def _send_chunks(self, file: IO[bytes], upload_id: str, instance: str,
                           size: int) -> None:
        t = self._t
        chunk_subject = f"{t.subject(protocol.UPLOAD_CHUNK)}.{instance}"
        offset = 0
        while chunk := await anyio.to_thread.run_sync(file.read, size):
            msg = await t.request(chunk_subject, chunk, headers={
                protocol.HEADER_UPLOAD: upload_id, protocol.HEADER_OFFSET: str(offset)})
            t.unwrap(msg.data)
            offset += len(chunk)

    async def upload(self, path: str | Path, purpose: str) -> FileInfo:
        """Upload the file at ``path`` (see :meth:`create`)."""
        with open(path, "rb") as f:
            return await self.create(f, purpose, os.path.basename(str(path)))

    async def get_by_id(self, file_id: str) -> FileInfo:
        """The file's metadata. Raises ``NotFound``."""
        result: FileInfo = await self._t.call("files.get", file_id=file_id)
        return result

    async def chunks(self, file_id: str) -> AsyncIterator[bytes]:
        """The file's bytes, a chunk (up to 1 MiB) at a time. Raises ``NotFound``."""
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

    async def content(self, file_id: str) -> bytes:
        """The file's bytes. Raises ``NotFound``. Use :meth:`download` for large files."""
        return b"".join([c async for c in self.chunks(file_id)])

    async def download(self, file_id: str, path: str | Path) -> Path:
        """Stream the file into ``path`` (written whole or not at all); returns ``path``.
        Raises ``NotFound``."""
        path = Path(path)
        tmp = anyio.Path(path.with_name(path.name + ".part"))
        async with await anyio.open_file(tmp, "wb") as f:
            async for chunk in self.chunks(file_id):
                await f.write(chunk)
        await tmp.replace(path)
        return path

    async def validate(self, file: IO[bytes], purpose: str) -> bool:
        """Whether ``file`` is a valid dataset for ``purpose`` (checked locally)."""
        chunks = iter(lambda: file.read(1 << 20), b"")
        return await anyio.to_thread.run_sync(is_valid_dataset, chunks, purpose)


async def _quietly(awaitable: Awaitable[object]) -> None:
    try:
        await awaitable
    except Exception:  # best effort cleanup of an upload that failed anyway
        return
