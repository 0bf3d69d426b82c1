"""The dry run's bounded listing (`jobs.archive_count`) on an in-memory store, with a fake
clock: exact counts with filters and skips, each of its stops, and the sample it reads."""

from __future__ import annotations

import io
from collections.abc import Sequence
from itertools import count

import numpy as np
import soundfile as sf

from jobs.archive_count import SAMPLE_SIZE, CountLimits, count_archive
from jobs.archives import ArchivePlan, parse_location
from storage.memory import MemoryObjectStore

JOB = {"provider": "local", "model": "pocketsphinx", "options": {}}


def wav(seconds: float) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(int(seconds * 8000), dtype="int16"), 8000, format="WAV")
    return buffer.getvalue()


def store_of(n: int, body: bytes) -> MemoryObjectStore:
    store = MemoryObjectStore()
    for i in range(n):
        store.put_bytes(f"arc/{i:05d}.wav", body, "audio/wav")
    store.put_bytes("arc/readme.txt", b"x", "text/plain")
    return store


def plan(pattern: str | None = None, *, incremental: bool = True) -> ArchivePlan:
    return ArchivePlan(parse_location("s3://bkt/arc/"), pattern, None, None, None, incremental)


def test_a_full_listing_counts_items_skips_and_extrapolates_from_a_bounded_sample() -> None:
    """2,500 WAVs of 0.5 s: every one an item (the text file is not), those already
    transcribed counted as skipped, at most SAMPLE_SIZE headers read, 0.5 s per object."""
    store = store_of(2500, wav(0.5))
    asked: list[int] = []

    def transcribed(digests: Sequence[str]) -> set[str]:
        asked.append(len(digests))
        return set(digests[:10])

    found = count_archive(
        store, plan(), JOB, transcribed=transcribed, limits=CountLimits(page=1000)
    )
    assert (found.complete, found.listed, found.items, found.skipped) == (True, 2501, 2500, 30)
    assert asked == [1000, 1000, 500]
    assert found.sampled == SAMPLE_SIZE
    seconds = found.audio_seconds()
    assert seconds is not None and abs(seconds - 0.5 * 2470) < 1e-6


def test_each_budget_stops_the_listing_with_what_it_has_counted() -> None:
    """The object budget stops at exactly that many objects; the time budget after the page
    that passed it; the job's own item cap at that many items (complete: the job stops too)."""
    store = store_of(3000, wav(0.01))
    objects = count_archive(
        store, plan(), JOB, transcribed=None, limits=CountLimits(max_objects=1200)
    )
    assert (objects.complete, objects.stopped_by, objects.listed) == (False, "objects", 1200)
    ticks = count(0.0, 4.0)  # 4 s a page against a 10 s budget: three pages
    timed = count_archive(
        store, plan(), JOB, transcribed=None, limits=CountLimits(), clock=lambda: next(ticks)
    )
    assert (timed.complete, timed.stopped_by, timed.items) == (False, "time", 3000)
    capped = count_archive(store, plan(), JOB, transcribed=None, limits=CountLimits(max_items=700))
    assert (capped.complete, capped.stopped_by, capped.items) == (True, "max_items", 700)
    nothing = count_archive(store, plan("*.flac"), JOB, transcribed=None)
    assert (nothing.items, nothing.audio_seconds()) == (0, 0.0)
