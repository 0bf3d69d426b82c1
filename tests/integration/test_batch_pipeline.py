"""SLNG batch STT through `run_item` on real databases: the item waits queued between polls.

The batch API is an in-memory fake of SLNG's job states (its HTTP shapes are the adapter's
unit tests and the e2e test's); the ledger, sweeper and store are real. Time is a clock the
test moves: nothing sleeps.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from jobs.catalog_slng import SLNG_BATCH_STT_MODEL
from jobs.clock import utc_now
from jobs.ledger import ItemLedger
from jobs.models import Attempt, Item, Job
from jobs.schemas import JobCreate
from jobs.service import submit_job
from jobs.tenants import ensure_tenant
from storage.keys import upload_key
from storage.localfs import LocalObjectStore
from storage.publisher import InMemoryPublisher
from tests.integration.helpers import migrated_ledger
from tests.integration.test_pipeline import AlwaysDown, OneProvider
from workers.audio import pcm16_to_wav
from workers.config import BatchPolicy, WorkerConfig
from workers.pipeline import Outcome, run_item
from workers.providers.base import AudioInput, Transcript, Word
from workers.providers.slng_batch import BatchStatus
from workers.runtime import Runtime
from workers.sweeper import sweep_once

pytestmark = pytest.mark.integration
WAV = pcm16_to_wav(b"\x10\x00" * 32000, 16000)  # 2 s


class Crash(BaseException):
    """The worker process dying mid-delivery (not an error the pipeline handles)."""


class FakeSlng:
    """SLNG's batch jobs in memory: each job is DONE (or FAILED) after `polls_needed` reads."""

    def __init__(self, polls_needed: int = 2, *, fails: bool = False) -> None:
        self.polls_needed, self.fails = polls_needed, fails
        self.jobs: dict[str, int] = {}  # job id → status reads since submit
        self.submits: list[str] = []
        self.crash_after_submit = False

    def submit(self, job_id: str, audio: AudioInput, options: Mapping[str, Any]) -> BatchStatus:
        assert audio.data == WAV
        self.submits.append(job_id)
        self.jobs[job_id] = 0
        if self.crash_after_submit:
            self.crash_after_submit = False
            raise Crash
        return BatchStatus("QUEUED")

    def status(self, job_id: str) -> BatchStatus | None:
        if job_id not in self.jobs:
            return None
        self.jobs[job_id] += 1
        if self.jobs[job_id] <= self.polls_needed:
            return BatchStatus("IN_PROGRESS")
        return (
            BatchStatus("FAILED", error="audio could not be decoded")
            if self.fails
            else (BatchStatus("DONE", duration_s=2.0))
        )

    def transcript(
        self, job_id: str, *, options: Mapping[str, Any], duration_s: float | None
    ) -> Transcript:
        words = [Word("hello", 0.1, 0.5), Word("world", 0.6, 1.0)]
        return Transcript("hello world", "en", 2.0, "slng", SLNG_BATCH_STT_MODEL, words=words)


class Clock:
    def __init__(self) -> None:
        self.now = utc_now()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def setup(
    database_url: str, store: LocalObjectStore, fake: FakeSlng, model: str, over_bytes: int
) -> tuple[Runtime, Clock, int, str]:
    """A one-item SLNG STT job on an upload, and a worker Runtime on a fake clock."""
    api = migrated_ledger(database_url)
    tenant = ensure_tenant(api.db.sessions, "acme").id
    store.put_bytes(upload_key(tenant, "ab" * 16, "big.wav"), WAV, "audio/wav")
    body = JobCreate.model_validate(
        {
            "kind": "stt",
            "provider": "slng",
            "model": model,
            "options": {"transcript_formats": ["srt"]},
            "items": [{"id": "call", "source": f"upload://{'ab' * 16}/big.wav"}],
        }
    )
    job = submit_job(api, tenant, body, idempotency_key=None, max_items=10).job
    clock = Clock()
    ledger = ItemLedger(api.db, InMemoryPublisher(), outage_s=0.0, clock=clock)
    rt = Runtime(
        config=WorkerConfig(batch=BatchPolicy(over_bytes=over_bytes)),
        ledger=ledger,
        store=store,
        providers=OneProvider(AlwaysDown()),  # the synchronous route must not be called
        rng=random.Random(1),
        sleep=lambda _s: None,
        batch=fake,
    )
    with api.db.sessions() as session:
        item_id = session.scalars(select(Item.id).where(Item.job_id == job.id)).one()
    return rt, clock, item_id, job.id


def row(rt: Runtime, item_id: int) -> Item:
    with rt.ledger.db.sessions() as session:
        item = session.get(Item, item_id)
        assert item is not None
        return item


def swept(rt: Runtime) -> list[int]:
    publisher = rt.ledger.publisher
    assert isinstance(publisher, InMemoryPublisher)
    before = len(publisher.ids)
    sweep_once(rt.ledger, stale_s=3600)
    return publisher.ids[before:]


def test_an_oversized_recording_is_submitted_polled_and_stored_without_a_thread_waiting(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """Over the threshold a nova job goes to batch: record id → submit → not done (handed back,
    due 5 s then 10 s later, published by the sweeper only when due) → DONE → succeeded with
    its transcript; every hand-back spends no attempt, and SLNG is paid once."""
    fake = FakeSlng(polls_needed=1)
    rt, clock, item_id, job_id = setup(
        database_url, local_store, fake, "slng/deepgram/nova:3-en", over_bytes=1000
    )
    assert run_item(rt, item_id) is Outcome.DEFERRED  # the job id is recorded
    assert row(rt, item_id).provider_job["submitted"] is False
    assert run_item(rt, item_id) is Outcome.DEFERRED  # submitted
    assert len(fake.submits) == 1 and fake.submits[0].startswith(f"sb{item_id}c")
    waiting = row(rt, item_id)
    assert (waiting.status, waiting.attempts, waiting.published_at) == ("queued", 0, None)
    assert run_item(rt, item_id) is Outcome.SKIPPED  # not due: nobody polls early
    assert swept(rt) == []
    clock.advance(5)
    assert swept(rt) == [item_id]
    assert run_item(rt, item_id) is Outcome.DEFERRED  # IN_PROGRESS
    assert row(rt, item_id).provider_job["polls"] == 1
    clock.advance(9)
    assert swept(rt) == []
    clock.advance(1)
    assert swept(rt) == [item_id]
    assert run_item(rt, item_id) is Outcome.SUCCEEDED
    done = row(rt, item_id)
    assert (done.status, done.attempts, len(fake.submits)) == ("succeeded", 1, 1)
    stored = json.loads(rt.store.get_bytes(done.output_key or ""))
    assert (stored["text"], stored["model"]) == ("hello world", SLNG_BATCH_STT_MODEL)
    assert rt.store.get_bytes((done.output_key or "").removesuffix(".json") + ".srt")
    with rt.ledger.db.sessions() as session:
        job = session.get(Job, job_id)
        calls = session.scalar(select(Attempt.id).where(Attempt.item_id == item_id).limit(1))
    assert job is not None and job.status == "succeeded" and calls is not None


def test_a_failed_slng_job_fails_the_item_with_its_reason(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """A job naming the batch model whose SLNG job ends FAILED fails with SLNG's message."""
    fake = FakeSlng(polls_needed=0, fails=True)
    rt, clock, item_id, _ = setup(
        database_url, local_store, fake, SLNG_BATCH_STT_MODEL, over_bytes=10**9
    )
    assert [run_item(rt, item_id) for _ in range(2)] == [Outcome.DEFERRED] * 2
    clock.advance(5)
    assert run_item(rt, item_id) is Outcome.FAILED
    failed = row(rt, item_id)
    assert failed.error_code == "provider_rejected"
    assert "audio could not be decoded" in (failed.error_message or "")


def test_a_crash_between_submit_and_record_does_not_submit_twice(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """The worker dies right after SLNG accepted the job: once the lease expires, the next
    claim finds the recorded id at SLNG and polls it instead of paying for a second job."""
    fake = FakeSlng(polls_needed=0)
    rt, clock, item_id, _ = setup(
        database_url, local_store, fake, SLNG_BATCH_STT_MODEL, over_bytes=10**9
    )
    assert run_item(rt, item_id) is Outcome.DEFERRED
    fake.crash_after_submit = True
    with pytest.raises(Crash):
        run_item(rt, item_id)
    assert row(rt, item_id).status == "running"
    with rt.ledger.db.engine.begin() as c:  # the lease runs out while nobody renews it
        c.execute(update(Item).where(Item.id == item_id).values(lease_expires_at=clock.now))
    clock.advance(1)
    assert swept(rt) == [item_id]
    assert run_item(rt, item_id) is Outcome.DEFERRED  # found at SLNG: marked submitted
    clock.advance(5)
    assert run_item(rt, item_id) is Outcome.SUCCEEDED
    assert len(fake.submits) == 1
