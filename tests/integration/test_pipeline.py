"""The Celery-free pipeline (`run_item`) against real databases, a real store and espeak-ng.

Provider doubles appear only where a test needs a failure mode the offline engine cannot
produce (a transient error); everything with a protocol is real.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import threading
from collections.abc import Mapping
from typing import Any

import pytest
from sqlalchemy import func, select, update

from jobs.clock import utc_now
from jobs.errors import ApiError
from jobs.ledger import ItemLedger
from jobs.models import Attempt, Item, Job
from storage.keys import manifest_key
from storage.localfs import LocalObjectStore
from storage.objects import ObjectStore, StorageUnavailable
from tests.integration.helpers import migrated_ledger, published, tts_job
from tests.services import free_port
from workers.config import WorkerConfig
from workers.leases import HeartbeatLeases
from workers.pipeline import Outcome, run_item, run_items
from workers.providers.base import SpeechProvider, Synthesis, Transcript, Word
from workers.providers.errors import AuthenticationFailed, ProviderUnavailable, RateLimited
from workers.providers.registry import build_provider
from workers.retry import RetryPolicy
from workers.runtime import Runtime, warm_up

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


class OneProvider:
    """Every provider name resolves to one adapter, under one credential fingerprint."""

    def __init__(self, provider: Any, fingerprint: str = "0" * 16) -> None:
        self.provider, self._fingerprint = provider, fingerprint

    def get(self, name: str) -> SpeechProvider:
        provider: SpeechProvider = self.provider
        return provider

    def fingerprint(self, name: str) -> str:
        return self._fingerprint

    def close(self) -> None:
        """Nothing to release."""


def runtime(database_url: str, store: ObjectStore, provider: Any = None, **policy: Any) -> Runtime:
    """A worker's Runtime on its own ledger (and publisher, as a worker process has), with
    the offline engine unless a provider double is given; no real sleeping."""
    local = build_provider("local", client=None, base_url=None, api_key=None)
    return Runtime(
        config=WorkerConfig(retry=RetryPolicy(**policy)),
        ledger=migrated_ledger(database_url),
        store=store,
        providers=OneProvider(provider or local),
        rng=random.Random(1),
        sleep=lambda _s: None,
    )


def submitted(database_url: str, texts: list[str], **fields: Any) -> tuple[ItemLedger, Job]:
    """A job submitted through the API's ledger; its publisher saw the submit's messages."""
    ledger = migrated_ledger(database_url)
    return ledger, tts_job(ledger, texts, **fields).job


def test_items_run_once_and_the_manifest_is_stored(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """Every item succeeds once, re-delivery is a no-op, and manifest.jsonl lists each item."""
    api, job = submitted(database_url, ["Hello there.", "General Kenobi."])
    rt = runtime(database_url, local_store)
    ids = published(api).ids
    assert [run_item(rt, i) for i in ids] == [Outcome.SUCCEEDED] * 2
    assert [run_item(rt, i) for i in ids] == [Outcome.SKIPPED] * 2  # duplicates
    keys = sorted(local_store.list_keys(f"{job.tenant_id}/{job.id}/"))
    assert keys == [
        f"{job.tenant_id}/{job.id}/000001-1.wav",
        f"{job.tenant_id}/{job.id}/000002-2.wav",
        manifest_key("", job.tenant_id, job.id),
    ]
    lines = local_store.get_bytes(manifest_key("", job.tenant_id, job.id)).decode().splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["succeeded", "succeeded"]


class StopAfter:
    """An offline engine that sets `stop` (as a warm shutdown would) after `calls` calls."""

    name = "local"

    def __init__(self, stop: threading.Event, calls: int) -> None:
        self.engine = build_provider("local", client=None, base_url=None, api_key=None)
        self.stop, self.left = stop, calls

    def synthesize(self, text: str, **kwargs: Any) -> Synthesis:
        self.left -= 1
        if self.left == 0:
            self.stop.set()
        return self.engine.synthesize(text, **kwargs)

    def transcribe(self, audio: Any, *, model: str, options: Mapping[str, Any]) -> Any:
        raise NotImplementedError


def test_a_group_stopped_by_shutdown_hands_back_the_items_not_started(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """After a shutdown begins, a group finishes its current item and re-publishes the rest,
    which stay queued; a redelivery of the whole group then runs only those."""
    api, _ = submitted(database_url, [f"line {n}." for n in range(5)])
    ids, stop = published(api).ids, threading.Event()
    rt = runtime(database_url, local_store, StopAfter(stop, calls=2))
    assert run_items(rt, ids, stop) == ids[2:]
    assert published(rt.ledger).ids == ids[2:]
    assert get_statuses(api, ids) == ["succeeded"] * 2 + ["queued"] * 3
    assert run_items(runtime(database_url, local_store), ids, threading.Event()) == []
    assert get_statuses(api, ids) == ["succeeded"] * 5
    with api.db.sessions() as session:  # one provider call per item: none ran twice
        calls = session.scalar(select(func.count()).where(Attempt.item_id.in_(ids)))
    assert calls == 5


def get_statuses(ledger: ItemLedger, ids: list[int]) -> list[str]:
    with ledger.db.sessions() as session:
        return [session.get(Item, i).status for i in ids]  # type: ignore[union-attr]


def test_unknown_voice_fails_only_that_item(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """A permanent provider error fails the item with its code after one attempt."""
    api, _ = submitted(database_url, ["Hi."], voice="no-such-voice")
    rt = runtime(database_url, local_store)
    item_id = published(api).ids[0]
    assert run_item(rt, item_id) == Outcome.FAILED
    with api.db.sessions() as session:
        item = session.get(Item, item_id)
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
    api, _ = submitted(database_url, ["Hi."])
    down = AlwaysDown()
    rt = runtime(
        database_url,
        local_store,
        down,
        call_attempts=2,
        item_attempts=3,
        item_base_s=0.0,
        item_cap_s=0.0,
    )
    item_id = published(api).ids[0]
    assert run_item(rt, item_id) == Outcome.RETRYING
    assert published(rt.ledger).published == [(item_id, 0.0)]
    assert run_item(rt, item_id) == Outcome.RETRYING
    assert run_item(rt, item_id) == Outcome.FAILED
    with api.db.sessions() as session:
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
    api, job = submitted(database_url, [f"line {n}" for n in range(5)])
    refusing = RefusesKey()
    rt = runtime(database_url, local_store, refusing)
    ids = published(api).ids
    assert run_item(rt, ids[0]) == Outcome.FAILED
    assert [run_item(rt, i) for i in ids[1:]] == [Outcome.SKIPPED] * 4
    assert refusing.calls == 1
    with api.db.sessions() as session:
        items = list(session.scalars(select(Item).where(Item.job_id == job.id)))
        status = session.scalar(select(Job.status).where(Job.id == job.id))
    assert status == "failed"
    assert {i.error_code for i in items} == {"provider_auth_failed"}
    assert all("SLNG_API_KEY" in (i.error_message or "") for i in items)


def test_heartbeats_keep_a_slow_items_lease(database_url: str) -> None:
    """A held claim's lease is renewed, so the sweeper does not take a slow item back; once
    the heartbeats stop, the lease runs out and the sweeper does."""
    ledger, _ = submitted(database_url, ["slow"])
    item = ledger.claim(published(ledger).ids[0], lease_s=1)
    assert item is not None
    keeper = HeartbeatLeases(ledger, lease_s=60)
    with keeper.holding(item):
        assert keeper.renew_now() == 1
    assert keeper.renew_now() == 0  # no longer held: nothing renewed
    keeper.close()
    assert ledger.expire_leases(limit=10) == []
    with ledger.db.sessions() as session:
        session.execute(update(Item).values(lease_expires_at=utc_now()))
        session.commit()
    assert ledger.expire_leases(limit=10) == [item.id]


def test_stt_item_with_a_url_source_is_fetched_and_transcribed(
    database_url: str, local_store: LocalObjectStore, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """An allowed http:// source is fetched by the worker and transcribed; a private one is not."""
    import functools
    import http.server
    import threading

    from jobs.netpolicy import parse_allowlist
    from jobs.schemas import JobCreate
    from jobs.service import submit_job
    from jobs.tenants import ensure_tenant
    from storage.publisher import InMemoryPublisher

    speech = build_provider("local", client=None, base_url=None, api_key=None).synthesize(
        "one two three", model="espeak-ng", voice=None, options={}
    )
    (tmp_path / "call.wav").write_bytes(speech.audio)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/call.wav"
    api = migrated_ledger(database_url)
    tenant = ensure_tenant(api.db.sessions, "acme").id
    body = JobCreate.model_validate(
        {"kind": "stt", "provider": "local", "items": [{"id": "call", "source": url}]}
    )
    try:
        with pytest.raises(ApiError) as refused:  # loopback is private: refused by default
            submit_job(api, tenant, body, idempotency_key=None, max_items=10)
        assert refused.value.code == "forbidden_source"
        assert isinstance(api.publisher, InMemoryPublisher) and not api.publisher.ids
        allow = parse_allowlist("127.0.0.1/32")
        submit_job(api, tenant, body, idempotency_key=None, max_items=10, allow=allow)
        rt = runtime(database_url, local_store)
        rt = dataclasses.replace(rt, config=dataclasses.replace(rt.config, source_allow=allow))
        assert run_item(rt, published(api).ids[0]) == Outcome.SUCCEEDED
    finally:
        server.shutdown()
    with api.db.sessions() as session:
        item = session.get(Item, published(api).ids[0])
    transcript = json.loads(local_store.get_bytes(item.output_key))
    assert transcript["duration_s"] > 0.5 and transcript["text"]


def test_a_full_provider_limit_hands_the_item_back_without_spending_an_attempt(
    database_url: str, local_store: LocalObjectStore, redis_url: str
) -> None:
    """With every shared slot taken, the item goes back to the queue with its attempts intact."""
    import redis

    from jobs.catalog_limits import ProviderLimits
    from workers.throttle import ProviderThrottle

    client = redis.Redis.from_url(redis_url)
    throttle = ProviderThrottle(client, {"local": ProviderLimits(max_concurrency=1)}, lease_s=30)
    fingerprint = f"{random.getrandbits(64):016x}"
    held = throttle.acquire("local", fingerprint, max_wait_s=1)
    assert held is not None
    api, _ = submitted(database_url, ["waiting"])
    rt = runtime(database_url, local_store)
    rt = dataclasses.replace(
        rt,
        throttle=throttle,
        providers=OneProvider(rt.providers.get("local"), fingerprint),
        config=dataclasses.replace(rt.config, throttle_wait_s=0.2),
    )
    ids, republished = published(api).ids, published(rt.ledger)
    try:
        assert run_item(rt, ids[0]) == Outcome.DEFERRED
        with api.db.sessions() as session:
            item = session.get(Item, ids[0])
            assert (item.status, item.attempts) == ("queued", 0)
        assert republished.ids == ids and 1.0 <= republished.published[0][1] <= 3.0
    finally:
        held.release()
    with api.db.sessions() as session:  # due later: let it run now that the slot is free
        session.execute(update(Item).values(next_attempt_at=None))
        session.commit()
    assert run_item(rt, ids[0]) == Outcome.SUCCEEDED
    client.close()


def test_a_storage_outage_hands_the_item_back_without_spending_an_attempt(
    database_url: str,
) -> None:
    """When S3 is unreachable the item is deferred with its attempts intact, not failed."""
    from storage.stores import open_object_store

    dead_store = open_object_store("s3://nowhere", endpoint_url=f"http://127.0.0.1:{free_port()}")
    api, _ = submitted(database_url, ["Hello."])
    rt = runtime(database_url, dead_store)
    # Ride out the outage for half a second only (half the lease).
    rt = dataclasses.replace(rt, config=dataclasses.replace(rt.config, lease_s=1.0))
    item_id, republished = published(api).ids[0], published(rt.ledger)
    assert run_item(rt, item_id) == Outcome.DEFERRED
    with api.db.sessions() as session:
        item = session.get(Item, item_id)
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
    api, _ = submitted(database_url, ["busy"])
    rt = runtime(database_url, local_store, SaysSlowDown(), call_attempts=1, item_attempts=2)
    item_id = published(api).ids[0]
    for _ in range(4):  # more 429s than the item has attempts: it must not fail
        assert run_item(rt, item_id) == Outcome.DEFERRED
        with api.db.sessions() as session:
            session.execute(update(Item).values(next_attempt_at=None))
            session.commit()
    with api.db.sessions() as session:
        item = session.get(Item, item_id)
    assert (item.status, item.attempts) == ("queued", 0)
    republished = published(rt.ledger).published
    assert len(republished) == 4 and all(countdown >= 7.0 for _, countdown in republished)


class WildTranscripts(AlwaysDown):
    """An STT provider without checks of its own, whose transcript has NaN and -1e300 times."""

    def transcribe(self, audio: Any, *, model: str, options: Mapping[str, Any]) -> Transcript:
        self.calls += 1
        word = Word(text="hello", start=float("nan"), end=0.4)
        return Transcript("hello", "en", -1e300, "local", model, words=[word])


def test_a_bad_transcript_is_retried_and_leaves_no_objects_or_usage(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """A transcript with NaN/-1e300 times is a transient bad_provider_output: no .json or .txt
    at the item's keys, and the job's usage.audio_seconds stays 0."""
    from jobs.schemas import JobCreate
    from jobs.service import submit_job
    from jobs.tenants import ensure_tenant
    from storage.keys import upload_key

    api = migrated_ledger(database_url)
    tenant = ensure_tenant(api.db.sessions, "acme").id
    upload_id = "ab" * 16
    wav = build_provider("local", client=None, base_url=None, api_key=None).synthesize(
        "one two", model="espeak-ng", voice=None, options={}
    )
    local_store.put_bytes(upload_key(tenant, upload_id, "audio.wav"), wav.audio, "audio/wav")
    body = JobCreate.model_validate(
        {
            "kind": "stt",
            "provider": "local",
            "options": {"transcript_formats": ["txt", "srt"]},
            "items": [{"id": "call", "source": f"upload://{upload_id}/audio.wav"}],
        }
    )
    job = submit_job(api, tenant, body, idempotency_key=None, max_items=10).job
    rt = runtime(database_url, local_store, WildTranscripts(), call_attempts=1)
    assert run_item(rt, published(api).ids[0]) == Outcome.RETRYING
    with api.db.sessions() as session:
        item = session.scalars(select(Item).where(Item.job_id == job.id)).one()
        usage = session.scalar(select(Job.usage_audio_seconds).where(Job.id == job.id))
    assert item.error_code == "bad_provider_output"
    assert list(local_store.list_keys(f"{tenant}/{job.id}/")) == []
    assert usage == 0.0


def test_warm_up_opens_the_pool_and_only_logs_when_storage_is_down(
    pg_url: str, local_store: LocalObjectStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker's warm-up leaves a connection per thread in the pool (capped at its size,
    2 here), and a store that cannot be reached at start-up is logged as a warning instead
    of raising."""
    rt = runtime(pg_url, local_store)
    try:
        assert rt.ledger.db.autocommit is not None
        warm_up(rt, 3)
        assert rt.ledger.db.autocommit.pool.checkedin() == 2  # type: ignore[attr-defined]

        def down() -> None:
            raise StorageUnavailable("bucket 'x' is not usable (HTTP 503)")

        local_store.check = down  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING, logger="workers.runtime"):
            warm_up(rt, 3)
        assert "worker warm-up skipped: StorageUnavailable" in caplog.text
    finally:
        rt.close()
