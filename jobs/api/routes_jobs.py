"""Job endpoints: create (202 + Location), get, list, cancel, retry.

A job's items, its manifest and its items' outputs are `jobs.api.routes_items`.

Each route declares the error statuses it can return (`jobs.api.docs.errors`), so the
OpenAPI schema says what the API does. The router's route class bounds JSON bodies before
they are parsed (`jobs.api.json_body`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from jobs import repository as repo
from jobs import service
from jobs.api.deps import Res, Resources, TenantId
from jobs.api.docs import AUTH, BAD_CURSOR, BAD_QUERY, NO_JOB, TOO_LARGE, errors
from jobs.api.json_body import JsonBodyRoute
from jobs.api.output_stores import output_stores
from jobs.archive_count import CountLimits
from jobs.archives import archive_policy
from jobs.errors import bad_cursor
from jobs.models import Job
from jobs.schemas import DryRunOut, JobCreate, JobList, JobOut
from jobs.status import JOB_TERMINAL, JobKind, JobStatus
from jobs.usage import RouteUsage, by_job
from jobs.views import job_view

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=JsonBodyRoute)
POLL_AFTER_S = "2"


def _poll_headers(response: Response, job: Job) -> None:
    if job.status not in JOB_TERMINAL:
        response.headers["Retry-After"] = POLL_AFTER_S


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    responses=errors(
        {
            400: "`malformed_json`: the body is not (UTF-8) JSON.",
            401: AUTH,
            409: "`idempotency_key_reused`: this Idempotency-Key came with another body.",
            413: TOO_LARGE,
            422: "`invalid_request` (the schema, unknown fields included) or a code naming "
            "what the body asks for that cannot be done (`unknown_model`, `no_items`, ...).",
        }
    )
    | {
        200: {
            "model": DryRunOut,
            "description": "`dry_run=true`: the body passed every check a submit makes; its "
            "item count, usage and cost estimate. Nothing was created or called.",
        }
    },
)
def create_job(
    body: JobCreate,
    response: Response,
    res: Res,
    tenant_id: TenantId,
    # An empty key is refused (422), not taken as a key: it is a client's unset variable,
    # and as a key it made every later job of the tenant a 409.
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
    dry_run: bool = False,
) -> JobOut | Response:
    prices, settings = res.settings.price_table(), res.settings
    if dry_run:  # validated as a submit is; the Idempotency-Key is neither used nor replayed
        estimate = service.dry_run_job(
            res.sessions,
            res.store,
            tenant_id,
            body,
            max_items=settings.max_items_per_job,
            allow=res.source_allow,
            prices=prices,
            archives=archive_policy(
                settings.archive_buckets, settings.storage_url, settings.archive_max_items
            ),
            buckets=output_stores(res).others,
            count_limits=CountLimits(
                budget_s=settings.archive_dry_run_seconds,
                max_objects=settings.archive_dry_run_objects,
                max_items=settings.archive_max_items,
            ),
        )
        return Response(estimate.model_dump_json(), media_type="application/json")
    submitted = service.submit_job(
        res.ledger,
        tenant_id,
        body,
        idempotency_key=idempotency_key,
        max_items=res.settings.max_items_per_job,
        allow=res.source_allow,
        prices=prices,
        archives=archive_policy(
            res.settings.archive_buckets, res.settings.storage_url, res.settings.archive_max_items
        ),
        buckets=output_stores(res).others,
    )
    response.headers["Location"] = f"/v1/jobs/{submitted.job.id}"
    if not submitted.created:
        response.headers["Idempotent-Replayed"] = "true"
    _poll_headers(response, submitted.job)
    return _view(res, submitted.job)


def _view(res: Resources, job: Job) -> JobOut:
    """The job view with its per-provider usage (one grouped read over rerouted items, only
    for a job with fallbacks) at this deployment's prices."""
    rerouted: list[RouteUsage] = []
    if job.fallback:
        with res.reads() as session:
            rerouted = by_job(repo.rerouted_usage(session, [job.id])).get(job.id, [])
    return job_view(job, rerouted=rerouted, prices=res.settings.price_table())


@router.get(
    "", response_model=JobList, responses=errors({400: BAD_CURSOR, 401: AUTH, 422: BAD_QUERY})
)
def list_jobs(
    res: Res,
    tenant_id: TenantId,
    status: JobStatus | None = None,
    kind: JobKind | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> JobList:
    before = None
    if cursor:
        before = repo.decode_job_cursor(cursor)
        if before is None:
            raise bad_cursor()
    with res.sessions() as session:
        jobs = repo.list_jobs(
            session, tenant_id, status=status, kind=kind, limit=limit, before=before
        )
    next_cursor = None
    if len(jobs) == limit:
        next_cursor = repo.encode_cursor([jobs[-1].created_at.isoformat(), jobs[-1].id])
    with res.reads() as session:
        rerouted = by_job(repo.rerouted_usage(session, [j.id for j in jobs if j.fallback]))
    prices = res.settings.price_table()
    views = [job_view(j, rerouted=rerouted.get(j.id, []), prices=prices) for j in jobs]
    return JobList(jobs=views, next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=errors({401: AUTH, 404: NO_JOB}))
def get_job(job_id: str, res: Res, tenant_id: TenantId) -> Response:
    """The poll endpoint: one autocommit SELECT, and the view is serialized once."""
    job = service.get_job(res.reads, tenant_id, job_id)
    response = Response(_view(res, job).model_dump_json(), media_type="application/json")
    _poll_headers(response, job)
    return response


@router.post("/{job_id}/cancel", response_model=JobOut, responses=errors({401: AUTH, 404: NO_JOB}))
def cancel_job(job_id: str, res: Res, tenant_id: TenantId) -> JobOut:
    return _view(res, service.cancel_job(res.ledger, res.store, tenant_id, job_id))


@router.post(
    "/{job_id}/retry",
    response_model=JobOut,
    status_code=202,
    responses=errors(
        {401: AUTH, 404: NO_JOB, 409: "`job_canceled`: a canceled job is not retried."}
    ),
)
def retry_job(job_id: str, response: Response, res: Res, tenant_id: TenantId) -> JobOut:
    job = service.retry_job(res.ledger, tenant_id, job_id)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    _poll_headers(response, job)
    return _view(res, job)
