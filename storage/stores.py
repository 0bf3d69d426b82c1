"""Which object store a storage URL names (`SPEECHBATCH_STORAGE_URL`)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from storage.localfs import LocalObjectStore
from storage.objects import ObjectStore
from storage.s3 import S3ObjectStore, s3_client


def open_object_store(
    storage_url: str,
    *,
    endpoint_url: str | None = None,
    public_endpoint_url: str | None = None,
) -> ObjectStore:
    """The store named by `storage_url`: `s3://bucket[/prefix]` or `file:///absolute/path`.

    For S3, data goes through `endpoint_url`; presigned URLs are signed for
    `public_endpoint_url` when it is given (where clients outside the deployment reach S3).
    """
    parts = urlsplit(storage_url)
    if parts.scheme == "file" and parts.netloc in {"", "localhost"} and parts.path.startswith("/"):
        return LocalObjectStore(Path(unquote(parts.path)))
    if parts.scheme == "s3" and parts.netloc and not (parts.query or parts.fragment):
        prefix = unquote(parts.path).strip("/")
        client = s3_client(endpoint_url)
        public = None
        if public_endpoint_url and public_endpoint_url != endpoint_url:
            public = s3_client(public_endpoint_url)  # builds no connection: presign is local
        return S3ObjectStore(client, parts.netloc, prefix, presign_client=public)
    raise ValueError(
        f"Unsupported storage URL {storage_url!r}: use 's3://bucket[/prefix]' or "
        "'file:///absolute/path'."
    )
