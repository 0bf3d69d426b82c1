"""Which object store a storage URL names (`SPEECHBATCH_STORAGE_URL`)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from storage.localfs import LocalObjectStore
from storage.objects import ObjectStore
from storage.s3 import S3ObjectStore, s3_client


def open_object_store(storage_url: str, *, endpoint_url: str | None = None) -> ObjectStore:
    """The store named by `storage_url`: `s3://bucket[/prefix]` or `file:///absolute/path`."""
    parts = urlsplit(storage_url)
    if parts.scheme == "file" and parts.netloc in {"", "localhost"} and parts.path.startswith("/"):
        return LocalObjectStore(Path(unquote(parts.path)))
    if parts.scheme == "s3" and parts.netloc and not (parts.query or parts.fragment):
        prefix = unquote(parts.path).strip("/")
        return S3ObjectStore(s3_client(endpoint_url), parts.netloc, prefix)
    raise ValueError(
        f"Unsupported storage URL {storage_url!r}: use 's3://bucket[/prefix]' or "
        "'file:///absolute/path'."
    )
