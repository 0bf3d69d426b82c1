"""All SQL speechbatch runs. Status changes are conditional UPDATEs (compare-and-set).

Every item transition moves the job's per-status counters and recomputes the job status in
the same transaction and the same statement, so a job row is always consistent with its
items and polling never scans items. Callers own the transaction (commit/rollback).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, insert, or_, select, update
from sqlalchemy.orm import Session

from jobs.models import ApiKey, Attempt, Item, Job, Tenant
from jobs.status import ItemStatus, JobStatus, check_item_transition

COUNTERS = ("queued", "running", "succeeded", "failed", "canceled")
INSERT_BATCH = 5000


# --- tenants and keys -------------------------------------------------------------------


def get_or_create_tenant(session: Session, name: str, *, tenant_id: str, now: datetime) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(id=tenant_id, name=name, created_at=now)
        session.add(tenant)
        session.flush()
    return tenant


def add_api_key(
    session: Session, *, tenant_id: str, prefix: str, digest: str, now: datetime
) -> None:
    session.add(ApiKey(tenant_id=tenant_id, prefix=prefix, digest=digest, created_at=now))


def find_api_key(session: Session, prefix: str) -> ApiKey | None:
    return session.scalar(
        select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
    )


# --- jobs -------------------------------------------------------------------------------


def find_job_by_idempotency_key(session: Session, tenant_id: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key))


def insert_job(session: Session, job: Job, items: Sequence[dict[str, Any]]) -> None:
    """Insert a job and its items (in batches, so 100k items never build one huge statement)."""
    job.total = job.queued = len(items)
    session.add(job)
    session.flush()
    for start in range(0, len(items), INSERT_BATCH):
        session.execute(
            insert(Item), [dict(row, job_id=job.id) for row in items[start : start + INSERT_BATCH]]
        )


def get_job(session: Session, tenant_id: str, job_id: str) -> Job | None:
    return session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode()


def decode_cursor(cursor: str) -> list[Any] | None:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, list) else None


def list_jobs(
    session: Session,
    tenant_id: str,
    *,
    status: str | None,
    kind: str | None,
    limit: int,
    before: tuple[datetime, str] | None,
) -> list[Job]:
    """Newest first; `before` is the (created_at, id) of the last job of the previous page."""
    query = select(Job).where(Job.tenant_id == tenant_id)
    if status:
        query = query.where(Job.status == status)
    if kind:
        query = query.where(Job.kind == kind)
    if before is not None:
        created, job_id = before
        query = query.where(
            or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id))
        )
    return list(session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)))


def list_items(
    session: Session, job_id: str, *, status: str | None, limit: int, after_seq: int
) -> list[Item]:
    query = select(Item).where(Item.job_id == job_id, Item.seq > after_seq)
    if status:
        query = query.where(Item.status == status)
    return list(session.scalars(query.order_by(Item.seq).limit(limit)))


def iter_items(session: Session, job_id: str, *, batch: int = 1000) -> Iterator[Item]:
    """Every item of a job in order, fetched page by page (manifests of 100k items)."""
    after = 0
    while True:
        page = list_items(session, job_id, status=None, limit=batch, after_seq=after)
        yield from page
        if len(page) < batch:
            return
        after = page[-1].seq
        session.expunge_all()


def item_ids(session: Session, job_id: str, *, status: ItemStatus) -> list[int]:
    return list(
        session.scalars(
            select(Item.id).where(Item.job_id == job_id, Item.status == status).order_by(Item.seq)
        )
    )


def get_item(session: Session, job_id: str, external_id: str) -> Item | None:
    return session.scalar(
        select(Item).where(Item.job_id == job_id, Item.external_id == external_id)
    )


# --- counters ---------------------------------------------------------------------------


def _shift_counts(
    session: Session, job_id: str, now: datetime, extra: dict[str, Any] | None = None, **deltas: int
) -> None:
    """Move the job's counters by `deltas` and set status/finished_at from the new counts.

    One UPDATE whose CASE mirrors `jobs.status.job_status_from_counts` (a test keeps the
    two in step), so concurrent workers never read-modify-write the job row.
    """
    new: dict[str, ColumnElement[int]] = {
        name: getattr(Job, name) + deltas.get(name, 0) for name in COUNTERS
    }
    pending = new["queued"] + new["running"]
    status = case(
        (
            pending > 0,
            case(
                (new["succeeded"] + new["failed"] + new["running"] > 0, JobStatus.RUNNING.value),
                else_=JobStatus.QUEUED.value,
            ),
        ),
        (new["canceled"] > 0, JobStatus.CANCELED.value),
        (new["failed"] == 0, JobStatus.SUCCEEDED.value),
        (new["succeeded"] == 0, JobStatus.FAILED.value),
        else_=JobStatus.COMPLETED_WITH_ERRORS.value,
    )
    values: dict[str, Any] = {name: new[name] for name in deltas}
    values["status"] = status
    values["finished_at"] = case((pending > 0, None), else_=func.coalesce(Job.finished_at, now))
    if deltas.get("running", 0) > 0:
        values["started_at"] = func.coalesce(Job.started_at, now)
    values.update(extra or {})
    session.execute(update(Job).where(Job.id == job_id).values(**values))


# --- item transitions -------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedItem:
    """What a worker needs to run one item, read at claim time."""

    id: int
    job_id: str
    seq: int
    external_id: str
    text: str | None
    source: str | None
    attempts: int
    token: str
    tenant_id: str
    kind: str
    provider: str
    model: str
    voice: str | None
    options: dict[str, Any]
    output_prefix: str


def claim_item(
    session: Session, item_id: int, *, token: str, now: datetime, lease_until: datetime
) -> ClaimedItem | None:
    """queued → running if the item is queued and due; None when someone else has it."""
    check_item_transition(ItemStatus.QUEUED, ItemStatus.RUNNING)
    row = session.execute(
        update(Item)
        .where(
            Item.id == item_id,
            Item.status == ItemStatus.QUEUED.value,
            or_(Item.next_attempt_at.is_(None), Item.next_attempt_at <= now),
        )
        .values(
            status=ItemStatus.RUNNING.value,
            attempts=Item.attempts + 1,
            claim_token=token,
            lease_expires_at=lease_until,
            updated_at=now,
        )
        .returning(
            Item.job_id,
            Item.seq,
            Item.external_id,
            Item.text,
            Item.source,
            Item.voice,
            Item.attempts,
        )
    ).one_or_none()
    if row is None:
        return None
    _shift_counts(session, row.job_id, now, queued=-1, running=1)
    job = session.execute(
        select(
            Job.tenant_id,
            Job.kind,
            Job.provider,
            Job.model,
            Job.voice,
            Job.options,
            Job.output_prefix,
        ).where(Job.id == row.job_id)
    ).one()
    return ClaimedItem(
        id=item_id,
        job_id=row.job_id,
        seq=row.seq,
        external_id=row.external_id,
        text=row.text,
        source=row.source,
        attempts=row.attempts,
        token=token,
        tenant_id=job.tenant_id,
        kind=job.kind,
        provider=job.provider,
        model=job.model,
        voice=row.voice or job.voice,
        options=dict(job.options),
        output_prefix=job.output_prefix,
    )


def _leave_running(
    session: Session, item: ClaimedItem, target: ItemStatus, now: datetime, values: dict[str, Any]
) -> bool:
    """running → target, only for the claim holder (a worker whose lease was taken loses)."""
    check_item_transition(ItemStatus.RUNNING, target)
    result = session.execute(
        update(Item)
        .where(
            Item.id == item.id,
            Item.status == ItemStatus.RUNNING.value,
            Item.claim_token == item.token,
        )
        .values(status=target.value, lease_expires_at=None, updated_at=now, **values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def succeed_item(
    session: Session,
    item: ClaimedItem,
    *,
    now: datetime,
    output_key: str,
    output_bytes: int,
    content_type: str,
    duration_s: float | None,
    characters: int,
) -> bool:
    done = _leave_running(
        session,
        item,
        ItemStatus.SUCCEEDED,
        now,
        {
            "output_key": output_key,
            "output_bytes": output_bytes,
            "output_content_type": content_type,
            "duration_s": duration_s,
            "characters": characters,
            "error_code": None,
            "error_message": None,
            "next_attempt_at": None,
            "finished_at": now,
        },
    )
    if done:
        usage = {
            "usage_characters": Job.usage_characters + characters,
            "usage_audio_seconds": Job.usage_audio_seconds + (duration_s or 0.0),
        }
        _shift_counts(session, item.job_id, now, usage, running=-1, succeeded=1)
    return done


def fail_item(
    session: Session, item: ClaimedItem, *, now: datetime, code: str, message: str
) -> bool:
    done = _leave_running(
        session,
        item,
        ItemStatus.FAILED,
        now,
        {"error_code": code, "error_message": message, "next_attempt_at": None, "finished_at": now},
    )
    if done:
        _shift_counts(session, item.job_id, now, running=-1, failed=1)
    return done


def requeue_item(
    session: Session,
    item: ClaimedItem,
    *,
    now: datetime,
    next_attempt_at: datetime,
    published_at: datetime | None,
    code: str,
    message: str,
) -> bool:
    """running → queued for a later attempt; a canceled job's item is canceled instead."""
    canceled = session.scalar(select(Job.canceled_at).where(Job.id == item.job_id))
    if canceled is not None:
        done = _leave_running(session, item, ItemStatus.CANCELED, now, {"finished_at": now})
        if done:
            _shift_counts(session, item.job_id, now, running=-1, canceled=1)
        return done
    done = _leave_running(
        session,
        item,
        ItemStatus.QUEUED,
        now,
        {
            "error_code": code,
            "error_message": message,
            "next_attempt_at": next_attempt_at,
            "published_at": published_at,
        },
    )
    if done:
        _shift_counts(session, item.job_id, now, running=-1, queued=1)
    return done


def record_attempts(session: Session, item_id: int, attempts: Sequence[dict[str, Any]]) -> None:
    if attempts:
        session.execute(insert(Attempt), [dict(a, item_id=item_id) for a in attempts])


def count_attempts(session: Session, item_id: int) -> int:
    return session.scalar(select(func.count()).where(Attempt.item_id == item_id)) or 0


# --- job-wide operations ----------------------------------------------------------------


def cancel_job(session: Session, job_id: str, *, now: datetime) -> int:
    """Cancel every queued item (running ones finish); returns how many were canceled."""
    check_item_transition(ItemStatus.QUEUED, ItemStatus.CANCELED)
    result = session.execute(
        update(Item)
        .where(Item.job_id == job_id, Item.status == ItemStatus.QUEUED.value)
        .values(status=ItemStatus.CANCELED.value, finished_at=now, updated_at=now)
    )
    count = int(result.rowcount)  # type: ignore[attr-defined]
    _shift_counts(
        session,
        job_id,
        now,
        {"canceled_at": func.coalesce(Job.canceled_at, now)},
        queued=-count,
        canceled=count,
    )
    return count


def retry_failed_items(session: Session, job_id: str, *, now: datetime) -> list[int]:
    """failed → queued for every failed item of the job; returns their ids (to publish)."""
    check_item_transition(ItemStatus.FAILED, ItemStatus.QUEUED)
    ids = item_ids(session, job_id, status=ItemStatus.FAILED)
    if not ids:
        return []
    session.execute(
        update(Item)
        .where(Item.job_id == job_id, Item.status == ItemStatus.FAILED.value)
        .values(
            status=ItemStatus.QUEUED.value,
            attempts=0,
            next_attempt_at=None,
            published_at=now,
            finished_at=None,
            updated_at=now,
        )
    )
    _shift_counts(session, job_id, now, failed=-len(ids), queued=len(ids))
    return ids


# --- sweeper queries --------------------------------------------------------------------


def expire_leases(session: Session, *, now: datetime, limit: int) -> list[int]:
    """running items whose lease ran out go back to queued; returns their ids."""
    check_item_transition(ItemStatus.RUNNING, ItemStatus.QUEUED)
    rows = session.execute(
        select(Item.id, Item.job_id)
        .where(Item.status == ItemStatus.RUNNING.value, Item.lease_expires_at < now)
        .limit(limit)
    ).all()
    recovered: list[int] = []
    for item_id, job_id in rows:
        result = session.execute(
            update(Item)
            .where(
                Item.id == item_id,
                Item.status == ItemStatus.RUNNING.value,
                Item.lease_expires_at < now,
            )
            .values(
                status=ItemStatus.QUEUED.value,
                claim_token=None,
                lease_expires_at=None,
                next_attempt_at=None,
                published_at=None,
                error_code="lease_expired",
                error_message="The worker running this item stopped answering; it was re-queued.",
                updated_at=now,
            )
        )
        if result.rowcount:  # type: ignore[attr-defined]
            _shift_counts(session, job_id, now, running=-1, queued=1)
            recovered.append(item_id)
    return recovered


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


def mark_published(session: Session, ids: Sequence[int], *, at: datetime) -> None:
    for start in range(0, len(ids), INSERT_BATCH):
        session.execute(
            update(Item)
            .where(Item.id.in_(ids[start : start + INSERT_BATCH]))
            .values(published_at=at)
        )
