"""Rendering the dashboard's pages: one Jinja2 environment, autoescaped, and strict headers.

Every page is sent with a Content-Security-Policy that lets it load only from this API
(`default-src 'self'`, no inline script), so a page cannot pull anything from outside,
and `Cache-Control: no-store`, since pages show a tenant's data.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from jobs.api.ui.progress import format_duration, format_rate, format_rps, format_when

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _local(value: datetime | None, zone: str) -> str:
    """A UTC timestamp in the schedule's own timezone (`02:00 CET`)."""
    if value is None:
        return "-"
    try:
        return value.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")
    except (ValueError, KeyError):  # the timezone was checked when stored; be safe anyway
        return "-"


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}"


ENV = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(
    when=format_when,
    local=_local,
    money=_money,
    rate=format_rate,
    duration=format_duration,
    rps=format_rps,
)


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("session", None)
    context.setdefault("nav", "")
    html = ENV.get_template(template).render(request=request, **context)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def error_page(request: Request, status: int, message: str, **context: Any) -> HTMLResponse:
    """A 4xx page saying what was wrong, with a way back."""
    titles = {400: "Bad request", 401: "Not logged in", 403: "Refused", 404: "Not found"}
    title = titles.get(status, "Cannot show this page")
    return render(request, "error.html", status, title=title, message=message, **context)


def live_json(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
