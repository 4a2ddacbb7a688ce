"""File contents: the FileStore port and its adapters (NATS object store, S3).

Import adapters from their modules; the S3 one needs the ``s3`` extra only when opened.
"""

from openweights.adapters.files.factory import files_bucket, open_file_store
from openweights.adapters.files.port import FileStore

__all__ = ["FileStore", "files_bucket", "open_file_store"]
