"""What the dashboard's pages poll, and item outputs streamed through the API.

Small JSON bodies under /ui/api/ (the jobs on a page, one job's progress, a page of its
items, provider states), read from counters and keyset pages like the pages themselves.
Outputs come through here (not presigned S3 URLs) so a page loads only from this API.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from jobs.api.deps import Res
from jobs.api.output_stores import output_stores
from jobs.api.ui import queries
from jobs.api.ui.progress import format_rps, format_when, job_progress
from jobs.api.ui.render import live_json
from jobs.api.ui.session import Session
from jobs.clock import utc_now
from jobs.error_codes import ErrorCode
from jobs.provider_states import ProviderState, read_provider_states
from jobs.status import JobKind
from storage.objects import ObjectNotFound

router = APIRouter(prefix="/ui", include_in_schema=False)
MAX_TRANSCRIPT_BYTES = 4 * 1024 * 1024
MAX_TRANSCRIPT_CHARS = 200_000


@router.get("/api/jobs")
def live_jobs(
    res: Res,
    session: Session,
    status: str | None = None,
    kind: str | None = None,
    cursor: str | None = None,
) -> JSONResponse:
    """The jobs of one list page (same filters and cursor), with their progress: the first
    page also shows jobs submitted since it was rendered."""
    page = queries.jobs_page(res, session.tenant_id, status, kind, cursor)
    now = utc_now()
    rows = [
        job_progress(job, now)
        | {"kind": str(job.kind), "provider": job.provider, "created": format_when(job.created_at)}
        for job in page.jobs
    ]
    return live_json({"jobs": rows})


@router.get("/api/jobs/{job_id}")
def live_job(job_id: str, res: Res, session: Session) -> JSONResponse:
    """One job's counts, progress, rate, ETA, usage and cost."""
    job = queries.owned_job(res, session.tenant_id, job_id)
    view = queries.job_out(res, job)
    body = job_progress(job, utc_now())
    body["usage"] = view.usage.model_dump(mode="json")
    body["cost"] = view.cost.model_dump(mode="json") if view.cost else None
    return live_json(body)


@router.get("/api/jobs/{job_id}/items")
def live_items(
    job_id: str,
    res: Res,
    session: Session,
    status: str | None = None,
    error_code: str | None = None,
    cursor: str | None = None,
) -> JSONResponse:
    """The rows of one item-table page (same filters and cursor)."""
    job = queries.owned_job(res, session.tenant_id, job_id)
    page = queries.items_page(res, job, status, error_code, cursor)
    return live_json({"items": page.rows, "next_cursor": page.next_cursor})


def _provider_row(state: ProviderState) -> dict[str, Any]:
    row = dict(vars(state))
    until = state.circuit_open_until
    row["circuit_open_until"] = until.isoformat() if until else None
    row["circuit_open_until_text"] = format_when(until)
    row["rps_text"] = f"{format_rps(state.effective_rps)} / {format_rps(state.max_rps)}"
    return row


@router.get("/api/providers")
def live_providers(res: Res, session: Session) -> JSONResponse:
    try:
        rows = [_provider_row(s) for s in read_provider_states(res.settings)]
    except Exception as exc:  # say it, as the page does
        return live_json({"providers": [], "error": type(exc).__name__})
    return live_json({"providers": rows, "error": None})


@router.get("/jobs/{job_id}/items/{item_id}/output")
def item_output(job_id: str, item_id: str, res: Res, session: Session) -> Response:
    """The item's main output (its audio, or its transcript JSON), streamed from the store."""
    job = queries.owned_job(res, session.tenant_id, job_id)
    item = queries.owned_item(res, job, item_id)
    key = item.output_key
    outputs = output_stores(res)  # an `output.url` job's keys name their own bucket
    size = None
    if key:
        try:
            size = outputs.size(key)
        except (ObjectNotFound, ValueError):
            size = None
    if key is None or size is None:
        raise queries.PageError(404, ErrorCode.NOT_FOUND, "That item has no stored output (yet).")
    media = item.output_content_type or "application/octet-stream"
    return StreamingResponse(
        outputs.iter_chunks(key),
        media_type=media,
        headers={"Content-Length": str(size), "Cache-Control": "private, max-age=60"},
    )


@router.get("/jobs/{job_id}/items/{item_id}/transcript")
def item_transcript(job_id: str, item_id: str, res: Res, session: Session) -> Response:
    """An STT item's transcript text (from its stored JSON), for the item table's preview."""
    job = queries.owned_job(res, session.tenant_id, job_id)
    item = queries.owned_item(res, job, item_id)
    missing = queries.PageError(404, ErrorCode.NOT_FOUND, "That item has no transcript (yet).")
    if job.kind != JobKind.STT or not item.output_key:
        raise missing
    try:
        store, key = output_stores(res).locate(item.output_key)
        size = store.size(key)
        if size is None or size > MAX_TRANSCRIPT_BYTES:
            raise missing
        body = json.loads(store.get_bytes(key))
    except (ObjectNotFound, ValueError):
        raise missing from None
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str):
        raise missing
    return PlainTextResponse(text[:MAX_TRANSCRIPT_CHARS], headers={"Cache-Control": "no-store"})


def is_live(request: Request) -> bool:
    """Whether a request is for JSON/bytes (answered with the error envelope), not a page."""
    path = request.url.path
    return path.startswith("/ui/api/") or path.endswith(("/output", "/transcript"))
