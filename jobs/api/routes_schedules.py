"""Schedule endpoints: create (201 + Location), list, get (runs and next fire times), update,
delete, and run now (202 with the job).

Same auth, tenancy and error envelope as the job routes; bodies are bounded before parsing
by the same route class (`jobs.api.json_body`), and the use cases live in `jobs.schedules`
and `jobs.schedule_fire`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from jobs import repository as repo
from jobs import schedules
from jobs.api.deps import Res, Resources, TenantId
from jobs.api.docs import AUTH, BAD_CURSOR, BAD_QUERY, TOO_LARGE, errors
from jobs.api.json_body import JsonBodyRoute
from jobs.archives import ArchivePolicy, archive_policy
from jobs.clock import utc_now
from jobs.errors import bad_cursor
from jobs.schedule_fire import Firing, run_now
from jobs.schedule_schemas import (
    RunNowOut,
    RunOut,
    ScheduleCreate,
    ScheduleDetail,
    ScheduleList,
    ScheduleOut,
    ScheduleUpdate,
)
from jobs.views import job_view

router = APIRouter(prefix="/v1/schedules", tags=["schedules"], route_class=JsonBodyRoute)
NO_SCHEDULE = "`not_found`: no such schedule for this API key (another tenant's looks the same)."
INVALID = (
    "`invalid_request` (the schema), `invalid_cron`, `invalid_timezone`, `invalid_template` "
    "(an unknown placeholder, a malformed offset, or a rendered job that is not valid), or a "
    "job code (`unknown_model`, `no_items`, ...) for what the template asks."
)
TEMPLATE_TOO_LARGE = f"{TOO_LARGE} `template_too_large`: the job template is over 1 MiB."
MALFORMED = "`malformed_json`: the body is not (UTF-8) JSON."
MAX_RUNS_SHOWN = 100


def _archives(res: Resources) -> ArchivePolicy:
    settings = res.settings
    return archive_policy(
        settings.archive_buckets, settings.storage_url, settings.archive_max_items
    )


def _limits(res: Resources) -> schedules.Limits:
    return schedules.Limits(
        max_items=res.settings.max_items_per_job,
        max_schedules=res.settings.max_schedules_per_tenant,
        allow=res.source_allow,
        prices=res.settings.price_table(),
        archives=_archives(res),
        store=res.store,
    )


@router.post(
    "",
    status_code=201,
    response_model=ScheduleOut,
    responses=errors(
        {
            400: MALFORMED,
            401: AUTH,
            409: "`schedule_name_taken`, or `too_many_schedules` for this tenant.",
            413: TEMPLATE_TOO_LARGE,
            422: INVALID,
        }
    ),
)
def create_schedule(
    body: ScheduleCreate, response: Response, res: Res, tenant_id: TenantId
) -> ScheduleOut:
    schedule = schedules.create(res.sessions, tenant_id, body, now=utc_now(), limits=_limits(res))
    response.headers["Location"] = f"/v1/schedules/{schedule.id}"
    return schedules.view(schedule)


@router.get(
    "", response_model=ScheduleList, responses=errors({400: BAD_CURSOR, 401: AUTH, 422: BAD_QUERY})
)
def list_schedules(
    res: Res,
    tenant_id: TenantId,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
) -> ScheduleList:
    """The tenant's schedules by name."""
    after = None
    if cursor:
        decoded = repo.decode_cursor(cursor)
        if not decoded or len(decoded) != 1 or not isinstance(decoded[0], str):
            raise bad_cursor()
        after = decoded[0]
    with res.sessions() as session:
        found = schedules.page(session, tenant_id, limit=limit, after_name=after)
    next_cursor = repo.encode_cursor([found[-1].name]) if len(found) == limit else None
    return ScheduleList(schedules=[schedules.view(s) for s in found], next_cursor=next_cursor)


@router.get(
    "/{schedule_id}",
    response_model=ScheduleDetail,
    responses=errors({401: AUTH, 404: NO_SCHEDULE, 422: BAD_QUERY}),
)
def get_schedule(
    schedule_id: str,
    res: Res,
    tenant_id: TenantId,
    runs: Annotated[int, Query(ge=0, le=MAX_RUNS_SHOWN)] = 20,
) -> ScheduleDetail:
    """The schedule, its newest `runs` runs (newest first) and its next five fire times."""
    with res.sessions() as session:
        schedule = schedules.owned(session, tenant_id, schedule_id)
        return schedules.detail(session, schedule, now=utc_now(), runs_limit=runs)


@router.patch(
    "/{schedule_id}",
    response_model=ScheduleOut,
    responses=errors(
        {
            400: MALFORMED,
            401: AUTH,
            404: NO_SCHEDULE,
            409: "`schedule_name_taken`: another schedule has that name.",
            413: TEMPLATE_TOO_LARGE,
            422: INVALID,
        }
    ),
)
def update_schedule(
    schedule_id: str, body: ScheduleUpdate, res: Res, tenant_id: TenantId
) -> ScheduleOut:
    """Change the fields sent; a new cron, timezone or `enabled` recomputes the next fire time
    from now (fire times missed while disabled are not caught up)."""
    schedule = schedules.update(
        res.sessions, tenant_id, schedule_id, body, now=utc_now(), limits=_limits(res)
    )
    return schedules.view(schedule)


@router.delete("/{schedule_id}", status_code=204, responses=errors({401: AUTH, 404: NO_SCHEDULE}))
def delete_schedule(schedule_id: str, res: Res, tenant_id: TenantId) -> Response:
    """Delete the schedule and its run history; the jobs it made stay."""
    schedules.remove(res.sessions, tenant_id, schedule_id)
    return Response(status_code=204)


@router.post(
    "/{schedule_id}/run",
    status_code=202,
    response_model=RunNowOut,
    responses=errors({401: AUTH, 404: NO_SCHEDULE}),
)
def run_schedule(schedule_id: str, response: Response, res: Res, tenant_id: TenantId) -> RunNowOut:
    """Fire now (fire time = now, whole seconds), whatever the cron, `enabled` or overlap say;
    the answer has the job, or `job: null` and the run's reason if the template made none."""
    with res.sessions() as session:
        schedule = schedules.owned(session, tenant_id, schedule_id)
    firing = Firing(
        res.ledger,
        res.settings.max_items_per_job,
        res.source_allow,
        prices=res.settings.price_table(),
        archives=_archives(res),
    )
    fired = run_now(firing, schedule, utc_now().replace(microsecond=0))
    run = fired.run
    status = str(fired.job.status) if fired.job else str(run.status)
    if fired.job is not None:
        response.headers["Location"] = f"/v1/jobs/{fired.job.id}"
    return RunNowOut(
        run=RunOut(
            fire_time=run.fire_time,
            trigger=str(run.trigger),
            status=status,
            job_id=run.job_id,
            reason=run.reason,
        ),
        job=job_view(fired.job) if fired.job else None,
    )
