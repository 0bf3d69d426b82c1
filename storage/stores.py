"""Which object store a storage URL names (`SPEECHBATCH_STORAGE_URL`), and the stores of
other buckets and folders a deployment reads and writes (`BucketStores`)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from storage.localfs import LocalObjectStore
from storage.objects import ObjectStore
from storage.s3 import S3ObjectStore, s3_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


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


class BucketStores:
    """Stores on buckets other than the configured one (archive sources, output
    destinations) and on this machine's folders, opened on first use and kept.

    One `S3ObjectStore` per bucket, all on one S3 client: `base`'s when it is an S3 store
    (the same endpoint and credentials, and presigned URLs signed for the same public
    address), else one of their own on `endpoint_url`, built on first use and closed by
    `close`. Folders are read through one `LocalObjectStore` rooted at `/`, so its key checks
    and symlink-resolving root check apply to every read and write. Thread-safe.
    """

    def __init__(self, base: ObjectStore | None = None, *, endpoint_url: str | None = None):
        self.base, self.endpoint_url = base, endpoint_url
        self._buckets: dict[str, S3ObjectStore] = {}
        self._folders: LocalObjectStore | None = None
        self._own: S3Client | None = None
        self._lock = threading.Lock()

    def bucket(self, name: str) -> S3ObjectStore:
        """The store whose keys are the whole of bucket `name`."""
        with self._lock:
            store = self._buckets.get(name)
            if store is None:
                if isinstance(self.base, S3ObjectStore):
                    client, presign = self.base.client, self.base.presign_client
                else:
                    if self._own is None:
                        self._own = s3_client(self.endpoint_url)
                    client = presign = self._own
                store = S3ObjectStore(client, name, presign_client=presign)
                self._buckets[name] = store
            return store

    def folders(self) -> LocalObjectStore:
        """The store whose keys are absolute paths without their leading `/`."""
        with self._lock:
            if self._folders is None:
                self._folders = LocalObjectStore(Path("/"))
            return self._folders

    def close(self) -> None:
        """Close the client these stores built (a shared `base` client is its owner's)."""
        if self._own is not None:
            self._own.close()
            self._own = None
