"""Archive dry runs on real SeaweedFS: a prefix of a few thousand objects counted exactly
with every filter, a sample's headers extrapolated into audio seconds (labelled so), objects
transcribed before counted as skipped, and a listing stopped by its time or object budget
answering promptly with a lower bound."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from jobs.archives import ArchivePolicy, parse_archive_buckets, storage_location
from jobs.clock import utc_now
from jobs.schemas import JobCreate
from jobs.service import dry_run_job
from jobs.tenants import ensure_tenant
from storage.localfs import LocalObjectStore
from storage.s3 import S3ObjectStore
from storage.stores import BucketStores
from tests.integration.helpers import migrated_ledger
from tests.integration.test_api import Api, running_api
from tests.integration.test_archive_expansion import fill, submit_archive, tiny_wav
from tests.integration.test_archive_outputs import fresh_bucket
from tests.integration.test_archive_pipeline import CountingStt, run_job, worker

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration

SMALL, BIG = tiny_wav(16), tiny_wav(1600)  # 0.001 s and 0.1 s of 16 kHz mono PCM
MP3 = b"ID3" + bytes(97)  # an MP3 header states no duration
PRICES = '{"openai": {"stt_per_minute": 0.6}}'


@pytest.fixture(scope="module")
def archive(s3_client: S3Client) -> Iterator[S3ObjectStore]:
    """3,000 objects: 1,800 small and 600 big WAVs, 400 MP3s and 200 text files."""
    for store in fresh_bucket(s3_client):
        fill(store, [f"calls/a/{n:04d}.wav" for n in range(1800)], SMALL)
        fill(store, [f"calls/b/{n:04d}.wav" for n in range(600)], BIG)
        fill(store, [f"calls/b/{n:04d}.mp3" for n in range(400)], MP3)
        fill(store, [f"calls/c/{n:04d}.txt" for n in range(200)], b"x")
        yield store


def api_for(
    database_url: str, redis_url: str, endpoint: str, bucket: str, tmp: Path, **extra: Any
) -> AbstractContextManager[Api]:
    """An API whose store is a folder, allowed to list `bucket`'s `calls/` (`extra`: settings)."""
    settings = {
        "storage_url": f"file://{tmp / 'objects'}",
        "s3_endpoint_url": endpoint,
        "archive_buckets": f"s3://{bucket}/calls",
        "prices": PRICES,
        **extra,
    }
    return running_api(database_url, redis_url, **settings)


def dry_run(api: Api, bucket: str, **source: Any) -> dict[str, Any]:
    body = {
        "kind": "stt",
        "provider": "openai",
        "source": {"prefix": f"s3://{bucket}/calls/", **source},
    }
    answer = api.client.post("/v1/jobs?dry_run=true", json=body, headers=api.auth())
    assert answer.status_code == 200, answer.text
    estimate: dict[str, Any] = answer.json()
    return estimate


def test_a_dry_run_counts_a_prefix_of_thousands_exactly_with_its_filters(
    sqlite_url: str, redis_url: str, s3_endpoint_url: str, archive: S3ObjectStore, tmp_path: Path
) -> None:
    """Every filter gives the exact count and bytes of what the job would take: audio files
    by default, a pattern, size bounds, a modification time; the big WAVs' seconds are
    extrapolated exactly (one size, one byte rate) and MP3s' are unknown, with no cost."""
    bucket = archive.bucket
    with api_for(sqlite_url, redis_url, s3_endpoint_url, bucket, tmp_path) as api:
        every = dry_run(api, bucket)
        assert (every["items"], every["items_at_least"]) == (2800, 2800)
        listing = every["archive"]
        assert (listing["complete"], listing["listed"], listing["stopped_by"]) == (True, 3000, None)
        assert listing["bytes"] == 1800 * len(SMALL) + 600 * len(BIG) + 400 * len(MP3)

        big = dry_run(api, bucket, pattern="b/*.wav")
        assert big["items"] == 600 and big["archive"]["bytes"] == 600 * len(BIG)
        assert big["archive"]["audio_seconds_basis"] == "extrapolated"
        assert big["usage"]["audio_seconds"] == pytest.approx(60.0, rel=1e-6)
        assert big["cost"]["estimated"] == pytest.approx(0.6, rel=1e-6)

        assert dry_run(api, bucket, pattern="*.WAV", min_bytes=len(SMALL) + 1)["items"] == 600
        assert dry_run(api, bucket, pattern="*.wav", max_bytes=len(SMALL))["items"] == 1800
        assert dry_run(api, bucket, pattern="*.txt")["items"] == 200
        later = (utc_now() + timedelta(hours=1)).isoformat()
        assert dry_run(api, bucket, modified_since=later)["items"] == 0
        earlier = (utc_now() - timedelta(hours=1)).isoformat()
        assert dry_run(api, bucket, modified_since=earlier)["items"] == 2800

        mp3 = dry_run(api, bucket, pattern="*.mp3")
        assert mp3["items"] == 400 and mp3["archive"]["audio_seconds_basis"] == "none"
        assert mp3["usage"]["audio_seconds"] is None
        assert mp3["usage"]["unknown_durations"] == 400
        assert mp3["cost"]["estimated"] is None


def test_a_dry_run_stopped_by_its_budget_answers_promptly_with_a_lower_bound(
    sqlite_url: str, redis_url: str, s3_endpoint_url: str, archive: S3ObjectStore, tmp_path: Path
) -> None:
    """With a time budget shorter than one page, the answer comes after one page: `items`
    null, `items_at_least` the page's matches, `complete: false`, and a note saying so; an
    object budget of 1,500 stops after exactly 1,500 objects."""
    bucket = archive.bucket
    quick = {"archive_dry_run_seconds": 0.001}
    with api_for(sqlite_url, redis_url, s3_endpoint_url, bucket, tmp_path, **quick) as api:
        started = time.monotonic()
        estimate = dry_run(api, bucket)
        assert time.monotonic() - started < 5.0
        listing = estimate["archive"]
        assert (listing["complete"], listing["stopped_by"], listing["listed"]) == (
            False,
            "time",
            1000,
        )
        assert estimate["items"] is None and estimate["items_at_least"] == 1000
        assert any("at least 1000 items" in note for note in estimate["notes"])
    few = {"archive_dry_run_objects": 1500}
    with api_for(sqlite_url, redis_url, s3_endpoint_url, bucket, tmp_path, **few) as api:
        listing = dry_run(api, bucket)["archive"]
        assert (listing["complete"], listing["stopped_by"], listing["listed"]) == (
            False,
            "objects",
            1500,
        )
        assert listing["items"] == 1500  # the first 1,500 keys are calls/a/ WAVs


def test_a_dry_run_counts_objects_transcribed_before_as_skipped_at_no_cost(
    database_url: str, s3_store: S3ObjectStore, local_store: LocalObjectStore
) -> None:
    """After a job transcribed 30 objects, an incremental dry run of the prefix says 30
    items, all skipped, nothing to transcribe and no cost; `incremental: false` counts them
    all as to transcribe."""
    fill(s3_store, [f"night/{n:03d}.wav" for n in range(30)], BIG)
    api = migrated_ledger(database_url)
    policy = ArchivePolicy(
        parse_archive_buckets(f"s3://{s3_store.bucket}"),
        storage_location(f"file://{local_store.root}"),
    )
    source = {"prefix": f"s3://{s3_store.bucket}/night/"}
    rt = worker(database_url, local_store, s3_store, CountingStt())
    assert run_job(api, rt, s3_store, local_store, submit_archive(api, source, policy)).succeeded
    tenant = ensure_tenant(api.db.sessions, "acme").id

    def estimate(**extra: Any) -> Any:
        body = JobCreate.model_validate(
            {"kind": "stt", "provider": "local", "source": source | extra}
        )
        return dry_run_job(
            api.db.sessions,
            local_store,
            tenant,
            body,
            max_items=10,
            archives=policy,
            buckets=BucketStores(s3_store),
        )

    again = estimate()
    assert again.archive is not None
    assert (again.items, again.archive.skipped, again.archive.bytes_to_transcribe) == (30, 30, 0)
    assert again.usage.audio_seconds == 0.0
    full = estimate(incremental=False)
    assert full.archive is not None
    assert (full.archive.skipped, full.archive.bytes_to_transcribe) == (0, 30 * len(BIG))
