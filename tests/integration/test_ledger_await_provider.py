"""`ItemLedger.await_provider` (an item waiting on an SLNG batch job) on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from jobs.clock import utc_now
from jobs.error_codes import ErrorCode
from jobs.ledger import ItemLedger
from jobs.models import Item, Job
from jobs.records import ClaimedItem, ItemError, ProviderJob
from tests.integration.helpers import migrated_ledger, published, tts_job
from workers.sweeper import sweep_once

pytestmark = pytest.mark.integration


def one_claimed(database_url: str) -> tuple[ItemLedger, str, int, ClaimedItem]:
    """A ledger, a one-item job's id, the item's id and the item claimed."""
    ledger = migrated_ledger(database_url)
    job_id = tts_job(ledger, ["a recording"]).job.id
    (item_id,) = published(ledger).ids
    claimed = ledger.claim(item_id, lease_s=60)
    assert claimed is not None and claimed.provider_job is None
    return ledger, job_id, item_id, claimed


def test_waiting_records_the_job_spends_no_attempt_and_leaves_publishing_to_the_sweeper(
    database_url: str,
) -> None:
    """The item goes back to queued with its provider job, attempts unspent, no message sent;
    a claim before it is due fails, the sweeper publishes it once due, and the next claim
    reads the job back."""
    ledger, job_id, item_id, claimed = one_claimed(database_url)
    waiting = ProviderJob("sb1cabc", utc_now().replace(microsecond=0), submitted=True, polls=2)
    sent_before = len(published(ledger).published)
    assert ledger.await_provider(claimed, waiting, [], delay_s=30.0)
    assert len(published(ledger).published) == sent_before  # no countdown message
    with ledger.db.sessions() as session:
        row = session.get(Item, item_id)
        job = session.get(Job, job_id)
    assert row is not None and job is not None
    assert (row.status, row.attempts, row.published_at) == ("queued", 0, None)
    assert (job.queued, job.running) == (1, 0)
    assert ledger.claim(item_id, lease_s=60) is None  # not due for 30 s
    ledger.clock = lambda: utc_now() + timedelta(seconds=31)
    assert sweep_once(ledger, stale_s=300).published == 1
    again = ledger.claim(item_id, lease_s=60)
    assert again is not None and again.provider_job == waiting


def test_waiting_with_no_delay_is_published_at_once(database_url: str) -> None:
    """Delay 0 (the job id was just recorded) sends the id again straight away."""
    ledger, _, item_id, claimed = one_claimed(database_url)
    assert ledger.await_provider(claimed, ProviderJob("sb1c2", utc_now()), [], delay_s=0.0)
    assert published(ledger).published[-1] == (item_id, 0.0)
    assert ledger.claim(item_id, lease_s=60) is not None


def test_a_lost_claim_cannot_record_a_provider_job(database_url: str) -> None:
    """Once the lease was taken over, the old holder's await_provider is refused."""
    ledger, _, item_id, first = one_claimed(database_url)
    with ledger.db.engine.begin() as c:
        c.execute(update(Item).where(Item.id == item_id).values(lease_expires_at=utc_now()))
    ledger.clock = lambda: utc_now() + timedelta(seconds=1)
    assert ledger.expire_leases(limit=10) == [item_id]
    assert ledger.claim(item_id, lease_s=60) is not None
    assert not ledger.await_provider(first, ProviderJob("sb1c3", utc_now()), [], delay_s=5.0)
    with ledger.db.sessions() as session:
        assert session.scalar(select(Item.provider_job).where(Item.id == item_id)) is None


def test_retrying_a_failed_item_forgets_its_provider_job(database_url: str) -> None:
    """ "Retry failed" clears provider_job (SQL NULL), so the retried item submits afresh."""
    ledger, job_id, item_id, claimed = one_claimed(database_url)
    ledger.await_provider(claimed, ProviderJob("sb1c4", utc_now(), submitted=True), [], delay_s=0)
    again = ledger.claim(item_id, lease_s=60)
    assert again is not None and again.provider_job is not None
    ledger.fail(again, ItemError(ErrorCode.PROVIDER_REJECTED, "SLNG job FAILED"), [])
    assert ledger.retry_failed(job_id) == [item_id]
    with ledger.db.sessions() as session:
        assert session.scalar(select(Item.provider_job.is_(None)).where(Item.id == item_id))
    fresh = ledger.claim(item_id, lease_s=60)
    assert fresh is not None and fresh.provider_job is None
