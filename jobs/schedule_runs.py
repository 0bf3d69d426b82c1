"""The SQL of schedule runs: claim a fire time, record its job, and the reads around them.

A fire time is claimed by inserting its run row with `ON CONFLICT DO NOTHING` on the UNIQUE
(schedule_id, fire_time): the statement says whether this caller inserted it, on PostgreSQL
and SQLite alike, without an exception to recover from mid-transaction. Every later change
of a run is a conditional UPDATE (`WHERE status = 'pending'`), so repeating one is a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from jobs.models import Job
from jobs.models_schedules import RunStatus, RunTrigger, Schedule, ScheduleRun
from jobs.status import JOB_TERMINAL


@dataclass(frozen=True)
class NewRun:
    """A run row to claim: its fire time, how it came about, and its first status."""

    fire_time: datetime
    trigger: RunTrigger
    status: RunStatus = RunStatus.PENDING
    reason: str | None = None


def _insert_ignoring_conflicts(session: Session, rows: list[dict[str, Any]]) -> int:
    """Insert run rows, leaving out any whose (schedule_id, fire_time) exists; rows inserted."""
    dialect = session.get_bind().dialect.name
    statement: Insert
    if dialect == "postgresql":
        statement = (
            postgresql.insert(ScheduleRun)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["schedule_id", "fire_time"])
        )
    else:
        statement = (
            sqlite.insert(ScheduleRun)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["schedule_id", "fire_time"])
        )
    # RETURNING, not rowcount: psycopg reports no usable rowcount for a multi-row VALUES.
    return len(session.execute(statement.returning(ScheduleRun.fire_time)).all())


def claim(session: Session, schedule_id: str, run: NewRun, now: datetime) -> bool:
    """Insert the run for `run.fire_time`; False when that fire time was already claimed."""
    row = {
        "schedule_id": schedule_id,
        "fire_time": run.fire_time,
        "trigger": run.trigger,
        "status": run.status,
        "reason": run.reason,
        "created_at": now,
    }
    return _insert_ignoring_conflicts(session, [row]) == 1


def record_skipped(
    session: Session, schedule_id: str, runs: Sequence[NewRun], now: datetime
) -> int:
    """Record fire times that were not fired (each at most once); how many were new."""
    rows = [
        {
            "schedule_id": schedule_id,
            "fire_time": run.fire_time,
            "trigger": run.trigger,
            "status": RunStatus.SKIPPED,
            "reason": run.reason,
            "created_at": now,
        }
        for run in runs
    ]
    return _insert_ignoring_conflicts(session, rows) if rows else 0


def find(session: Session, schedule_id: str, fire_time: datetime) -> ScheduleRun | None:
    return session.scalars(
        select(ScheduleRun).where(
            ScheduleRun.schedule_id == schedule_id, ScheduleRun.fire_time == fire_time
        )
    ).one_or_none()


def record_job(session: Session, run_id: int, job_id: str) -> bool:
    """pending → submitted with its job; False when the run had already left pending."""
    result = session.execute(
        update(ScheduleRun)
        .where(ScheduleRun.id == run_id, ScheduleRun.status == RunStatus.PENDING)
        .values(status=RunStatus.SUBMITTED, job_id=job_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def record_failure(session: Session, run_id: int, reason: str) -> bool:
    """pending → failed, saying why the template made no job."""
    result = session.execute(
        update(ScheduleRun)
        .where(ScheduleRun.id == run_id, ScheduleRun.status == RunStatus.PENDING)
        .values(status=RunStatus.FAILED, reason=reason[:2000])
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def active_job(session: Session, schedule_id: str) -> str | None:
    """What keeps an `overlap: skip` schedule from firing: the latest run that fired, when its
    job has not finished ("a run being submitted" while it has no job yet); else None."""
    row = session.execute(
        select(ScheduleRun.status, ScheduleRun.job_id, Job.status)
        .outerjoin(Job, Job.id == ScheduleRun.job_id)
        .where(
            ScheduleRun.schedule_id == schedule_id,
            ScheduleRun.status.in_([RunStatus.PENDING, RunStatus.SUBMITTED]),
        )
        .order_by(ScheduleRun.fire_time.desc())
        .limit(1)
    ).one_or_none()
    if row is None:
        return None
    run_status, job_id, job_status = row
    if run_status == RunStatus.PENDING:
        return "a run being submitted"
    if job_id is not None and job_status is not None and job_status not in JOB_TERMINAL:
        return f"job {job_id}"
    return None


def stranded(session: Session, *, claimed_before: datetime, limit: int) -> list[tuple[int, str]]:
    """(run id, schedule id) of runs claimed before `claimed_before` that never got a job:
    their beat died between the claim and the submit."""
    rows = session.execute(
        select(ScheduleRun.id, ScheduleRun.schedule_id)
        .where(ScheduleRun.status == RunStatus.PENDING, ScheduleRun.created_at < claimed_before)
        .order_by(ScheduleRun.created_at)
        .limit(limit)
    ).all()
    return [(run_id, schedule_id) for run_id, schedule_id in rows]


def prune(session: Session, schedule_id: str, *, keep: int) -> int:
    """Delete the schedule's finished-with runs older than its newest `keep` (pending runs
    stay for the repair); how many went. Bounds the history of a `* * * * *` schedule."""
    oldest_kept = (
        select(ScheduleRun.fire_time)
        .where(ScheduleRun.schedule_id == schedule_id)
        .order_by(ScheduleRun.fire_time.desc())
        .offset(keep - 1)
        .limit(1)
        .scalar_subquery()
    )
    result = session.execute(
        delete(ScheduleRun).where(
            ScheduleRun.schedule_id == schedule_id,
            ScheduleRun.status != RunStatus.PENDING,
            ScheduleRun.fire_time < oldest_kept,
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class RunView:
    """A run as the API shows it: the job's status once there is a job."""

    fire_time: datetime
    trigger: str
    status: str
    job_id: str | None
    reason: str | None


def recent(session: Session, schedule: Schedule, limit: int) -> list[RunView]:
    """The schedule's newest `limit` runs, newest fire time first."""
    rows = session.execute(
        select(ScheduleRun, Job.status)
        .outerjoin(Job, Job.id == ScheduleRun.job_id)
        .where(ScheduleRun.schedule_id == schedule.id)
        .order_by(ScheduleRun.fire_time.desc())
        .limit(limit)
    ).all()
    views = []
    for run, job_status in rows:
        status = str(job_status) if job_status is not None else str(run.status)
        views.append(RunView(run.fire_time, str(run.trigger), status, run.job_id, run.reason))
    return views
