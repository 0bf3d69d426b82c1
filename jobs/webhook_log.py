"""The API's side of the webhook delivery log: a job's deliveries with their attempts, and
`redeliver`, which makes a delivery due now with a fresh retry window, keeping its id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import Executable

from jobs.errors import not_found
from jobs.models import Job
from jobs.models_webhooks import DeliveryStatus, WebhookAttempt, WebhookDelivery

D = WebhookDelivery
MAX_DELIVERIES_LISTED = 50  # per job, newest first (one per finish, so rarely more than one)


def _changed(session: Session, statement: Executable) -> int:
    """Run an UPDATE in the session's transaction; how many rows it changed."""
    return session.connection().execute(statement).rowcount


@dataclass(frozen=True)
class DeliveryLog:
    delivery: WebhookDelivery
    attempts: list[WebhookAttempt]


def _owned_job(session: Session, tenant_id: str, job_id: str) -> None:
    owner = session.scalar(select(Job.tenant_id).where(Job.id == job_id))
    if owner != tenant_id:
        raise not_found("job")


def _logs(session: Session, deliveries: Sequence[WebhookDelivery]) -> list[DeliveryLog]:
    ids = [d.id for d in deliveries]
    attempts = session.scalars(
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id.in_(ids))
        .order_by(WebhookAttempt.id)
    ).all()
    session.expunge_all()
    by_delivery: dict[str, list[WebhookAttempt]] = {i: [] for i in ids}
    for attempt in attempts:
        by_delivery[attempt.delivery_id].append(attempt)
    return [DeliveryLog(d, by_delivery[d.id]) for d in deliveries]


def job_deliveries(
    sessions: sessionmaker[Session], tenant_id: str, job_id: str
) -> list[DeliveryLog]:
    """A job's deliveries, newest first, each with its attempts in order (404: not theirs)."""
    with sessions() as session:
        _owned_job(session, tenant_id, job_id)
        deliveries = session.scalars(
            select(D)
            .where(D.job_id == job_id)
            .order_by(D.created_at.desc(), D.id)
            .limit(MAX_DELIVERIES_LISTED)
        ).all()
        return _logs(session, deliveries)


def redeliver(
    sessions: sessionmaker[Session], tenant_id: str, job_id: str, delivery_id: str, *, now: datetime
) -> DeliveryLog:
    """Make a delivery due now, with a new retry window and the same `webhook-id`. An
    attempt in flight keeps its lease; its outcome then decides the next step."""
    with sessions() as session:
        _owned_job(session, tenant_id, job_id)
        moved = _changed(
            session,
            update(D)
            .where(D.id == delivery_id, D.job_id == job_id)
            .values(
                status=DeliveryStatus.PENDING,
                next_attempt_at=now,
                tries=0,
                window_started_at=now,
                updated_at=now,
            ),
        )
        session.commit()
        if not moved:
            raise not_found("webhook delivery")
        (log,) = _logs(session, session.scalars(select(D).where(D.id == delivery_id)).all())
    return log
