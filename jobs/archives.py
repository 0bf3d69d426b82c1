"""Archive sources: which prefixes a tenant may list, and what an archive job stores.

An STT job may name `source{prefix, pattern, min_bytes, max_bytes, modified_since,
incremental}` instead of `items`; a worker lists the prefix into items (`workers.expand`).
The rule that keeps tenants apart (issue 12):

- a prefix is listed only where `SPEECHBATCH_ARCHIVE_BUCKETS` says tenants may read:
  comma-separated `[tenant=]s3://bucket[/prefix]` or `[tenant=]file:///dir` entries (a bare
  `bucket[/prefix]` is S3); an entry with `tenant=` is for that tenant (by name) only;
- a prefix that overlaps the service's own storage (`SPEECHBATCH_STORAGE_URL`: everyone's
  uploads, transcripts and manifests) is refused even when an entry covers it;
- an output destination in another bucket (`output{url, layout: mirror}`) is written only
  where an entry marked `write:` says tenants may write (`jobs.archive_outputs`), under the
  same tenant and own-storage rules; a `write:` entry is never listed, a plain one never
  written;
- item sources are never user-supplied `s3://`/`file://` URLs (`jobs.validation` refuses
  them), so the listing made from a vetted prefix is the only way such a source appears.

Local mode (the CLI without an API) is one person on their own machine: any local directory
may be listed there, and S3 prefixes follow the same entries.

What a listing does with the objects it finds (filters, key rules, digests, item ids, mirror
keys) is `jobs.archive_keys`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Literal

from jobs.error_codes import ErrorCode
from jobs.errors import invalid
from jobs.models import ArchiveExpansion
from jobs.schemas import JobCreate

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
MAX_PATTERN_STARS = 8
MAX_SOURCE_CHARS = 2048


@dataclass(frozen=True)
class Location:
    """A listable place: an S3 bucket and key prefix, or a folder (`prefix` below `/`)."""

    scheme: Literal["s3", "file"]
    bucket: str  # "" for a folder
    prefix: str  # a string prefix of keys ("calls/2026/"); for a folder, its path without "/"

    @property
    def url(self) -> str:
        return (
            f"s3://{self.bucket}/{self.prefix}" if self.scheme == "s3" else f"file:///{self.prefix}"
        )

    def object_url(self, key: str) -> str:
        """The item source of the object at `key` (a key of the whole bucket or of `/`)."""
        return f"s3://{self.bucket}/{key}" if self.scheme == "s3" else f"file:///{key}"

    def overlaps(self, other: Location) -> bool:
        """Whether a key could be under both (one prefix starts with the other)."""
        if (self.scheme, self.bucket) != (other.scheme, other.bucket):
            return False
        return self.prefix.startswith(other.prefix) or other.prefix.startswith(self.prefix)

    def covers(self, other: Location) -> bool:
        """Whether every key under `other` is under this entry, folder by folder."""
        if (self.scheme, self.bucket) != (other.scheme, other.bucket):
            return False
        root = self.prefix if not self.prefix or self.prefix.endswith("/") else self.prefix + "/"
        return other.prefix.startswith(root)


def _check_prefix(prefix: str, what: str) -> str:
    if any(unicodedata.category(ch).startswith("C") for ch in prefix) or "\\" in prefix:
        raise ValueError(f"{what} contains a control character or a backslash.")
    if any(part in {".", ".."} for part in prefix.split("/")) or "//" in prefix:
        raise ValueError(f"{what} has an empty, '.' or '..' segment.")
    return prefix


def parse_location(url: str, what: str = "source.prefix") -> Location:
    """`s3://bucket[/prefix]` or `file:///absolute/dir` as a Location; ValueError says why."""
    if url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ValueError(f"{what} {url!r} does not name an S3 bucket (s3://bucket/prefix/).")
        return Location("s3", bucket, _check_prefix(prefix, what))
    if url.startswith("file:///"):
        path = url.removeprefix("file://")
        if not PurePosixPath(path).is_absolute():
            raise ValueError(f"{what} {url!r} is not an absolute folder (file:///dir/).")
        return Location("file", "", _check_prefix(path.lstrip("/"), what))
    raise ValueError(f"{what} {url!r} must start with s3:// or file:///.")


@dataclass(frozen=True)
class ArchiveEntry:
    """One SPEECHBATCH_ARCHIVE_BUCKETS entry: a place, for one tenant or (None) for all."""

    location: Location
    tenant: str | None = None
    write: bool = False  # `write:`: a place outputs may go to, not one that is listed


def parse_archive_buckets(value: str) -> tuple[ArchiveEntry, ...]:
    """The entries of SPEECHBATCH_ARCHIVE_BUCKETS; ValueError names a bad one."""
    entries = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        tenant, _, place = part.rpartition("=")
        write = place.startswith("write:")
        place = place.removeprefix("write:")
        if "://" not in place:
            place = f"s3://{place}"
        try:
            location = parse_location(place, "entry")
            entries.append(ArchiveEntry(location, tenant.strip() or None, write))
        except ValueError as exc:
            raise ValueError(
                f"SPEECHBATCH_ARCHIVE_BUCKETS entry {part!r} is not usable ({exc}); write "
                "e.g. archive-bucket/calls, s3://archive, acme=s3://acme-calls, file:///srv/rec or "
                "write:s3://transcripts."
            ) from None
    return tuple(entries)


def storage_location(storage_url: str) -> Location:
    """Where the service keeps its own objects (`SPEECHBATCH_STORAGE_URL`), as a Location."""
    root = parse_location(storage_url.rstrip("/"), "SPEECHBATCH_STORAGE_URL")
    if root.prefix:
        root = Location(root.scheme, root.bucket, root.prefix + "/")
    return root


@dataclass(frozen=True)
class ArchivePolicy:
    """Where archive jobs may list; the default allows nothing."""

    entries: tuple[ArchiveEntry, ...] = ()
    storage: Location | None = None
    any_local_dir: bool = False  # local mode: the CLI's user reads their own folders
    max_items: int = 1_000_000  # objects one job may take (SPEECHBATCH_ARCHIVE_MAX_ITEMS)

    @classmethod
    def from_settings(
        cls, archive_buckets: str, storage_url: str, *, max_items: int, local: bool = False
    ) -> ArchivePolicy:
        entries = parse_archive_buckets(archive_buckets)
        return cls(entries, storage_location(storage_url), local, max_items)

    @property
    def names_tenants(self) -> bool:
        return any(entry.tenant for entry in self.entries)

    def check(self, location: Location, tenant_name: str | None) -> None:
        """Raise ApiError `archive_forbidden` unless this tenant may list `location`."""
        if self.storage is not None and location.overlaps(self.storage):
            raise invalid(
                ErrorCode.ARCHIVE_FORBIDDEN,
                f"source.prefix {location.url!r} overlaps this service's own storage, which "
                "holds every tenant's uploads and outputs; archives are read from other places.",
            )
        if location.scheme == "file" and self.any_local_dir:
            return
        for entry in self.entries:
            if entry.write or entry.tenant not in (None, tenant_name):
                continue
            if entry.location.covers(location) or entry.location == location:
                return
        raise invalid(
            ErrorCode.ARCHIVE_FORBIDDEN,
            f"source.prefix {location.url!r} is not a place this deployment lets you read; "
            "its operator lists those in SPEECHBATCH_ARCHIVE_BUCKETS.",
        )


@dataclass(frozen=True)
class ArchivePlan:
    """A checked `source`: what the expansion row records."""

    location: Location
    pattern: str | None
    min_bytes: int | None
    max_bytes: int | None
    modified_since: datetime | None
    incremental: bool
    destination: Location | None = None  # output.url (jobs.archive_outputs)

    def row(self, job_id: str, *, max_items: int, now: datetime) -> ArchiveExpansion:
        return ArchiveExpansion(
            job_id=job_id,
            location=self.location.url,
            pattern=self.pattern,
            min_bytes=self.min_bytes,
            max_bytes=self.max_bytes,
            modified_since=self.modified_since,
            incremental=self.incremental,
            max_items=max_items,
            state="expanding",
            cursor=None,
            next_seq=0,
            listed=0,
            failures=0,
            updated_at=now,
        )


def plan_archive(body: JobCreate, policy: ArchivePolicy, tenant_name: str | None) -> ArchivePlan:
    """Check a body's `source` (with its `items` and `output`); ApiError 422 says what is wrong."""
    source = body.source
    assert source is not None  # the caller branches on it
    if body.kind != "stt":
        raise invalid(ErrorCode.INVALID_ARCHIVE, "source (an archive prefix) is for STT jobs only.")
    if body.items:
        raise invalid(
            ErrorCode.INVALID_ARCHIVE, "Give either items or source (an archive prefix), not both."
        )
    try:
        location = parse_location(source.prefix)
    except ValueError as exc:
        raise invalid(ErrorCode.INVALID_ARCHIVE, str(exc)) from None
    if source.pattern is not None and source.pattern.count("*") > MAX_PATTERN_STARS:
        raise invalid(
            ErrorCode.INVALID_ARCHIVE,
            f"source.pattern has more than {MAX_PATTERN_STARS} '*'; simplify it.",
        )
    low, high = source.min_bytes, source.max_bytes
    if low is not None and high is not None and low > high:
        raise invalid(ErrorCode.INVALID_ARCHIVE, "source.min_bytes is larger than max_bytes.")
    since = source.modified_since
    if since is not None:
        try:  # documented: no offset means UTC
            since = since.astimezone(UTC) if since.tzinfo else since.replace(tzinfo=UTC)
        except (OverflowError, ValueError):
            raise invalid(
                ErrorCode.INVALID_ARCHIVE, "source.modified_since is outside the years 1-9999."
            ) from None
    policy.check(location, tenant_name)
    return ArchivePlan(location, source.pattern, low, high, since, source.incremental)


NO_ARCHIVES = ArchivePolicy()  # the default: no prefix may be listed


@lru_cache(maxsize=8)
def archive_policy(buckets: str, storage_url: str, max_items: int) -> ArchivePolicy:
    """The API's policy from its settings (`archive_buckets`, `storage_url`,
    `archive_max_items`), parsed once per distinct value."""
    return ArchivePolicy.from_settings(buckets, storage_url, max_items=max_items)
