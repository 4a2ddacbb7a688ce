"""FileStore on S3 and S3-compatible storage (AWS, R2, MinIO, SeaweedFS) via aioboto3.

A file is the object ``{prefix}organizations/{org}/{key}``. Uploads are one PUT for
inputs up to one part and a multipart upload otherwise, holding at most one part
(plus the input chunk being split) in memory; downloads stream the response body.
aioboto3 is the optional extra ``s3`` and is imported only when a store is opened.
"""

from __future__ import annotations

import io
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import AsyncExitStack, aclosing, contextmanager, suppress
from pathlib import Path
from typing import Any

import anyio

from openweights.adapters.files.port import (
    DEFAULT_CHUNK_SIZE,
    check_address,
    drain,
    writing_file,
)
from openweights.errors import NotFound, Unavailable

PART_SIZE = 8 << 20
MAX_PARTS = 10_000  # S3's limit per multipart upload
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_UNAVAILABLE_CODES = {"500", "503", "InternalError", "ServiceUnavailable", "SlowDown"}


def part_size(part_number: int, size_hint: int | None) -> int:
    """Size of the 0-based part ``part_number``.

    Large enough that ``size_hint`` fits in S3's 10,000 parts; without a hint parts
    double every 1,000, so any object up to S3's 5 TiB limit fits anyway.
    """
    base = max(PART_SIZE, -(-(size_hint or 0) // MAX_PARTS))
    return base * 2 ** (part_number // 1000)


class S3FileStore:
    """Files as objects in one S3 bucket."""

    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        prefix: str = "",
    ) -> None:
        self.bucket, self.endpoint_url, self.region = bucket, endpoint_url, region
        self._credentials = (access_key, secret_key)
        self.prefix = prefix if not prefix or prefix.endswith("/") else f"{prefix}/"
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._botocore: Any = None

    async def open(self) -> S3FileStore:
        """Connect and create the bucket when missing."""
        aioboto3, botocore = _import_s3()
        self._botocore = botocore
        # Custom endpoints (MinIO, SeaweedFS, R2) want path-style addressing and only the
        # checksums S3 has always required.
        config = botocore.config.Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ) if self.endpoint_url else None
        access_key, secret_key = self._credentials
        client = aioboto3.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region,
            aws_access_key_id=access_key, aws_secret_access_key=secret_key, config=config,
        )
        self._client = await self._stack.enter_async_context(client)
        try:
            await self._ensure_bucket()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._stack.aclose()
            raise
        return self

    async def _ensure_bucket(self) -> None:
        with self._translated(self.bucket, not_found=False):
            try:
                await self._client.head_bucket(Bucket=self.bucket)
                return
            except self._botocore.exceptions.ClientError as exc:
                if _code(exc) not in _NOT_FOUND_CODES:
                    raise
            extra: dict[str, Any] = {}
            if self.region and self.region != "us-east-1" and not self.endpoint_url:
                extra["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                await self._client.create_bucket(Bucket=self.bucket, **extra)
            except self._botocore.exceptions.ClientError as exc:
                if _code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise

    async def put(
        self, org: str, key: str, chunks: AsyncIterator[bytes], *, size_hint: int | None = None
    ) -> int:
        name = self._name(org, key)
        if (stored := await self._stored_size(name)) is not None:
            await drain(chunks)
            return stored
        upload = _Multipart(self, name)
        try:
            return await self._upload(upload, chunks, size_hint)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await upload.abort()
            raise

    async def _upload(
        self, upload: _Multipart, chunks: AsyncIterator[bytes], size_hint: int | None
    ) -> int:
        # ``part`` is filled up to ``limit`` and sent only when more data follows, so the
        # last part is never empty and a small input is a single PUT. A file-like body
        # is sent in small slices; a bytes body would be copied whole by the HTTP layer.
        part, limit, total = io.BytesIO(), part_size(0, size_hint), 0
        async for chunk in chunks:
            total += len(chunk)
            view = memoryview(chunk)
            while view:
                if part.tell() == limit:
                    await upload.send(part)
                    part, limit = io.BytesIO(), part_size(upload.count, size_hint)
                room = limit - part.tell()
                part.write(view[:room])
                view = view[room:]
        part.seek(0)
        if upload.count == 0:
            with self._translated(upload.name):
                await self._client.put_object(Bucket=self.bucket, Key=upload.name, Body=part)
        else:
            await upload.send(part)
            await upload.complete()
        return total

    async def exists(self, org: str, key: str) -> bool:
        return await self._stored_size(self._name(org, key)) is not None

    async def size(self, org: str, key: str) -> int:
        name = self._name(org, key)
        with self._translated(name):
            head = await self._client.head_object(Bucket=self.bucket, Key=name)
        return int(head["ContentLength"])

    def get(self, org: str, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE
            ) -> AsyncGenerator[bytes, None]:
        return self._stream(self._name(org, key), chunk_size)

    async def _stream(self, name: str, chunk_size: int) -> AsyncGenerator[bytes, None]:
        with self._translated(name):
            response = await self._client.get_object(Bucket=self.bucket, Key=name)
        body = response["Body"]
        try:
            while True:
                with self._translated(name):
                    chunk = await body.read(chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()  # an unread rest drops the connection instead of draining it

    async def get_to_file(self, org: str, key: str, path: Path) -> int:
        total = 0
        async with writing_file(path) as file, aclosing(self.get(org, key)) as chunks:
            async for chunk in chunks:
                await file.write(chunk)
                total += len(chunk)
        return total

    async def delete(self, org: str, key: str) -> None:
        name = self._name(org, key)
        with self._translated(name):
            await self._client.delete_object(Bucket=self.bucket, Key=name)

    async def close(self) -> None:
        await self._stack.aclose()

    def _name(self, org: str, key: str) -> str:
        check_address(org, key)
        return f"{self.prefix}organizations/{org}/{key}"

    async def _stored_size(self, name: str) -> int | None:
        try:
            with self._translated(name):
                head = await self._client.head_object(Bucket=self.bucket, Key=name)
        except NotFound:
            return None
        return int(head["ContentLength"])

    @contextmanager
    def _translated(self, name: str, *, not_found: bool = True) -> Iterator[None]:
        """botocore's errors → ours; others (credentials, access denied) pass through."""
        exceptions = self._botocore.exceptions
        try:
            yield
        except exceptions.ClientError as exc:
            code = _code(exc)
            if not_found and code in _NOT_FOUND_CODES:
                raise NotFound(f"no such file: {name}") from None
            if code in _UNAVAILABLE_CODES:
                raise Unavailable(f"S3 answered {code} for {name}") from exc
            raise
        except (exceptions.ConnectionError, exceptions.HTTPClientError) as exc:
            raise Unavailable(f"S3 at {self.endpoint_url or 'AWS'} is unreachable: {exc}") from exc


class _Multipart:
    """A multipart upload, started by its first part; ``abort`` frees the parts sent."""

    def __init__(self, store: S3FileStore, name: str) -> None:
        self.store, self.name = store, name
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    @property
    def count(self) -> int:
        return len(self.parts)

    async def send(self, data: io.BytesIO) -> None:
        client, bucket, number = self.store._client, self.store.bucket, self.count + 1
        data.seek(0)
        with self.store._translated(self.name):
            if self.upload_id is None:
                created = await client.create_multipart_upload(Bucket=bucket, Key=self.name)
                self.upload_id = created["UploadId"]
            sent = await client.upload_part(
                Bucket=bucket, Key=self.name, UploadId=self.upload_id,
                PartNumber=number, Body=data,
            )
        self.parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    async def complete(self) -> None:
        with self.store._translated(self.name):
            await self.store._client.complete_multipart_upload(
                Bucket=self.store.bucket, Key=self.name, UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},
            )
        self.upload_id = None  # nothing left to abort

    async def abort(self) -> None:
        if self.upload_id is None:
            return
        # Best effort: a failed abort leaves parts that a bucket lifecycle rule reaps.
        with suppress(Exception):
            await self.store._client.abort_multipart_upload(
                Bucket=self.store.bucket, Key=self.name, UploadId=self.upload_id
            )


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _import_s3() -> tuple[Any, Any]:
    try:
        import aioboto3
        import botocore.config
        import botocore.exceptions
    except ImportError as exc:
        raise ImportError(
            "the S3 file store needs aioboto3: pip install 'openweights[s3]'"
        ) from exc
    return aioboto3, botocore
