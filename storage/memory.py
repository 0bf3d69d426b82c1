"""The in-memory object store: a dict behind the `ObjectStore` seam (`storage.objects`).

For unit tests that need a store and no disk, and the default of `jobs.schedules`' rules
where no real store is passed. It raises the seam's `ObjectNotFound` for a missing key,
refuses the same keys as the real stores, and is never unavailable.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import BinaryIO

from storage.keys import validate_key, validate_prefix
from storage.objects import (
    BaseObjectWriter,
    MiB,
    ObjectInfo,
    ObjectNotFound,
    ObjectPage,
    ObjectWriter,
)


class MemoryObjectWriter(BaseObjectWriter):
    """A BytesIO that `commit()` puts into a MemoryObjectStore; nothing counts as stored
    before that, since memory is not durable."""

    def __init__(self, store: MemoryObjectStore, key: str, content_type: str) -> None:
        super().__init__(validate_key(key))
        self._store = store
        self._content_type = content_type
        self._buffer = io.BytesIO()

    def _write(self, data: memoryview) -> int:
        return self._buffer.write(data)

    def _seek(self, offset: int, whence: int) -> int:
        return self._buffer.seek(offset, whence)

    def _tell(self) -> int:
        return self._buffer.tell()

    def _read(self, size: int) -> bytes:
        return self._buffer.read(size)

    def _commit(self) -> int:
        size = self._store.put_bytes(self.key, self._buffer.getvalue(), self._content_type)
        self._stored(size)
        self._buffer = io.BytesIO()
        return size

    def _abort(self) -> None:
        self._buffer = io.BytesIO()


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

    def open_writer(self, key: str, content_type: str) -> ObjectWriter:
        return MemoryObjectWriter(self, key, content_type)

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

    def copy(self, src: str, dst: str) -> int:
        with self._lock:
            found = self.objects.get(validate_key(src))
            if found is None:
                raise ObjectNotFound(src)
            self.objects[validate_key(dst)] = found
            self.written_at[dst] = self.clock()
        return len(found[0])

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

    def list_page(
        self, prefix: str, *, start_after: str | None = None, limit: int = 1000
    ) -> ObjectPage:
        with self._lock:
            keys = sorted(k for k in self.objects if k.startswith(prefix))
            after = [k for k in keys if start_after is None or k > start_after]
            objects = [
                ObjectInfo(
                    k,
                    len(self.objects[k][0]),
                    hashlib.md5(self.objects[k][0], usedforsecurity=False).hexdigest(),
                    self.written_at[k],
                )
                for k in after[:limit]
            ]
        return ObjectPage(objects, truncated=len(after) > limit)

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return None

    def check(self) -> None:
        """Always usable."""

    def ensure_exists(self) -> None:
        """Nothing to create."""

    def close(self) -> None:
        """Nothing to release."""
