"""FileStore on the NATS JetStream object store: the default, nothing more to run.

One bucket per namespace (``<NS>_FILES``); a file is the object ``{org}/{key}``.
nats-py's object store reads a ``put`` from a file-like object in its default thread
pool and writes a ``get`` into one (``writeinto=``); without ``writeinto`` it grows
one ``bytes`` by concatenation, which is quadratic and holds the whole file. So both
directions go through a file: the destination, or an anonymous temporary one ("spool").
Memory stays bounded by one flow-control window of queued chunks (measured 20-31 MiB),
whatever the file's size.
"""

from __future__ import annotations

import io
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import cast

import anyio
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.object_store import ObjectStore

from openweights.adapters.files.port import (
    DEFAULT_CHUNK_SIZE,
    check_address,
    drain,
    writing_file,
)
from openweights.errors import NotFound, OpenWeightsError, Unavailable

# Every stream bounds its messages: the bucket's chunks are 128 KiB (nats-py's), its
# metadata one name and digest.
MAX_MSG_BYTES = 1 << 20

# Foreign errors → ours, first match wins (ObjectNotFoundError is a NotFoundError).
_ERRORS: tuple[tuple[type[Exception], type[OpenWeightsError], str], ...] = (
    (nats.js.errors.ObjectNotFoundError, NotFound, "no such file"),
    (nats.js.errors.ObjectDeletedError, NotFound, "no such file"),
    (nats.errors.TimeoutError, Unavailable, "the NATS object store did not answer"),
    (nats.errors.NoRespondersError, Unavailable, "JetStream is not available"),
    (nats.errors.ConnectionClosedError, Unavailable, "the NATS connection is closed"),
    (nats.js.errors.ServiceUnavailableError, Unavailable, "JetStream is not available"),
    (nats.js.errors.DigestMismatchError, OpenWeightsError, "stored file is corrupt"),
)


@contextmanager
def _translated(name: str) -> Iterator[None]:
    try:
        yield
    except tuple(foreign for foreign, _, _ in _ERRORS) as exc:
        ours, what = next((o, w) for f, o, w in _ERRORS if isinstance(exc, f))
        raise ours(f"{what}: {name}") from exc


class NatsObjectFileStore:
    """Files as objects in one JetStream object store bucket."""

    def __init__(
        self,
        js: JetStreamContext,
        bucket: str,
        replicas: int = 1,
        storage: str = "file",
        *,
        spool_dir: Path | None = None,
    ) -> None:
        self.js, self.bucket = js, bucket
        self.replicas, self.storage = replicas, StorageType(storage)
        self.spool_dir = str(spool_dir) if spool_dir is not None else None
        self._store: ObjectStore | None = None
        self._locks: dict[str, anyio.Lock] = {}

    async def open(self) -> NatsObjectFileStore:
        """Bind to the bucket, creating it when missing (creating is idempotent)."""
        with _translated(self.bucket):
            try:
                self._store = await self.js.object_store(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                config = ObjectStoreConfig(
                    bucket=self.bucket,
                    description="openweights file contents, content-addressed per org",
                    storage=self.storage,
                    replicas=self.replicas,
                )
                self._store = await self.js.create_object_store(self.bucket, config=config)
            await self._bound_messages()
        return self

    async def _bound_messages(self) -> None:
        """The bucket's stream refuses a message over :data:`MAX_MSG_BYTES` (set on a
        bucket made before the limit too)."""
        config = (await self.js.stream_info(f"OBJ_{self.bucket}")).config
        if config.max_msg_size != MAX_MSG_BYTES:
            config.max_msg_size = MAX_MSG_BYTES
            await self.js.update_stream(config)

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            raise RuntimeError("NatsObjectFileStore used before open()")
        return self._store

    async def put(
        self, org: str, key: str, chunks: AsyncIterator[bytes], *, size_hint: int | None = None
    ) -> int:
        name = _name(org, key)
        if (stored := await self._stored_size(name)) is not None:
            await drain(chunks)
            return stored
        async with anyio.TemporaryFile(dir=self.spool_dir) as spool:
            async for chunk in chunks:
                await spool.write(chunk)
            async with self._storing(name):
                # Another writer may have stored the same content while we were receiving.
                if (stored := await self._stored_size(name)) is not None:
                    return stored
                await spool.seek(0)
                with _translated(name):
                    info = await self.store.put(name, _raw(spool))
        return info.size or 0

    @asynccontextmanager
    async def _storing(self, name: str) -> AsyncIterator[None]:
        """Store one name at a time in this process.

        Two puts racing past the existence check would each upload the chunks, and the
        first one's would stay in the stream unreferenced. Writers in other processes
        can still race; they cost that storage, never correctness.
        """
        lock = self._locks.setdefault(name, anyio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._locks.pop(name, None)

    async def exists(self, org: str, key: str) -> bool:
        return await self._stored_size(_name(org, key)) is not None

    async def size(self, org: str, key: str) -> int:
        name = _name(org, key)
        with _translated(name):
            info = await self.store.get_info(name)
        return info.size or 0

    def get(self, org: str, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE
            ) -> AsyncGenerator[bytes, None]:
        return self._stream(_name(org, key), chunk_size)

    async def _stream(self, name: str, chunk_size: int) -> AsyncGenerator[bytes, None]:
        # Why a spool rather than yielding the chunk messages as they arrive: that would
        # re-implement nats-py's object protocol (chunk subject, ordered consumer, digest
        # check) on its private API, and a slow reader would keep JetStream's flow-control
        # window (tens of MiB) queued in memory for the whole download. The spool costs
        # disk space equal to the file and takes the chunks at network speed.
        async with anyio.TemporaryFile(dir=self.spool_dir) as spool:
            with _translated(name):
                await self.store.get(name, writeinto=_raw(spool))
            await spool.seek(0)
            while chunk := await spool.read(chunk_size):
                yield chunk

    async def get_to_file(self, org: str, key: str, path: Path) -> int:
        name = _name(org, key)
        async with writing_file(path) as file:
            with _translated(name):
                result = await self.store.get(name, writeinto=_raw(file))
        return result.info.size or 0

    async def delete(self, org: str, key: str) -> None:
        name = _name(org, key)
        try:
            with _translated(name):
                await self.store.delete(name)
        except NotFound:
            pass

    async def close(self) -> None:
        """Nothing to release: the NATS connection belongs to the composition root."""

    async def _stored_size(self, name: str) -> int | None:
        try:
            with _translated(name):
                info = await self.store.get_info(name)
        except NotFound:
            return None
        return info.size or 0


def _raw(file: anyio.AsyncFile[bytes]) -> io.BufferedIOBase:
    """The blocking file under an async one: nats-py calls it in its thread pool."""
    return cast(io.BufferedIOBase, file.wrapped)


def _name(org: str, key: str) -> str:
    check_address(org, key)
    return f"{org}/{key}"
