"""The FastAPI application: resources, routers, the error envelope and the size limit.

Every error leaves as `{"error": {"code", "message"}}` (`jobs.schemas.ErrorEnvelope`) with a
stable code, including FastAPI's own validation errors and unknown routes.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from jobs.api import (
    routes_health,
    routes_items,
    routes_jobs,
    routes_metrics,
    routes_providers,
    routes_schedules,
    routes_uploads,
    routes_webhooks,
)
from jobs.api.deps import Resources
from jobs.api.docs import install_docs
from jobs.api.limits import BodySizeLimit, PlainRequestTarget
from jobs.api.ui import install as install_dashboard
from jobs.error_codes import ErrorCode
from jobs.errors import ApiError
from jobs.ledger import ItemLedger
from jobs.netpolicy import parse_allowlist
from jobs.schemas import ErrorBody, ErrorEnvelope
from jobs.settings import Settings
from storage.db import make_session_factory, open_database
from storage.publisher import CeleryPublisher
from storage.stores import open_object_store

log = logging.getLogger(__name__)


def error_body(
    status: int, code: ErrorCode, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    envelope = ErrorEnvelope(error=ErrorBody(code=code, message=message))
    return JSONResponse(envelope.model_dump(mode="json"), status_code=status, headers=headers)


def _describe(exc: RequestValidationError) -> tuple[int, ErrorCode, str]:
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return 400, ErrorCode.MALFORMED_JSON, "The request body is not valid JSON."
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    if first.get("type") == ErrorCode.INVALID_CHARACTERS:  # jobs.schemas.Storable
        return 422, ErrorCode.INVALID_CHARACTERS, f"{where}: {first.get('msg')}."
    if first.get("type") == "extra_forbidden":  # pydantic's "Extra inputs are not permitted"
        return (
            422,
            ErrorCode.INVALID_REQUEST,
            f"{where}: not a field of this request; check its spelling or remove it "
            "(the schema is at /docs).",
        )
    return 422, ErrorCode.INVALID_REQUEST, f"{where}: {first.get('msg', 'invalid value')}."


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_body(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_body(*_describe(exc))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not decode the body (e.g. not UTF-8)
            return error_body(
                400, ErrorCode.MALFORMED_JSON, "The request body is not valid UTF-8 JSON."
            )
        codes = {
            404: ErrorCode.NOT_FOUND,
            405: ErrorCode.METHOD_NOT_ALLOWED,
            413: ErrorCode.PAYLOAD_TOO_LARGE,  # jobs.api.limits.BodyTooLarge
        }
        code = codes.get(exc.status_code, ErrorCode.HTTP_ERROR)
        return error_body(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_body(
            500, ErrorCode.INTERNAL_ERROR, "Something went wrong on our side; try again."
        )


def create_app(settings: Settings) -> FastAPI:
    """Build the API from explicit settings (the CLI's `api` command reads them)."""
    if not settings.broker_url:
        raise ValueError("SPEECHBATCH_BROKER_URL is not set; the API publishes work to Redis.")
    db = open_database(settings.database_url)
    app = FastAPI(title="speechbatch", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.resources = Resources(
        settings=settings,
        ledger=ItemLedger(db, CeleryPublisher(settings.broker_url)),
        # Same pool; each single-SELECT read runs without BEGIN/ROLLBACK round trips.
        reads=make_session_factory(db.engine.execution_options(isolation_level="AUTOCOMMIT")),
        store=open_object_store(
            settings.storage_url,
            endpoint_url=settings.s3_endpoint_url,
            public_endpoint_url=settings.s3_public_endpoint_url,
        ),
        source_allow=parse_allowlist(settings.allow_private_networks),
    )
    app.state.metrics = routes_metrics.metrics_registry(app.state.resources)
    install_error_handlers(app)
    app.include_router(routes_jobs.router)
    app.include_router(routes_items.router)
    app.include_router(routes_uploads.router)
    app.include_router(routes_schedules.router)
    app.include_router(routes_webhooks.router)
    app.include_router(routes_health.router)
    app.include_router(routes_metrics.router)
    app.include_router(routes_providers.router)
    install_docs(app)
    install_dashboard(app)  # /ui/: the dashboard (not in the OpenAPI schema)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_request_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    app.add_middleware(PlainRequestTarget)
    return app
