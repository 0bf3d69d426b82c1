"""Job endpoints: create (202 + Location), get, list, items, manifest, cancel, retry, outputs.

Each route declares the error statuses it can return (`jobs.api.docs.errors`), so the
OpenAPI schema says what the API does. The router's route class bounds JSON bodies before
they are parsed (`jobs.api.json_body`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import StreamingResponse

from jobs import repository as repo
from jobs import service
from jobs.api.deps import Res, Resources, TenantId
from jobs.api.docs import AUTH, BAD_CURSOR, BAD_QUERY, NO_JOB, TOO_LARGE, errors
from jobs.api.json_body import JsonBodyRoute
from jobs.api.output_stores import output_stores
from jobs.archive_count import CountLimits
from jobs.archives import archive_policy
from jobs.error_codes import ErrorCode
from jobs.errors import bad_cursor, invalid, not_found
from jobs.manifest import ManifestRecord, output_files
from jobs.media import media_type_for
from jobs.models import Item, Job
from jobs.schemas import DryRunOut, ItemList, JobCreate, JobList, JobOut, OutputFormat
from jobs.status import JOB_TERMINAL, ItemStatus, JobKind, JobStatus
from jobs.usage import RouteUsage, by_job
from jobs.views import UrlFor, item_view, job_view
from storage.objects import ObjectNotFound

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=JsonBodyRoute)
POLL_AFTER_S = "2"
MANIFEST_MEDIA_TYPE = "application/x-ndjson"  # what the route sends and the stored file is
# Every media type a stored output has: the TTS encodings (opus is Ogg) and the transcripts.
OUTPUT_MEDIA_TYPES = (
    "audio/wav",
    "audio/flac",
    "audio/mpeg",
    "audio/ogg",
    "application/json",
    "text/plain",
    "application/x-subrip",
    "text/vtt",
)


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


def url_maker(res: Resources, job: Job) -> UrlFor:
    """Presigned S3 URLs, or this API's own output route when the store cannot presign."""

    outputs = output_stores(res)

    def url_for(key: str, item: Item) -> str | None:
        url = outputs.presigned_url(key, res.settings.presign_seconds)
        if url is None:
            fmt = key.rsplit(".", 1)[-1]
            url = f"/v1/jobs/{job.id}/items/{item.external_id}/output?format={fmt}"
        return url

    return url_for


@router.get(
    "/{job_id}/items",
    response_model=ItemList,
    responses=errors({400: BAD_CURSOR, 401: AUTH, 404: NO_JOB, 422: BAD_QUERY}),
)
def list_items(
    job_id: str,
    res: Res,
    tenant_id: TenantId,
    status: ItemStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> ItemList:
    job = service.get_job(res.sessions, tenant_id, job_id)
    after = 0
    if cursor:
        decoded = repo.decode_item_cursor(cursor)
        if decoded is None:
            raise bad_cursor()
        after = decoded
    with res.sessions() as session:
        items = repo.list_items(session, job_id, status=status, limit=limit, after_seq=after)
    url_for = url_maker(res, job)
    next_cursor = repo.encode_cursor([items[-1].seq]) if len(items) == limit else None
    return ItemList(items=[item_view(job, i, url_for) for i in items], next_cursor=next_cursor)


@router.get(
    "/{job_id}/manifest",
    # A StreamingResponse has no media type of its own, so the errors stay application/json.
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "JSON Lines: one ManifestRecord per item, in item order.",
            "content": {MANIFEST_MEDIA_TYPE: {"schema": {"type": "string"}}},
        },
        **errors({401: AUTH, 404: NO_JOB}),
    },
)
def manifest(job_id: str, res: Res, tenant_id: TenantId) -> StreamingResponse:
    job = service.get_job(res.sessions, tenant_id, job_id)

    def lines() -> Iterator[bytes]:
        with res.sessions() as session:
            for item in repo.iter_items(session, job_id):
                yield ManifestRecord.of(job, item).line()

    return StreamingResponse(lines(), media_type=MANIFEST_MEDIA_TYPE)


@router.get(
    "/{job_id}/items/{item_id}/output",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The stored bytes: audio (TTS) or a transcript rendering (STT).",
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in OUTPUT_MEDIA_TYPES
            },
        },
        **errors(
            {
                401: AUTH,
                404: "`not_found`: no such job or item for this key, or no output yet.",
                422: "`invalid_request`: not an output format at all; `format_unavailable`: "
                "the item was not stored in that format (its `output.files` lists those).",
            }
        ),
    },
)
def item_output(
    job_id: str,
    item_id: str,
    res: Res,
    tenant_id: TenantId,
    format: OutputFormat | None = None,
) -> StreamingResponse:
    """Stream an item's output through the API (for stores that cannot presign URLs).

    `format` picks one of the item's `output.files` (default: its main output). A format the
    item was not stored in is refused, never answered with another one: converting audio
    would need the worker's audio stack in the API, and a client asking for WAV must not
    receive MP3 bytes. Submit the job with the format you need instead.
    """
    job = service.get_job(res.sessions, tenant_id, job_id)
    with res.sessions() as session:
        item = repo.get_item(session, job_id, item_id)
    if item is None or not item.output_key:
        raise not_found("output for that item")
    files = dict(output_files(job, item))
    key = files.get(format) if format else item.output_key
    if key is None:
        stored = ", ".join(files)
        raise invalid(
            ErrorCode.FORMAT_UNAVAILABLE,
            f"Item {item_id!r} has no {format} output; it was stored as {stored}. Ask for "
            "one of those, or submit the job again with the format you need.",
        )
    outputs = output_stores(res)  # an `output.url` job's keys name their own bucket
    try:
        size = outputs.size(key)
        if size is None:
            raise ObjectNotFound(key)
    except ObjectNotFound:
        raise not_found("output object for that item") from None
    if key == item.output_key and item.output_content_type:
        media = item.output_content_type
    else:
        media = media_type_for(key.rsplit(".", 1)[-1])
    return StreamingResponse(
        outputs.iter_chunks(key), media_type=media, headers={"Content-Length": str(size)}
    )


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
