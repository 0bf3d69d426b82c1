"""Budget caps on real databases: a capped job stops cleanly at its cap (issue 12).

The pipeline runs for real (offline espeak-ng engine, behind a counter) on PostgreSQL and
SQLite; the concurrency checks drive the ledger directly with two claims held at once.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from sqlalchemy import select, update

from jobs import ledger_sql
from jobs.clock import utc_now
from jobs.error_codes import ErrorCode
from jobs.errors import ApiError
from jobs.ledger import ItemLedger
from jobs.models import Item, Job
from jobs.records import ItemError
from jobs.schemas import JobCreate
from jobs.service import submit_job
from jobs.status import JobStatus, job_status_from_counts
from jobs.tenants import ensure_tenant
from jobs.views import job_view
from storage.localfs import LocalObjectStore
from tests.integration.helpers import migrated_ledger, published, tts_job
from tests.integration.test_pipeline import runtime
from workers.pipeline import Outcome, run_item
from workers.providers.base import Synthesis
from workers.providers.registry import build_provider

pytestmark = pytest.mark.integration

# Five distinct lines of ten characters each (distinct, so reuse plays no part here).
LINES = ["Alpha one.", "Bravo two.", "Charlie 3.", "Delta four", "Echo five."]


class Counting:
    """The offline engine, counting the lines it is asked to speak."""

    name = "local"

    def __init__(self) -> None:
        self.engine = build_provider("local", client=None, base_url=None, api_key=None)
        self.spoken: list[str] = []

    def synthesize(self, text: str, **kwargs: Any) -> Synthesis:
        self.spoken.append(text)
        return self.engine.synthesize(text, **kwargs)

    def transcribe(self, audio: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


def _items(ledger: ItemLedger, job_id: str) -> list[Item]:
    with ledger.db.sessions() as session:
        return list(session.scalars(select(Item).where(Item.job_id == job_id).order_by(Item.seq)))


def _job(ledger: ItemLedger, job_id: str) -> Job:
    with ledger.db.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_a_character_cap_stops_the_job_cleanly(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """With 25 characters allowed, two 10-character lines run; the third would exceed the
    cap, so it and the rest are canceled with budget_exceeded and the job is
    completed_with_errors, having used 20 characters and called the provider twice."""
    api = migrated_ledger(database_url)
    job = tts_job(api, LINES, budget={"characters": 25}).job
    counting = Counting()
    rt = runtime(database_url, local_store, counting)
    outcomes = [run_item(rt, i) for i in published(api).ids]
    assert outcomes == [Outcome.SUCCEEDED] * 2 + [Outcome.STOPPED] + [Outcome.SKIPPED] * 2
    assert counting.spoken == LINES[:2]
    items = _items(api, job.id)
    assert [i.status for i in items] == ["succeeded"] * 2 + ["canceled"] * 3
    assert {i.error_code for i in items[2:]} == {"budget_exceeded"}
    done = _job(api, job.id)
    assert done.status == JobStatus.COMPLETED_WITH_ERRORS
    assert (done.succeeded, done.canceled, done.queued, done.running) == (2, 3, 0, 0)
    assert done.usage_characters == 20 and done.budget_stopped_at is not None
    assert done.finished_at is not None and done.canceled_at is None


def test_a_job_whose_first_line_does_not_fit_fails(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """A cap below the first line's length: nothing is spoken, every item is canceled with
    budget_exceeded, and the job is failed (nothing succeeded), not canceled."""
    api = migrated_ledger(database_url)
    job = tts_job(api, LINES[:3], budget={"characters": 5}).job
    counting = Counting()
    rt = runtime(database_url, local_store, counting)
    assert run_item(rt, published(api).ids[0]) == Outcome.STOPPED
    assert counting.spoken == []
    assert _job(api, job.id).status == JobStatus.FAILED
    assert {i.error_code for i in _items(api, job.id)} == {"budget_exceeded"}


def test_two_items_in_flight_cannot_both_slip_under_the_cap(database_url: str) -> None:
    """Two items claimed at once with room for one: the first to check starts, the second
    sees its characters in flight and may not; once the first fails, the room is free."""
    ledger = migrated_ledger(database_url)
    job = tts_job(ledger, LINES[:2], budget={"characters": 15}).job
    first, second = (ledger.claim(i, lease_s=60) for i in published(ledger).ids)
    assert first is not None and second is not None and first.capped
    assert ledger.pass_budget(second) is True
    assert ledger.pass_budget(first) is False
    # The started item fails (its characters were never spent): the other now fits.
    ledger.fail(second, ItemError(ErrorCode.INVALID_INPUT, "refused"), [])
    assert ledger.pass_budget(first) is True
    assert _job(ledger, job.id).budget_stopped_at is None


def test_an_audio_cap_lets_no_item_start_once_reached(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """An audio-seconds cap is checked before each call: the first line runs (nothing used
    yet), its audio reaches the 0.1 s cap, and the remaining lines are canceled."""
    api = migrated_ledger(database_url)
    job = tts_job(api, LINES[:3], budget={"audio_seconds": 0.1}).job
    rt = runtime(database_url, local_store, Counting())
    outcomes = [run_item(rt, i) for i in published(api).ids]
    assert outcomes == [Outcome.SUCCEEDED, Outcome.STOPPED, Outcome.SKIPPED]
    done = _job(api, job.id)
    assert done.usage_audio_seconds > 0.1
    assert done.status == JobStatus.COMPLETED_WITH_ERRORS


def test_a_cost_budget_is_stored_as_a_character_cap_at_the_dearest_route(
    database_url: str,
) -> None:
    """1 USD on openai tts-1 with a tts-1-hd fallback (30 USD/1M) becomes 33,333 characters,
    and the job view shows the budget, its cap and no stop yet."""
    ledger = migrated_ledger(database_url)
    job = tts_job(
        ledger,
        ["Hello."],
        provider="openai",
        budget={"cost": 1.0},
        fallback=[{"provider": "openai", "model": "tts-1-hd"}],
    ).job
    stored = _job(ledger, job.id)
    assert (stored.cap_characters, stored.cap_audio_seconds) == (33_333, None)
    budget = job_view(stored).budget
    assert budget is not None and budget.cost == 1.0 and budget.cap_characters == 33_333
    assert budget.stopped_at is None


def test_a_budget_the_job_cannot_enforce_is_refused(database_url: str) -> None:
    """A character cap on an STT job is refused with invalid_budget, and nothing is stored."""
    ledger = migrated_ledger(database_url)
    tenant = ensure_tenant(ledger.db.sessions, "acme").id
    body = JobCreate.model_validate(
        {
            "kind": "stt",
            "provider": "local",
            "items": [{"source": "upload://" + "0" * 32 + "/audio.wav"}],
            "budget": {"characters": 100},
        }
    )
    with pytest.raises(ApiError) as refused:
        submit_job(ledger, tenant, body, idempotency_key=None, max_items=10)
    assert refused.value.code == "invalid_budget"
    with ledger.db.sessions() as session:
        assert session.scalar(select(Job.id)) is None


def test_sql_status_of_a_budget_stopped_job_matches_python(database_url: str) -> None:
    """With budget_stopped_at set, the counter update's CASE agrees with
    `job_status_from_counts(budget_stopped=True)` for every mix of counts."""
    ledger = migrated_ledger(database_url)
    job_id = tts_job(ledger, ["x"]).job.id
    names = ("queued", "running", "succeeded", "failed", "canceled")
    with ledger.db.engine.begin() as connection:
        connection.execute(update(Job).where(Job.id == job_id).values(budget_stopped_at=utc_now()))
    for combo in itertools.product(range(2), repeat=5):
        if not any(combo):
            continue
        counts = dict(zip(names, combo, strict=True))
        with ledger.db.engine.begin() as connection:
            connection.execute(update(Job).where(Job.id == job_id).values(**counts))
            params = ledger_sql.counter_params(utc_now()) | {"job_id": job_id}
            status = connection.execute(ledger_sql.COUNTER_UPDATE, params).one().status
        expected = job_status_from_counts(total=sum(combo), budget_stopped=True, **counts)
        assert status == expected, counts
