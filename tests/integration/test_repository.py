"""Claims, counters and job-wide operations against real PostgreSQL and SQLite."""

import dataclasses
import itertools
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from jobs import counters, transitions
from jobs import repository as repo
from jobs.clock import utc_now
from jobs.models import Attempt, Item, Job
from jobs.status import ItemStatus, job_status_from_counts
from storage.db import make_autocommit_engine
from tests.integration.helpers import Recorder, migrated_sessions, tts_job

pytestmark = pytest.mark.integration


def claim(sessions, item_id: int, token: str = "t1", lease_s: float = 60):  # type: ignore[no-untyped-def]
    now = utc_now()
    with sessions() as session:
        claimed = transitions.claim_item(
            session, item_id, token=token, now=now, lease_until=now + timedelta(seconds=lease_s)
        )
        session.commit()
    return claimed


def finish_ok(session, item, now):  # type: ignore[no-untyped-def]
    """Record a success with a small fixed output (what the value is does not matter here)."""
    return transitions.succeed_item(
        session,
        item,
        now=now,
        output_key="k",
        output_bytes=1,
        content_type="x",
        duration_s=1,
        characters=1,
    )


def assert_counters_match_items(sessions, job_id: str) -> Job:  # type: ignore[no-untyped-def]
    with sessions() as session:
        job = session.get(Job, job_id)
        rows = dict(
            session.execute(
                select(Item.status, func.count()).where(Item.job_id == job_id).group_by(Item.status)
            ).all()
        )
    for status in ItemStatus:
        assert getattr(job, status.value) == rows.get(status.value, 0), status
    return job


def test_submit_stores_items_and_publishes_each_once(database_url: str) -> None:
    """A submitted job has one queued item per line and every id published exactly once."""
    sessions = migrated_sessions(database_url)
    recorder = Recorder()
    submitted = tts_job(sessions, [f"line {n}" for n in range(25)], publish=recorder)
    assert sorted(recorder.ids) == sorted(set(recorder.ids)) and len(recorder.ids) == 25
    job = assert_counters_match_items(sessions, submitted.job.id)
    assert (job.total, job.queued, job.status) == (25, 25, "queued")


def test_an_item_can_be_claimed_only_once(database_url: str) -> None:
    """The conditional UPDATE lets exactly one of many concurrent claimers win."""
    sessions = migrated_sessions(database_url)
    recorder = Recorder()
    tts_job(sessions, ["only one"], publish=recorder)
    item_id = recorder.ids[0]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: claim(sessions, item_id, token=f"t{n}"), range(8)))
    assert sum(r is not None for r in results) == 1


def test_outcomes_move_counters_and_status_together(database_url: str) -> None:
    """succeed/fail/requeue keep job counters equal to the item rows and derive the status."""
    sessions = migrated_sessions(database_url)
    recorder = Recorder()
    submitted = tts_job(sessions, ["a", "b", "c"], publish=recorder)
    a, b, c = (claim(sessions, i) for i in recorder.ids)
    now = utc_now()
    with sessions() as session:
        assert transitions.succeed_item(
            session,
            a,
            now=now,
            output_key="k",
            output_bytes=10,
            content_type="audio/wav",
            duration_s=1.5,
            characters=1,
        )
        assert transitions.fail_item(session, b, now=now, code="invalid_input", message="no")
        assert transitions.requeue_item(
            session,
            c,
            now=now,
            next_attempt_at=now,
            published_at=None,
            code="rate_limited",
            message="later",
        )
        session.commit()
    job = assert_counters_match_items(sessions, submitted.job.id)
    assert job.status == "running" and job.usage_audio_seconds == 1.5
    c2 = claim(sessions, c.id, token="t2")
    with sessions() as session:
        assert transitions.succeed_item(
            session,
            c2,
            now=utc_now(),
            output_key="k2",
            output_bytes=1,
            content_type="audio/wav",
            duration_s=1.0,
            characters=1,
        )
        session.commit()
    job = assert_counters_match_items(sessions, submitted.job.id)
    assert job.status == "completed_with_errors" and job.finished_at is not None


def test_a_stale_claim_holder_cannot_finish(database_url: str) -> None:
    """After a lease expires and another worker claims the item, the first worker's write loses."""
    sessions = migrated_sessions(database_url)
    recorder = Recorder()
    tts_job(sessions, ["slow"], publish=recorder)
    first = claim(sessions, recorder.ids[0], token="old", lease_s=-1)
    with sessions() as session:
        assert counters.expire_leases(session, now=utc_now(), limit=10) == [first.id]
        session.commit()
    second = claim(sessions, first.id, token="new")
    now = utc_now()
    with sessions() as session:
        assert not finish_ok(session, first, now)
        assert finish_ok(session, second, now)
        session.commit()
    with sessions() as session:
        assert session.get(Item, first.id).attempts == 2


def test_backoff_hides_an_item_until_it_is_due(database_url: str) -> None:
    """An item re-queued for later cannot be claimed before next_attempt_at."""
    sessions = migrated_sessions(database_url)
    recorder = Recorder()
    tts_job(sessions, ["x"], publish=recorder)
    item = claim(sessions, recorder.ids[0])
    now = utc_now()
    with sessions() as session:
        transitions.requeue_item(
            session,
            item,
            now=now,
            next_attempt_at=now + timedelta(minutes=5),
            published_at=None,
            code="rate_limited",
            message="later",
        )
        session.commit()
    assert claim(sessions, item.id, token="early") is None
    with sessions() as session:
        due = repo.due_unpublished_items(
            session, now=now + timedelta(minutes=6), published_before=None, limit=10
        )
    assert due == [item.id]


def test_cancel_stops_queued_items_and_running_ones_finish(database_url: str) -> None:
    """Cancel marks queued items canceled; a running item still finishes; the job ends canceled."""
    sessions = migrated_sessions(database_url)
    recorder = Recorder()
    submitted = tts_job(sessions, ["a", "b", "c"], publish=recorder)
    running = claim(sessions, recorder.ids[0])
    with sessions() as session:
        assert counters.cancel_job(session, submitted.job.id, now=utc_now()) == 2
        session.commit()
    assert claim(sessions, recorder.ids[1], token="late") is None
    with sessions() as session:
        finish_ok(session, running, utc_now())
        session.commit()
    job = assert_counters_match_items(sessions, submitted.job.id)
    assert (job.status, job.succeeded, job.canceled) == ("canceled", 1, 2)


def test_retry_requeues_only_failed_items(database_url: str) -> None:
    """Retry moves failed items back to queued and leaves succeeded ones alone."""
    sessions = migrated_sessions(database_url)
    recorder = Recorder()
    submitted = tts_job(sessions, ["ok", "bad"], publish=recorder)
    ok, bad = (claim(sessions, i) for i in recorder.ids)
    with sessions() as session:
        finish_ok(session, ok, utc_now())
        transitions.fail_item(session, bad, now=utc_now(), code="x", message="y")
        session.commit()
        assert counters.retry_failed_items(session, submitted.job.id, now=utc_now()) == [bad.id]
        session.commit()
    job = assert_counters_match_items(sessions, submitted.job.id)
    assert (job.status, job.queued, job.succeeded, job.finished_at) == ("running", 1, 1, None)


def test_sql_status_derivation_matches_python(database_url: str) -> None:
    """The CASE in `_shift_counts` agrees with `job_status_from_counts` for every combination."""
    sessions = migrated_sessions(database_url)
    job_id = tts_job(sessions, ["x"]).job.id
    names = ("queued", "running", "succeeded", "failed", "canceled")
    for combo in itertools.product(range(2), repeat=5):
        if not any(combo):
            continue
        counts = dict(zip(names, combo, strict=True))
        with sessions() as session:
            session.execute(update(Job).where(Job.id == job_id).values(**counts))
            counters.shift_counts(session, job_id, utc_now())
            session.commit()
            status = session.scalar(select(Job.status).where(Job.id == job_id))
        assert status == job_status_from_counts(total=sum(combo), **counts), counts


# --- PostgreSQL's one-statement claim and success -----------------------------------------


def claim_at_once(engine, item_id: int, token: str = "t1", lease_s: float = 60):  # type: ignore[no-untyped-def]
    now = utc_now()
    with engine.connect() as connection:
        return transitions.claim_item_at_once(
            connection, item_id, token=token, now=now, lease_until=now + timedelta(seconds=lease_s)
        )


def succeed_at_once(engine, item, attempts):  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return transitions.succeed_item_at_once(
            connection,
            item,
            attempts,
            now=utc_now(),
            output_key="k",  # the same values as finish_ok, to compare the two paths
            output_bytes=1,
            content_type="x",
            duration_s=1,
            characters=1,
        )


def an_attempt(code: int) -> dict[str, object]:
    return {
        "started_at": utc_now(),
        "latency_ms": 12.5,
        "status_code": code,
        "error_code": None if code == 200 else "provider_unavailable",
        "provider_request_id": f"req-{code}",
    }


def test_one_statement_claim_and_success_match_the_transactional_ones(pg_url: str) -> None:
    """On PostgreSQL the autocommit one-statement claim/succeed leave the same rows, counters,
    usage and attempts as the transactional claim/succeed/record_attempts."""
    sessions = migrated_sessions(pg_url)
    engine = make_autocommit_engine(pg_url, pool_size=2)
    assert engine is not None
    attempts = [an_attempt(503), an_attempt(200)]
    snapshots = []
    for at_once in (False, True):
        recorder = Recorder()
        job_id = tts_job(sessions, ["first line", "second"], publish=recorder, voice="v1").job.id
        if at_once:
            item = claim_at_once(engine, recorder.ids[0])
            assert item is not None and succeed_at_once(engine, item, attempts) == "running"
        else:
            item = claim(sessions, recorder.ids[0])
            with sessions() as session:
                assert finish_ok(session, item, utc_now())
                transitions.record_attempts(session, item.id, attempts)
                session.commit()
        job = assert_counters_match_items(sessions, job_id)
        with sessions() as session:
            row = session.get(Item, item.id)
            logged = session.execute(
                select(Attempt.status_code, Attempt.error_code, Attempt.provider_request_id)
                .where(Attempt.item_id == item.id)
                .order_by(Attempt.id)
            ).all()
        snapshots.append(
            (
                {k: v for k, v in vars(item).items() if k not in {"id", "job_id", "token"}},
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
    sessions = migrated_sessions(pg_url)
    engine = make_autocommit_engine(pg_url, pool_size=8)
    assert engine is not None
    recorder = Recorder()
    job_id = tts_job(sessions, ["contended"], publish=recorder).job.id
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda n: claim_at_once(engine, recorder.ids[0], token=f"t{n}"), range(8))
        )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    stale = dataclasses.replace(winners[0], token="someone-else")
    assert succeed_at_once(engine, stale, [an_attempt(200)]) is None
    job = assert_counters_match_items(sessions, job_id)
    with sessions() as session:
        logged = session.scalar(select(func.count()).select_from(Attempt))
    assert (job.running, job.succeeded, logged) == (1, 0, 0)
