"""The dashboard's buttons: cancel, retry failed items, redeliver a webhook, run a schedule.

Each is a POST form carrying the session's CSRF token (`jobs.api.ui.session.checked_post`
refuses it otherwise, 403) and calls the same use case as the REST API; then it redirects
(303) back to the page it came from, which shows the new state.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from jobs import schedules, service, webhook_log
from jobs.api.deps import Res
from jobs.api.ui import queries
from jobs.api.ui.queries import PageError
from jobs.api.ui.session import PostSession
from jobs.archives import archive_policy
from jobs.clock import utc_now
from jobs.errors import ApiError
from jobs.schedule_fire import Firing, run_now

router = APIRouter(prefix="/ui", include_in_schema=False)


def _back(job_id: str) -> RedirectResponse:
    return RedirectResponse(f"/ui/jobs/{job_id}", status_code=303)


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: str, res: Res, session: PostSession) -> RedirectResponse:
    job = queries.owned_job(res, session.tenant_id, job_id)
    try:
        service.cancel_job(res.ledger, res.store, session.tenant_id, job.id)
    except ApiError as exc:
        raise PageError.of(exc) from None
    return _back(job.id)


@router.post("/jobs/{job_id}/retry")
def retry(job_id: str, res: Res, session: PostSession) -> RedirectResponse:
    job = queries.owned_job(res, session.tenant_id, job_id)
    try:
        service.retry_job(res.ledger, session.tenant_id, job.id)
    except ApiError as exc:
        raise PageError.of(exc) from None
    return _back(job.id)


@router.post("/jobs/{job_id}/webhooks/{delivery_id}/redeliver")
def redeliver(job_id: str, delivery_id: str, res: Res, session: PostSession) -> RedirectResponse:
    job = queries.owned_job(res, session.tenant_id, job_id)
    if len(delivery_id) > queries.MAX_FILTER_CHARS:
        raise queries.no_such("webhook delivery")
    try:
        webhook_log.redeliver(res.sessions, session.tenant_id, job.id, delivery_id, now=utc_now())
    except ApiError as exc:
        raise PageError.of(exc) from None
    return _back(job.id)


@router.post("/schedules/{schedule_id}/run")
def run_schedule(schedule_id: str, res: Res, session: PostSession) -> RedirectResponse:
    """Fire the schedule now, as `POST /v1/schedules/{id}/run` does."""
    if len(schedule_id) > queries.MAX_FILTER_CHARS:
        raise queries.no_such("schedule")
    with res.sessions() as db:
        try:
            schedule = schedules.owned(db, session.tenant_id, schedule_id)
        except ApiError as exc:
            raise PageError.of(exc) from None
    settings = res.settings
    firing = Firing(
        res.ledger,
        settings.max_items_per_job,
        res.source_allow,
        prices=settings.price_table(),
        archives=archive_policy(
            settings.archive_buckets, settings.storage_url, settings.archive_max_items
        ),
    )
    run_now(firing, schedule, utc_now().replace(microsecond=0))
    return RedirectResponse(f"/ui/schedules/{schedule_id}", status_code=303)
