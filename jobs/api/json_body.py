"""JSON request bodies, bounded before they are parsed: count first, then build.

Parsing a body builds one Python object per JSON value, and pydantic one model per item: a
9 MB body of 3,000,000 `{}` items took 15 s and +2.4 GB before the item cap refused it
(issue 9). `JsonBodyRoute` (the route class of the job router) checks each JSON body in two
cheap steps before pydantic sees it:

1. `value_bound`: an upper bound on the number of values, from the commas and opening
   brackets outside strings, found by C-speed `re`/`bytes.count` (no object per value). A
   body with more than a job of `max_items` items can hold (`values_allowed`) is refused
   413 `too_many_items` without being parsed.
2. Otherwise `json.loads` (now bounded); a top-level `items` list over `max_items` is
   refused the same way, before any model is built. The parsed value is handed on, so the
   body is parsed once.

A body that is not JSON goes on unparsed, for FastAPI to report as `malformed_json`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from jobs.error_codes import ErrorCode
from jobs.errors import ApiError

# A JSON string, escapes included. Possessive, and it also matches a string left open at the
# end of the body, so every quote starts a match that succeeds: one linear pass, whatever
# the input (a failing match per quote would make `"\"\"\"…` quadratic).
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
# Commas and `{` per item: 4 fields give 3 commas inside, 1 between items, 1 brace.
VALUES_PER_ITEM = 5
VALUES_OUTSIDE_ITEMS = 64  # kind, provider, options (with transcript_formats), output, ...


def value_bound(raw: bytes) -> int:
    """At least the number of JSON values in `raw` (exact for valid JSON, up to empty ones)."""
    skeleton = _STRING.sub(b"", raw)
    return 1 + skeleton.count(b",") + skeleton.count(b"[") + skeleton.count(b"{")


def values_allowed(max_items: int) -> int:
    return VALUES_PER_ITEM * max_items + VALUES_OUTSIDE_ITEMS


def too_many_items(max_items: int) -> ApiError:
    return ApiError(
        413, ErrorCode.TOO_MANY_ITEMS, f"A job may hold at most {max_items} items; split it."
    )


def parse_bounded(raw: bytes, max_items: int) -> Any:
    """The parsed body, or ApiError 413 `too_many_items`; ValueError when it is not JSON."""
    if value_bound(raw) > values_allowed(max_items):
        raise ApiError(
            413,
            ErrorCode.TOO_MANY_ITEMS,
            f"The body holds more JSON values than a job of at most {max_items} items can "
            f"({values_allowed(max_items)}); split it into jobs of at most {max_items} items.",
        )
    data = json.loads(raw)
    items = data.get("items") if isinstance(data, dict) else None
    if isinstance(items, list) and len(items) > max_items:
        raise too_many_items(max_items)
    return data


class _ParsedRequest(Request):
    """The request with its body already read and parsed (FastAPI asks for both)."""

    def __init__(self, request: Request, raw: bytes, parsed: Any) -> None:
        super().__init__(request.scope, request.receive)
        self._raw, self._parsed = raw, parsed

    async def body(self) -> bytes:
        return self._raw

    async def json(self) -> Any:
        return self._parsed


class JsonBodyRoute(APIRoute):
    """A route whose JSON body is bounded by the app's `max_items_per_job` before parsing."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            if request.method not in ("POST", "PUT", "PATCH"):
                return await handler(request)
            raw = await request.body()
            if not raw:
                return await handler(request)
            max_items: int = request.app.state.resources.settings.max_items_per_job
            try:
                parsed = parse_bounded(raw, max_items)
            except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep:
                # FastAPI parses it again and answers `malformed_json`, as before.
                return await handler(request)
            return await handler(_ParsedRequest(request, raw, parsed))

        return bounded
