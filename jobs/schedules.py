"""Schedule use cases behind `/v1/schedules`: create, list, get, update, delete.

A schedule is checked whole before it is stored: its cron fires (`jobs.schedule_cron`), its
timezone is an IANA name, and its job template, rendered for the next fire time, is a job
`POST /v1/jobs` would accept (`jobs.validation`). So a schedule that was accepted fails at
02:00 only if the world changed under it (a model retired), and then its run says why.

`next_fire_at` is recomputed from now whenever the cron, timezone or `enabled` changes, and
every change bumps `revision`, which makes beat's advance of `next_fire_at` a no-op if it
read the schedule before the change. Another tenant's schedule is a 404, like a job.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from jobs import schedule_runs as runs
from jobs.archives import NO_ARCHIVES, ArchivePolicy
from jobs.error_codes import ErrorCode
from jobs.errors import ApiError, conflict, invalid, not_found
from jobs.models_schedules import Schedule
from jobs.netpolicy import Allowlist
from jobs.pricing import DEFAULT_TABLE, PriceTable
from jobs.schedule_cron import CronError, check_cron, check_timezone, next_fire_times
from jobs.schedule_schemas import (
    RunOut,
    ScheduleCreate,
    ScheduleDetail,
    ScheduleOut,
    ScheduleUpdate,
)
from jobs.schedule_template import TemplateError, render_template
from jobs.schemas import JobCreate
from jobs.service import dry_run_job
from storage.memory import MemoryObjectStore
from storage.objects import ObjectStore

# A template is a job body stored in a row and rendered every fire: archives (`source`) are
# how big inputs are written, so a template holding a whole script is capped.
MAX_TEMPLATE_BYTES = 1024 * 1024
NEXT_FIRE_TIMES = 5


@dataclass(frozen=True)
class Limits:
    """What a tenant's schedules may hold: the schedule cap, and what the API submits a job
    with (a template is checked as `POST /v1/jobs?dry_run=true` checks a body)."""

    max_items: int
    max_schedules: int
    allow: Allowlist = ()
    prices: PriceTable = DEFAULT_TABLE
    archives: ArchivePolicy = NO_ARCHIVES
    store: ObjectStore = field(default_factory=MemoryObjectStore)


def _cron(expr: str) -> str:
    try:
        return check_cron(expr)
    except CronError as exc:
        raise invalid(ErrorCode.INVALID_CRON, f"cron: {exc}.") from None


def _zone(name: str) -> ZoneInfo:
    try:
        return check_timezone(name)
    except CronError as exc:
        raise invalid(ErrorCode.INVALID_TIMEZONE, f"timezone: {exc}.") from None


def check_template(
    template: dict[str, object], tz: ZoneInfo, sample: datetime, limits: Limits, tenant_id: str,
    sessions: sessionmaker[Session],
) -> None:  # fmt: skip
    """Refuse a template that is too big, breaks the placeholder grammar, or does not render
    (for `sample`, a fire time) into a job the API would accept; 413/422 with the place."""
    size = len(json.dumps(template, separators=(",", ":")).encode())
    if size > MAX_TEMPLATE_BYTES:
        raise ApiError(
            413,
            ErrorCode.TEMPLATE_TOO_LARGE,
            f"job: the template is {size} bytes, over {MAX_TEMPLATE_BYTES}; name the "
            "recordings with an archive `source` instead of listing every item.",
        )
    try:
        body = JobCreate.model_validate(render_template(template, sample, tz))
    except TemplateError as exc:
        raise invalid(ErrorCode.INVALID_TEMPLATE, f"{exc}.") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise invalid(
            ErrorCode.INVALID_TEMPLATE, f"job.{where}: {first['msg']} (after rendering)."
        ) from None
    try:  # every check a submit makes (catalog, archive policy, budget, webhook URL)
        dry_run_job(
            sessions, limits.store, tenant_id, body, max_items=limits.max_items,
            allow=limits.allow, prices=limits.prices, archives=limits.archives,
        )  # fmt: skip
    except ApiError as exc:
        raise ApiError(exc.status, exc.code, f"job: {exc.message}") from None


def _next_fire(schedule: Schedule, now: datetime) -> datetime | None:
    if not schedule.enabled:
        return None
    times = next_fire_times(schedule.cron, ZoneInfo(schedule.timezone), now, 1)
    return times[0] if times else None


def _name_taken(name: str) -> ApiError:
    return conflict(
        ErrorCode.SCHEDULE_NAME_TAKEN,
        f"A schedule named {name!r} exists for this API key; pick another name or PATCH it.",
    )


def create(
    sessions: sessionmaker[Session], tenant_id: str, body: ScheduleCreate, *, now: datetime,
    limits: Limits,
) -> Schedule:  # fmt: skip
    cron, tz = _cron(body.cron), _zone(body.timezone)
    sample = next_fire_times(cron, tz, now, 1)
    check_template(body.job, tz, sample[0] if sample else now, limits, tenant_id, sessions)
    schedule = Schedule(
        id=f"sch_{uuid.uuid4().hex}", tenant_id=tenant_id, name=body.name, cron=cron,
        timezone=body.timezone, job=body.job, enabled=body.enabled, overlap=body.overlap,
        catch_up=body.catch_up, revision=1, created_at=now, updated_at=now,
    )  # fmt: skip
    schedule.next_fire_at = _next_fire(schedule, now)
    with sessions() as session:
        count = session.scalar(
            select(func.count()).select_from(Schedule).where(Schedule.tenant_id == tenant_id)
        )
        if (count or 0) >= limits.max_schedules:
            raise conflict(
                ErrorCode.TOO_MANY_SCHEDULES,
                f"This tenant has {limits.max_schedules} schedules, the most allowed "
                "(SPEECHBATCH_MAX_SCHEDULES_PER_TENANT); remove one first.",
            )
        session.add(schedule)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            raise _name_taken(body.name) from None
        session.refresh(schedule)
    return schedule


def owned(session: Session, tenant_id: str, schedule_id: str) -> Schedule:
    """The tenant's schedule; another tenant's is indistinguishable from none (404)."""
    schedule = session.get(Schedule, schedule_id)
    if schedule is None or schedule.tenant_id != tenant_id:
        raise not_found("schedule")
    return schedule


def detail(
    session: Session, schedule: Schedule, *, now: datetime, runs_limit: int
) -> ScheduleDetail:
    upcoming: list[datetime] = []
    if schedule.enabled:
        upcoming = next_fire_times(schedule.cron, ZoneInfo(schedule.timezone), now, NEXT_FIRE_TIMES)
    recent = [RunOut(**vars(run)) for run in runs.recent(session, schedule, runs_limit)]
    return ScheduleDetail(**view(schedule).model_dump(), runs=recent, next_fire_times=upcoming)


def view(schedule: Schedule) -> ScheduleOut:
    return ScheduleOut(
        id=schedule.id, name=schedule.name, cron=schedule.cron, timezone=schedule.timezone,
        job=schedule.job, enabled=schedule.enabled, overlap=str(schedule.overlap),
        catch_up=str(schedule.catch_up), next_fire_at=schedule.next_fire_at,
        created_at=schedule.created_at, updated_at=schedule.updated_at,
    )  # fmt: skip


def page(session: Session, tenant_id: str, *, limit: int, after_name: str | None) -> list[Schedule]:
    """The tenant's schedules by name, `limit` at a time after `after_name`."""
    query = select(Schedule).where(Schedule.tenant_id == tenant_id)
    if after_name is not None:
        query = query.where(Schedule.name > after_name)
    return list(session.scalars(query.order_by(Schedule.name).limit(limit)))


def update(
    sessions: sessionmaker[Session], tenant_id: str, schedule_id: str, body: ScheduleUpdate,
    *, now: datetime, limits: Limits,
) -> Schedule:  # fmt: skip
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    nulls = sorted(name for name, value in changes.items() if value is None)
    if nulls:
        raise invalid(
            ErrorCode.INVALID_REQUEST, f"{nulls[0]}: may not be null; leave it out to keep it."
        )
    with sessions() as session:
        schedule = owned(session, tenant_id, schedule_id)
        cron = _cron(changes.get("cron", schedule.cron))
        tz = _zone(changes.get("timezone", schedule.timezone))
        if "job" in changes or "cron" in changes or "timezone" in changes:
            sample = next_fire_times(cron, tz, now, 1)
            template = changes.get("job", schedule.job)
            first = sample[0] if sample else now
            check_template(template, tz, first, limits, tenant_id, sessions)
        retimed = {"cron", "timezone", "enabled"} & changes.keys()
        for name, value in (changes | {"cron": cron}).items():
            setattr(schedule, name, value)
        if retimed:
            schedule.next_fire_at = _next_fire(schedule, now)
        schedule.revision += 1
        schedule.updated_at = now
        try:
            session.commit()
        except IntegrityError:
            session.rollback()  # only a name can collide: (tenant_id, name) is unique
            raise _name_taken(str(changes.get("name", ""))) from None
        session.refresh(schedule)
        return schedule


def remove(sessions: sessionmaker[Session], tenant_id: str, schedule_id: str) -> None:
    """Delete the schedule and its run history; the jobs it made stay."""
    with sessions() as session:
        owned(session, tenant_id, schedule_id)
        session.execute(delete(Schedule).where(Schedule.id == schedule_id))
        session.commit()
