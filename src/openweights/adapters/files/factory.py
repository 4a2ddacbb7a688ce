"""Choose and open the FileStore named by the settings (composition roots call this)."""

from __future__ import annotations

from typing import Any

from nats.js import JetStreamContext

from openweights.adapters.files.natsobj import NatsObjectFileStore
from openweights.adapters.files.port import FileStore
from openweights.adapters.files.s3 import S3FileStore
from openweights.config import Settings
from openweights.errors import InvalidRequest


def files_bucket(settings: Settings) -> str:
    """The namespace's object store bucket (its stream is ``OBJ_<NS>_FILES``)."""
    return f"{settings.stream_prefix}_FILES"


async def open_file_store(settings: Settings, js: JetStreamContext) -> FileStore:
    """Open the store ``OW_FILE_STORE`` names: ``nats`` (default) or ``s3``.

    Raises :class:`InvalidRequest` naming the setting to fix when the choice is unknown
    or ``s3`` lacks a bucket, and ImportError when ``s3`` lacks its extra.
    """
    kind = getattr(settings, "file_store", "nats")
    if kind == "nats":
        return await NatsObjectFileStore(
            js, files_bucket(settings),
            replicas=settings.stream_replicas, storage=settings.stream_storage,
        ).open()
    if kind == "s3":
        bucket = getattr(settings, "s3_bucket", None)
        if not bucket:
            raise InvalidRequest("OW_S3_BUCKET must be set when OW_FILE_STORE=s3")
        return await S3FileStore(
            bucket,
            endpoint_url=getattr(settings, "s3_endpoint_url", None),
            region=getattr(settings, "s3_region", None),
            access_key=_plain(getattr(settings, "s3_access_key", None)),
            secret_key=_plain(getattr(settings, "s3_secret_key", None)),
            prefix=getattr(settings, "s3_prefix", ""),
        ).open()
    raise InvalidRequest(f"OW_FILE_STORE={kind!r} is unknown: use 'nats' or 's3'")


def _plain(value: Any) -> str | None:
    """Accept a plain string or a pydantic ``SecretStr``."""
    if value is None or isinstance(value, str):
        return value
    return str(value.get_secret_value())
