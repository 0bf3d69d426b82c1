"""The object store seam: where audio, transcripts and manifests live.

`ObjectStore` is the interface the rest of speechbatch codes against. Implementations:

- `storage.s3.S3ObjectStore`: any S3 API (AWS, SeaweedFS, MinIO, R2) through a boto3 client.
- `storage.localfs.LocalObjectStore`: a directory, for embedded mode (`file:///abs/path`).
- `storage.memory.MemoryObjectStore`: a dict, for unit tests that need a store and no disk.

`storage.stores.open_object_store` picks one from a URL. All take keys relative to their root
(S3: bucket + prefix), refuse keys that could escape it (`storage.keys.validate_key`), and
raise the same two errors:

    KeyError  → ObjectNotFound        the key does not exist
    Exception → StorageUnavailable    the store cannot be reached or used (endpoint down,
                                      bucket missing, credentials refused, 5xx after retries)

`ObjectStore.open_writer` streams an object of unknown length (TTS audio as it arrives) into
an `ObjectWriter`: a seekable binary file that libsndfile can encode into directly. Nothing
appears at the key until `commit()`; a stream that breaks off is `abort()`ed (or left to the
`with` block) and leaves no object behind. `BaseObjectWriter` (here) is the open → committed |
aborted lifecycle the three stores' writers share.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import BinaryIO, Literal, Protocol, Self

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


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: its key (relative to the store's root), size, ETag (a version
    tag: it changes when the content does) and last-modified time (timezone-aware)."""

    key: str
    size: int
    etag: str
    last_modified: datetime


@dataclass(frozen=True)
class ObjectPage:
    """One page of a listing, in key order; `truncated` when more keys may follow."""

    objects: list[ObjectInfo]
    truncated: bool


class ObjectWriter(Protocol):
    """A binary file that becomes the object at its key on `commit()`, and never before.

    It is what `soundfile.SoundFile(writer, mode="w", ...)` needs: libsndfile's virtual IO
    writes, seeks and tells, and WAV/FLAC/MP3 encoders seek back into the first ~64 KiB at
    close to patch their headers. Stores that keep only part of the object in memory (S3)
    raise io.UnsupportedOperation for seeks, reads and writes outside that part.

    libsndfile's callbacks print and drop Python exceptions, so a writer remembers the first
    failed write or seek and `commit()` raises it again instead of storing a corrupt object.
    A writer is for one stream on one thread.
    """

    @property
    def bytes_stored(self) -> int:
        """Bytes already handed to durable storage (S3: parts uploaded), before any commit."""

    @property
    def first_stored_at(self) -> float | None:
        """`time.monotonic()` of the first durable write, or None before it."""

    @property
    def closed(self) -> bool:
        """True once committed or aborted; the writer cannot be used any more."""

    def write(self, data: bytes) -> int:
        """Write at the current position (past the end: the gap is zeros); return len(data)."""

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position as a file does and return it."""

    def tell(self) -> int:
        """The current position."""

    def read(self, size: int = -1) -> bytes:
        """Read back what was written, from the current position."""

    def seekable(self) -> bool:
        """Always True."""

    def readable(self) -> bool:
        """True: what is still held can be read back."""

    def writable(self) -> bool:
        """Always True."""

    def flush(self) -> None:
        """Nothing to do: durability comes with commit()."""

    def commit(self) -> int:
        """Make the object visible at the key (replacing any earlier one); return its size."""

    def abort(self) -> None:
        """Discard what was written; an earlier object at the key stays. Idempotent."""

    def close(self) -> None:
        """abort() unless committed: closing is never a way to publish."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """abort() unless committed."""


class ObjectStore(Protocol):
    """What speechbatch needs from a place to keep objects. Keys are `/`-separated, relative."""

    def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        """Store `data` at `key` (replacing it) and return its size."""

    def put_file(self, key: str, fileobj: BinaryIO, content_type: str) -> int:
        """Stream `fileobj` to `key` (replacing it), never whole in memory; return its size."""

    def open_writer(self, key: str, content_type: str) -> ObjectWriter:
        """A writable, seekable file for `key`; nothing appears at `key` until commit()."""

    def get_bytes(self, key: str) -> bytes:
        """The whole object; ObjectNotFound when absent."""

    def iter_chunks(self, key: str, chunk_size: int = 65536) -> Iterator[bytes]:
        """The object in chunks; ObjectNotFound is raised by the call, before iteration."""

    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when absent."""

    def copy(self, src: str, dst: str) -> int:
        """Copy the object at `src` to `dst` (replacing it) inside the store, without the
        bytes passing through this process where the store can (S3 CopyObject); its size.
        ObjectNotFound when `src` is absent."""

    def delete(self, key: str) -> None:
        """Remove the object; an absent key is not an error."""

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Keys starting with `prefix` (a string prefix, not a folder), fetched page by page."""

    def list_keys_older_than(self, prefix: str, before: datetime) -> Iterator[str]:
        """The keys of `list_keys(prefix)` last written before `before` (timezone-aware)."""

    def list_page(
        self, prefix: str, *, start_after: str | None = None, limit: int = 1000
    ) -> ObjectPage:
        """Up to `limit` objects whose key starts with `prefix` (a string prefix) and sorts
        after `start_after`, in key order: a listing resumes from its last key alone, so an
        archive's expansion keeps one page in memory and a cursor in the database."""

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """A short-lived GET URL for clients, or None when the store cannot make one."""

    def check(self) -> None:
        """Raise StorageUnavailable unless the store is reachable and usable (for /healthz)."""

    def ensure_exists(self) -> None:
        """Create the bucket (or folder) behind the store when it does not exist yet."""

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""


class BaseObjectWriter:
    """The lifecycle every store's writer shares: open, then committed or aborted, once.

    Subclasses implement the `_`-prefixed operations; this class checks the state around
    them, remembers the first failed write or seek (see ObjectWriter) and keeps
    `bytes_stored`/`first_stored_at` through `_stored()`.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.bytes_stored = 0
        self.first_stored_at: float | None = None
        self._state: Literal["open", "committed", "aborted"] = "open"
        self._failure: BaseException | None = None

    @property
    def closed(self) -> bool:
        return self._state != "open"

    def _check_open(self) -> None:
        if self._state != "open":
            raise ValueError(f"The writer for {self.key!r} is already {self._state}.")

    def write(self, data: bytes) -> int:
        self._check_open()
        try:
            return self._write(memoryview(data).cast("B"))
        except BaseException as exc:
            self._failure = self._failure or exc
            raise

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        try:
            return self._seek(offset, whence)
        except BaseException as exc:
            self._failure = self._failure or exc
            raise

    def tell(self) -> int:
        self._check_open()
        return self._tell()

    def read(self, size: int = -1) -> bytes:
        self._check_open()
        return self._read(size)

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self._check_open()

    def commit(self) -> int:
        self._check_open()
        if self._failure is not None:
            raise self._failure
        size = self._commit()
        self._state = "committed"
        return size

    def abort(self) -> None:
        if self._state == "open":
            self._abort()
            self._state = "aborted"

    def close(self) -> None:
        self.abort()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.abort()
            return
        try:
            self.abort()
        except Exception as abort_exc:  # the stream's own error is the one worth raising
            exc.add_note(f"Aborting the writer for {self.key!r} also failed: {abort_exc}")

    def _stored(self, total: int) -> None:
        """Record that `total` bytes of the object are now in durable storage."""
        if total > 0 and self.first_stored_at is None:
            self.first_stored_at = time.monotonic()
        self.bytes_stored = total

    def _write(self, data: memoryview) -> int:
        raise NotImplementedError

    def _seek(self, offset: int, whence: int) -> int:
        raise NotImplementedError

    def _tell(self) -> int:
        raise NotImplementedError

    def _read(self, size: int) -> bytes:
        raise NotImplementedError

    def _commit(self) -> int:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError
