"""SQLAlchemy models for webhook deliveries (issue 12); the tables are in migration 0007.

A delivery is written before anything is sent, with its payload frozen, so a beat that dies
mid-send loses nothing: the row is still due and another pass sends it again under the same
`webhook-id` (receivers dedupe on it, as Standard Webhooks asks). One row per job finish:
the unique key (job_id, event, job_finished_at) is what makes recording it idempotent even
with two beats, and a job finished again after `retry` (a new `finished_at`) gets a new one.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from jobs.model_types import BigIntId, StrEnumColumn
from jobs.models import Base

JOB_FINISHED = "job.finished"  # the one event type so far: a job reached a terminal status


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # due at next_attempt_at (a sender may hold a lease on it)
    DELIVERED = "delivered"  # a 2xx answer came back
    FAILED = "failed"  # no 2xx within the retry window; `redeliver` starts a new one


class WebhookDelivery(Base):
    """One event for one job finish, and where its retries stand."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("job_id", "event", "job_finished_at"),
        # The sender's question: which pending deliveries are due.
        Index("ix_webhook_deliveries_status_next_attempt", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the `webhook-id` header
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(40))
    job_finished_at: Mapped[datetime]
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[dict[str, Any]]
    status: Mapped[DeliveryStatus] = mapped_column(StrEnumColumn(DeliveryStatus, 16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts since the current retry window began (at creation or at a redeliver):
    # the backoff schedule's position.
    tries: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime | None]
    lease_token: Mapped[str | None] = mapped_column(String(32))
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    """One POST of a delivery: what came back and how long it took."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    started_at: Mapped[datetime]
    latency_ms: Mapped[float] = mapped_column(Float)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(300))
    response_excerpt: Mapped[str | None] = mapped_column(Text)
