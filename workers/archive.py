"""Reading archive objects: the store behind an `s3://` or `file:///` item source.

An archive item's source is the URL of the object its job's listing found
(`jobs.archives`); only a listing of a vetted prefix makes such an item, since item sources a
client sends are refused unless they are uploads or http(s). `ArchiveStores` opens the store
for a location once per process: S3 buckets share the configured store's boto3 client (same
endpoint and credentials, as issue 12 asks), folders are read through a `LocalObjectStore`
rooted at `/` (its key checks and symlink-resolving root check apply to every read).

Reads stream in chunks and stop at SPEECHBATCH_MAX_SOURCE_BYTES, checked first against the
object's size, exactly as uploads and URLs are capped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from jobs.archive_ledger import mirror_root
from jobs.archives import Location, mirror_key, parse_location, readable_key
from jobs.error_codes import ErrorCode
from jobs.media import AudioRejected, check_audio
from jobs.records import ClaimedItem
from storage.localfs import LocalObjectStore
from storage.objects import ObjectNotFound, ObjectStore, StorageUnavailable
from storage.s3 import S3ObjectStore, s3_client
from workers.providers.base import AudioInput
from workers.providers.errors import InvalidInput, UnsupportedAudio

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ARCHIVE_SCHEMES = ("s3://", "file:///")
_KEPT_JOBS = 10_000  # mirror roots remembered per process (a job's never changes)


def is_archive_source(source: str | None) -> bool:
    return bool(source) and str(source).startswith(ARCHIVE_SCHEMES)


@dataclass(frozen=True)
class ArchiveObject:
    """Where an archive item's recording lives: a store and the key in it."""

    store: ObjectStore
    key: str
    location: Location  # the object's own URL, parsed (prefix = its key)


class ArchiveStores:
    """The stores archive locations are read from, opened on first use and kept.

    `endpoint_url` is used only when the configured store is not S3 (local mode reading an
    S3 archive); otherwise its client is shared.
    """

    def __init__(
        self, configured: ObjectStore | None = None, endpoint_url: str | None = None
    ) -> None:
        self.configured, self.endpoint_url = configured, endpoint_url
        self._stores: dict[str, ObjectStore] = {}
        self._mirrors: dict[str, str | None] = {}
        self._own_client: S3Client | None = None
        self._lock = threading.Lock()

    def _client(self) -> S3Client:
        if isinstance(self.configured, S3ObjectStore):
            return self.configured.client
        if self._own_client is None:
            self._own_client = s3_client(self.endpoint_url)
        return self._own_client

    def store_for(self, location: Location) -> ObjectStore:
        """The store whose keys are `location`'s keys (a whole bucket, or `/`)."""
        name = f"s3:{location.bucket}" if location.scheme == "s3" else "file"
        with self._lock:
            store = self._stores.get(name)
            if store is None:
                if location.scheme == "s3":
                    store = S3ObjectStore(self._client(), location.bucket)
                else:
                    store = LocalObjectStore(Path("/"))
                self._stores[name] = store
            return store

    def lister(self, location: Location) -> ObjectStore:
        """The store to list `location` in; StorageUnavailable when a folder is missing."""
        if location.scheme == "file":
            folder = Path("/" + location.prefix.rpartition("/")[0])
            if not folder.is_dir():
                raise StorageUnavailable(f"folder {folder} does not exist or is not a folder")
        return self.store_for(location)

    def open(self, source: str) -> ArchiveObject:
        """The store and key of an item source URL; InvalidInput (the item fails, once) for
        one no store reads safely, e.g. a retried item that never was an object."""
        try:
            location = parse_location(source, "source")
        except ValueError as exc:
            raise InvalidInput(str(exc), code=ErrorCode.UNREADABLE_KEY) from None
        if not readable_key(location.prefix):
            raise InvalidInput(
                f"{source} is not an object speechbatch reads ('..' or empty segments, a "
                "control character, over 200 characters, or a folder).",
                code=ErrorCode.UNREADABLE_KEY,
            )
        return ArchiveObject(self.store_for(location), location.prefix, location)

    def mirror_root(self, job_id: str, sessions: sessionmaker[Session]) -> str | None:
        """The archive URL a mirror-layout job's outputs are laid out below (None: the job
        layout), read once per job and process."""
        if job_id not in self._mirrors:
            with sessions() as session:
                root = mirror_root(session, job_id)
            with self._lock:
                if len(self._mirrors) >= _KEPT_JOBS:
                    self._mirrors.clear()
                self._mirrors[job_id] = root
        return self._mirrors[job_id]

    def close(self) -> None:
        if self._own_client is not None:
            self._own_client.close()


def _missing(source: str) -> InvalidInput:
    return InvalidInput(
        f"{source} is no longer there (deleted or renamed since the archive was listed).",
        code=ErrorCode.SOURCE_NOT_FOUND,
    )


def archive_size(obj: ArchiveObject, source: str) -> int:
    size = obj.store.size(obj.key)
    if size is None:
        raise _missing(source)
    return size


def read_archive_source(obj: ArchiveObject, source: str, *, max_bytes: int) -> AudioInput:
    """The recording, read in chunks and refused past `max_bytes` (SOURCE_TOO_LARGE)."""
    if archive_size(obj, source) > max_bytes:
        raise _too_large(source, max_bytes)
    try:
        chunks = obj.store.iter_chunks(obj.key, 1024 * 1024)
    except ObjectNotFound:
        raise _missing(source) from None
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > max_bytes:  # it grew since the size was read
            raise _too_large(source, max_bytes)
    try:
        content_type = check_audio(bytes(data[:64]), f"Source {source}")
    except AudioRejected as rejected:
        raise UnsupportedAudio(rejected.message, code=rejected.code) from None
    return AudioInput(
        data=bytes(data), filename=obj.key.rsplit("/", 1)[-1], content_type=content_type
    )


def spool_archive_source(obj: ArchiveObject, source: str, path: Path) -> None:
    """The object copied to `path` chunk by chunk (a recording over the provider's limit)."""
    try:
        chunks: Iterator[bytes] = obj.store.iter_chunks(obj.key, 1024 * 1024)
    except ObjectNotFound:
        raise _missing(source) from None
    with path.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)


def _too_large(source: str, max_bytes: int) -> InvalidInput:
    return InvalidInput(
        f"{source} is larger than {max_bytes} bytes (SPEECHBATCH_MAX_SOURCE_BYTES); "
        "split the recording or raise the limit.",
        code=ErrorCode.SOURCE_TOO_LARGE,
    )


def archive_stem(
    stores: ArchiveStores, sessions: sessionmaker[Session], item: ClaimedItem
) -> str | None:
    """The mirror-layout key of an archive item's transcript JSON: its path below the
    archive prefix, under the output prefix and tenant. None for a job-layout job, or when
    that key would break our key rules (the item keeps the job layout then)."""
    root = stores.mirror_root(item.job_id, sessions)
    source = item.source or ""
    if root is None or not source.startswith(root):
        return None
    return mirror_key(item.output_prefix, item.tenant_id, source.removeprefix(root), "json")
