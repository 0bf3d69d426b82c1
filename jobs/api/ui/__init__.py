"""The dashboard under /ui/: server-rendered pages over the same tenant keys as the API.

`install(app)` adds its routes (none in the OpenAPI schema), its static assets at
/ui/static/ (served by the API itself: the pages load nothing from anywhere else) and the
handlers that turn its refusals into pages: a login redirect, a 403 for a bad CSRF token,
a 4xx page naming a bad filter or cursor (JSON envelopes for the live endpoints).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from jobs.api.ui import routes_actions, routes_live, routes_pages
from jobs.api.ui.queries import PageError
from jobs.api.ui.render import STATIC_DIR, error_page, live_json
from jobs.api.ui.session import CsrfRefused, LoginRequired, clear_cookie
from jobs.error_codes import ErrorCode


def _envelope(status: int, code: ErrorCode, message: str) -> Response:
    return live_json({"error": {"code": code.value, "message": message}}, status)


def install(app: FastAPI) -> None:
    app.include_router(routes_pages.router)
    app.include_router(routes_actions.router)
    app.include_router(routes_live.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _: LoginRequired) -> Response:
        if routes_live.is_live(request):
            return _envelope(401, ErrorCode.UNAUTHORIZED, "Log in at /ui/login first.")
        response = RedirectResponse("/ui/login", status_code=303)
        clear_cookie(response, request)
        return response

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, exc: CsrfRefused) -> Response:
        return error_page(request, 403, exc.message)

    @app.exception_handler(PageError)
    async def page_error(request: Request, exc: PageError) -> Response:
        if routes_live.is_live(request):
            return _envelope(exc.status, exc.code, exc.message)
        return error_page(request, exc.status, exc.message)
