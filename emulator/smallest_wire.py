"""What Smallest's TTS and Pulse routes share: the gate every request passes and the refusals.

`Gate.exchange` authenticates (Bearer), applies the shared dials' per-key rate limit and cap,
logs the call and stamps `X-Request-Id`; `refusal` renders an error in Smallest's shapes —
`{"error", "message"}` on Lightning TTS, `{"error", "request_id"}` on Pulse, and the retired
models' 410 `{"status", "error_code": "MODEL_DEPRECATED", "message", "recommended_endpoint"}`
(providers.md §2.1-2.4). Slots taken for a streamed answer are freed when its body is over
(`release_after`), so a long SSE stream keeps counting against the caps.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any
from uuid import uuid4

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from emulator.dials import Call, Dials, fingerprint

# The 2026-05 notice named /waves/v1/lightning-v3.1/get_speech, itself deprecated since for
# this one (providers.md §2.1); which one the live API names now is UNCONFIRMED.
RECOMMENDED_ENDPOINT = "/waves/v1/tts"
DEPRECATED = {
    "status": "error",
    "error_code": "MODEL_DEPRECATED",
    "message": "This model is retired. Please migrate to lightning_v3.1 at POST /waves/v1/tts.",
    "recommended_endpoint": RECOMMENDED_ENDPOINT,
}
# status → (TTS `error` name, the sentence when the route gives none).
_ERRORS = {
    400: ("InvalidRequest", "The request is invalid."),
    401: ("Unauthorized", "Bearer token is missing or invalid."),
    413: ("PayloadTooLarge", "The request is too large."),
    429: ("TooManyRequests", "Too many requests."),
    500: ("InternalServerError", "An unexpected error occurred."),
    503: ("ServiceUnavailable", "No worker is available; try again shortly."),
    504: ("GatewayTimeout", "The request timed out."),
}

Answer = Callable[[Request, Call, str], Awaitable[Response]]


@dataclass(frozen=True)
class Refused:
    """A request the route turns down: its status and Smallest's sentence."""

    status: int
    message: str


def refusal(
    status: int,
    family: str,
    call: Call,
    message: str | None = None,
    retry_after: float | None = None,
) -> JSONResponse:
    """Smallest's error body for `status` on a `family` ("tts" or "stt") route."""
    if status == 410:
        body: dict[str, object] = dict(DEPRECATED)
    else:
        phrase = _phrase(status)
        name, default = _ERRORS.get(status, (phrase.replace(" ", ""), phrase))
        said = message or default
        body = (
            {"error": name, "message": said}
            if family == "tts"
            else {"error": said, "request_id": call.request_id}
        )
    headers = {}
    if retry_after is not None:
        # Whole seconds, as most clients parse it with int(); the exact wait in -ms.
        headers["Retry-After"] = str(max(math.ceil(retry_after), 0))
        headers["retry-after-ms"] = str(int(retry_after * 1000))
    return JSONResponse(body, status_code=status, headers=headers)


def release_after(response: Response, release: Callable[[], None]) -> Response:
    """`response`, with `release` run once it is over: now for a whole body; for a streamed
    one after its last chunk, a cut or the client hanging up."""
    done = False

    def once() -> None:
        nonlocal done
        if not done:
            done = True
            release()

    if not isinstance(response, StreamingResponse):
        once()
        return response
    inner = response.body_iterator

    async def body() -> AsyncIterator[str | bytes | memoryview]:
        try:
            async for chunk in inner:
                yield chunk
        finally:
            once()

    response.body_iterator = body()
    response.background = BackgroundTask(once)  # in case the body is never iterated
    return response


def json_object(raw: bytes) -> dict[str, Any] | None:
    """`raw` parsed, when it is a JSON object."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def bearer_key(request: Request, allowed: frozenset[str]) -> str | None:
    """The request's Bearer key when it is accepted (any non-empty key if none are listed)."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() == "bearer" and key and (not allowed or key in allowed):
        return key
    return None


class Gate:
    """Auth, the shared rate limit and cap, and the log, for one family of routes."""

    def __init__(self, dials: Dials, family: str) -> None:
        self.dials, self.family = dials, family

    async def exchange(self, request: Request, model: str | None, answer: Answer) -> Response:
        call = Call(request.method, request.url.path, model, uuid4().hex)
        response: Response = await self.dials.logged(call, self._admitted(request, call, answer))
        response.headers["X-Request-Id"] = call.request_id
        return response

    async def _admitted(self, request: Request, call: Call, answer: Answer) -> Response:
        key = bearer_key(request, self.dials.config.api_keys)
        if key is None:
            return refusal(401, self.family, call)
        call.key_fingerprint = fingerprint(key)
        over = self.dials.try_rate(key)
        if over is not None:
            call.fault = over.kind
            return refusal(429, self.family, call, "Rate limit exceeded.", over.retry_after)
        if not self.dials.try_admit(key):
            call.fault = "cap"
            wait = self.dials.config.retry_after_s
            return refusal(429, self.family, call, "Too many concurrent requests.", wait)
        try:
            response = await answer(request, call, key)
        except BaseException:
            self.dials.release(key)
            raise
        return release_after(response, partial(self.dials.release, key))
