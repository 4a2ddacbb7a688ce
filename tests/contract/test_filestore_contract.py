"""One contract for every FileStore: the NATS object store and S3 (on a real SeaweedFS)."""

from __future__ import annotations

import hashlib
import random
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import nats
import pytest

from openweights.adapters.embedded import EmbeddedNats
from openweights.adapters.files import FileStore, files_bucket, open_file_store
from openweights.adapters.files.s3 import S3FileStore
from openweights.config import Settings
from openweights.errors import InvalidRequest, NotFound

pytestmark = pytest.mark.anyio

ORG, OTHER_ORG = "org-a", "org-b"
# Big enough that holding it whole would show: an object store download may keep one
# JetStream flow-control window queued (20-31 MiB measured) whatever the file's size.
LARGE = 64 << 20


@pytest.fixture(params=["nats", "s3"])
async def file_store(
    request: pytest.FixtureRequest, anyio_backend: str, nats_server: EmbeddedNats, tmp_path: Path
) -> AsyncIterator[FileStore]:
    if request.param == "nats":
        settings = Settings(home=tmp_path / "home", nats_url=nats_server.url,
                            namespace=f"t{uuid.uuid4().hex[:10]}")
        nc = await nats.connect(nats_server.url)
        store = await open_file_store(settings, nc.jetstream())
        yield store
        await store.close()
        await nc.jetstream().delete_object_store(files_bucket(settings))
        await nc.close()
    else:
        s3 = request.getfixturevalue("seaweedfs")
        store = await S3FileStore(
            f"t{uuid.uuid4().hex[:12]}", endpoint_url=s3.url, region=s3.region,
            access_key=s3.access_key, secret_key=s3.secret_key,
        ).open()
        yield store
        await store.close()


async def chunked(data: bytes, size: int = 64 << 10) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def key_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def read_all(store: FileStore, org: str, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.get(org, key)])


class Generated:
    """Deterministic pseudo-random content, produced in 1 MiB chunks and never whole."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        digest = hashlib.sha256()
        for chunk in self._chunks():
            digest.update(chunk)
        self.key = digest.hexdigest()

    def _chunks(self) -> Iterator[bytes]:
        rng = random.Random(self.seed)
        for start in range(0, self.size, 1 << 20):
            yield rng.randbytes(min(1 << 20, self.size - start))

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks():
            yield chunk


@contextmanager
def traced_peak() -> Iterator[Callable[[], int]]:
    """Peak bytes newly allocated by Python (all threads) inside the block."""
    peak = 0
    tracemalloc.start()
    try:
        yield lambda: peak
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.parametrize("data", [b"", b"hello", random.Random(0).randbytes(300_000)],
                         ids=["empty", "small", "several-chunks"])
async def test_round_trip(file_store: FileStore, data: bytes, tmp_path: Path) -> None:
    key = key_of(data)
    assert await file_store.put(ORG, key, chunked(data), size_hint=len(data)) == len(data)
    assert await file_store.exists(ORG, key)
    assert await file_store.size(ORG, key) == len(data)
    assert await read_all(file_store, ORG, key) == data
    assert await file_store.get_to_file(ORG, key, tmp_path / "out") == len(data)
    assert (tmp_path / "out").read_bytes() == data


async def test_get_yields_chunks_of_at_most_chunk_size(file_store: FileStore) -> None:
    data = random.Random(1).randbytes(100_000)
    await file_store.put(ORG, key_of(data), chunked(data))
    chunks = [c async for c in file_store.get(ORG, key_of(data), chunk_size=10_000)]
    assert b"".join(chunks) == data
    assert max(map(len, chunks)) <= 10_000


async def test_large_file_streams_both_ways_in_bounded_memory(
    file_store: FileStore, tmp_path: Path
) -> None:
    blob = Generated(LARGE, seed=7)
    with traced_peak() as peak:
        assert await file_store.put(ORG, blob.key, blob.chunks(), size_hint=LARGE) == LARGE
    assert peak() < LARGE // 4, f"put held {peak()} bytes"  # S3: one 8 MiB part

    path = tmp_path / "large.bin"
    with traced_peak() as peak:
        assert await file_store.get_to_file(ORG, blob.key, path) == LARGE
    assert peak() < LARGE * 3 // 4, f"get_to_file held {peak()} bytes"
    assert sha256_of_file(path) == blob.key

    digest = hashlib.sha256()
    with traced_peak() as peak:
        async for chunk in file_store.get(ORG, blob.key):
            digest.update(chunk)
    assert peak() < LARGE * 3 // 4, f"get held {peak()} bytes"
    assert digest.hexdigest() == blob.key


async def test_put_of_an_existing_key_stores_nothing_and_drains_the_input(
    file_store: FileStore,
) -> None:
    first = b"the stored content"
    await file_store.put(ORG, "k1", chunked(first))
    sent: list[bytes] = []

    async def second() -> AsyncIterator[bytes]:
        for part in (b"other ", b"bytes"):
            sent.append(part)
            yield part

    assert await file_store.put(ORG, "k1", second()) == len(first)
    assert sent == [b"other ", b"bytes"]  # the sender was read to its end
    assert await read_all(file_store, ORG, "k1") == first


async def test_concurrent_puts_of_the_same_content_all_succeed(file_store: FileStore) -> None:
    data = random.Random(2).randbytes(300_000)
    sizes: list[int] = []

    async def put() -> None:
        sizes.append(await file_store.put(ORG, key_of(data), chunked(data)))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(put)
    assert sizes == [len(data)] * 3
    assert await read_all(file_store, ORG, key_of(data)) == data


async def test_an_input_that_fails_stores_nothing(file_store: FileStore) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield bytes(9 << 20)  # more than one S3 part: a multipart upload has begun
        yield b"more"
        raise OSError("the sender went away")

    with pytest.raises(OSError, match="went away"):
        await file_store.put(ORG, "k", failing())
    assert not await file_store.exists(ORG, "k")


async def test_missing_key(file_store: FileStore, tmp_path: Path) -> None:
    assert not await file_store.exists(ORG, "absent")
    with pytest.raises(NotFound):
        await file_store.size(ORG, "absent")
    with pytest.raises(NotFound):
        await read_all(file_store, ORG, "absent")
    with pytest.raises(NotFound):
        await file_store.get_to_file(ORG, "absent", tmp_path / "out")
    assert [p async for p in anyio.Path(tmp_path).iterdir()] == []  # no partial file left


async def test_same_key_in_another_org_is_another_object(file_store: FileStore) -> None:
    await file_store.put(ORG, "shared-key", chunked(b"from a"))
    assert not await file_store.exists(OTHER_ORG, "shared-key")
    await file_store.put(OTHER_ORG, "shared-key", chunked(b"from org b"))
    assert await read_all(file_store, ORG, "shared-key") == b"from a"
    assert await read_all(file_store, OTHER_ORG, "shared-key") == b"from org b"


async def test_delete_then_put_again(file_store: FileStore) -> None:
    await file_store.put(ORG, "k", chunked(b"one"))
    await file_store.delete(ORG, "k")
    await file_store.delete(ORG, "k")  # absent: nothing to do
    assert not await file_store.exists(ORG, "k")
    assert await file_store.put(ORG, "k", chunked(b"two!")) == 4
    assert await read_all(file_store, ORG, "k") == b"two!"


async def test_stopping_a_download_early_releases_it(file_store: FileStore) -> None:
    data = random.Random(3).randbytes(500_000)
    await file_store.put(ORG, "k", chunked(data))
    async with aclosing(file_store.get(ORG, "k", chunk_size=1000)) as chunks:
        async for chunk in chunks:
            assert chunk == data[:len(chunk)]
            break
    assert await read_all(file_store, ORG, "k") == data


@pytest.mark.parametrize(("org", "key"), [
    ("", "k"), ("org.x", "k"), ("org", "a.b"), ("org", "*"), ("org", ">"), ("o g", "k"),
    ("org", "a/b"), ("org/x", "k"), ("org", "x" * 201),
])
async def test_unusable_org_or_key_is_rejected(
    file_store: FileStore, org: str, key: str, tmp_path: Path
) -> None:
    with pytest.raises(InvalidRequest):
        await file_store.put(org, key, chunked(b"x"))
    with pytest.raises(InvalidRequest):
        await file_store.exists(org, key)
    with pytest.raises(InvalidRequest):
        await file_store.size(org, key)
    with pytest.raises(InvalidRequest):
        file_store.get(org, key)  # checked at the call, before any I/O
    with pytest.raises(InvalidRequest):
        await file_store.get_to_file(org, key, tmp_path / "out")
    with pytest.raises(InvalidRequest):
        await file_store.delete(org, key)


async def test_factory_rejects_unknown_store_and_s3_without_bucket() -> None:
    with pytest.raises(InvalidRequest, match="OW_FILE_STORE"):
        await open_file_store(SimpleNamespace(file_store="ftp"), None)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="OW_S3_BUCKET"):
        await open_file_store(SimpleNamespace(file_store="s3"), None)  # type: ignore[arg-type]


async def test_factory_opens_s3_from_settings(seaweedfs: Any) -> None:
    settings = SimpleNamespace(
        file_store="s3", s3_bucket=f"t{uuid.uuid4().hex[:12]}", s3_endpoint_url=seaweedfs.url,
        s3_region=seaweedfs.region, s3_access_key=seaweedfs.access_key,
        s3_secret_key=seaweedfs.secret_key,
    )
    store = await open_file_store(settings, None)  # type: ignore[arg-type]
    try:
        assert isinstance(store, S3FileStore)
        assert await store.put(ORG, "k", chunked(b"via settings")) == 12
        assert await read_all(store, ORG, "k") == b"via settings"
    finally:
        await store.close()
