"""An archive dry run's listing: how many items a `source.prefix` would become, bounded.

`POST /v1/jobs?dry_run=true` with `source` lists the prefix page by page with the job's own
filters (pattern, min/max_bytes, modified_since), the expansion's key rules (an unreadable key
would be a failed item) and, for an incremental job, one indexed query per page for objects
transcribed before (those would be `skipped`, at no cost). Memory is one page and a fixed
sample, whatever the archive's size.

It is bounded twice, since it answers within a request: after `budget_s` seconds or
`max_objects` listed objects it stops and reports what it has counted so far as a lower
bound (`complete: false`, `items_at_least`). It also stops at the job's own item cap
(SPEECHBATCH_ARCHIVE_MAX_ITEMS), where the job's listing would stop too.

Audio seconds: the size of an object does not say its duration (a WAV's needs its header's
byte rate; MP3/Ogg say none), and a header read per object is one request per object, too
many for 100,000 of them. So a uniform sample of the objects counted (reservoir sampling,
`SAMPLE_SIZE` at most, `random.Random` as a parameter) has its header read (WAV and FLAC
state their length: `jobs.audio_header`), and audio seconds are extrapolated as the sample's
seconds per byte times the bytes to transcribe; `audio_seconds_basis` says so, and with no
sampled duration known the estimate has no audio seconds at all instead of a guess.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from jobs.archive_keys import Filters, archive_digest, readable_key
from jobs.archive_reads import transcribed_digests
from jobs.archives import MAX_SOURCE_CHARS, ArchivePlan
from jobs.audio_header import stored_seconds
from storage.objects import ObjectInfo, ObjectStore, StorageUnavailable
from storage.stores import BucketStores

DEFAULT_BUDGET_S = 10.0
DEFAULT_MAX_OBJECTS = 100_000
SAMPLE_SIZE = 50  # headers read for the duration estimate (one small GET each)
SAMPLE_BUDGET_S = 3.0  # at most this long on them, on top of the listing's budget

# digests -> those an earlier succeeded item of the tenant transcribed (incremental skips)
Transcribed = Callable[[Sequence[str]], set[str]]


@dataclass
class ArchiveCount:
    """What the listing found (sizes in bytes)."""

    listed: int = 0  # objects looked at
    items: int = 0  # objects that pass the filters: the job's items
    skipped: int = 0  # of them, transcribed before (incremental): skipped, no cost
    unreadable: int = 0  # of them, keys we do not read: failed items, no cost
    bytes: int = 0  # of the items
    bytes_to_transcribe: int = 0  # of the items that would be transcribed
    complete: bool = True
    stopped_by: str | None = None  # "time" | "objects" | "max_items" | "error"
    error: str | None = None
    sampled: int = 0  # headers read
    sampled_known: int = 0  # of them, with a duration in the header
    sampled_seconds: float = 0.0
    sampled_bytes: int = 0  # of those with a known duration
    _sample: list[ObjectInfo] = field(default_factory=list, repr=False)

    def audio_seconds(self) -> float | None:
        """Seconds to transcribe, extrapolated from the sample (None: nothing to go on)."""
        if self.bytes_to_transcribe == 0:
            return 0.0
        if not self.sampled_bytes:
            return None
        return self.sampled_seconds / self.sampled_bytes * self.bytes_to_transcribe


@dataclass(frozen=True)
class CountLimits:
    budget_s: float = DEFAULT_BUDGET_S
    max_objects: int = DEFAULT_MAX_OBJECTS
    max_items: int = 1_000_000
    page: int = 1000


def count_archive(
    lister: ObjectStore,
    plan: ArchivePlan,
    job: dict[str, Any],
    *,
    transcribed: Transcribed | None,
    limits: CountLimits = CountLimits(),
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> ArchiveCount:
    """List `plan`'s prefix as the expansion would, within `limits`; `job` holds the
    provider, model and options the digests of incremental skips are made of."""
    rng = rng or random.Random(0)
    prefix, count = plan.location.prefix, ArchiveCount()
    filters = Filters(plan.pattern, plan.min_bytes, plan.max_bytes, plan.modified_since)
    started, cursor = clock(), None
    while True:
        room = min(limits.page, limits.max_objects - count.listed)
        try:
            page = lister.list_page(prefix, start_after=cursor, limit=room)
        except (StorageUnavailable, ValueError, OSError) as exc:
            count.complete, count.stopped_by, count.error = False, "error", str(exc)
            break
        matched: list[ObjectInfo] = []
        for obj in page.objects:
            if count.items + len(matched) >= limits.max_items:
                count.stopped_by = "max_items"
                break
            count.listed += 1
            relative = obj.key[len(prefix) :]
            if obj.key.endswith("/") or not filters.matches(relative, obj.size, obj.last_modified):
                continue
            matched.append(obj)
        _tally(count, matched, plan, job, transcribed, rng)
        if count.stopped_by == "max_items" or not page.truncated or not page.objects:
            break
        cursor = page.objects[-1].key
        if count.listed >= limits.max_objects:
            count.complete, count.stopped_by = False, "objects"
            break
        if clock() - started >= limits.budget_s:
            count.complete, count.stopped_by = False, "time"
            break
    _read_sample(lister, count, clock)
    return count


def _tally(
    count: ArchiveCount,
    matched: list[ObjectInfo],
    plan: ArchivePlan,
    job: dict[str, Any],
    transcribed: Transcribed | None,
    rng: random.Random,
) -> None:
    """Count one page's matching objects: skipped, unreadable, or to transcribe (sampled)."""
    digests: dict[str, str] = {}
    for obj in matched:
        source = plan.location.object_url(obj.key)
        if readable_key(obj.key) and len(source) <= MAX_SOURCE_CHARS:
            digests[obj.key] = archive_digest(source, obj.etag, job)
    done = transcribed(sorted(set(digests.values()))) if transcribed and digests else set()
    for obj in matched:
        count.items += 1
        count.bytes += obj.size
        digest = digests.get(obj.key)
        if digest is None:
            count.unreadable += 1
        elif digest in done:
            count.skipped += 1
        else:
            count.bytes_to_transcribe += obj.size
            _offer(count, obj, rng)


def _offer(count: ArchiveCount, obj: ObjectInfo, rng: random.Random) -> None:
    """Reservoir sampling (algorithm R) over the objects to transcribe."""
    seen = count.items - count.skipped - count.unreadable
    if len(count._sample) < SAMPLE_SIZE:
        count._sample.append(obj)
        return
    slot = rng.randrange(seen)
    if slot < SAMPLE_SIZE:
        count._sample[slot] = obj


def _read_sample(store: ObjectStore, count: ArchiveCount, clock: Callable[[], float]) -> None:
    started = clock()
    for obj in count._sample:
        if clock() - started >= SAMPLE_BUDGET_S:
            break
        seconds = stored_seconds(store, obj.key)
        count.sampled += 1
        if seconds is not None:
            count.sampled_known += 1
            count.sampled_seconds += seconds
            count.sampled_bytes += obj.size
    count._sample.clear()


def count_plan(
    sessions: sessionmaker[Session],
    stores: BucketStores,
    tenant_id: str,
    job: dict[str, Any],
    plan: ArchivePlan,
    limits: CountLimits,
) -> ArchiveCount:
    """`count_archive` on the plan's bucket or folder, with the tenant's earlier
    transcripts as the incremental skips (one query per page)."""
    place = plan.location
    lister = stores.bucket(place.bucket) if place.scheme == "s3" else stores.folders()

    def transcribed(digests: Sequence[str]) -> set[str]:
        with sessions() as session:
            return transcribed_digests(session, tenant_id, digests)

    incremental = transcribed if plan.incremental else None
    return count_archive(lister, plan, job, transcribed=incremental, limits=limits)
