"""Request and response bodies of `/v1/schedules` (pydantic), shared by the API and the CLI.

Shape and length checks live here; what needs cronsim, zoneinfo or the catalog (a cron that
fires, a real timezone, a template that renders into a valid job) is `jobs.schedules`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from jobs.models_schedules import CatchUp, Overlap
from jobs.schedule_cron import MAX_CRON_LENGTH, MAX_TIMEZONE_LENGTH
from jobs.schemas import JobOut, Storable, Strict

# A name is what users type after `speechbatch schedules show`: short, no spaces or slashes.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
MAX_NAME_LENGTH = 100
JOB_DESCRIPTION = (
    "A job create body (as for POST /v1/jobs). Every string in it may use `{fire_time}`, "
    "`{fire_date}` and offsets such as `{fire_time - 1 day}` (README: Schedules)."
)


class ScheduleCreate(Strict):
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN)
    cron: Storable = Field(max_length=MAX_CRON_LENGTH, description="Five fields, e.g. 0 2 * * *")
    timezone: Storable = Field(default="UTC", max_length=MAX_TIMEZONE_LENGTH)
    job: dict[str, Any] = Field(description=JOB_DESCRIPTION)
    enabled: bool = True
    overlap: Overlap = Overlap.SKIP
    catch_up: CatchUp = CatchUp.ONCE


class ScheduleUpdate(Strict):
    """A partial update: fields left out keep their value (null is refused for every field)."""

    name: str | None = Field(
        default=None, min_length=1, max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN
    )
    cron: Storable | None = Field(default=None, max_length=MAX_CRON_LENGTH)
    timezone: Storable | None = Field(default=None, max_length=MAX_TIMEZONE_LENGTH)
    job: dict[str, Any] | None = Field(default=None, description=JOB_DESCRIPTION)
    enabled: bool | None = None
    overlap: Overlap | None = None
    catch_up: CatchUp | None = None


class RunOut(BaseModel):
    fire_time: datetime
    trigger: str = Field(description="`cron` (beat fired it) or `manual` (POST .../run).")
    status: str = Field(
        description="The job's status once it has one; else `pending`, `skipped` or `failed`."
    )
    job_id: str | None
    reason: str | None = Field(description="Why a run was skipped or failed.")


class ScheduleOut(BaseModel):
    id: str
    name: str
    cron: str
    timezone: str
    job: dict[str, Any]
    enabled: bool
    overlap: str
    catch_up: str
    next_fire_at: datetime | None = Field(description="null while the schedule is disabled.")
    created_at: datetime
    updated_at: datetime


class ScheduleDetail(ScheduleOut):
    runs: list[RunOut] = Field(description="The newest runs first (at most `runs` of them).")
    next_fire_times: list[datetime] = Field(description="The next fire times, in UTC.")


class ScheduleList(BaseModel):
    schedules: list[ScheduleOut]
    next_cursor: str | None


class RunNowOut(BaseModel):
    run: RunOut
    job: JobOut | None = Field(description="null when the template made no valid job (`reason`).")
