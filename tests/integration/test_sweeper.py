"""The sweeper makes the database, not Redis, decide what still has to run; beat's upload
retention deletes only uploads no job names."""

from __future__ import annotations

import io
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from jobs.api.deps import KeyCache
from jobs.clock import utc_now
from jobs.errors import ApiError
from jobs.ledger import ItemLedger
from jobs.models import ApiKey, Item
from jobs.schemas import JobCreate
from jobs.service import submit_job
from jobs.tenants import create_api_key, ensure_tenant
from jobs.uploads import content_id, store_upload
from storage.objects import ObjectStore
from storage.publisher import CeleryPublisher, InMemoryPublisher
from tests.integration.helpers import migrated_ledger, migrated_sessions, published, tts_job
from tests.services import free_port
from workers.sweeper import UploadRetention, run_sweeper, sweep_once

pytestmark = pytest.mark.integration


class Backlog(InMemoryPublisher):
    """A broker whose queue still holds thousands of messages."""

    def depth(self) -> int:
        return 5000


def test_items_submitted_while_the_broker_is_down_are_published_by_the_next_sweep(
    database_url: str,
) -> None:
    """A submit during a Redis outage still succeeds; the next sweep publishes every item once."""
    dead_broker = CeleryPublisher(f"redis://127.0.0.1:{free_port()}/0")
    down = migrated_ledger(database_url, dead_broker)
    job = tts_job(down, ["a", "b", "c"]).job
    with down.db.sessions() as session:
        stamps = session.scalars(select(Item.published_at).where(Item.job_id == job.id)).all()
    assert stamps == [None, None, None]
    ledger = migrated_ledger(database_url)
    assert sweep_once(ledger, stale_s=60).published == 3
    assert sweep_once(ledger, stale_s=60).published == 0
    ids = published(ledger).ids
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 3


def test_expired_leases_are_recovered_and_republished(database_url: str) -> None:
    """An item whose worker died (lease expired) goes back to queued and is published again."""
    first = migrated_ledger(database_url)
    tts_job(first, ["x"])
    item_id = published(first).ids[0]
    assert first.claim(item_id, lease_s=-1) is not None  # a lease that has already run out
    ledger = migrated_ledger(database_url)
    report = sweep_once(ledger, stale_s=60)
    assert (report.expired, published(ledger).ids) == (1, [item_id])
    with ledger.db.sessions() as session:
        assert session.get(Item, item_id).status == "queued"


def test_stale_messages_are_republished_only_when_the_queue_has_drained(
    database_url: str,
) -> None:
    """Long-queued items are re-sent (Redis may have lost them) only when the broker is low."""
    first = migrated_ledger(database_url)
    tts_job(first, ["x", "y"])
    with first.db.sessions() as session:
        session.execute(update(Item).values(published_at=utc_now() - timedelta(minutes=10)))
        session.commit()
    assert sweep_once(migrated_ledger(database_url, Backlog()), stale_s=60).published == 0
    assert sweep_once(migrated_ledger(database_url), stale_s=60).published == 2


def test_a_revoked_key_stops_working_within_the_cache_ttl(database_url: str) -> None:
    """The API's key cache answers for at most one second after a key is revoked."""
    sessions = migrated_sessions(database_url)
    key = create_api_key(sessions, "acme")
    now = [100.0]
    cache = KeyCache(ttl_s=1.0, clock=lambda: now[0])
    tenant = cache.tenant(sessions, key)
    with sessions() as session:
        session.execute(update(ApiKey).values(revoked_at=utc_now()))
        session.commit()
    now[0] += 0.5
    assert cache.tenant(sessions, key) == tenant  # still inside the TTL
    now[0] += 0.6
    with pytest.raises(ApiError) as caught:
        cache.tenant(sessions, key)
    assert caught.value.status == 401


# --- upload retention -------------------------------------------------------------------------


def upload(store: ObjectStore, ledger: ItemLedger, tenant: str, content: bytes) -> str:
    """Store `content` as `tenant`'s upload, as POST /v1/uploads does; returns its source."""
    tenant_id = ensure_tenant(ledger.db.sessions, tenant).id
    source, _ = store_upload(store, tenant_id, io.BytesIO(content), "audio/wav")
    return source


def stt_job(ledger: ItemLedger, tenant: str, sources: list[str]) -> None:
    items = [{"id": f"call-{n}", "source": source} for n, source in enumerate(sources)]
    body = JobCreate.model_validate({"kind": "stt", "provider": "slng", "items": items})
    tenant_id = ensure_tenant(ledger.db.sessions, tenant).id
    submit_job(ledger, tenant_id, body, idempotency_key=None, max_items=100)


def test_old_uploads_no_job_names_are_deleted_and_the_rest_kept(
    database_url: str, s3_store: ObjectStore
) -> None:
    """On real S3, beat keeps young uploads and uploads a job of their tenant names, and
    deletes the others once older than the retention (another tenant's copy included)."""
    ledger = migrated_ledger(database_url)
    named = upload(s3_store, ledger, "acme", b"RIFF named")
    upload(s3_store, ledger, "acme", b"RIFF never used")
    assert upload(s3_store, ledger, "globex", b"RIFF named") == named  # same bytes, own copy
    stt_job(ledger, "acme", [named])
    day = timedelta(hours=24)
    assert UploadRetention(s3_store, ledger.db.sessions, max_age=day).expire() == 0
    later = UploadRetention(
        s3_store, ledger.db.sessions, max_age=day, clock=lambda: utc_now() + 2 * day
    )
    assert later.expire() == 2
    (kept,) = s3_store.list_keys("uploads/")
    acme = ensure_tenant(ledger.db.sessions, "acme").id
    assert kept == f"uploads/{acme}/{named.removeprefix('upload://')}"


def test_retention_walks_in_bounded_batches_past_the_uploads_it_keeps(
    database_url: str, local_store: ObjectStore
) -> None:
    """Two keys a pass, resuming where the last pass stopped, so the kept uploads listed first
    never hold back the rest; once a walk ends, the next waits for `rest`."""
    ledger = migrated_ledger(database_url)
    by_key = sorted(
        (f"RIFF {n}".encode() for n in range(5)), key=lambda c: content_id(io.BytesIO(c))
    )
    named = [upload(local_store, ledger, "acme", content) for content in by_key[:3]]
    for content in by_key[3:]:
        upload(local_store, ledger, "acme", content)
    stt_job(ledger, "acme", named)
    now = [utc_now() + timedelta(days=2)]
    retention = UploadRetention(
        local_store,
        ledger.db.sessions,
        max_age=timedelta(hours=24),
        batch=2,
        rest=timedelta(minutes=10),
        clock=lambda: now[0],
    )
    assert [retention.expire() for _ in range(3)] == [0, 1, 1]
    assert len(list(local_store.list_keys("uploads/"))) == 3
    upload(local_store, ledger, "acme", b"RIFF unused, sent later")
    assert retention.expire() == 0  # resting after the walk
    now[0] += timedelta(minutes=11)
    assert sum(retention.expire() for _ in range(3)) == 1
    assert len(list(local_store.list_keys("uploads/"))) == 3


def test_beat_expires_uploads_on_its_own_ticks(database_url: str, local_store: ObjectStore) -> None:
    """run_sweeper, beat's loop, deletes an expired unused upload without being asked."""
    ledger = migrated_ledger(database_url)
    upload(local_store, ledger, "acme", b"RIFF unused")
    retention = UploadRetention(
        local_store,
        ledger.db.sessions,
        max_age=timedelta(hours=1),
        clock=lambda: utc_now() + timedelta(hours=2),
    )
    stop = threading.Event()
    beat = threading.Thread(
        target=run_sweeper,
        args=(ledger,),
        kwargs={"interval_s": 0.02, "stale_s": 60, "stop": stop, "chores": [retention.chore()]},
    )
    beat.start()
    try:
        deadline = time.monotonic() + 5
        while list(local_store.list_keys("uploads/")) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        beat.join(timeout=5)
    assert list(local_store.list_keys("uploads/")) == []
