"""The webhook delivery log: what is recorded when a job finishes, who sends it, what came back.

Every change here is a conditional UPDATE or an insert under a unique key, so two beats
(or a beat restarted mid-pass) never record an event twice or send one attempt twice:

- `record_finished` finds finished jobs with a `webhook_url` and no delivery for this finish
  (the partial index `ix_jobs_webhook_unrecorded`) and inserts one, its payload frozen: the
  job view as `GET /v1/jobs/{id}` shows it. Beat does this rather than the worker that
  finished the job, so a worker dying right after its last item cannot lose the event;
- `claim_due` leases due deliveries to one sender (`WHERE lease expired`);
- `finish_attempt` logs the attempt and moves the delivery on, only under the sender's lease;
- `redeliver` (the API's side, with a job's log: `jobs.webhook_log`) makes a delivery due now
  with a fresh retry window, keeping its id.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import Executable

from jobs import repository as repo
from jobs.error_codes import ErrorCode
from jobs.errors import invalid
from jobs.models import WEBHOOK_UNRECORDED, Job
from jobs.models_webhooks import JOB_FINISHED, DeliveryStatus, WebhookAttempt, WebhookDelivery
from jobs.netpolicy import Allowlist, UnsafeUrl, check_url
from jobs.pricing import DEFAULT_TABLE, PriceTable
from jobs.status import JOB_TERMINAL
from jobs.usage import RouteUsage, by_job
from jobs.views import job_view

D = WebhookDelivery
MAX_ATTEMPTS_KEPT = 100  # per delivery; older attempts are pruned so redeliveries stay bounded


def _changed(session: Session, statement: Executable) -> int:
    """Run an UPDATE in the session's transaction; how many rows it changed."""
    return session.connection().execute(statement).rowcount


def check_webhook_url(url: str, allow: Allowlist) -> str:
    """Vet a job's `webhook_url` at submit with the source URLs' rules (422 otherwise); the
    sender checks again, resolves the host once and connects to that address."""
    try:
        check_url(url, allow)
    except UnsafeUrl as exc:
        code = (
            ErrorCode.FORBIDDEN_WEBHOOK_URL
            if exc.code == ErrorCode.FORBIDDEN_ADDRESS
            else ErrorCode.INVALID_WEBHOOK_URL
        )
        raise invalid(code, f"webhook_url: {exc.message}") from None
    return url


def event_payload(
    job: Job, rerouted: Sequence[RouteUsage] = (), prices: PriceTable = DEFAULT_TABLE
) -> dict[str, Any]:
    """The `job.finished` event body: the job view, as `GET /v1/jobs/{id}` returns it
    (`rerouted`: its usage on fallback routes, for the per-provider split and cost)."""
    assert job.finished_at is not None
    view = job_view(job, rerouted=rerouted, prices=prices)
    return {
        "type": JOB_FINISHED,
        "timestamp": job.finished_at.isoformat(),
        "data": view.model_dump(mode="json"),
    }


def record_finished(
    sessions: sessionmaker[Session],
    *,
    now: datetime,
    limit: int = 100,
    prices: PriceTable = DEFAULT_TABLE,
) -> int:
    """Insert the delivery of up to `limit` job finishes that have none yet; how many."""
    with sessions() as session:
        jobs = session.scalars(
            select(Job)
            .where(text(WEBHOOK_UNRECORDED), Job.status.in_(JOB_TERMINAL))
            .order_by(Job.finished_at)
            .limit(limit)
        ).all()
        rerouted = by_job(repo.rerouted_usage(session, [j.id for j in jobs if j.fallback]))
        session.expunge_all()
    recorded = 0
    for job in jobs:
        with sessions() as session:
            try:
                payload = event_payload(job, rerouted.get(job.id, []), prices)
                session.execute(insert(D).values(**_new_delivery(job, now, payload)))
                recorded += 1
            except IntegrityError:  # another beat recorded this finish first
                session.rollback()
            session.execute(
                update(Job)
                .where(Job.id == job.id, Job.finished_at == job.finished_at)
                .values(webhook_recorded_finish=Job.finished_at)
            )
            session.commit()
    return recorded


def _new_delivery(job: Job, now: datetime, payload: dict[str, Any]) -> dict[str, Any]:
    assert job.webhook_url is not None and job.finished_at is not None
    return {
        "id": f"msg_{uuid.uuid4().hex}",
        "tenant_id": job.tenant_id,
        "job_id": job.id,
        "event": JOB_FINISHED,
        "job_finished_at": job.finished_at,
        "url": job.webhook_url,
        "payload": payload,
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "tries": 0,
        "window_started_at": now,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery one sender holds the lease on until it reports the attempt."""

    id: str
    tenant_id: str
    url: str
    payload: dict[str, Any]
    tries: int
    window_started_at: datetime
    token: str


_DUE = (D.status == DeliveryStatus.PENDING,)


def _claimable(now: datetime) -> Sequence[Any]:
    lease_free = or_(D.lease_expires_at.is_(None), D.lease_expires_at < now)
    return (*_DUE, D.next_attempt_at <= now, lease_free)


def claim_due(
    sessions: sessionmaker[Session], *, now: datetime, limit: int, lease: timedelta
) -> list[ClaimedDelivery]:
    """Lease up to `limit` due deliveries, oldest due first. Each lease is a conditional
    UPDATE, so of two senders seeing the same row only one gets it."""
    claimed: list[ClaimedDelivery] = []
    with sessions() as session:
        rows = session.execute(
            select(D.id, D.tenant_id, D.url, D.payload, D.tries, D.window_started_at)
            .where(*_claimable(now))
            .order_by(D.next_attempt_at)
            .limit(limit)
        ).all()
        for row in rows:
            token = secrets.token_hex(16)
            won = _changed(
                session,
                update(D)
                .where(D.id == row.id, *_claimable(now))
                .values(lease_token=token, lease_expires_at=now + lease),
            )
            session.commit()
            if won:
                claimed.append(
                    ClaimedDelivery(
                        id=row.id,
                        tenant_id=row.tenant_id,
                        url=row.url,
                        payload=row.payload,
                        tries=row.tries,
                        window_started_at=row.window_started_at,
                        token=token,
                    )
                )
    return claimed


@dataclass(frozen=True)
class AttemptRecord:
    """One POST's outcome, as the attempt log keeps it."""

    started_at: datetime
    latency_ms: float
    status_code: int | None
    error: str | None
    response_excerpt: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def finish_attempt(
    sessions: sessionmaker[Session],
    claim: ClaimedDelivery,
    attempt: AttemptRecord,
    *,
    now: datetime,
    next_attempt_at: datetime | None,
) -> bool:
    """Log `attempt` and move the delivery on: delivered on a 2xx, else due again at
    `next_attempt_at`, or failed when that is None. Only under `claim`'s lease (False if it
    was lost meanwhile: the attempt is still logged, the state is left alone)."""
    if attempt.delivered:
        moves: dict[str, Any] = {"status": DeliveryStatus.DELIVERED, "delivered_at": now}
        moves["next_attempt_at"] = None
    elif next_attempt_at is None:
        moves = {"status": DeliveryStatus.FAILED, "next_attempt_at": None}
    else:
        moves = {"next_attempt_at": next_attempt_at}
    with sessions() as session:
        session.execute(
            insert(WebhookAttempt).values(
                delivery_id=claim.id,
                started_at=attempt.started_at,
                latency_ms=attempt.latency_ms,
                status_code=attempt.status_code,
                error=attempt.error[:300] if attempt.error else None,
                response_excerpt=attempt.response_excerpt,
            )
        )
        moved = _changed(
            session,
            update(D)
            .where(D.id == claim.id, D.lease_token == claim.token)
            .values(
                attempts=D.attempts + 1,
                tries=D.tries + 1,
                lease_token=None,
                lease_expires_at=None,
                updated_at=now,
                **moves,
            ),
        )
        _prune_attempts(session, claim.id)
        session.commit()
    return bool(moved)


def _prune_attempts(session: Session, delivery_id: str) -> None:
    keep = (
        select(WebhookAttempt.id)
        .where(WebhookAttempt.delivery_id == delivery_id)
        .order_by(WebhookAttempt.id.desc())
        .limit(MAX_ATTEMPTS_KEPT)
    )
    session.execute(
        delete(WebhookAttempt).where(
            WebhookAttempt.delivery_id == delivery_id,
            WebhookAttempt.id.not_in(keep.scalar_subquery()),
        )
    )
