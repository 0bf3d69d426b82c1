"""The sweeper makes the database, not Redis, decide what still has to run."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from jobs import transitions
from jobs.api.deps import KeyCache
from jobs.clock import utc_now
from jobs.errors import ApiError
from jobs.models import ApiKey, Item
from jobs.publisher import CeleryPublisher
from jobs.service import create_api_key
from storage.objects import LocalObjectStore
from tests.integration.helpers import Recorder, migrated_sessions, tts_job
from tests.services import free_port
from workers.runtime import Runtime
from workers.sweeper import sweep_once

pytestmark = pytest.mark.integration


def runtime(sessions, store: LocalObjectStore) -> tuple[Runtime, Recorder]:  # type: ignore[no-untyped-def]
    recorder = Recorder()
    rt = Runtime(
        sessions=sessions,
        store=store,
        provider_for=lambda _n: None,  # type: ignore[arg-type,return-value]
        publish=recorder,
        rng=random.Random(0),
    )
    return rt, recorder


def test_items_submitted_while_the_broker_is_down_are_published_by_the_next_sweep(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """A submit during a Redis outage still succeeds; the next sweep publishes every item once."""
    sessions = migrated_sessions(database_url)
    dead_broker = CeleryPublisher(f"redis://127.0.0.1:{free_port()}/0")
    job = tts_job(sessions, ["a", "b", "c"], publish=dead_broker).job  # type: ignore[arg-type]
    with sessions() as session:
        published = session.scalars(select(Item.published_at).where(Item.job_id == job.id)).all()
    assert published == [None, None, None]
    rt, recorder = runtime(sessions, local_store)
    assert sweep_once(rt, queue_depth=lambda: 0, stale_s=60).published == 3
    assert sweep_once(rt, queue_depth=lambda: 0, stale_s=60).published == 0
    assert sorted(recorder.ids) == sorted(set(recorder.ids)) and len(recorder.ids) == 3


def test_expired_leases_are_recovered_and_republished(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """An item whose worker died (lease expired) goes back to queued and is published again."""
    sessions = migrated_sessions(database_url)
    first = Recorder()
    tts_job(sessions, ["x"], publish=first)
    now = utc_now()
    with sessions() as session:
        transitions.claim_item(
            session, first.ids[0], token="dead", now=now, lease_until=now - timedelta(seconds=1)
        )
        session.commit()
    rt, recorder = runtime(sessions, local_store)
    report = sweep_once(rt, queue_depth=lambda: 0, stale_s=60)
    assert (report.expired, recorder.ids) == (1, first.ids)
    with sessions() as session:
        assert session.get(Item, first.ids[0]).status == "queued"


def test_stale_messages_are_republished_only_when_the_queue_has_drained(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """Long-queued items are re-sent (Redis may have lost them) only when the broker is low."""
    sessions = migrated_sessions(database_url)
    first = Recorder()
    tts_job(sessions, ["x", "y"], publish=first)
    with sessions() as session:
        session.execute(update(Item).values(published_at=utc_now() - timedelta(minutes=10)))
        session.commit()
    rt, _ = runtime(sessions, local_store)
    assert sweep_once(rt, queue_depth=lambda: 5000, stale_s=60).published == 0
    assert sweep_once(rt, queue_depth=lambda: 0, stale_s=60).published == 2


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
