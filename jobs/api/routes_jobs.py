"""Job endpoints: create (202 + Location), get, list, items, manifest, cancel, retry, outputs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import StreamingResponse

from jobs import repository as repo
from jobs import service
from jobs.api.deps import Res, Resources, TenantId
from jobs.error_codes import ErrorCode
from jobs.errors import ApiError, not_found
from jobs.manifest import ManifestRecord, output_files
from jobs.models import Item, Job
from jobs.schemas import ItemList, JobCreate, JobList, JobOut
from jobs.status import JOB_TERMINAL, ItemStatus, JobKind, JobStatus
from jobs.views import UrlFor, item_view, job_view
from storage.objects import ObjectNotFound

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
POLL_AFTER_S = "2"


def _poll_headers(response: Response, job: Job) -> None:
    if job.status not in JOB_TERMINAL:
        response.headers["Retry-After"] = POLL_AFTER_S


@router.post("", status_code=202, response_model=JobOut)
def create_job(
    body: JobCreate,
    response: Response,
    res: Res,
    tenant_id: TenantId,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JobOut:
    submitted = service.submit_job(
        res.ledger,
        tenant_id,
        body,
        idempotency_key=idempotency_key,
        max_items=res.settings.max_items_per_job,
        allow=res.source_allow,
    )
    response.headers["Location"] = f"/v1/jobs/{submitted.job.id}"
    if not submitted.created:
        response.headers["Idempotent-Replayed"] = "true"
    _poll_headers(response, submitted.job)
    return job_view(submitted.job)


@router.get("", response_model=JobList)
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
        decoded = repo.decode_cursor(cursor)
        if not decoded or len(decoded) != 2:
            raise ApiError(400, ErrorCode.INVALID_CURSOR, "The cursor is not one this API issued.")
        before = (datetime.fromisoformat(decoded[0]), str(decoded[1]))
    with res.sessions() as session:
        jobs = repo.list_jobs(
            session, tenant_id, status=status, kind=kind, limit=limit, before=before
        )
    next_cursor = None
    if len(jobs) == limit:
        next_cursor = repo.encode_cursor([jobs[-1].created_at.isoformat(), jobs[-1].id])
    return JobList(jobs=[job_view(j) for j in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: str, res: Res, tenant_id: TenantId) -> Response:
    """The poll endpoint: one autocommit SELECT, and the view is serialized once."""
    job = service.get_job(res.reads, tenant_id, job_id)
    response = Response(job_view(job).model_dump_json(), media_type="application/json")
    _poll_headers(response, job)
    return response


def url_maker(res: Resources, job: Job) -> UrlFor:
    """Presigned S3 URLs, or this API's own output route when the store cannot presign."""

    def url_for(key: str, item: Item) -> str | None:
        url = res.store.presigned_url(key, res.settings.presign_seconds)
        if url is None:
            fmt = key.rsplit(".", 1)[-1]
            url = f"/v1/jobs/{job.id}/items/{item.external_id}/output?format={fmt}"
        return url

    return url_for


@router.get("/{job_id}/items", response_model=ItemList)
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
        decoded = repo.decode_cursor(cursor)
        if not decoded or not isinstance(decoded[0], int):
            raise ApiError(400, ErrorCode.INVALID_CURSOR, "The cursor is not one this API issued.")
        after = decoded[0]
    with res.sessions() as session:
        items = repo.list_items(session, job_id, status=status, limit=limit, after_seq=after)
    url_for = url_maker(res, job)
    next_cursor = repo.encode_cursor([items[-1].seq]) if len(items) == limit else None
    return ItemList(items=[item_view(job, i, url_for) for i in items], next_cursor=next_cursor)


@router.get("/{job_id}/manifest")
def manifest(job_id: str, res: Res, tenant_id: TenantId) -> StreamingResponse:
    job = service.get_job(res.sessions, tenant_id, job_id)

    def lines() -> Iterator[bytes]:
        with res.sessions() as session:
            for item in repo.iter_items(session, job_id):
                yield ManifestRecord.of(job, item).line()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/{job_id}/items/{item_id}/output")
def item_output(
    job_id: str, item_id: str, res: Res, tenant_id: TenantId, format: str | None = None
) -> StreamingResponse:
    """Stream an item's output through the API (for stores that cannot presign URLs)."""
    job = service.get_job(res.sessions, tenant_id, job_id)
    with res.sessions() as session:
        item = repo.get_item(session, job_id, item_id)
    if item is None or not item.output_key:
        raise not_found("output for that item")
    files = dict(output_files(job, item))
    key = files.get(format or "", item.output_key)
    try:
        size = res.store.size(key)
        if size is None:
            raise ObjectNotFound(key)
    except ObjectNotFound:
        raise not_found("output object for that item") from None
    media = item.output_content_type if key == item.output_key else "application/octet-stream"
    return StreamingResponse(
        res.store.iter_chunks(key),
        media_type=media or "application/octet-stream",
        headers={"Content-Length": str(size)},
    )


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, res: Res, tenant_id: TenantId) -> JobOut:
    return job_view(service.cancel_job(res.ledger, res.store, tenant_id, job_id))


@router.post("/{job_id}/retry", response_model=JobOut, status_code=202)
def retry_job(job_id: str, response: Response, res: Res, tenant_id: TenantId) -> JobOut:
    job = service.retry_job(res.ledger, tenant_id, job_id)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    _poll_headers(response, job)
    return job_view(job)
