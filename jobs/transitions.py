"""One item's status changes: claim, succeed, fail, re-queue, hand back, lease renewal.

Part of the repository (with `jobs/repository.py` and `jobs/counters.py`). Each change is a
conditional UPDATE (compare-and-set on status and claim token) that moves the job's
counters in the same transaction; the transition table in `jobs/status.py` is checked for
every statement. Callers own the transaction (commit/rollback).

The two hot transitions, claim and succeed, also exist as ONE PostgreSQL statement each
(`claim_item_at_once`, `succeed_item_at_once`), run on an autocommit connection. Every item
of a job updates the same job row, so its row lock is the hottest lock in the system: held
from the counter UPDATE to the COMMIT, it serialised all of a worker's threads behind
whichever one was waiting for the GIL to send its COMMIT (pg_stat_activity showed five of
sixteen backends in `Lock:transactionid`). As one statement the lock is held for
microseconds, inside the server. SQLite cannot put an UPDATE in a CTE, and has one writer
anyway, so it keeps the transactional form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    Integer,
    Text,
    bindparam,
    column,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from jobs.counters import ATTEMPTS, ITEMS, NOW, counter_params, counter_update, shift_counts
from jobs.models import Job, UTCDateTime
from jobs.status import ItemStatus, check_item_transition

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


_due = or_(ITEMS.c.next_attempt_at.is_(None), ITEMS.c.next_attempt_at <= NOW)
CLAIM = (
    update(ITEMS)
    .where(ITEMS.c.id == bindparam("item_id"), ITEMS.c.status == ItemStatus.QUEUED.value, _due)
    .values(
        status=ItemStatus.RUNNING.value,
        attempts=ITEMS.c.attempts + 1,
        claim_token=bindparam("token"),
        lease_expires_at=bindparam("lease_until", type_=UTCDateTime()),
        updated_at=NOW,
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
    job = shift_counts(session, row.job_id, now, queued=-1, running=1)
    return _claimed(item_id, token, row, job, row.voice)


def _claimed(item_id: int, token: str, row: Any, job: Any, voice: str | None) -> ClaimedItem:
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
        voice=voice or job.voice,
        options=dict(job.options),
        output_prefix=job.output_prefix,
    )


_CLAIMED = CLAIM.cte("moved")
CLAIM_AT_ONCE = counter_update(_CLAIMED.c.job_id).returning(
    *(_CLAIMED.c[name] for name in ("job_id", "seq", "external_id", "text", "source", "attempts")),
    _CLAIMED.c.voice.label("item_voice"),  # the job's own `voice` is returned too
)


def claim_item_at_once(
    connection: Connection, item_id: int, *, token: str, now: datetime, lease_until: datetime
) -> ClaimedItem | None:
    """`claim_item` as one PostgreSQL statement (run it on an autocommit connection)."""
    check_item_transition(ItemStatus.QUEUED, ItemStatus.RUNNING)
    params = counter_params(now, queued=-1, running=1)
    params.update(item_id=item_id, token=token, lease_until=lease_until)
    row = connection.execute(CLAIM_AT_ONCE, params).one_or_none()
    return None if row is None else _claimed(item_id, token, row, row, row.item_voice)


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
            updated_at=NOW,
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
    job = shift_counts(
        session,
        item.job_id,
        now,
        characters=characters,
        audio_seconds=duration_s or 0.0,
        running=-1,
        succeeded=1,
    )
    return str(job.status)


_SUCCEEDED = LEAVE[ItemStatus.SUCCEEDED].returning(ITEMS.c.id, ITEMS.c.job_id).cte("moved")
_LOGGED = (
    func.jsonb_to_recordset(bindparam("attempt_log", type_=JSONB))
    .table_valued(
        column("started_at", UTCDateTime()),
        column("latency_ms", Float()),
        column("status_code", Integer()),
        column("error_code", Text()),
        column("provider_request_id", Text()),
    )
    .render_derived(name="logged", with_types=True)
)
SUCCEED_AT_ONCE = counter_update(_SUCCEEDED.c.job_id).add_cte(
    insert(ATTEMPTS)
    .from_select(
        ["item_id", *_LOGGED.c.keys()],
        select(_SUCCEEDED.c.id, *_LOGGED.c).select_from(_SUCCEEDED).join(_LOGGED, true()),
    )
    .cte("recorded")
)


def succeed_item_at_once(
    connection: Connection,
    item: ClaimedItem,
    attempts: Sequence[dict[str, Any]],
    *,
    now: datetime,
    output_key: str,
    output_bytes: int,
    content_type: str,
    duration_s: float | None,
    characters: int,
) -> str | None:
    """`succeed_item` plus `record_attempts` as one PostgreSQL statement (autocommit)."""
    params = counter_params(
        now, characters=characters, audio_seconds=duration_s or 0.0, running=-1, succeeded=1
    )
    params.update(
        item_id=item.id,
        token=item.token,
        output_key=output_key,
        output_bytes=output_bytes,
        output_content_type=content_type,
        duration_s=duration_s,
        characters=characters,
        error_code=None,
        error_message=None,
        next_attempt_at=None,
        finished_at=now,
        attempt_log=[{**a, "started_at": a["started_at"].isoformat()} for a in attempts],
    )
    row = connection.execute(SUCCEED_AT_ONCE, params).one_or_none()
    return None if row is None else str(row.status)


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
    return str(shift_counts(session, item.job_id, now, running=-1, failed=1).status)


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
            shift_counts(session, item.job_id, now, running=-1, canceled=1)
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
        shift_counts(session, item.job_id, now, running=-1, queued=1)
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
        shift_counts(session, item.job_id, now, running=-1, queued=1)
    return done


def renew_leases(session: Session, tokens: Sequence[str], *, until: datetime) -> int:
    """Extend the leases of running items held under `tokens` (a worker's heartbeat)."""
    result = session.connection().execute(
        update(ITEMS)
        .where(ITEMS.c.claim_token.in_(tokens), ITEMS.c.status == ItemStatus.RUNNING.value)
        .values(lease_expires_at=until)
    )
    return int(result.rowcount)


def record_attempts(session: Session, item_id: int, attempts: Sequence[dict[str, Any]]) -> None:
    if attempts:
        rows = [dict(a, item_id=item_id) for a in attempts]
        session.connection().execute(insert(ATTEMPTS), rows)
