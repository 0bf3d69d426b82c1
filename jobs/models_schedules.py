"""SQLAlchemy models for schedules, their runs and beat's lease (issue 12); migration 0006.

A schedule's `next_fire_at` is the one fire time beat waits for (NULL while disabled), so a
pass asks one indexed question: which schedules are due. `revision` grows with every user
change, so beat's "advance to the next fire time" is a compare-and-set that a concurrent
PATCH (or a second beat) makes a no-op.

A run is one fire time of one schedule. Its UNIQUE (schedule_id, fire_time) is what makes a
fire exactly-once: the row is inserted before the job is submitted, and whoever loses the
insert did not fire. `job_id` is recorded after the submit; a run left without one (a crash
between the two) is finished by the next pass under the same Idempotency-Key.

`beat_lease` is one row per lease name: which beat process does the chores right now.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from jobs.model_types import BigIntId, StrEnumColumn
from jobs.models import Base


class Overlap(StrEnum):
    SKIP = "skip"  # no new run while the previous run's job is not finished
    ALLOW = "allow"  # runs may overlap


class CatchUp(StrEnum):
    ONCE = "once"  # fire times missed while beat was down become one run (the latest)
    SKIP = "skip"  # missed fire times are recorded as skipped, not fired


class RunStatus(StrEnum):
    """A run's own state; once it has a job, the API shows the job's status instead."""

    PENDING = "pending"  # the fire time is claimed, the job not yet recorded
    SUBMITTED = "submitted"  # the job exists (`job_id`)
    SKIPPED = "skipped"  # not fired: `reason` says why (overlap, catch_up, superseded)
    FAILED = "failed"  # the template no longer makes a valid job: `reason` says why


class RunTrigger(StrEnum):
    CRON = "cron"  # beat fired it at its fire time
    MANUAL = "manual"  # POST /v1/schedules/{id}/run


class Schedule(Base):
    __tablename__ = "schedules"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        Index("ix_schedules_next_fire_at", "next_fire_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    cron: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64))
    job: Mapped[dict[str, Any]] = mapped_column(JSON)  # the job template
    enabled: Mapped[bool] = mapped_column(Boolean)
    overlap: Mapped[Overlap] = mapped_column(StrEnumColumn(Overlap, 8))
    catch_up: Mapped[CatchUp] = mapped_column(StrEnumColumn(CatchUp, 8))
    next_fire_at: Mapped[datetime | None]
    revision: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ScheduleRun(Base):
    __tablename__ = "schedule_runs"
    __table_args__ = (
        UniqueConstraint("schedule_id", "fire_time"),
        # The repair pass's question: which runs were claimed but never got their job.
        Index("ix_schedule_runs_status_created", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    schedule_id: Mapped[str] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    fire_time: Mapped[datetime]
    trigger: Mapped[RunTrigger] = mapped_column(StrEnumColumn(RunTrigger, 8))
    status: Mapped[RunStatus] = mapped_column(StrEnumColumn(RunStatus, 16))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]


class BeatLease(Base):
    """Who does beat's chores now: `holder` until `expires_at`, renewed every tick."""

    __tablename__ = "beat_leases"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]
