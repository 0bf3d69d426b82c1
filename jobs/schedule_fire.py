"""Firing a schedule: claim the fire time, submit its job, record the job on the run.

The three steps are separate transactions, and a crash between any two is harmless:

1. **claim**: the run row is inserted (UNIQUE (schedule_id, fire_time)); a conflict means
   someone else fired this time, so nothing more happens here.
2. **submit**: the template is rendered for the fire time and submitted through
   `jobs.service.submit_job` with the Idempotency-Key `schedule:<id>:<fire time>`.
3. **record**: the job id goes on the run (pending → submitted, conditional).

A run left pending (the process died after 1 or 2) is finished by `complete_run` on a later
pass: the same key gives back the same job, or creates it if step 2 never happened, so a
fire time never makes two jobs and never none. A template that no longer makes a valid job
(the catalog changed under it) marks its run `failed` with the reason; the schedule goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from jobs import repository as repo
from jobs import schedule_runs as runs
from jobs.archives import NO_ARCHIVES, ArchivePolicy
from jobs.error_codes import ErrorCode
from jobs.errors import ApiError, not_found
from jobs.ledger import ItemLedger
from jobs.models import Job
from jobs.models_schedules import RunStatus, RunTrigger, Schedule, ScheduleRun
from jobs.netpolicy import Allowlist
from jobs.pricing import DEFAULT_TABLE, PriceTable
from jobs.schedule_cron import check_timezone
from jobs.schedule_template import TemplateError, render_template
from jobs.schemas import JobCreate
from jobs.service import submit_job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Firing:
    """What submitting a scheduled job needs: the ledger and what the API submits with
    (its item cap, private networks, prices and archive policy)."""

    ledger: ItemLedger
    max_items: int
    allow: Allowlist = ()
    prices: PriceTable = DEFAULT_TABLE
    archives: ArchivePolicy = NO_ARCHIVES

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.ledger.db.sessions


def idempotency_key(schedule_id: str, fire_time: datetime) -> str:
    """The Idempotency-Key of a fire: the same for every attempt at the same fire time."""
    return f"schedule:{schedule_id}:{fire_time.isoformat()}"


def render_job(schedule: Schedule, fire_time: datetime) -> JobCreate:
    """The schedule's job body for `fire_time`; TemplateError or ValidationError if it is none."""
    rendered = render_template(schedule.job, fire_time, check_timezone(schedule.timezone))
    return JobCreate.model_validate(rendered)


def _why(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{ErrorCode.INVALID_REQUEST}: job.{where}: {first['msg']}"
    return f"{ErrorCode.INVALID_TEMPLATE}: {exc}"


def complete_run(firing: Firing, schedule: Schedule, run: ScheduleRun) -> str | None:
    """Steps 2 and 3 for a pending run; the job id, or None when the run failed."""
    key = idempotency_key(schedule.id, run.fire_time)
    try:
        body = render_job(schedule, run.fire_time)
        job_id = submit_job(
            firing.ledger,
            schedule.tenant_id,
            body,
            idempotency_key=key,
            max_items=firing.max_items,
            allow=firing.allow,
            prices=firing.prices,
            archives=firing.archives,
        ).job.id
    except ApiError as exc:
        if exc.code != ErrorCode.IDEMPOTENCY_KEY_REUSED:
            return _fail(firing, schedule, run, exc)
        # The template changed since this fire time's job was made: that job is the run's.
        with firing.sessions() as session:
            found = repo.find_job_by_idempotency_key(session, schedule.tenant_id, key)
        if found is None:
            raise
        job_id = found.id
    except (TemplateError, ValidationError) as exc:
        return _fail(firing, schedule, run, exc)
    with firing.sessions() as session:
        runs.record_job(session, run.id, job_id)
        session.commit()
    log.info(
        "schedule %s fired %s as job %s", schedule.id, run.fire_time.isoformat(), job_id,
        extra={"schedule_id": schedule.id, "job_id": job_id},
    )  # fmt: skip
    return job_id


def _fail(firing: Firing, schedule: Schedule, run: ScheduleRun, exc: Exception) -> str | None:
    """Mark the run failed with why; None, the job id it did not get."""
    reason = _why(exc)
    with firing.sessions() as session:
        runs.record_failure(session, run.id, reason)
        session.commit()
    log.warning("schedule %s: run at %s made no job: %s", schedule.id, run.fire_time, reason)
    return None


@dataclass(frozen=True)
class ManualRun:
    """What POST /v1/schedules/{id}/run answers: the run and its job (None if it failed)."""

    run: ScheduleRun
    job: Job | None


def run_now(firing: Firing, schedule: Schedule, fire_time: datetime) -> ManualRun:
    """Fire `schedule` at `fire_time` (now, whole seconds) outside its cron times.

    Overlap does not apply: the user asked for this run. Two requests in the same second
    are the same fire time, so the second gets the first one's run and job.
    """
    with firing.sessions() as session:
        try:
            runs.claim(session, schedule.id, runs.NewRun(fire_time, RunTrigger.MANUAL), fire_time)
            session.commit()
        except IntegrityError:  # the schedule was deleted a moment ago (its foreign key)
            raise not_found("schedule") from None
        run = runs.find(session, schedule.id, fire_time)
    assert run is not None  # just inserted, or inserted by the request we collided with
    job_id = run.job_id
    if run.status == RunStatus.PENDING:
        job_id = complete_run(firing, schedule, run)
    with firing.sessions() as session:
        job = session.get(Job, job_id) if job_id else None
        fresh = runs.find(session, schedule.id, fire_time)
    assert fresh is not None
    return ManualRun(fresh, job)
