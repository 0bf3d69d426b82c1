"""The object store seam: where audio, transcripts and manifests live.

`ObjectStore` is the interface the rest of speechbatch codes against. Implementations:

- `storage.s3.S3ObjectStore`: any S3 API (AWS, SeaweedFS, MinIO, R2) through a boto3 client.
- `storage.localfs.LocalObjectStore`: a directory, for embedded mode (`file:///abs/path`).
- `MemoryObjectStore` (here): a dict, for unit tests that need a store and no disk.

`storage.stores.open_object_store` picks one from a URL. All take keys relative to their root
(S3: bucket + prefix), refuse keys that could escape it (`storage.keys.validate_key`), and
raise the same two errors:

    KeyError  → ObjectNotFound        the key does not exist
    Exception → StorageUnavailable    the store cannot be reached or used (endpoint down,
                                      bucket missing, credentials refused, 5xx after retries)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import BinaryIO, Protocol

from storage.keys import validate_key, validate_prefix

MiB = 1024 * 1024


class ObjectNotFound(KeyError):
    """The key does not exist in the store."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"No object at key {self.key!r}."


class StorageUnavailable(Exception):
    """The store cannot be reached or used; the message says what to check."""


class ObjectStore(Protocol):
    """What speechbatch needs from a place to keep objects. Keys are `/`-separated, relative."""

    def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        """Store `data` at `key` (replacing it) and return its size."""

    def put_file(self, key: str, fileobj: BinaryIO, content_type: str) -> int:
        """Stream `fileobj` to `key` (replacing it), never whole in memory; return its size."""

    def get_bytes(self, key: str) -> bytes:
        """The whole object; ObjectNotFound when absent."""

    def iter_chunks(self, key: str, chunk_size: int = 65536) -> Iterator[bytes]:
        """The object in chunks; ObjectNotFound is raised by the call, before iteration."""

    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when absent."""

    def delete(self, key: str) -> None:
        """Remove the object; an absent key is not an error."""

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Keys starting with `prefix` (a string prefix, not a folder), fetched page by page."""

    def list_keys_older_than(self, prefix: str, before: datetime) -> Iterator[str]:
        """The keys of `list_keys(prefix)` last written before `before` (timezone-aware)."""

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """A short-lived GET URL for clients, or None when the store cannot make one."""

    def check(self) -> None:
        """Raise StorageUnavailable unless the store is reachable and usable (for /healthz)."""

    def ensure_exists(self) -> None:
        """Create the bucket (or folder) behind the store when it does not exist yet."""

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class MemoryObjectStore:
    """Objects in a dict: the in-memory store for tests (thread-safe, never unavailable).

    `clock` stamps each write, as a real store's last-modified time would.
    """

    def __init__(self, clock: Callable[[], datetime] = _utc_now) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.written_at: dict[str, datetime] = {}
        self.clock = clock
        self._lock = threading.Lock()

    def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        with self._lock:
            self.objects[validate_key(key)] = (bytes(data), content_type)
            self.written_at[key] = self.clock()
        return len(data)

    def put_file(self, key: str, fileobj: BinaryIO, content_type: str) -> int:
        parts = []
        while chunk := fileobj.read(MiB):
            parts.append(chunk)
        return self.put_bytes(key, b"".join(parts), content_type)

    def get_bytes(self, key: str) -> bytes:
        with self._lock:
            found = self.objects.get(validate_key(key))
        if found is None:
            raise ObjectNotFound(key)
        return found[0]

    def iter_chunks(self, key: str, chunk_size: int = 65536) -> Iterator[bytes]:
        data = self.get_bytes(key)
        return iter([data[i : i + chunk_size] for i in range(0, len(data), chunk_size)])

    def size(self, key: str) -> int | None:
        with self._lock:
            found = self.objects.get(validate_key(key))
        return None if found is None else len(found[0])

    def delete(self, key: str) -> None:
        with self._lock:
            self.objects.pop(validate_key(key), None)
            self.written_at.pop(key, None)

    def list_keys(self, prefix: str) -> Iterator[str]:
        validate_prefix(prefix.rstrip("/"))
        with self._lock:
            keys = sorted(k for k in self.objects if k.startswith(prefix))
        return iter(keys)

    def list_keys_older_than(self, prefix: str, before: datetime) -> Iterator[str]:
        keys = list(self.list_keys(prefix))
        with self._lock:
            old = [k for k in keys if k in self.written_at and self.written_at[k] < before]
        return iter(old)

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return None

    def check(self) -> None:
        """Always usable."""

    def ensure_exists(self) -> None:
        """Nothing to create."""

    def close(self) -> None:
        """Nothing to release."""
