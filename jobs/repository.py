"""The repository's reads and inserts: tenants, keys, jobs, items, cost and reuse.

All SQL lives here, in `jobs/sweeper_queries.py` (the sweeper's queries and publish stamps)
and in `jobs/ledger_sql*.py` (everything that changes a status, run only by the ledgers).
Callers own the transaction (commit/rollback).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, or_, select, union_all
from sqlalchemy.orm import Session

from jobs.models import ApiKey, Item, Job, Tenant
from jobs.status import ItemStatus

INSERT_BATCH = 5000
_JOB_ID = re.compile(r"job_[0-9a-f]{32}")  # jobs.service.new_job_id


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


# Built once: the poll endpoint runs this on every GET, and building the expression anew
# was about 5% of that request's CPU.
_JOB_OF_TENANT = select(Job).where(
    Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id")
)


def get_job(session: Session, tenant_id: str, job_id: str) -> Job | None:
    return session.scalar(_JOB_OF_TENANT, {"job_id": job_id, "tenant_id": tenant_id})


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode()


def decode_cursor(cursor: str) -> list[Any] | None:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError, RecursionError):
        return None
    return value if isinstance(value, list) else None


# Cursors come back from clients, so each is checked for exactly the shape this API issues:
# `[1, "x"]`, `[true]`, `[2147483648]` or a naive date reached the database and were 500s.
MAX_SEQ = 2**31 - 1  # items.seq is a 32-bit INTEGER


def decode_job_cursor(cursor: str) -> tuple[datetime, str] | None:
    """(created_at, job id) from a `list_jobs` cursor, or None unless this API issued it."""
    value = decode_cursor(cursor)
    if value is None or len(value) != 2 or not all(isinstance(v, str) for v in value):
        return None
    created, job_id = value
    try:
        at = datetime.fromisoformat(created)
    except ValueError:
        return None
    if at.tzinfo is None or not _JOB_ID.fullmatch(job_id):
        return None
    return at, job_id


def decode_item_cursor(cursor: str) -> int | None:
    """The last seq of a `list_items` page, or None unless this API issued it."""
    value = decode_cursor(cursor)
    if value is None or len(value) != 1 or type(value[0]) is not int:  # bool is an int too
        return None
    seq: int = value[0]
    return seq if 0 <= seq <= MAX_SEQ else None


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


def list_items_filtered(
    session: Session,
    job_id: str,
    *,
    status: str | None,
    error_code: str | None,
    limit: int,
    after_seq: int,
) -> list[Item]:
    """One keyset page of a job's items by seq, filtered by status and/or error code (the
    dashboard's item table). Each filter has an index ending in seq: `ix_items_job_status_seq`
    and `ix_items_job_error_seq`, so a page of a 100k-item job reads `limit` rows."""
    query = select(Item).where(Item.job_id == job_id, Item.seq > after_seq)
    if status:
        query = query.where(Item.status == status)
    if error_code:
        query = query.where(Item.error_code == error_code)
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


# --- cost and reuse (issue 12) ----------------------------------------------------------


def rerouted_usage(
    session: Session, job_ids: Sequence[str] | None
) -> list[tuple[str, int, int, float]]:
    """(job id, route, characters, audio seconds) used by succeeded items on fallback routes,
    for `jobs.usage`, of `job_ids` (None: every job, for /metrics). Reads only rerouted items
    (the partial index `ix_items_job_rerouted`); items that reused an output used nothing."""
    if job_ids is not None and not job_ids:
        return []
    query = (
        select(
            Item.job_id,
            Item.route,
            func.coalesce(func.sum(Item.characters), 0),
            func.coalesce(func.sum(Item.duration_s), 0.0),
        )
        .where(
            Item.route > 0,
            Item.status == ItemStatus.SUCCEEDED.value,
            Item.reused_from.is_(None),
        )
        .group_by(Item.job_id, Item.route)
    )
    if job_ids is not None:
        query = query.where(Item.job_id.in_(list(job_ids)))
    rows = session.execute(query)
    return [(j, int(r), int(c or 0), float(a or 0.0)) for j, r, c, a in rows]


_REUSE_COLUMNS = (
    Item.id,
    Item.status,
    Item.output_key,
    Item.output_bytes,
    Item.output_content_type,
    Item.duration_s,
)
_SAME_LINE = Item.content_hash == bindparam("content_hash")
# One round trip for both of reuse's questions, each side an ordered range of the index
# `ix_items_content_hash`: the newest succeeded copies, and the lowest pending one before us.
_REUSE_LOOKUP = union_all(
    select(*_REUSE_COLUMNS)
    .where(
        _SAME_LINE,
        Item.status == ItemStatus.SUCCEEDED.value,
        Item.id != bindparam("item_id"),
        Item.output_key.is_not(None),
    )
    .order_by(Item.id.desc())
    .limit(bindparam("limit"))
    .subquery()
    .select(),
    select(*_REUSE_COLUMNS)
    .where(
        _SAME_LINE,
        Item.status.in_([ItemStatus.QUEUED.value, ItemStatus.RUNNING.value]),
        Item.id < bindparam("item_id"),
    )
    .order_by(Item.id)
    .limit(1)
    .subquery()
    .select(),
)


def reuse_lookup(
    c: Session | Connection, content_hash: str, item_id: int, *, limit: int = 3
) -> tuple[list[Any], int | None]:
    """For a TTS line's content hash: the succeeded items whose outputs may be copied
    (newest first), and the lowest-id queued or running item before `item_id` (the one that
    speaks the line while later copies wait; None: this one does). The hash includes the
    tenant, so both are the tenant's own."""
    params = {"content_hash": content_hash, "item_id": item_id, "limit": limit}
    rows = list(c.execute(_REUSE_LOOKUP, params).all())
    done = [r for r in rows if r.status == ItemStatus.SUCCEEDED.value]
    pending = [r.id for r in rows if r.status != ItemStatus.SUCCEEDED.value]
    return done, (pending[0] if pending else None)
