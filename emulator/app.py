"""`create_app`: every emulated vendor under its own prefix, plus the admin API.

Admin endpoints (no auth; the emulator only ever listens on loopback):

    GET    /_emulator/health     200 {"ok": true}
    GET    /_emulator/requests   the request log (oldest first, at most 100k entries)
    DELETE /_emulator/requests   clear the log, the counters and `[[fail:N]]` progress
    GET    /_emulator/stats      {in_flight, max_in_flight, max_in_flight_by_key, total, by_status,
                                  ws: {open, max_open, opened, opened_by_vendor}}
    POST   /_emulator/script     {"fail_next": N, "status": 503, "retry_after": null,
                                  "path_contains": null} queues N forced failures
    GET    /_emulator/script     the queued scripts;  DELETE clears them
    PATCH  /_emulator/config     change the runtime dials; returns the whole config
    GET    /_emulator/config     the whole config (API keys reduced to a count)
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from emulator import deepgram, elevenlabs, openai, slng, slng_batch, smallest
from emulator.config import ConfigError, EmulatorConfig
from emulator.dials import Dials, Script

# One module per vendor, each exposing PREFIX and routes(dials).
VENDORS: tuple[ModuleType, ...] = (slng, smallest, slng_batch, deepgram, openai, elevenlabs)


def create_app(config: EmulatorConfig) -> Starlette:
    """An ASGI app emulating every vendor in VENDORS; `app.state.dials` holds its state."""
    dials = Dials(config)
    admin = AdminApi(dials)
    mounts = [Mount(vendor.PREFIX, routes=vendor.routes(dials)) for vendor in VENDORS]
    admin_routes = [
        Route("/health", admin.health, methods=["GET"]),
        Route("/requests", admin.requests, methods=["GET", "DELETE"]),
        Route("/stats", admin.stats, methods=["GET"]),
        Route("/script", admin.script, methods=["GET", "POST", "DELETE"]),
        Route("/config", admin.config, methods=["GET", "PATCH"]),
    ]
    app = Starlette(routes=[*mounts, Mount("/_emulator", routes=admin_routes)])
    app.state.dials = dials
    return app


class AdminApi:
    """Handlers for `/_emulator`: read the log and stats, script failures, turn the dials."""

    def __init__(self, dials: Dials) -> None:
        self.dials = dials

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def requests(self, request: Request) -> JSONResponse:
        if request.method == "DELETE":
            self.dials.reset()
            return JSONResponse({"ok": True})
        return JSONResponse(self.dials.requests())

    async def stats(self, request: Request) -> JSONResponse:
        return JSONResponse(self.dials.stats())

    async def script(self, request: Request) -> JSONResponse:
        if request.method == "DELETE":
            self.dials.clear_scripts()
        elif request.method == "POST":
            body = await _json_object(request)
            script = _parse_script(body) if body is not None else "body must be a JSON object"
            if isinstance(script, str):
                return JSONResponse({"error": script}, status_code=400)
            self.dials.add_script(script)
        return JSONResponse(self.dials.scripts())

    async def config(self, request: Request) -> JSONResponse:
        if request.method == "PATCH":
            body = await _json_object(request)
            if body is None:
                return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
            try:
                self.dials.config = self.dials.config.with_changes(body)
            except ConfigError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(self.dials.config.public_view())


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _parse_script(body: dict[str, Any]) -> Script | str:
    """A Script, or a sentence saying what is wrong with the body."""
    count = body.get("fail_next")
    status = body.get("status", 503)
    retry_after = body.get("retry_after")
    path_contains = body.get("path_contains")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        return "fail_next must be a non-negative integer"
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
        return "status must be an integer between 400 and 599"
    if retry_after is not None and (
        not isinstance(retry_after, int | float) or isinstance(retry_after, bool) or retry_after < 0
    ):
        return "retry_after must be null or a non-negative number"
    if path_contains is not None and not isinstance(path_contains, str):
        return "path_contains must be null or a string"
    return Script(count, status, retry_after, path_contains)
