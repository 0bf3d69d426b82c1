"""The sweeper's queries: queued items it should publish, uploads still in use, publish stamps.

Beat's sweeper (`workers.sweeper`) finds the due items the broker never got or lost, and the
uploads no item names any more; the ledgers stamp `published_at` when they hand ids to the
broker (or clear it when the broker refused them, so the sweeper sends them). Reads and
inserts of tenants, jobs and items are in `jobs.repository`; status changes in
`jobs.ledger_sql`. Callers own the transaction (commit/rollback).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, or_, select, update
from sqlalchemy.orm import Session

from jobs.models import UPLOAD_SOURCE_PATTERN, Item, Job
from jobs.repository import INSERT_BATCH
from jobs.status import ItemStatus


def due_unpublished_items(
    session: Session, *, now: datetime, published_before: datetime | None, limit: int
) -> list[int]:
    """queued items that are due and never published, or (with `published_before`) not since."""
    published: ColumnElement[bool] = Item.published_at.is_(None)
    if published_before is not None:
        published = or_(published, Item.published_at < published_before)
    return list(
        session.scalars(
            select(Item.id)
            .where(
                Item.status == ItemStatus.QUEUED.value,
                or_(Item.next_attempt_at.is_(None), Item.next_attempt_at <= now),
                published,
            )
            .order_by(Item.id)
            .limit(limit)
        )
    )


def referenced_uploads(
    session: Session, candidates: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which (tenant_id, upload:// source) pairs an item of one of that tenant's jobs names.

    One statement per call, so callers pass a bounded batch; the repeated LIKE condition lets
    it use the partial index `ix_items_upload_source` instead of scanning items.
    """
    if not candidates:
        return set()
    sources = sorted({source for _, source in candidates})
    rows = session.execute(
        select(Job.tenant_id, Item.source)
        .join(Job, Job.id == Item.job_id)
        .where(Item.source.in_(sources), Item.source.like(UPLOAD_SOURCE_PATTERN))
        .distinct()
    )
    return {(tenant_id, source) for tenant_id, source in rows if source} & set(candidates)


def mark_published(
    session: Session | Connection, ids: Sequence[int], *, at: datetime | None
) -> None:
    """Record when ids were handed to the broker (None: not sent, the sweeper should)."""
    for start in range(0, len(ids), INSERT_BATCH):
        session.execute(
            update(Item)
            .where(Item.id.in_(ids[start : start + INSERT_BATCH]))
            .values(published_at=at)
        )
