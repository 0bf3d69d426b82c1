"""What the dashboard's pages and live endpoints read, checked and shaped once.

Filters and cursors arrive as plain strings and are checked here, so a bad one is a 400
page naming the value (never a 422 JSON body, never a 500). Reads go through
`jobs.repository` and the use-case modules; item pages are keyset pages by seq, and
counts come from the job row's counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import quote

from jobs import repository as repo
from jobs.api.deps import Resources
from jobs.error_codes import ErrorCode
from jobs.errors import ApiError
from jobs.models import Item, Job
from jobs.schemas import JobOut
from jobs.status import ItemStatus, JobKind, JobStatus
from jobs.usage import by_job
from jobs.views import job_view

JOBS_PER_PAGE = 25
ITEMS_PER_PAGE = 50
MAX_FILTER_CHARS = 64
MAX_CURSOR_CHARS = 400
MAX_ITEM_ID_CHARS = 128  # jobs.validation: an item id names a file
MAX_CELL_CHARS = 300
E = TypeVar("E", bound=StrEnum)


class PageError(Exception):
    """A request the dashboard refuses: a 4xx page (or JSON envelope for live endpoints)."""

    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    @classmethod
    def of(cls, exc: ApiError) -> PageError:
        return cls(exc.status, exc.code, exc.message)


def no_such(what: str) -> PageError:
    return PageError(404, ErrorCode.NOT_FOUND, f"No {what} with that id exists for this key.")


def choice(enum: type[E], name: str, value: str | None) -> E | None:
    """An optional filter value from `enum`; a 400 naming the allowed values otherwise."""
    if not value:
        return None
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        shown = value[:MAX_FILTER_CHARS]
        raise PageError(
            400, ErrorCode.INVALID_REQUEST, f"{name}: {shown!r} is not one of {allowed}."
        ) from None


def error_code_filter(value: str | None) -> str | None:
    if not value:
        return None
    if value not in ErrorCode.__members__.values():
        shown = value[:MAX_FILTER_CHARS]
        raise PageError(
            400,
            ErrorCode.INVALID_REQUEST,
            f"error code: {shown!r} is not an error code speechbatch uses (the README's "
            "error table lists them).",
        )
    return value


def _bad_cursor() -> PageError:
    return PageError(
        400,
        ErrorCode.INVALID_CURSOR,
        "The page cursor is not one this dashboard issued; go back to the first page.",
    )


def job_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    decoded = repo.decode_job_cursor(cursor) if len(cursor) <= MAX_CURSOR_CHARS else None
    if decoded is None:
        raise _bad_cursor()
    return decoded


def item_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    decoded = repo.decode_item_cursor(cursor) if len(cursor) <= MAX_CURSOR_CHARS else None
    if decoded is None:
        raise _bad_cursor()
    return decoded


def name_cursor(cursor: str | None) -> str | None:
    """The last schedule name of a schedules page."""
    if not cursor:
        return None
    decoded = repo.decode_cursor(cursor) if len(cursor) <= MAX_CURSOR_CHARS else None
    if not decoded or len(decoded) != 1 or not isinstance(decoded[0], str):
        raise _bad_cursor()
    name: str = decoded[0]
    return name


@dataclass(frozen=True)
class JobsPage:
    jobs: list[Job]
    next_cursor: str | None


def jobs_page(
    res: Resources, tenant_id: str, status: str | None, kind: str | None, cursor: str | None
) -> JobsPage:
    wanted_status = choice(JobStatus, "status", status)
    wanted_kind = choice(JobKind, "kind", kind)
    before = job_cursor(cursor)
    with res.reads() as session:
        jobs = repo.list_jobs(
            session,
            tenant_id,
            status=wanted_status,
            kind=wanted_kind,
            limit=JOBS_PER_PAGE,
            before=before,
        )
    next_cursor = None
    if len(jobs) == JOBS_PER_PAGE:
        next_cursor = repo.encode_cursor([jobs[-1].created_at.isoformat(), jobs[-1].id])
    return JobsPage(jobs, next_cursor)


def owned_job(res: Resources, tenant_id: str, job_id: str) -> Job:
    if len(job_id) > MAX_FILTER_CHARS:
        raise no_such("job")
    with res.reads() as session:
        job = repo.get_job(session, tenant_id, job_id)
    if job is None:
        raise no_such("job")
    return job


def job_out(res: Resources, job: Job) -> JobOut:
    """The REST API's view of the job (usage per provider, estimated cost)."""
    rerouted = []
    if job.fallback:
        with res.reads() as session:
            rerouted = by_job(repo.rerouted_usage(session, [job.id])).get(job.id, [])
    return job_view(job, rerouted=rerouted, prices=res.settings.price_table())


@dataclass(frozen=True)
class ItemsPage:
    rows: list[dict[str, Any]]
    next_cursor: str | None
    status: str | None
    error_code: str | None


def item_row(job: Job, item: Item) -> dict[str, Any]:
    """One row of the item table (long texts cut to what a table cell shows)."""
    base = f"/ui/jobs/{job.id}/items/{quote(item.external_id, safe='')}"
    has_output = bool(item.output_key) and item.status == ItemStatus.SUCCEEDED
    errored = item.status != ItemStatus.SUCCEEDED
    return {
        "seq": item.seq,
        "id": item.external_id,
        "status": str(item.status),
        "attempts": item.attempts,
        "error_code": item.error_code if errored else None,
        "error_message": (item.error_message or "")[:MAX_CELL_CHARS] if errored else None,
        "text": (item.text or "")[:MAX_CELL_CHARS] if job.kind == JobKind.TTS else None,
        "source": (item.source or "")[:MAX_CELL_CHARS] if job.kind == JobKind.STT else None,
        "duration_s": item.duration_s,
        "output_url": f"{base}/output" if has_output else None,
        "transcript_url": f"{base}/transcript" if has_output and job.kind == JobKind.STT else None,
    }


def items_page(
    res: Resources, job: Job, status: str | None, error_code: str | None, cursor: str | None
) -> ItemsPage:
    wanted_status = choice(ItemStatus, "status", status)
    wanted_code = error_code_filter(error_code)
    after = item_cursor(cursor)
    with res.reads() as session:
        items = repo.list_items_filtered(
            session,
            job.id,
            status=wanted_status,
            error_code=wanted_code,
            limit=ITEMS_PER_PAGE,
            after_seq=after,
        )
    next_cursor = repo.encode_cursor([items[-1].seq]) if len(items) == ITEMS_PER_PAGE else None
    rows = [item_row(job, item) for item in items]
    return ItemsPage(rows, next_cursor, wanted_status, wanted_code)


def owned_item(res: Resources, job: Job, item_id: str) -> Item:
    if len(item_id) > MAX_ITEM_ID_CHARS:
        raise no_such("item")
    with res.reads() as session:
        item = repo.get_item(session, job.id, item_id)
    if item is None:
        raise no_such("item")
    return item
