"""The FileStore port: an organization's content-addressed blobs, streamed both ways.

Invariants every adapter keeps (checked by ``tests/contract/test_filestore_contract.py``):

- A file is addressed by ``(org, key)``; the key is chosen by the caller and names the
  content (the sha256 hex of the bytes), so a key that exists already holds the right
  bytes: ``put`` of an existing key stores nothing and returns the stored size. Same
  bytes in the same organization are therefore stored once.
- The same key in two organizations names two different objects (layout
  ``organizations/{org}/{key}`` or ``{org}/{key}``), so neither part may contain ``/``.
- Data moves in bounded chunks in both directions: no adapter holds a whole file in
  memory.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

import anyio

from openweights.errors import InvalidRequest
from openweights.subjects import check_token

DEFAULT_CHUNK_SIZE = 1 << 20


class FileStore(Protocol):
    """Where file contents live; the file aggregate's events say which ones exist."""

    async def put(
        self, org: str, key: str, chunks: AsyncIterator[bytes], *, size_hint: int | None = None
    ) -> int:
        """Store ``chunks`` under ``key`` and return the size stored.

        Idempotent: when ``key`` exists the input is read to its end and discarded.
        ``size_hint`` (the expected size, if known) only tunes how the upload is split.
        Raises :class:`InvalidRequest` for an unusable org or key and
        :class:`Unavailable` when the storage does not answer.
        """
        ...

    async def exists(self, org: str, key: str) -> bool: ...

    async def size(self, org: str, key: str) -> int:
        """Raises :class:`NotFound` when there is no such file."""
        ...

    def get(self, org: str, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE
            ) -> AsyncGenerator[bytes, None]:
        """Stream the file in chunks of at most ``chunk_size`` bytes.

        The org and key are checked at the call; :class:`NotFound` is raised by the
        first iteration. Wrap it in :func:`contextlib.aclosing` when you may stop early,
        so the download is released at once.
        """
        ...

    async def get_to_file(self, org: str, key: str, path: Path) -> int:
        """Download into ``path`` and return its size; ``path`` appears only complete.

        Raises :class:`NotFound` (and leaves ``path`` untouched) when there is no such file.
        """
        ...

    async def delete(self, org: str, key: str) -> None:
        """Remove the file if present; for tests and cleanup only (files are shared)."""
        ...

    async def close(self) -> None: ...


def check_address(org: str, key: str) -> tuple[str, str]:
    """Validate ``(org, key)``; ``/`` is refused too, so two orgs' names never collide."""
    check_token(org, "organization")
    check_token(key, "file key")
    for what, value in (("organization", org), ("file key", key)):
        if "/" in value:
            raise InvalidRequest(f"{what} {value!r} is not usable: it must not contain '/'")
    return org, key


async def drain(chunks: AsyncIterator[bytes]) -> None:
    """Read an input to its end without keeping it (the sender is waiting on us)."""
    async for _ in chunks:
        pass


@asynccontextmanager
async def writing_file(path: Path) -> AsyncIterator[anyio.AsyncFile[bytes]]:
    """Write into a sibling temporary file that replaces ``path`` only when complete."""
    part = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        async with await anyio.open_file(part, "wb") as file:
            yield file
        await anyio.Path(part).replace(path)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.Path(part).unlink(missing_ok=True)
        raise
