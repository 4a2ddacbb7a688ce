"""Create the file store's S3 bucket unless it exists (compose's one-shot ``s3-bucket``).

The services never create it: a typo in ``OW_S3_BUCKET`` must fail loudly rather than
put files into a new, empty bucket.
"""

from __future__ import annotations

import anyio

from openweights.config import Settings
from openweights.errors import InvalidRequest


async def ensure_bucket(settings: Settings) -> bool:
    """True when the bucket was created now, False when it existed."""
    if not settings.s3_bucket:
        raise InvalidRequest("OW_S3_BUCKET is not set: name the bucket the file store uses")
    import aioboto3  # the s3 extra; the control-plane image has it
    from botocore.exceptions import ClientError

    session = aioboto3.Session(aws_access_key_id=settings.s3_access_key,
                               aws_secret_access_key=settings.s3_secret_key,
                               region_name=settings.s3_region or "us-east-1")
    async with session.client("s3", endpoint_url=settings.s3_endpoint_url) as s3:
        try:
            await s3.head_bucket(Bucket=settings.s3_bucket)
            return False
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
        await s3.create_bucket(Bucket=settings.s3_bucket)
        return True


def run(settings: Settings) -> str:
    created = anyio.run(ensure_bucket, settings)
    return f"bucket {settings.s3_bucket} {'created' if created else 'exists'}"
