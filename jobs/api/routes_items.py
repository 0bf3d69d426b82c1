"""Item endpoints under a job: its items (paged), its manifest, and an item's stored output.

Each route declares the error statuses it can return (`jobs.api.docs.errors`), as the job
endpoints do (`jobs.api.routes_jobs`), and shares their prefix, tag and route class.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from jobs import repository as repo
from jobs import service
from jobs.api.deps import Res, Resources, TenantId
from jobs.api.docs import AUTH, BAD_CURSOR, BAD_QUERY, NO_JOB, errors
from jobs.api.json_body import JsonBodyRoute
from jobs.api.output_stores import output_stores
from jobs.error_codes import ErrorCode
from jobs.errors import bad_cursor, invalid, not_found
from jobs.manifest import ManifestRecord, output_files
from jobs.media import media_type_for
from jobs.models import Item, Job
from jobs.schemas import ItemList, OutputFormat
from jobs.status import ItemStatus
from jobs.views import UrlFor, item_view
from storage.objects import ObjectNotFound

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=JsonBodyRoute)
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
