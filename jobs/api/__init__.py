"""The REST API (FastAPI): `create_app` builds it from settings; `BoundedHttpToolsProtocol`
is the HTTP protocol the server runs it with (request-head size and time limits)."""

from jobs.api.app import create_app
from jobs.api.http_limits import BoundedHttpToolsProtocol

__all__ = ["BoundedHttpToolsProtocol", "create_app"]
