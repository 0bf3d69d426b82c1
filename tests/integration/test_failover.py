"""Cross-provider failover through the real pipeline and database: an item moves to its job's
fallback when the primary fails it past its attempts, refuses it for quota, or is down for
every worker (the shared circuit, on a real Redis); the fallback's own voice is used."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from typing import Any

import pytest
import redis
from sqlalchemy import update

from emulator.audio import render_speech
from jobs.errors import ApiError
from jobs.models import Item, Job
from jobs.service import get_job
from jobs.views import item_view
from storage.localfs import LocalObjectStore
from tests.integration.helpers import migrated_ledger, published
from tests.integration.test_pipeline import runtime, submitted
from workers.circuit import RedisCircuit
from workers.pipeline import Outcome, run_item
from workers.providers.base import SpeechProvider, Synthesis
from workers.providers.errors import ProviderUnavailable, QuotaExceeded

pytestmark = pytest.mark.integration

FALLBACK = [{"provider": "smallest", "voice": "magnus"}]


class Speaker:
    """A provider double: answers speech, or raises `error` on every call; logs the voices."""

    def __init__(self, name: str, error: Exception | None = None) -> None:
        self.name, self.error = name, error
        self.voices: list[str | None] = []

    def synthesize(self, text: str, *, voice: str | None = None, **_: Any) -> Synthesis:
        self.voices.append(voice)
        if self.error is not None:
            raise self.error
        return Synthesis(render_speech(1.0, "linear16", 24000, "wav")[0], "audio/wav")

    def transcribe(self, audio: Any, *, model: str, options: Mapping[str, Any]) -> Any:
        raise NotImplementedError


class ByName:
    """Each provider name its own double, under its own credential."""

    def __init__(self, *doubles: Speaker) -> None:
        self.doubles = {d.name: d for d in doubles}
        self.salt = uuid.uuid4().hex[:8]  # a fresh circuit per test

    def get(self, name: str) -> SpeechProvider:
        found: SpeechProvider = self.doubles[name]  # type: ignore[assignment]
        return found

    def fingerprint(self, name: str) -> str:
        return f"{self.salt}{name}"

    def close(self) -> None:
        """Nothing to release."""


def only_item(sessions: Any, job: Job) -> Any:
    """The job's one item as the API shows it."""
    with sessions() as session:
        row = session.query(Item).filter(Item.job_id == job.id).one()
        return item_view(session.get(Job, job.id), row, None)


def make_due(database_url: str, item_id: int) -> None:
    with migrated_ledger(database_url).db.sessions.begin() as session:
        session.execute(update(Item).where(Item.id == item_id).values(next_attempt_at=None))


def test_an_item_past_its_attempts_moves_to_the_fallback_and_uses_its_voice(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """With the primary failing every call, the item's last attempt moves it to the fallback
    (due now, fresh attempts), which speaks it with the fallback's voice, not the job's; the
    item then names the fallback as its provider."""
    api, job = submitted(
        database_url,
        ["Hello there."],
        provider="slng",
        voice="aura-2-thalia-en",
        fallback=FALLBACK,
    )
    primary = Speaker("slng", ProviderUnavailable("503", status_code=503))
    fallback = Speaker("smallest")
    rt = runtime(database_url, local_store, item_attempts=2, call_attempts=1)
    rt = dataclasses.replace(rt, providers=ByName(primary, fallback))
    (item_id,) = published(api).ids
    assert run_item(rt, item_id) == Outcome.RETRYING
    make_due(database_url, item_id)
    assert run_item(rt, item_id) == Outcome.REROUTED
    assert run_item(rt, item_id) == Outcome.SUCCEEDED  # due at once, no waiting
    assert primary.voices == ["aura-2-thalia-en"] * 2
    assert fallback.voices == ["magnus"]
    item = only_item(api.db.sessions, job)
    assert item.provider == "smallest" and item.status == "succeeded" and item.error is None
    assert item.attempts == 1  # a fresh budget on the fallback
    assert get_job(api.db.sessions, job.tenant_id, job.id).status == "succeeded"


def test_quota_moves_items_to_the_fallback_instead_of_failing_the_job(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """Out of quota on the primary, each item moves on at once (no attempts burnt) and the job
    succeeds through the fallback; without a fallback the same refusal fails the job."""
    api, job = submitted(database_url, ["One.", "Two."], provider="slng", fallback=FALLBACK)
    primary = Speaker("slng", QuotaExceeded("You exceeded your current quota."))
    rt = dataclasses.replace(
        runtime(database_url, local_store), providers=ByName(primary, Speaker("smallest"))
    )
    ids = published(api).ids
    assert [run_item(rt, i) for i in ids] == [Outcome.REROUTED] * 2
    assert [run_item(rt, i) for i in ids] == [Outcome.SUCCEEDED] * 2
    assert get_job(api.db.sessions, job.tenant_id, job.id).status == "succeeded"


def test_an_open_circuit_sends_items_to_the_fallback_without_calling_the_primary(
    database_url: str, local_store: LocalObjectStore, redis_url: str
) -> None:
    """Once the primary's circuit opens (two failures here), later items go straight to the
    fallback: the primary is not called again."""
    texts = [f"Line {n}." for n in range(5)]
    api, _ = submitted(database_url, texts, provider="slng", fallback=FALLBACK)
    primary = Speaker("slng", ProviderUnavailable("503", status_code=503))
    circuit = RedisCircuit(redis.Redis.from_url(redis_url), failures=2, open_s=60)
    rt = runtime(database_url, local_store, item_attempts=1, call_attempts=1)
    rt = dataclasses.replace(rt, providers=ByName(primary, Speaker("smallest")), circuit=circuit)
    ids = published(api).ids
    first = [run_item(rt, i) for i in ids]
    assert first == [Outcome.REROUTED] * 5
    assert len(primary.voices) == 2  # the two failures that opened the circuit, nothing after
    assert [run_item(rt, i) for i in ids] == [Outcome.SUCCEEDED] * 5


def test_fallbacks_are_checked_at_submit(database_url: str) -> None:
    """An unknown fallback provider or model is refused at submit naming the entry, and so is
    a fallback that is the job's own provider and model."""
    ledger = migrated_ledger(database_url)
    for fallback, said in [
        ([{"provider": "nobody"}], "fallback[0]: Provider 'nobody'"),
        ([{"provider": "smallest", "model": "lightning-9"}], "fallback[0]: Model 'lightning-9'"),
        ([{"provider": "local"}], "fallback[0]: it names the job's own provider"),
    ]:
        with pytest.raises(ApiError) as caught:
            submitted(database_url, ["Hi."], provider="local", fallback=fallback)
        assert said in caught.value.message
    assert ledger is not None
