"""The item ledger's moves, counters and job-wide operations on real PostgreSQL and SQLite."""

import dataclasses
import itertools
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from jobs import ledger_sql
from jobs.clock import utc_now
from jobs.error_codes import ErrorCode
from jobs.ledger import ItemLedger
from jobs.models import Attempt, Item, Job
from jobs.records import AttemptRecord, ClaimedItem, ItemError, ItemResult
from jobs.status import ItemStatus, JobStatus, job_status_from_counts
from jobs.sweeper_queries import due_unpublished_items
from storage.db import Database
from tests.integration.helpers import migrated_ledger, published, tts_job

pytestmark = pytest.mark.integration

SMALL = ItemResult("k", 1, "x", 1.0, 1)  # what the output is does not matter here
LATER = ItemError(ErrorCode.RATE_LIMITED, "later")


def claim(ledger: ItemLedger, item_id: int, lease_s: float = 60) -> ClaimedItem:
    claimed = ledger.claim(item_id, lease_s=lease_s)
    assert claimed is not None
    return claimed


def assert_counters_match_items(ledger: ItemLedger, job_id: str) -> Job:
    with ledger.db.sessions() as session:
        job = session.get(Job, job_id)
        rows = dict(
            session.execute(
                select(Item.status, func.count()).where(Item.job_id == job_id).group_by(Item.status)
            ).all()
        )
    assert job is not None
    for status in ItemStatus:
        assert getattr(job, status.value) == rows.get(status, 0), status
    return job


def test_submit_stores_items_and_publishes_each_once(database_url: str) -> None:
    """A submitted job has one queued item per line and every id published exactly once."""
    ledger = migrated_ledger(database_url)
    submitted = tts_job(ledger, [f"line {n}" for n in range(25)])
    ids = published(ledger).ids
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 25
    job = assert_counters_match_items(ledger, submitted.job.id)
    assert (job.total, job.queued, job.status) == (25, 25, JobStatus.QUEUED)


def test_an_item_can_be_claimed_only_once(database_url: str) -> None:
    """The conditional UPDATE lets exactly one of many concurrent claimers win."""
    ledger = migrated_ledger(database_url)
    tts_job(ledger, ["only one"])
    item_id = published(ledger).ids[0]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _n: ledger.claim(item_id, lease_s=60), range(8)))
    assert sum(r is not None for r in results) == 1


def test_outcomes_move_counters_and_status_together(database_url: str) -> None:
    """succeed/fail/retry_later keep job counters equal to the item rows and derive the status."""
    ledger = migrated_ledger(database_url)
    submitted = tts_job(ledger, ["a", "b", "c"])
    a, b, c = (claim(ledger, i) for i in published(ledger).ids)
    assert ledger.succeed(a, ItemResult("k", 10, "audio/wav", 1.5, 1), [])
    assert ledger.fail(b, ItemError(ErrorCode.INVALID_INPUT, "no"), [])
    assert ledger.retry_later(c, LATER, [], delay_s=0)
    job = assert_counters_match_items(ledger, submitted.job.id)
    assert job.status == JobStatus.RUNNING and job.usage_audio_seconds == 1.5
    assert ledger.succeed(claim(ledger, c.id), ItemResult("k2", 1, "audio/wav", 1.0, 1), [])
    job = assert_counters_match_items(ledger, submitted.job.id)
    assert job.status == JobStatus.COMPLETED_WITH_ERRORS and job.finished_at is not None


def test_a_stale_claim_holder_cannot_finish(database_url: str) -> None:
    """After a lease expires and another worker claims the item, the first worker's write loses."""
    ledger = migrated_ledger(database_url)
    tts_job(ledger, ["slow"])
    first = claim(ledger, published(ledger).ids[0], lease_s=-1)
    assert ledger.expire_leases(limit=10) == [first.id]
    second = claim(ledger, first.id)
    assert ledger.succeed(first, SMALL, []) is None
    assert ledger.succeed(second, SMALL, []) is not None
    with ledger.db.sessions() as session:
        assert session.get(Item, first.id).attempts == 2


def test_backoff_hides_an_item_until_it_is_due(database_url: str) -> None:
    """An item re-queued for later cannot be claimed before next_attempt_at, and a delay
    past the longest countdown is left to the sweeper (not published)."""
    ledger = migrated_ledger(database_url)
    tts_job(ledger, ["x"])
    item = claim(ledger, published(ledger).ids[0])
    assert ledger.retry_later(item, LATER, [], delay_s=3600)
    assert len(published(ledger).ids) == 1  # only the submit's message
    assert ledger.claim(item.id, lease_s=60) is None
    with ledger.db.sessions() as session:
        due = due_unpublished_items(
            session, now=utc_now() + timedelta(minutes=61), published_before=None, limit=10
        )
    assert due == [item.id]


def test_hand_back_spends_no_attempt_and_publishes_a_countdown(database_url: str) -> None:
    """A handed-back item is queued again with its attempt returned and one countdown message."""
    ledger = migrated_ledger(database_url)
    tts_job(ledger, ["x"])
    item = claim(ledger, published(ledger).ids[0])
    assert ledger.hand_back(item, [], delay_s=2.0)
    assert published(ledger).published[-1] == (item.id, 2.0)
    with ledger.db.sessions() as session:
        row = session.get(Item, item.id)
        assert (row.status, row.attempts) == (ItemStatus.QUEUED, 0)


def test_cancel_ends_queued_and_running_items_and_the_holder_cannot_finish(
    database_url: str,
) -> None:
    """Cancel marks queued and running items canceled at once; the running item's holder can
    no longer succeed, and the job is canceled with counters equal to the rows."""
    ledger = migrated_ledger(database_url)
    submitted = tts_job(ledger, ["a", "b", "c"])
    ids = published(ledger).ids
    running = claim(ledger, ids[0])
    assert ledger.cancel_job(submitted.job.id) == 3
    assert ledger.claim(ids[1], lease_s=60) is None
    assert ledger.succeed(running, SMALL, []) is None
    assert ledger.is_canceled(running.id)
    job = assert_counters_match_items(ledger, submitted.job.id)
    assert (job.status, job.succeeded, job.running, job.canceled) == (JobStatus.CANCELED, 0, 0, 3)


def test_a_canceled_jobs_running_items_are_not_requeued(database_url: str) -> None:
    """After a cancel, a running item's retry or hand-back is refused (its claim is gone) and
    nothing is published again."""
    ledger = migrated_ledger(database_url)
    submitted = tts_job(ledger, ["a", "b"])
    first, second = (claim(ledger, i) for i in published(ledger).ids)
    ledger.cancel_job(submitted.job.id)
    assert not ledger.retry_later(first, LATER, [], delay_s=1)
    assert not ledger.hand_back(second, [], delay_s=1)
    assert len(published(ledger).ids) == 2  # the submit's messages only
    job = assert_counters_match_items(ledger, submitted.job.id)
    assert (job.status, job.canceled) == (JobStatus.CANCELED, 2)


def test_renew_returns_only_the_claims_still_held(database_url: str) -> None:
    """The heartbeat's renewal names the tokens it extended, so a canceled job's item (and a
    lease taken over) shows up as lost to its worker."""
    ledger = migrated_ledger(database_url)
    first_job = tts_job(ledger, ["a"]).job
    tts_job(ledger, ["b", "c"])
    a, b, c = (
        claim(ledger, i, lease_s=-1 if n == 2 else 60) for n, i in enumerate(published(ledger).ids)
    )
    assert ledger.expire_leases(limit=10) == [c.id]
    taken_over = claim(ledger, c.id)
    ledger.cancel_job(first_job.id)
    assert ledger.renew([a.token, b.token, c.token], lease_s=60) == {b.token}
    assert ledger.renew([taken_over.token], lease_s=60) == {taken_over.token}
    assert ledger.is_canceled(a.id) and not ledger.is_canceled(c.id)


def test_retry_requeues_only_failed_items(database_url: str) -> None:
    """Retry moves failed items back to queued (and publishes them) and leaves succeeded ones."""
    ledger = migrated_ledger(database_url)
    submitted = tts_job(ledger, ["ok", "bad"])
    ok, bad = (claim(ledger, i) for i in published(ledger).ids)
    ledger.succeed(ok, SMALL, [])
    ledger.fail(bad, ItemError(ErrorCode.INVALID_INPUT, "y"), [])
    assert ledger.retry_failed(submitted.job.id) == [bad.id]
    assert published(ledger).ids[-1] == bad.id
    job = assert_counters_match_items(ledger, submitted.job.id)
    assert (job.status, job.queued, job.succeeded, job.finished_at) == (
        JobStatus.RUNNING,
        1,
        1,
        None,
    )


def test_a_refused_credential_fails_the_rest_of_the_job(database_url: str) -> None:
    """fail(whole_job=True) fails the item and every queued item of its job with the cause."""
    ledger = migrated_ledger(database_url)
    submitted = tts_job(ledger, ["a", "b", "c"])
    first = claim(ledger, published(ledger).ids[0])
    status = ledger.fail(
        first, ItemError(ErrorCode.PROVIDER_AUTH_FAILED, "bad key"), [], whole_job=True
    )
    assert status == JobStatus.FAILED
    job = assert_counters_match_items(ledger, submitted.job.id)
    assert job.failed == 3
    with ledger.db.sessions() as session:
        codes = set(session.scalars(select(Item.error_code).where(Item.job_id == job.id)))
    assert codes == {"provider_auth_failed"}


def test_sql_status_derivation_matches_python(database_url: str) -> None:
    """The CASE in the counter update agrees with `job_status_from_counts` for every mix."""
    ledger = migrated_ledger(database_url)
    job_id = tts_job(ledger, ["x"]).job.id
    names = ("queued", "running", "succeeded", "failed", "canceled")
    for combo in itertools.product(range(2), repeat=5):
        if not any(combo):
            continue
        counts = dict(zip(names, combo, strict=True))
        with ledger.db.engine.begin() as connection:
            connection.execute(update(Job).where(Job.id == job_id).values(**counts))
            params = ledger_sql.counter_params(utc_now()) | {"job_id": job_id}
            status = connection.execute(ledger_sql.COUNTER_UPDATE, params).one().status
        assert status == job_status_from_counts(total=sum(combo), **counts), counts


# --- PostgreSQL's one-statement claim and success -----------------------------------------


def an_attempt(code: int) -> AttemptRecord:
    error = None if code == 200 else "provider_unavailable"
    return AttemptRecord(utc_now(), 12.5, code, error, f"req-{code}")


def test_one_statement_claim_and_success_match_the_transactional_ones(pg_url: str) -> None:
    """On PostgreSQL the autocommit one-statement claim/succeed leave the same rows, counters,
    usage and attempts as the ledger's transactional form of the same moves."""
    one_statement = migrated_ledger(pg_url)
    db = one_statement.db
    transactional = ItemLedger(Database(db.engine, db.sessions, None), one_statement.publisher)
    attempts = [an_attempt(503), an_attempt(200)]
    snapshots = []
    for ledger in (transactional, one_statement):
        job_id = tts_job(ledger, ["first line", "second"], voice="v1").job.id
        item = claim(ledger, published(ledger).ids[-2])
        assert ledger.succeed(item, SMALL, attempts) == JobStatus.RUNNING
        job = assert_counters_match_items(ledger, job_id)
        with ledger.db.sessions() as session:
            row = session.get(Item, item.id)
            logged = session.execute(
                select(Attempt.status_code, Attempt.error_code, Attempt.provider_request_id)
                .where(Attempt.item_id == item.id)
                .order_by(Attempt.id)
            ).all()
        snapshots.append(
            (
                # `twin` differs by design: the second job's line has the first's as a twin.
                {k: v for k, v in vars(item).items() if k not in {"id", "job_id", "token", "twin"}},
                (row.status, row.attempts, row.output_key, row.duration_s, row.characters),
                (job.status, job.running, job.succeeded, job.usage_characters),
                (job.usage_audio_seconds, job.started_at is not None),
                [tuple(a) for a in logged],
            )
        )
    assert snapshots[0] == snapshots[1]
    assert snapshots[1][4] == [(503, "provider_unavailable", "req-503"), (200, None, "req-200")]


def test_one_statement_claim_wins_once_and_a_lost_claim_writes_nothing(pg_url: str) -> None:
    """Of 8 concurrent one-statement claims exactly one wins, and a success under a stale
    token changes no row, no counter and records no attempt."""
    ledger = migrated_ledger(pg_url)
    assert ledger.db.autocommit is not None
    job_id = tts_job(ledger, ["contended"]).job.id
    item_id = published(ledger).ids[0]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _n: ledger.claim(item_id, lease_s=60), range(8)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    stale = dataclasses.replace(winners[0], token="someone-else")
    assert ledger.succeed(stale, SMALL, [an_attempt(200)]) is None
    job = assert_counters_match_items(ledger, job_id)
    with ledger.db.sessions() as session:
        logged = session.scalar(select(func.count()).select_from(Attempt))
    assert (job.running, job.succeeded, logged) == (1, 0, 0)


def test_both_claim_forms_say_whether_a_line_has_a_twin(pg_url: str) -> None:
    """The one-statement and the transactional claim both report a twin for a line that a
    succeeded item or an earlier pending item shares, and none for a line of its own."""
    one_statement = migrated_ledger(pg_url)
    db = one_statement.db
    transactional = ItemLedger(Database(db.engine, db.sessions, None), one_statement.publisher)
    for ledger in (transactional, one_statement):
        tenant = f"twins-{uuid.uuid4().hex[:8]}"
        tts_job(ledger, ["spoken before"], tenant=tenant)
        first = claim(ledger, published(ledger).ids[-1])
        assert first.twin is False
        ledger.succeed(first, SMALL, [])
        tts_job(ledger, ["spoken before", "only here", "said twice", "said twice"], tenant=tenant)
        ids = published(ledger).ids[-4:]
        assert [claim(ledger, i).twin for i in ids] == [True, False, False, True]
