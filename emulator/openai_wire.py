"""What OpenAI's speech and transcription routes share: the gate and the error shapes.

`Gate.exchange` authenticates (Bearer; 401 with OpenAI's two sentences for a missing and a
wrong key), applies the shared dials' per-key rate limit and cap, logs the call and stamps
`x-request-id` and `openai-processing-ms`. `error` is OpenAI's body, `{"error": {"message",
"type", "param", "code"}}` (providers.md §4.4); `fault_response` words the dials' faults:
a 429 with a Retry-After is `rate_limit_exceeded` (with `retry-after-ms` and
`x-ratelimit-reset-requests`), one without is `insufficient_quota`, since OpenAI sends no
Retry-After on 429s the user must act on. Slots taken for a streamed answer are freed when
its body is over (`release_after`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from uuid import uuid4

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from emulator.dials import Call, Dials, Fault, fingerprint
from emulator.smallest_wire import bearer_key, release_after

_AUTH_MISSING = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_AUTH_WRONG = (
    "Incorrect API key provided. You can find your API key at "
    "https://platform.openai.com/account/api-keys."
)
# status → (message, type) for faults; other statuses are named by their phrase.
_FAULTS = {
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
    ),
    503: ("The engine is currently overloaded, please try again later.", "server_error"),
}

Answer = Callable[[Request, Call], Awaitable[Response]]


@dataclass(frozen=True)
class Refused:
    """A request the route turns down, as OpenAI words it."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None

    def response(self) -> JSONResponse:
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        return error(self.status, self.message, kind, param=self.param, code=self.code)


def error(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """OpenAI's error body."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def fault_response(fault: Fault) -> JSONResponse:
    """The answer to a fault the dials chose, in OpenAI's words."""
    if fault.status == 429 and fault.retry_after is None:
        message = "You exceeded your current quota, please check your plan and billing details."
        return error(429, message, "insufficient_quota", code="insufficient_quota")
    if fault.status == 429:
        wait = fault.retry_after or 0.0
        headers = {
            "Retry-After": str(max(math.ceil(wait), 1)),  # integer seconds, >= 1 (§4.4)
            "retry-after-ms": str(int(wait * 1000)),
            "x-ratelimit-reset-requests": f"{int(wait * 1000)}ms",
        }
        message = "Rate limit reached for requests. Please try again later."
        return error(429, message, "requests", code="rate_limit_exceeded", headers=headers)
    message, kind = _FAULTS.get(fault.status) or (
        _phrase(fault.status),
        "server_error" if fault.status >= 500 else "invalid_request_error",
    )
    return error(fault.status, message, kind)


async def held(
    dials: Dials, request: Request, call: Call, text: str | None, *, paced: bool
) -> Response | None:
    """The fault answer `Dials.hold` picks for this request, or None to answer it."""
    fault = await dials.hold(call.path, text, request.receive, paced=paced)
    if fault is None:
        return None
    call.fault = fault.kind
    return fault_response(fault)


class Gate:
    """Auth, the shared rate limit and cap, the log and the id headers, for every route."""

    def __init__(self, dials: Dials) -> None:
        self.dials = dials

    async def exchange(self, request: Request, *, answer: Answer) -> Response:
        call = Call(request.method, request.url.path, None, f"req_{uuid4().hex}")
        response: Response = await self.dials.logged(call, self._admitted(request, call, answer))
        response.headers["x-request-id"] = call.request_id
        spent = (time.perf_counter() - call.started_clock) * 1000
        response.headers["openai-processing-ms"] = str(int(spent))
        return response

    async def _admitted(self, request: Request, call: Call, answer: Answer) -> Response:
        key = bearer_key(request, self.dials.config.api_keys)
        if key is None:
            said = _AUTH_MISSING if "authorization" not in request.headers else _AUTH_WRONG
            code = None if "authorization" not in request.headers else "invalid_api_key"
            return error(401, said, code=code)
        call.key_fingerprint = fingerprint(key)
        over = self.dials.try_rate(key)
        if over is not None:
            call.fault = over.kind
            return fault_response(over)
        if not self.dials.try_admit(key):
            call.fault = "cap"
            return fault_response(Fault("cap", 429, self.dials.config.retry_after_s))
        try:
            response = await answer(request, call)
        except BaseException:
            self.dials.release(key)
            raise
        return release_after(response, partial(self.dials.release, key))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
