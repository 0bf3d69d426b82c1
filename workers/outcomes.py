"""Recording an item's outcome: succeeded, failed, retry later, or handed back.

Each outcome is one transaction that only the claim holder can commit (every write is a
compare-and-set on the claim token), retried across a short database outage, so a
PostgreSQL restart does not throw away a provider call that already succeeded. Attempts
are written only after the compare-and-set wins, so a repeated transaction never
duplicates them.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from datetime import timedelta
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from jobs import counters, transitions
from jobs import repository as repo
from jobs.clock import utc_now
from jobs.service import publish_safely, write_manifest_if_finished
from jobs.status import JOB_TERMINAL
from jobs.transitions import ClaimedItem
from workers.providers.errors import ProviderError
from workers.retry import next_delay
from workers.runtime import Runtime

T = TypeVar("T")
Attempts = list[dict[str, Any]]
log = logging.getLogger(__name__)
# How long an outcome waits for the database to come back (a restart takes a few seconds).
DB_RETRY_S = 20.0


class Outcome(StrEnum):
    SKIPPED = "skipped"  # not claimable: someone else has it, it is done, or not due yet
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"  # back in the queue with next_attempt_at
    LOST = "lost"  # our lease was taken over while we worked; the new holder decides
    DEFERRED = "deferred"  # handed back without spending an attempt (limit full, storage down)


def transaction(rt: Runtime, work: Callable[[Session], T]) -> T:
    """Run `work` in one transaction, again after a lost connection, for up to DB_RETRY_S."""

    def attempt() -> T:
        with rt.sessions() as session:
            result = work(session)
            session.commit()
            return result

    return _riding_out_outages(rt, attempt)


def _statement(rt: Runtime, engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run one autocommit statement, again after a lost connection (see `transaction`)."""

    def attempt() -> T:
        with engine.connect() as connection:
            return work(connection)

    return _riding_out_outages(rt, attempt)


def _riding_out_outages(rt: Runtime, attempt: Callable[[], T]) -> T:
    # A retry after an ambiguous failure is safe: every write is a compare-and-set, so a
    # change that did commit makes the repeat a no-op (the claim is then simply lost).
    delay, deadline = 0.2, time.monotonic() + DB_RETRY_S
    while True:
        try:
            return attempt()
        except (OperationalError, InterfaceError):
            if time.monotonic() + delay > deadline:
                raise
            log.warning("database unavailable; retrying the transaction in %.1f s", delay)
            rt.sleep(delay)
            delay = min(delay * 2, 2.0)


def claim(rt: Runtime, item_id: int) -> ClaimedItem | None:
    """queued → running under a fresh token and lease; None when the item is not claimable."""
    token, now = secrets.token_hex(8), utc_now()
    lease_until = now + timedelta(seconds=rt.lease_s)
    if rt.autocommit is not None:
        return _statement(
            rt,
            rt.autocommit,
            lambda connection: transitions.claim_item_at_once(
                connection, item_id, token=token, now=now, lease_until=lease_until
            ),
        )
    return transaction(
        rt,
        lambda session: transitions.claim_item(
            session, item_id, token=token, now=now, lease_until=lease_until
        ),
    )


def succeed(rt: Runtime, item: ClaimedItem, attempts: Attempts, written: dict[str, Any]) -> Outcome:
    def work(session: Session) -> str | None:
        status = transitions.succeed_item(session, item, now=utc_now(), **written)
        if status:
            transitions.record_attempts(session, item.id, attempts)
        return status

    if rt.autocommit is not None:
        status = _statement(
            rt,
            rt.autocommit,
            lambda connection: transitions.succeed_item_at_once(
                connection, item, attempts, now=utc_now(), **written
            ),
        )
    else:
        status = transaction(rt, work)
    _after_final(rt, item, status)
    return Outcome.SUCCEEDED if status else Outcome.LOST


def fail(
    rt: Runtime,
    item: ClaimedItem,
    attempts: Attempts,
    code: str,
    message: str,
    *,
    whole_job: bool = False,
) -> Outcome:
    """Fail the item; with `whole_job`, also every queued item of its job (same cause)."""

    def work(session: Session) -> str | None:
        now = utc_now()
        status = transitions.fail_item(session, item, now=now, code=code, message=message)
        if not status:
            return None
        transitions.record_attempts(session, item.id, attempts)
        if whole_job:
            counters.fail_queued_items(
                session,
                item.job_id,
                now=now,
                code=code,
                message=f"Not attempted: another item of this job was refused ({message})",
            )
            status = repo.job_status(session, item.job_id)
        return status

    status = transaction(rt, work)
    _after_final(rt, item, status)
    return Outcome.FAILED if status else Outcome.LOST


def retry_later(
    rt: Runtime, item: ClaimedItem, attempts: Attempts, error: ProviderError
) -> Outcome:
    """Back to queued with a backoff, or failed for good once the attempt budget is spent."""
    if item.attempts >= rt.policy.item_attempts:
        message = f"Gave up after {item.attempts} attempts; last error: {error.message}"
        return fail(rt, item, attempts, error.code, message)
    delay = next_delay(
        item.attempts, error, base=rt.policy.item_base_s, cap=rt.policy.item_cap_s, rng=rt.rng
    )
    countdown = delay <= rt.policy.max_countdown_s

    def work(session: Session) -> bool:
        now = utc_now()
        due = now + timedelta(seconds=delay)
        done = transitions.requeue_item(
            session,
            item,
            now=now,
            next_attempt_at=due,
            # A countdown message is "published" for when it becomes due; otherwise the
            # sweeper publishes the item once it is due.
            published_at=due if countdown else None,
            code=error.code,
            message=error.message,
        )
        if done:
            transitions.record_attempts(session, item.id, attempts)
        return done

    if not transaction(rt, work):
        return Outcome.LOST
    if countdown:
        publish_safely(rt.sessions, rt.publish, [item.id], delay)
    return Outcome.RETRYING


def hand_back(rt: Runtime, item: ClaimedItem, attempts: Attempts, delay: float) -> Outcome:
    """Back to queued without spending an attempt: the hold-up was ours, not the item's."""

    def work(session: Session) -> bool:
        now = utc_now()
        done = transitions.hand_back_item(
            session, item, now=now, next_attempt_at=now + timedelta(seconds=delay)
        )
        if done:
            transitions.record_attempts(session, item.id, attempts)
        return done

    if not transaction(rt, work):
        return Outcome.LOST
    publish_safely(rt.sessions, rt.publish, [item.id], delay)
    return Outcome.DEFERRED


def _after_final(rt: Runtime, item: ClaimedItem, job_status: str | None) -> None:
    """Store the job's manifest if this outcome finished the job (never fails the item)."""
    if job_status not in JOB_TERMINAL:
        return
    try:
        write_manifest_if_finished(rt.sessions, rt.store, item.job_id)
    except Exception:  # the manifest endpoint still serves it; the next finisher rewrites
        log.warning("could not write the manifest of job %s", item.job_id, exc_info=True)
