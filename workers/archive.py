"""Reading archive objects: the store behind an `s3://` or `file:///` item source.

An archive item's source is the URL of the object its job's listing found
(`jobs.archives`); only a listing of a vetted prefix makes such an item, since item sources a
client sends are refused unless they are uploads or http(s). `ArchiveStores` opens the store
for a location once per process (`storage.stores.BucketStores`): S3 buckets share the
configured store's boto3 client (same endpoint and credentials, as issue 12 asks), folders
are read through a `LocalObjectStore` rooted at `/` (its key checks and symlink-resolving
root check apply to every read). The same stores receive a mirror-layout job's outputs when
it names `output.url` (`jobs.archive_outputs`).

Reads stream in chunks and stop at SPEECHBATCH_MAX_SOURCE_BYTES, checked first against the
object's size, exactly as uploads and URLs are capped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from jobs.archive_keys import mirror_key, readable_key
from jobs.archive_outputs import OutputStores, destination_key
from jobs.archive_reads import Mirror, mirror_of
from jobs.archives import Location, parse_location
from jobs.error_codes import ErrorCode
from jobs.media import AudioRejected, check_audio
from jobs.records import ClaimedItem
from storage.objects import ObjectNotFound, ObjectStore, StorageUnavailable
from storage.stores import BucketStores
from workers.providers.base import AudioInput
from workers.providers.errors import InvalidInput, UnsupportedAudio

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
    """The stores archive locations are read from (and `output.url` destinations written
    to), opened on first use and kept (`storage.stores.BucketStores`).

    `endpoint_url` is used only when the configured store is not S3 (local mode reading an
    S3 archive); otherwise its client is shared.
    """

    def __init__(
        self, configured: ObjectStore | None = None, endpoint_url: str | None = None
    ) -> None:
        self.configured, self.endpoint_url = configured, endpoint_url
        self.buckets = BucketStores(configured, endpoint_url=endpoint_url)
        self._mirrors: dict[str, Mirror | None] = {}
        self._lock = threading.Lock()

    def store_for(self, location: Location) -> ObjectStore:
        """The store whose keys are `location`'s keys (a whole bucket, or `/`)."""
        if location.scheme == "s3":
            return self.buckets.bucket(location.bucket)
        return self.buckets.folders()

    def outputs(self, base: ObjectStore) -> OutputStores:
        """Where an item's output keys are: `base`, or the bucket an output URL names."""
        return OutputStores(base, self.buckets)

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

    def mirror(self, job_id: str, sessions: sessionmaker[Session]) -> Mirror | None:
        """How a mirror-layout job's outputs are laid out (None: the job layout), read
        once per job and process."""
        if job_id not in self._mirrors:
            with sessions() as session:
                found = mirror_of(session, job_id)
            with self._lock:
                if len(self._mirrors) >= _KEPT_JOBS:
                    self._mirrors.clear()
                self._mirrors[job_id] = found
        return self._mirrors[job_id]

    def close(self) -> None:
        self.buckets.close()


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
    archive prefix, under the output prefix and tenant, or (`output.url`) the URL of that
    path below the destination. None for a job-layout job, or when that key would break our
    key rules (the item keeps the job layout then)."""
    mirror = stores.mirror(item.job_id, sessions)
    source = item.source or ""
    if mirror is None or not source.startswith(mirror.root):
        return None
    relative = source.removeprefix(mirror.root)
    if mirror.destination is not None:
        return destination_key(mirror.destination, relative, "json")
    return mirror_key(item.output_prefix, item.tenant_id, relative, "json")


def remove_mirrored(
    stores: ArchiveStores, sessions: sessionmaker[Session], base: ObjectStore, item: ClaimedItem
) -> int:
    """Delete a canceled mirror-layout item's files (its JSON and every rendering), which
    are not below the job's folder; returns how many keys it deleted (0: not mirrored)."""
    stem = archive_stem(stores, sessions, item)
    if stem is None:
        return 0
    outputs, base_key = stores.outputs(base), stem.removesuffix(".json")
    formats = [f for f in item.options.get("transcript_formats", []) if f != "json"]
    keys = [stem, *(f"{base_key}.{fmt}" for fmt in formats)]
    for key in keys:
        outputs.delete(key)
    return len(keys)
