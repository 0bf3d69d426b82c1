"""The sweeper makes the database, not Redis, decide what still has to run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from jobs.api.deps import KeyCache
from jobs.clock import utc_now
from jobs.errors import ApiError
from jobs.models import ApiKey, Item
from jobs.service import create_api_key
from storage.publisher import CeleryPublisher, InMemoryPublisher
from tests.integration.helpers import migrated_ledger, migrated_sessions, published, tts_job
from tests.services import free_port
from workers.sweeper import sweep_once

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
