"""Archive jobs' listing against real SeaweedFS and real PostgreSQL/SQLite: pages, filters,
batches visible while expanding, a resumed expansion without duplicates, cancel, failure."""

from __future__ import annotations

import io
import itertools
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import func, select, update

from jobs import ledger_sql
from jobs.archive_ledger import ArchiveLedger
from jobs.archive_records import BatchResult, ExpansionClaim, Listed
from jobs.archives import ArchivePolicy, parse_archive_buckets, storage_location
from jobs.clock import utc_now
from jobs.ledger import ItemLedger
from jobs.models import ArchiveExpansion, Item, Job
from jobs.schemas import JobCreate
from jobs.service import submit_job
from jobs.status import ItemStatus, JobStatus, job_status_from_counts
from jobs.tenants import ensure_tenant
from storage.localfs import LocalObjectStore
from storage.objects import ObjectStore
from storage.s3 import S3ObjectStore
from tests.integration.helpers import migrated_ledger, published, tts_job
from workers.archive import ArchiveStores
from workers.expand import ArchiveResumer, Expander, Progress

pytestmark = pytest.mark.integration


def tiny_wav(samples: int = 16) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(samples, dtype="int16"), 16000, format="WAV")
    return buffer.getvalue()


WAV = tiny_wav()


def fill(store: S3ObjectStore, keys: Sequence[str], body: bytes = WAV) -> None:
    """Put `body` at every key, sixteen requests at a time."""

    def put(key: str) -> None:
        store.client.put_object(Bucket=store.bucket, Key=key, Body=body)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, keys))


def policy_for(bucket: str, storage: ObjectStore) -> ArchivePolicy:
    root = storage.root if isinstance(storage, LocalObjectStore) else Path("/nowhere")
    return ArchivePolicy(
        parse_archive_buckets(f"s3://{bucket}"), storage_location(f"file://{root}")
    )


def submit_archive(
    ledger: ItemLedger,
    source: dict[str, Any],
    policy: ArchivePolicy,
    *,
    tenant: str = "acme",
    **fields: Any,
) -> Job:
    tenant_id = ensure_tenant(ledger.db.sessions, tenant).id
    body = JobCreate.model_validate(
        {"kind": "stt", "provider": "local", "source": source, **fields}
    )
    return submit_job(
        ledger, tenant_id, body, idempotency_key=None, max_items=10, archives=policy
    ).job


def expander_on(
    ledger: ItemLedger,
    archive: S3ObjectStore,
    out: ObjectStore,
    *,
    batch: int = 500,
    clock: Callable[[], datetime] = utc_now,
    archive_ledger: type[ArchiveLedger] = ArchiveLedger,
) -> Expander:
    """An expander on `ledger`'s database and publisher (so tests see what it publishes)."""
    ledger_ = archive_ledger(ledger.db, ledger.publisher, outage_s=0.0, clock=clock)
    return Expander(ledger_, ArchiveStores(archive), out, batch=batch)


def job_row(ledger: ItemLedger, job_id: str) -> Job:
    with ledger.db.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def item_rows(ledger: ItemLedger, job_id: str) -> list[Item]:
    with ledger.db.sessions() as session:
        return list(session.scalars(select(Item).where(Item.job_id == job_id).order_by(Item.seq)))


@pytest.fixture
def archive(s3_store: S3ObjectStore) -> S3ObjectStore:
    """A fresh bucket standing in for a customer's archive."""
    return s3_store


def test_list_page_walks_thousands_of_objects_in_key_order_and_resumes_from_a_key(
    archive: S3ObjectStore,
) -> None:
    """2,500 objects come back as pages of 1,000, 1,000 and 500, in key order, each with its
    size, ETag and time; a listing started after any key goes on exactly from there."""
    keys = [f"calls/{n % 7}/c{n:05d}.wav" for n in range(2500)]
    fill(archive, keys)
    pages, after = [], None
    while True:
        page = archive.list_page("calls/", start_after=after, limit=1000)
        pages.append(page)
        if not page.truncated:
            break
        after = page.objects[-1].key
    listed = [o.key for page in pages for o in page.objects]
    assert [len(p.objects) for p in pages] == [1000, 1000, 500]
    assert listed == sorted(keys)
    first = pages[0].objects[0]
    assert first.size == len(WAV) and len(first.etag) == 32 and first.last_modified.tzinfo
    resumed = archive.list_page("calls/", start_after=listed[1234], limit=3).objects
    assert [o.key for o in resumed] == listed[1235:1238]


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_the_other_stores_list_pages_in_the_same_key_order_as_s3(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """A folder sorts where its keys fall in byte order (`a.wav` before `a/x.wav`), so local
    and memory listings resume from a key exactly as S3's do."""
    store: ObjectStore = request.getfixturevalue(f"{kind}_store")
    keys = ["p/a.wav", "p/a/x.wav", "p/a-b.wav", "p/b/c/d.wav", "p/b.wav", "q/z.wav"]
    for key in keys:
        store.put_bytes(key, WAV, "audio/wav")
    expected = sorted(k for k in keys if k.startswith("p/"))
    seen, after = [], None
    while True:
        page = store.list_page("p/", start_after=after, limit=2)
        seen += [o.key for o in page.objects]
        if not page.truncated:
            break
        after = seen[-1]
    assert seen == expected
    assert all(o.size == len(WAV) and o.etag for o in store.list_page("p/").objects)


def test_an_archive_job_expands_in_batches_with_its_filters_and_counts_while_expanding(
    database_url: str, archive: S3ObjectStore, local_store: LocalObjectStore
) -> None:
    """The job is `expanding` at once; each pass commits a batch (counts visible, items
    published); only objects matching pattern and size bounds become items; then it is
    queued with every match exactly once."""
    wanted = [f"calls/2026/{n % 5}/c{n:04d}.wav" for n in range(1800)]
    fill(archive, wanted)
    fill(archive, [f"calls/2026/notes{n}.txt" for n in range(150)])
    fill(archive, [f"calls/2026/big{n}.wav" for n in range(50)], tiny_wav(4000))
    fill(archive, [f"calls/2025/old{n}.wav" for n in range(20)])
    api = migrated_ledger(database_url)
    source = {"prefix": f"s3://{archive.bucket}/calls/2026/", "pattern": "*.WAV", "max_bytes": 1000}
    job = submit_archive(api, source, policy_for(archive.bucket, local_store))
    assert job.status == JobStatus.EXPANDING and job.total == 0
    assert published(api).expansions == [job.id]

    expander = expander_on(api, archive, local_store)
    assert expander.expand(job.id, budget_s=0.0) is Progress.MORE  # one batch, then lets go
    first = job_row(api, job.id)
    assert (first.status, first.total, first.queued) == (JobStatus.EXPANDING, 500, 500)
    assert len(published(api).ids) == 500
    assert expander.expand(job.id) is Progress.DONE
    done = job_row(api, job.id)
    assert (done.status, done.total, done.queued, done.finished_at) == (
        JobStatus.QUEUED,
        1800,
        1800,
        None,
    )
    items = item_rows(api, job.id)
    sources = [i.source for i in items]
    assert sorted(sources) == sorted(f"s3://{archive.bucket}/{k}" for k in wanted)
    assert [i.seq for i in items] == list(range(1, 1801))
    assert sorted(published(api).ids) == sorted(i.id for i in items)
    assert items[0].external_id == "1-c0000.wav"
    assert expander.expand(job.id) is Progress.BUSY  # ended: nothing to claim


class DiesOnSecondBatch(ArchiveLedger):
    """The process dies (an exception that no one catches) as its second batch commits."""

    batches = 0

    def commit_batch(
        self, claim: ExpansionClaim, listed: Sequence[Listed], **kwargs: Any
    ) -> BatchResult:
        type(self).batches += 1
        if type(self).batches == 2:
            raise SystemExit("killed")
        return super().commit_batch(claim, listed, **kwargs)


def test_an_expansion_killed_mid_way_is_resumed_by_beat_without_duplicate_items(
    database_url: str, archive: S3ObjectStore, local_store: LocalObjectStore
) -> None:
    """A worker dies after its first batch committed; beat's resumer, once the lease has run
    out, lists on from the cursor: every object is one item, seqs 1..N with no gap."""
    keys = [f"rec/{n:05d}.wav" for n in range(1300)]
    fill(archive, keys)
    api = migrated_ledger(database_url)
    job = submit_archive(
        api, {"prefix": f"s3://{archive.bucket}/rec/"}, policy_for(archive.bucket, local_store)
    )
    DiesOnSecondBatch.batches = 0
    doomed = expander_on(api, archive, local_store, batch=400, archive_ledger=DiesOnSecondBatch)
    with pytest.raises(SystemExit):
        doomed.expand(job.id)
    assert job_row(api, job.id).total == 400
    # Another expander cannot take it while the dead one's lease runs.
    assert expander_on(api, archive, local_store).expand(job.id) is Progress.BUSY
    later = expander_on(
        api, archive, local_store, batch=400, clock=lambda: utc_now() + timedelta(minutes=5)
    )
    assert ArchiveResumer(later, budget_s=60.0).resume() == 1
    items = item_rows(api, job.id)
    assert [i.seq for i in items] == list(range(1, 1301))
    assert len({i.source for i in items}) == 1300
    finished = job_row(api, job.id)
    assert (finished.status, finished.total, finished.queued) == (JobStatus.QUEUED, 1300, 1300)


def test_a_prefix_with_no_matching_object_ends_the_job_succeeded_with_no_items(
    database_url: str, archive: S3ObjectStore, local_store: LocalObjectStore
) -> None:
    """Nothing modified since tomorrow: the job ends `succeeded`, total 0, finished, with a
    manifest; an empty prefix does the same."""
    fill(archive, [f"a/{n}.wav" for n in range(30)])
    api = migrated_ledger(database_url)
    policy = policy_for(archive.bucket, local_store)
    tomorrow = (utc_now() + timedelta(days=1)).isoformat()
    jobs = [
        submit_archive(
            api, {"prefix": f"s3://{archive.bucket}/a/", "modified_since": tomorrow}, policy
        ),
        submit_archive(api, {"prefix": f"s3://{archive.bucket}/empty/"}, policy),
    ]
    for job in jobs:
        assert expander_on(api, archive, local_store).expand(job.id) is Progress.DONE
        row = job_row(api, job.id)
        assert (row.status, row.total) == (JobStatus.SUCCEEDED, 0) and row.finished_at
        assert local_store.size(f"{row.tenant_id}/{job.id}/manifest.jsonl") == 0


def test_canceling_an_expanding_job_stops_its_listing(
    database_url: str, archive: S3ObjectStore, local_store: LocalObjectStore
) -> None:
    """A job canceled after its first batch is `canceled` at once; the expander's next batch
    sees it and stops: no item is added after the cancel and the expansion is done."""
    fill(archive, [f"c/{n:04d}.wav" for n in range(900)])
    api = migrated_ledger(database_url)
    job = submit_archive(
        api, {"prefix": f"s3://{archive.bucket}/c/"}, policy_for(archive.bucket, local_store)
    )
    expander = expander_on(api, archive, local_store, batch=300)
    assert expander.expand(job.id, budget_s=0.0) is Progress.MORE
    api.cancel_job(job.id)
    assert job_row(api, job.id).status == JobStatus.CANCELED
    assert expander.expand(job.id) is Progress.DONE
    row = job_row(api, job.id)
    assert (row.status, row.total, row.canceled) == (JobStatus.CANCELED, 300, 300)
    with api.db.sessions() as session:
        state = session.scalar(
            select(ArchiveExpansion.state).where(ArchiveExpansion.job_id == job.id)
        )
    assert state == "done"


def test_a_bucket_that_cannot_be_listed_fails_the_job_with_a_reason_after_retries(
    database_url: str, archive: S3ObjectStore, local_store: LocalObjectStore
) -> None:
    """A missing bucket is retried with backoff, then the job ends `failed` with one item
    `archive_unavailable` that says what to check."""
    api = migrated_ledger(database_url)
    missing = f"gone-{uuid.uuid4().hex[:12]}"
    job = submit_archive(api, {"prefix": f"s3://{missing}/x/"}, policy_for(missing, local_store))
    step = [0]

    def clock() -> datetime:  # every pass comes after the previous backoff
        step[0] += 1
        return utc_now() + timedelta(hours=step[0])

    outcomes = [
        expander_on(api, archive, local_store, clock=clock).expand(job.id) for _ in range(5)
    ]
    assert outcomes == [Progress.RETRY] * 4 + [Progress.DONE]
    row = job_row(api, job.id)
    assert (row.status, row.total, row.failed) == (JobStatus.FAILED, 1, 1)
    (item,) = item_rows(api, job.id)
    assert item.error_code == "archive_unavailable" and missing in (item.error_message or "")


def test_two_expanders_on_one_job_insert_each_object_once(
    database_url: str, archive: S3ObjectStore, local_store: LocalObjectStore
) -> None:
    """Two workers handed the same expansion at once (a redelivered task): one holds it, the
    other is told it is busy, and the items are the objects, once each."""
    fill(archive, [f"d/{n:04d}.wav" for n in range(700)])
    api = migrated_ledger(database_url)
    job = submit_archive(
        api, {"prefix": f"s3://{archive.bucket}/d/"}, policy_for(archive.bucket, local_store)
    )
    one, two = (expander_on(api, archive, local_store, batch=200) for _ in range(2))
    with ThreadPoolExecutor(2) as pool:
        results = sorted(pool.map(lambda e: e.expand(job.id).value, [one, two]))
    assert results == sorted([Progress.DONE.value, Progress.BUSY.value])
    with api.db.sessions() as session:
        count = session.scalar(
            select(func.count(func.distinct(Item.source))).where(Item.job_id == job.id)
        )
        statuses = set(session.scalars(select(Item.status).where(Item.job_id == job.id)))
    assert count == job_row(api, job.id).total == 700
    assert statuses == {ItemStatus.QUEUED}


def test_the_counter_update_agrees_with_python_on_skipped_and_expanding(database_url: str) -> None:
    """The SQL status CASE and `job_status_from_counts` agree for every mix of counts with
    `skipped` and `expanding` (expanding wins; skipped counts as done)."""
    ledger = migrated_ledger(database_url)
    job_id = tts_job(ledger, ["x"]).job.id
    names = ("queued", "running", "succeeded", "failed", "canceled", "skipped")
    for *combo, expanding in itertools.product(range(2), repeat=7):
        counts = dict(zip(names, combo, strict=True))
        with ledger.db.engine.begin() as connection:
            values = counts | {"expanding": bool(expanding)}
            connection.execute(update(Job).where(Job.id == job_id).values(**values))
            params = ledger_sql.counter_params(utc_now()) | {"job_id": job_id}
            status = connection.execute(ledger_sql.COUNTER_UPDATE, params).one().status
        python = job_status_from_counts(total=sum(combo), expanding=bool(expanding), **counts)
        assert status == python, (counts, expanding)


def test_an_expansion_whose_task_message_was_lost_is_started_by_beat_after_the_grace(
    database_url: str, archive: S3ObjectStore, local_store: LocalObjectStore
) -> None:
    """Beat leaves a fresh expansion to the task the API published; if no worker took it
    (the message was lost, the broker was down), beat lists it once the grace is over."""
    fill(archive, [f"l/{n:03d}.wav" for n in range(120)])
    api = migrated_ledger(database_url)
    job = submit_archive(
        api, {"prefix": f"s3://{archive.bucket}/l/"}, policy_for(archive.bucket, local_store)
    )
    assert ArchiveResumer(expander_on(api, archive, local_store)).resume() == 0
    assert job_row(api, job.id).total == 0
    later = expander_on(api, archive, local_store, clock=lambda: utc_now() + timedelta(seconds=20))
    assert ArchiveResumer(later).resume() == 1
    row = job_row(api, job.id)
    assert (row.status, row.total) == (JobStatus.QUEUED, 120)
