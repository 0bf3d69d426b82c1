"""The job row's counters, and the moves that change many items of a job at once.

Part of the repository (with `jobs/repository.py` and `jobs/transitions.py`). A job keeps
one counter per item status; every change to items moves them in the same transaction
with one UPDATE that also derives the job's status, so polling never scans items.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Boolean, Float, Integer, Table, bindparam, case, func, select, update
from sqlalchemy.orm import Session

from jobs.models import Attempt, Item, Job, UTCDateTime
from jobs.repository import COUNTERS, item_ids
from jobs.status import ItemStatus, JobStatus, check_item_transition

# --- counters ---------------------------------------------------------------------------
#
# The per-item statements below are built once, on the Core tables, with bind parameters:
# building ORM-enabled UPDATEs per call cost more CPU than the database work itself, and a
# worker's throughput is bound by its CPU (one GIL) long before the provider's limit.

JOBS, ITEMS, ATTEMPTS = (cast(Table, m.__table__) for m in (Job, Item, Attempt))
NOW = bindparam("now", type_=UTCDateTime())


def counter_update(job_id: Any = None) -> Any:
    """UPDATE jobs: move every counter by its delta, derive status, return what workers need.

    The CASE mirrors `jobs.status.job_status_from_counts` (a test keeps the two in step), so
    concurrent workers never read-modify-write the job row. `job_id` picks the row: a bind
    parameter by default, or a column of a CTE that moved an item (PostgreSQL, see
    `jobs.transitions`), which makes the statement `UPDATE jobs ... FROM <cte>`.
    """
    target = bindparam("job_id") if job_id is None else job_id
    now = NOW
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
        .where(JOBS.c.id == target)
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


COUNTER_UPDATE = counter_update()


def counter_params(
    now: datetime,
    *,
    characters: int = 0,
    audio_seconds: float = 0.0,
    cancel: bool = False,
    **deltas: int,
) -> dict[str, Any]:
    """The bind parameters of a counter update (every counter not named moves by 0)."""
    params: dict[str, Any] = {f"d_{name}": deltas.get(name, 0) for name in COUNTERS}
    params.update(now=now, cancel=cancel, d_chars=characters, d_audio=audio_seconds)
    return params


def shift_counts(
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
    params = counter_params(
        now, characters=characters, audio_seconds=audio_seconds, cancel=cancel, **deltas
    )
    return session.connection().execute(COUNTER_UPDATE, {**params, "job_id": job_id}).one()


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
        shift_counts(session, job_id, now, queued=-count, failed=count)
    return count


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
    shift_counts(session, job_id, now, cancel=True, queued=-count, canceled=count)
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
    shift_counts(session, job_id, now, failed=-len(ids), queued=len(ids))
    return ids


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
            shift_counts(session, job_id, now, running=-1, queued=1)
            recovered.append(item_id)
    return recovered
