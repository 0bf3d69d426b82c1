"""What the API says about itself: the error responses routes declare, and offline docs pages.

Each route lists the error statuses it can really return with `errors({status: why})`; every
one is the `ErrorEnvelope`. The `default` entry stands for the rest (400 `invalid_characters`
from `jobs.api.limits`, 405 `method_not_allowed`, 500 `internal_error`) and also keeps FastAPI
from adding its own 422 schema, which is not the shape this API answers with.

`/docs` (Swagger UI) and `/redoc` load their JavaScript and CSS from this API itself
(`/docs/assets`, the files the fastapi-offline package ships), never from a CDN, so they work
on a machine without internet access.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from jobs.schemas import ErrorEnvelope

ASSETS_PATH = "/docs/assets"
_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"

AUTH = "`unauthorized`: no valid API key; send `Authorization: Bearer sb_…`."
NO_JOB = "`not_found`: no such job for this API key (another tenant's job looks the same)."
BAD_CURSOR = "`invalid_cursor`: a cursor this API did not issue."
BAD_QUERY = "`invalid_request`: a query parameter out of range or not one of its values."
TOO_LARGE = "`payload_too_large`: the body is over its byte limit."

Responses = dict[int | str, dict[str, Any]]


def errors(reasons: dict[int, str]) -> Responses:
    """OpenAPI `responses` for a route: each status with why it happens, all the envelope."""
    declared: Responses = {
        status: {"model": ErrorEnvelope, "description": why}
        for status, why in sorted(reasons.items())
    }
    declared["default"] = {
        "model": ErrorEnvelope,
        "description": "Any other error: 400 `invalid_characters` (a NUL byte in the path or "
        "query), 405 `method_not_allowed`, 500 `internal_error`.",
    }
    return declared


def install_docs(app: FastAPI) -> None:
    """Serve `/docs` and `/redoc` from local assets (create the app with both URLs None)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=_ASSETS_DIR), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} API",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} API",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )
