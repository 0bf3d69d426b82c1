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
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Float,
    Integer,
    Table,
    and_,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from jobs.models import ApiKey, Attempt, Item, Job, Tenant, UTCDateTime
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


def job_status(session: Session, job_id: str) -> str | None:
    return session.scalar(select(Job.status).where(Job.id == job_id))


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
#
# The per-item statements below are built once, on the Core tables, with bind parameters:
# building ORM-enabled UPDATEs per call cost more CPU than the database work itself, and a
# worker's throughput is bound by its CPU (one GIL) long before the provider's limit.

JOBS, ITEMS, ATTEMPTS = (cast(Table, m.__table__) for m in (Job, Item, Attempt))
_now = bindparam("now", type_=UTCDateTime())


def _counter_update() -> Any:
    """UPDATE jobs: move every counter by its delta, derive status, return what workers need.

    The CASE mirrors `jobs.status.job_status_from_counts` (a test keeps the two in step), so
    concurrent workers never read-modify-write the job row.
    """
    now = _now
    new = {name: JOBS.c[name] + bindparam(f"d_{name}", type_=Integer()) for name in COUNTERS}
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
    claimed = bindparam("d_running", type_=Integer()) > 0
    cancel = bindparam("cancel", type_=Boolean())
    return (
        update(JOBS)
        .where(JOBS.c.id == bindparam("job_id"))
        .values(
            **new,
            status=status,
            finished_at=case((pending > 0, None), else_=func.coalesce(JOBS.c.finished_at, now)),
            started_at=case(
                (claimed, func.coalesce(JOBS.c.started_at, now)), else_=JOBS.c.started_at
            ),
            canceled_at=case(
                (cancel, func.coalesce(JOBS.c.canceled_at, now)), else_=JOBS.c.canceled_at
            ),
            usage_characters=JOBS.c.usage_characters + bindparam("d_chars", type_=Integer()),
            usage_audio_seconds=JOBS.c.usage_audio_seconds + bindparam("d_audio", type_=Float()),
        )
        .returning(
            JOBS.c.status,
            JOBS.c.tenant_id,
            JOBS.c.kind,
            JOBS.c.provider,
            JOBS.c.model,
            JOBS.c.voice,
            JOBS.c.options,
            JOBS.c.output_prefix,
        )
    )


COUNTER_UPDATE = _counter_update()


def _shift_counts(
    session: Session,
    job_id: str,
    now: datetime,
    *,
    characters: int = 0,
    audio_seconds: float = 0.0,
    cancel: bool = False,
    **deltas: int,
) -> Any:
    """Move the job's counters by `deltas` (and usage); returns the job's new status row."""
    params: dict[str, Any] = {f"d_{name}": deltas.get(name, 0) for name in COUNTERS}
    params.update(job_id=job_id, now=now, cancel=cancel, d_chars=characters, d_audio=audio_seconds)
    return session.connection().execute(COUNTER_UPDATE, params).one()


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


_due = or_(ITEMS.c.next_attempt_at.is_(None), ITEMS.c.next_attempt_at <= _now)
CLAIM = (
    update(ITEMS)
    .where(ITEMS.c.id == bindparam("item_id"), ITEMS.c.status == ItemStatus.QUEUED.value, _due)
    .values(
        status=ItemStatus.RUNNING.value,
        attempts=ITEMS.c.attempts + 1,
        claim_token=bindparam("token"),
        lease_expires_at=bindparam("lease_until", type_=UTCDateTime()),
        updated_at=_now,
    )
    .returning(
        ITEMS.c.job_id,
        ITEMS.c.seq,
        ITEMS.c.external_id,
        ITEMS.c.text,
        ITEMS.c.source,
        ITEMS.c.voice,
        ITEMS.c.attempts,
    )
)


def claim_item(
    session: Session, item_id: int, *, token: str, now: datetime, lease_until: datetime
) -> ClaimedItem | None:
    """queued → running if the item is queued and due; None when someone else has it."""
    check_item_transition(ItemStatus.QUEUED, ItemStatus.RUNNING)
    row = (
        session.connection()
        .execute(
            CLAIM, {"item_id": item_id, "token": token, "now": now, "lease_until": lease_until}
        )
        .one_or_none()
    )
    if row is None:
        return None
    job = _shift_counts(session, row.job_id, now, queued=-1, running=1)
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


_LEAVE_VALUES = (
    "error_code",
    "error_message",
    "next_attempt_at",
    "published_at",
    "finished_at",
    "output_key",
    "output_bytes",
    "output_content_type",
    "duration_s",
    "characters",
)


def _leave_statement(target: ItemStatus, columns: tuple[str, ...]) -> Any:
    check_item_transition(ItemStatus.RUNNING, target)
    values: dict[str, Any] = {name: bindparam(name, type_=ITEMS.c[name].type) for name in columns}
    return (
        update(ITEMS)
        .where(
            ITEMS.c.id == bindparam("item_id"),
            ITEMS.c.status == ItemStatus.RUNNING.value,
            ITEMS.c.claim_token == bindparam("token"),
        )
        .values(
            status=target.value,
            lease_expires_at=None,
            updated_at=_now,
            **values,
        )
    )


_SUCCEED_COLUMNS = _LEAVE_VALUES[:3] + _LEAVE_VALUES[4:]
LEAVE = {
    ItemStatus.SUCCEEDED: _leave_statement(ItemStatus.SUCCEEDED, _SUCCEED_COLUMNS),
    ItemStatus.FAILED: _leave_statement(
        ItemStatus.FAILED, ("error_code", "error_message", "next_attempt_at", "finished_at")
    ),
    ItemStatus.QUEUED: _leave_statement(
        ItemStatus.QUEUED, ("error_code", "error_message", "next_attempt_at", "published_at")
    ),
    ItemStatus.CANCELED: _leave_statement(ItemStatus.CANCELED, ("finished_at",)),
}


def _leave_running(
    session: Session, item: ClaimedItem, target: ItemStatus, now: datetime, values: dict[str, Any]
) -> bool:
    """running → target, only for the claim holder (a worker whose lease was taken loses)."""
    params = {"item_id": item.id, "token": item.token, "now": now, **values}
    result = session.connection().execute(LEAVE[target], params)
    return bool(result.rowcount)


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
) -> str | None:
    """running → succeeded; returns the job's new status, or None if the claim was lost."""
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
    if not done:
        return None
    job = _shift_counts(
        session,
        item.job_id,
        now,
        characters=characters,
        audio_seconds=duration_s or 0.0,
        running=-1,
        succeeded=1,
    )
    return str(job.status)


def fail_item(
    session: Session, item: ClaimedItem, *, now: datetime, code: str, message: str
) -> str | None:
    """running → failed; returns the job's new status, or None if the claim was lost."""
    done = _leave_running(
        session,
        item,
        ItemStatus.FAILED,
        now,
        {"error_code": code, "error_message": message, "next_attempt_at": None, "finished_at": now},
    )
    if not done:
        return None
    return str(_shift_counts(session, item.job_id, now, running=-1, failed=1).status)


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


def hand_back_item(
    session: Session, item: ClaimedItem, *, now: datetime, next_attempt_at: datetime
) -> bool:
    """running → queued without spending an attempt (the provider had no free slot)."""
    done = _leave_running(
        session,
        item,
        ItemStatus.QUEUED,
        now,
        {
            "error_code": None,
            "error_message": None,
            "next_attempt_at": next_attempt_at,
            "published_at": next_attempt_at,
        },
    )
    if done:
        session.connection().execute(
            update(ITEMS).where(ITEMS.c.id == item.id).values(attempts=ITEMS.c.attempts - 1)
        )
        _shift_counts(session, item.job_id, now, running=-1, queued=1)
    return done


def renew_leases(session: Session, tokens: Sequence[str], *, until: datetime) -> int:
    """Extend the leases of running items held under `tokens` (a worker's heartbeat)."""
    result = session.connection().execute(
        update(ITEMS)
        .where(ITEMS.c.claim_token.in_(tokens), ITEMS.c.status == ItemStatus.RUNNING.value)
        .values(lease_expires_at=until)
    )
    return int(result.rowcount)


def fail_queued_items(
    session: Session, job_id: str, *, now: datetime, code: str, message: str
) -> int:
    """queued → failed for a whole job (its credential was refused: further calls are futile)."""
    check_item_transition(ItemStatus.QUEUED, ItemStatus.FAILED)
    result = session.connection().execute(
        update(ITEMS)
        .where(ITEMS.c.job_id == job_id, ITEMS.c.status == ItemStatus.QUEUED.value)
        .values(
            status=ItemStatus.FAILED.value,
            error_code=code,
            error_message=message,
            finished_at=now,
            updated_at=now,
        )
    )
    count = int(result.rowcount)
    if count:
        _shift_counts(session, job_id, now, queued=-count, failed=count)
    return count


def record_attempts(session: Session, item_id: int, attempts: Sequence[dict[str, Any]]) -> None:
    if attempts:
        rows = [dict(a, item_id=item_id) for a in attempts]
        session.connection().execute(insert(ATTEMPTS), rows)


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
    _shift_counts(session, job_id, now, cancel=True, queued=-count, canceled=count)
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


def mark_published(session: Session, ids: Sequence[int], *, at: datetime | None) -> None:
    """Record when ids were handed to the broker (None: not sent, the sweeper should)."""
    for start in range(0, len(ids), INSERT_BATCH):
        session.execute(
            update(Item)
            .where(Item.id.in_(ids[start : start + INSERT_BATCH]))
            .values(published_at=at)
        )
