"""The dashboard's pages: login/logout, jobs, one job, schedules, one schedule, providers.

Server-rendered (jobs/api/ui/templates); `static/app.js` then polls the live endpoints
(`jobs.api.ui.routes_live`) to keep counts and progress current without a reload.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from jobs import schedules, webhook_log
from jobs.api.deps import Res
from jobs.api.ui import queries
from jobs.api.ui.progress import job_progress
from jobs.api.ui.queries import PageError
from jobs.api.ui.render import render
from jobs.api.ui.session import (
    LoginRequired,
    PostSession,
    Session,
    clear_cookie,
    new_cookie_value,
    same_host,
    set_cookie,
    tenant_of_key,
    ui_session,
)
from jobs.clock import utc_now
from jobs.error_codes import ErrorCode
from jobs.errors import ApiError
from jobs.provider_states import read_provider_states
from jobs.repository import encode_cursor
from jobs.status import ItemStatus, JobKind, JobStatus

router = APIRouter(prefix="/ui", include_in_schema=False)
MAX_KEY_CHARS = 200
RUNS_SHOWN = 50


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, res: Res) -> Response:
    """The login form; an already logged-in browser goes straight to the jobs."""
    try:
        await ui_session(request, res)
    except LoginRequired:
        return render(request, "login.html", message=None)
    return RedirectResponse("/ui/", status_code=303)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, res: Res, key: Annotated[str, Form()] = "") -> Response:
    """Check the key like `Authorization: Bearer`; keep it in the session cookie."""
    if not same_host(request):
        return render(
            request,
            "login.html",
            403,
            message="Refused: the login form was not sent from this server's own page.",
        )
    key = key.strip()
    usable = 0 < len(key) <= MAX_KEY_CHARS  # longer is no key of ours: not even looked up
    tenant_id = await tenant_of_key(res, key) if usable else None
    if tenant_id is None:
        message = "That key is not valid. Paste a key that speechbatch keys create printed."
        return render(request, "login.html", 401, message=message)
    response = RedirectResponse("/ui/", status_code=303)
    set_cookie(response, request, new_cookie_value(key))
    return response


@router.post("/logout")
def logout(request: Request, _: PostSession) -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    clear_cookie(response, request)
    return response


@router.get("/", response_class=HTMLResponse)
def jobs_list(
    request: Request,
    res: Res,
    session: Session,
    status: str | None = None,
    kind: str | None = None,
    cursor: str | None = None,
) -> HTMLResponse:
    page = queries.jobs_page(res, session.tenant_id, status, kind, cursor)
    now = utc_now()
    return render(
        request,
        "jobs.html",
        session=session,
        nav="jobs",
        jobs=[(job, job_progress(job, now)) for job in page.jobs],
        next_cursor=page.next_cursor,
        status=status or "",
        kind=kind or "",
        statuses=[s.value for s in JobStatus],
        kinds=[k.value for k in JobKind],
    )


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(
    request: Request,
    job_id: str,
    res: Res,
    session: Session,
    status: str | None = None,
    error_code: str | None = None,
    cursor: str | None = None,
) -> HTMLResponse:
    job = queries.owned_job(res, session.tenant_id, job_id)
    items = queries.items_page(res, job, status, error_code, cursor)
    deliveries = webhook_log.job_deliveries(res.sessions, session.tenant_id, job.id)
    return render(
        request,
        "job.html",
        session=session,
        nav="jobs",
        job=job,
        view=queries.job_out(res, job),
        progress=job_progress(job, utc_now()),
        items=items,
        deliveries=deliveries,
        item_statuses=[s.value for s in ItemStatus],
        error_codes=[c.value for c in ErrorCode],
        cursor=cursor or "",
    )


@router.get("/schedules", response_class=HTMLResponse)
def schedules_list(
    request: Request, res: Res, session: Session, cursor: str | None = None
) -> HTMLResponse:
    after = queries.name_cursor(cursor)
    with res.reads() as db:
        found = schedules.page(db, session.tenant_id, limit=queries.JOBS_PER_PAGE, after_name=after)
    next_cursor = None
    if len(found) == queries.JOBS_PER_PAGE:
        next_cursor = encode_cursor([found[-1].name])
    return render(
        request,
        "schedules.html",
        session=session,
        nav="schedules",
        schedules=found,
        next_cursor=next_cursor,
    )


@router.get("/schedules/{schedule_id}", response_class=HTMLResponse)
def schedule_page(request: Request, schedule_id: str, res: Res, session: Session) -> HTMLResponse:
    if len(schedule_id) > queries.MAX_FILTER_CHARS:
        raise queries.no_such("schedule")
    with res.reads() as db:
        try:
            schedule = schedules.owned(db, session.tenant_id, schedule_id)
        except ApiError as exc:
            raise PageError.of(exc) from None
        detail = schedules.detail(db, schedule, now=utc_now(), runs_limit=RUNS_SHOWN)
    return render(request, "schedule.html", session=session, nav="schedules", schedule=detail)


@router.get("/providers", response_class=HTMLResponse)
def providers_page(request: Request, res: Res, session: Session) -> HTMLResponse:
    try:
        states = read_provider_states(res.settings)
        problem = None
    except Exception as exc:  # the page still renders, saying why there are no rows
        states, problem = [], f"Provider state could not be read: {type(exc).__name__}."
    return render(
        request,
        "providers.html",
        session=session,
        nav="providers",
        states=states,
        problem=problem,
    )
