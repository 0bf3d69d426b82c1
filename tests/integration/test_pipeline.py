"""The Celery-free pipeline (`run_item`) against real databases, a real store and espeak-ng.

Provider doubles appear only where a test needs a failure mode the offline engine cannot
produce (a transient error); everything with a protocol is real.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from jobs import counters, transitions
from jobs import repository as repo
from jobs.clock import utc_now
from jobs.errors import ApiError
from jobs.models import Attempt, Item
from storage.db import make_autocommit_engine
from storage.keys import manifest_key
from storage.objects import LocalObjectStore
from tests.integration.helpers import Recorder, migrated_sessions, tts_job
from tests.services import free_port
from workers.leases import LeaseKeeper
from workers.pipeline import Outcome, run_item
from workers.providers import build_provider
from workers.providers.base import Synthesis
from workers.providers.errors import AuthenticationFailed, ProviderUnavailable, RateLimited
from workers.retry import RetryPolicy
from workers.runtime import Runtime

pytestmark = pytest.mark.integration


class AlwaysDown:
    """A provider whose every call is a 503 (a provider outage)."""

    name = "local"

    def __init__(self) -> None:
        self.calls = 0

    def synthesize(self, text: str, **_: Any) -> Synthesis:
        self.calls += 1
        raise ProviderUnavailable("503 from provider", status_code=503, request_id=f"r{self.calls}")

    def transcribe(self, audio: Any, *, model: str, options: Mapping[str, Any]) -> Any:
        raise NotImplementedError


def runtime(sessions, store, provider=None, **policy: Any) -> tuple[Runtime, Recorder]:  # type: ignore[no-untyped-def]
    """A worker's Runtime as `build_runtime` makes it: on PostgreSQL, claims and successes
    take the one-statement autocommit path; on SQLite, the transactional one."""
    recorder = Recorder()
    local = build_provider("local", client=None, base_url=None, api_key=None)
    url = sessions.kw["bind"].url.render_as_string(hide_password=False)
    rt = Runtime(
        sessions=sessions,
        autocommit=make_autocommit_engine(url, pool_size=2),
        store=store,
        provider_for=lambda _name: provider or local,
        publish=recorder,
        policy=RetryPolicy(**policy),
        rng=random.Random(1),
        sleep=lambda _s: None,
    )
    return rt, recorder


def test_items_run_once_and_the_manifest_is_stored(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """Every item succeeds once, re-delivery is a no-op, and manifest.jsonl lists each item."""
    sessions = migrated_sessions(database_url)
    published = Recorder()
    job = tts_job(sessions, ["Hello there.", "General Kenobi."], publish=published).job
    rt, _ = runtime(sessions, local_store)
    assert [run_item(rt, i) for i in published.ids] == [Outcome.SUCCEEDED] * 2
    assert [run_item(rt, i) for i in published.ids] == [Outcome.SKIPPED] * 2  # duplicates
    keys = sorted(local_store.list_keys(f"{job.tenant_id}/{job.id}/"))
    assert keys == [
        f"{job.tenant_id}/{job.id}/000001-1.wav",
        f"{job.tenant_id}/{job.id}/000002-2.wav",
        manifest_key("", job.tenant_id, job.id),
    ]
    lines = local_store.get_bytes(manifest_key("", job.tenant_id, job.id)).decode().splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["succeeded", "succeeded"]


def test_unknown_voice_fails_only_that_item(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """A permanent provider error fails the item with its code after one attempt."""
    sessions = migrated_sessions(database_url)
    published = Recorder()
    tts_job(sessions, ["Hi."], publish=published, voice="no-such-voice")
    rt, _ = runtime(sessions, local_store)
    assert run_item(rt, published.ids[0]) == Outcome.FAILED
    with sessions() as session:
        item = session.get(Item, published.ids[0])
        attempts = session.scalar(select(func.count()).where(Attempt.item_id == item.id))
    assert (item.status, item.error_code, item.attempts, attempts) == (
        "failed",
        "unknown_voice",
        1,
        1,
    )


def test_transient_failures_requeue_then_fail_after_the_attempt_budget(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """An outage re-queues the item with a short countdown, then fails it after item_attempts."""
    sessions = migrated_sessions(database_url)
    published = Recorder()
    tts_job(sessions, ["Hi."], publish=published)
    down = AlwaysDown()
    rt, republished = runtime(
        sessions,
        local_store,
        down,
        call_attempts=2,
        item_attempts=3,
        item_base_s=0.0,
        item_cap_s=0.0,
    )
    item_id = published.ids[0]
    assert run_item(rt, item_id) == Outcome.RETRYING
    assert republished.published == [(item_id, 0.0)]
    assert run_item(rt, item_id) == Outcome.RETRYING
    assert run_item(rt, item_id) == Outcome.FAILED
    with sessions() as session:
        item = session.get(Item, item_id)
        attempts = list(session.scalars(select(Attempt).where(Attempt.item_id == item_id)))
    assert item.error_code == "provider_unavailable" and "after 3 attempts" in item.error_message
    assert down.calls == 6 and len(attempts) == 6  # 3 claims x 2 in-call attempts, all recorded
    assert {a.status_code for a in attempts} == {503}
    assert {a.provider_request_id for a in attempts} == {f"r{n}" for n in range(1, 7)}


class RefusesKey(AlwaysDown):
    """A provider that rejects our credential (HTTP 401)."""

    def synthesize(self, text: str, **_: Any) -> Synthesis:
        self.calls += 1
        raise AuthenticationFailed("SLNG rejected SLNG_API_KEY (401)", status_code=401)


def test_a_refused_credential_stops_the_whole_job(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """One 401 fails the job's remaining items at once instead of calling the provider for each."""
    sessions = migrated_sessions(database_url)
    published = Recorder()
    job = tts_job(sessions, [f"line {n}" for n in range(5)], publish=published).job
    refusing = RefusesKey()
    rt, _ = runtime(sessions, local_store, refusing)
    assert run_item(rt, published.ids[0]) == Outcome.FAILED
    assert [run_item(rt, i) for i in published.ids[1:]] == [Outcome.SKIPPED] * 4
    assert refusing.calls == 1
    with sessions() as session:
        items = list(session.scalars(select(Item).where(Item.job_id == job.id)))
        status = repo.job_status(session, job.id)
    assert status == "failed"
    assert {i.error_code for i in items} == {"provider_auth_failed"}
    assert all("SLNG_API_KEY" in (i.error_message or "") for i in items)


def test_heartbeats_keep_a_slow_items_lease(database_url: str) -> None:
    """A held claim's lease is renewed, so the sweeper does not take a slow item back."""
    sessions = migrated_sessions(database_url)
    published = Recorder()
    tts_job(sessions, ["slow"], publish=published)
    now = utc_now()
    with sessions() as session:
        item = transitions.claim_item(
            session, published.ids[0], token="tok", now=now, lease_until=now + timedelta(seconds=1)
        )
        session.commit()
    keeper = LeaseKeeper(sessions, lease_s=60)
    keeper.hold(item.id, item.token)
    try:
        assert keeper.renew_now() == 1
    finally:
        keeper.stop()
    with sessions() as session:
        assert counters.expire_leases(session, now=now + timedelta(seconds=30), limit=10) == []
        assert counters.expire_leases(session, now=now + timedelta(seconds=61), limit=10) == [
            item.id
        ]


def test_stt_item_with_a_url_source_is_fetched_and_transcribed(
    database_url: str, local_store: LocalObjectStore, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """An allowed http:// source is fetched by the worker and transcribed; a private one is not."""
    import functools
    import http.server
    import threading

    from jobs.netpolicy import parse_allowlist
    from jobs.schemas import JobCreate
    from jobs.service import ensure_tenant, submit_job

    speech = build_provider("local", client=None, base_url=None, api_key=None).synthesize(
        "one two three", model="espeak-ng", voice=None, options={}
    )
    (tmp_path / "call.wav").write_bytes(speech.audio)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/call.wav"
    sessions = migrated_sessions(database_url)
    tenant = ensure_tenant(sessions, "acme").id
    body = JobCreate.model_validate(
        {"kind": "stt", "provider": "local", "items": [{"id": "call", "source": url}]}
    )
    try:
        with pytest.raises(ApiError) as refused:  # loopback is private: refused by default
            submit_job(
                sessions, tenant, body, idempotency_key=None, publish=Recorder(), max_items=10
            )
        assert refused.value.code == "forbidden_source"
        allow = parse_allowlist("127.0.0.1/32")
        published = Recorder()
        submit_job(
            sessions,
            tenant,
            body,
            idempotency_key=None,
            publish=published,
            max_items=10,
            allow=allow,
        )
        rt, _ = runtime(sessions, local_store)
        rt.source_allow = allow
        assert run_item(rt, published.ids[0]) == Outcome.SUCCEEDED
    finally:
        server.shutdown()
    with sessions() as session:
        item = session.get(Item, published.ids[0])
    transcript = json.loads(local_store.get_bytes(item.output_key))
    assert transcript["duration_s"] > 0.5 and transcript["text"]


def test_a_full_provider_limit_hands_the_item_back_without_spending_an_attempt(
    database_url: str, local_store: LocalObjectStore, redis_url: str
) -> None:
    """With every shared slot taken, the item goes back to the queue with its attempts intact."""
    import redis

    from jobs.catalog import ProviderLimits
    from workers.throttle import ProviderThrottle

    client = redis.Redis.from_url(redis_url)
    throttle = ProviderThrottle(client, {"local": ProviderLimits(max_concurrency=1)}, lease_s=30)
    fingerprint = f"{random.getrandbits(64):016x}"
    held = throttle.acquire("local", fingerprint, max_wait_s=1)
    assert held is not None
    sessions = migrated_sessions(database_url)
    published = Recorder()
    tts_job(sessions, ["waiting"], publish=published)
    rt, republished = runtime(sessions, local_store)
    rt.throttle, rt.fingerprint, rt.throttle_wait_s = throttle, lambda _p: fingerprint, 0.2
    try:
        assert run_item(rt, published.ids[0]) == Outcome.DEFERRED
        with sessions() as session:
            item = session.get(Item, published.ids[0])
            assert (item.status, item.attempts) == ("queued", 0)
        assert republished.ids == published.ids and 1.0 <= republished.published[0][1] <= 3.0
    finally:
        held.release()
    with sessions() as session:  # due later: let it run now that the slot is free
        session.execute(update(Item).values(next_attempt_at=None))
        session.commit()
    assert run_item(rt, published.ids[0]) == Outcome.SUCCEEDED
    client.close()


def test_a_storage_outage_hands_the_item_back_without_spending_an_attempt(
    database_url: str,
) -> None:
    """When S3 is unreachable the item is deferred with its attempts intact, not failed."""
    from storage.objects import open_object_store

    dead_store = open_object_store("s3://nowhere", endpoint_url=f"http://127.0.0.1:{free_port()}")
    sessions = migrated_sessions(database_url)
    published = Recorder()
    tts_job(sessions, ["Hello."], publish=published)
    rt, republished = runtime(sessions, dead_store)  # type: ignore[arg-type]
    rt.lease_s = 1.0  # ride out the outage for half a second only
    assert run_item(rt, published.ids[0]) == Outcome.DEFERRED
    with sessions() as session:
        item = session.get(Item, published.ids[0])
        attempts = session.scalar(select(func.count()).where(Attempt.item_id == item.id))
    assert (item.status, item.attempts, item.error_code) == ("queued", 0, None)
    assert attempts == 1  # the provider call that succeeded is still on record
    assert 5.0 <= republished.published[0][1] <= 15.0


class SaysSlowDown(AlwaysDown):
    """A provider answering every call with 429 and Retry-After: 7."""

    def synthesize(self, text: str, **_: Any) -> Synthesis:
        self.calls += 1
        raise RateLimited("429 Too Many Requests", retry_after=7.0, status_code=429)


def test_rate_limiting_delays_an_item_without_spending_its_attempts(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """A 429 hands the item back no sooner than Retry-After, however often it happens."""
    sessions = migrated_sessions(database_url)
    published = Recorder()
    tts_job(sessions, ["busy"], publish=published)
    rt, republished = runtime(
        sessions, local_store, SaysSlowDown(), call_attempts=1, item_attempts=2
    )
    item_id = published.ids[0]
    for _ in range(4):  # more 429s than the item has attempts: it must not fail
        assert run_item(rt, item_id) == Outcome.DEFERRED
        with sessions() as session:
            session.execute(update(Item).values(next_attempt_at=None))
            session.commit()
    with sessions() as session:
        item = session.get(Item, item_id)
    assert (item.status, item.attempts) == ("queued", 0)
    assert all(countdown >= 7.0 for _, countdown in republished.published)
