"""What Deepgram's speak and listen routes share: the gate every request passes and the errors.

`DeepgramGate.exchange` authenticates (`Authorization: Token <key>`, or `Bearer <token>` as
Deepgram's short-lived JWTs are sent; 401 INVALID_AUTH), applies the shared dials' per-key
rate limit and cap, then Deepgram's own in-flight limit per key (15 REST TTS requests, 100
pre-recorded STT requests, providers.md §3.2-3.3), logs the call and stamps `dg-request-id`.
`refusal` renders an error in Deepgram's envelope `{err_code, err_msg, request_id}` (providers.md
§3.4, errors.mdx), or `{category, message, details}` for a body that is not the JSON asked
for: the 429 words differ between TTS (`Too Many Requests`) and STT
(`TOO_MANY_REQUESTS`), and a 503 carries `error_code` instead of `err_code`, as documented.
Slots taken for a streamed answer are freed when its body is over (`release_after`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from uuid import uuid4

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from emulator.dials import Call, Dials, fingerprint
from emulator.smallest_wire import release_after

TTS_CONCURRENCY = 15  # REST Aura requests in flight per project (PAYG/Growth, D4)
STT_CONCURRENCY = 100  # pre-recorded requests in flight per project (D3, D4)

# (family, status) or status → (err_code, err_msg) when the route gives no sentence.
_ERRORS: dict[object, tuple[str, str]] = {
    400: ("Bad Request", "Bad Request."),
    401: ("INVALID_AUTH", "Invalid credentials."),
    402: (
        "ASR_PAYMENT_REQUIRED",
        "Project does not have enough credits for an ASR request and does not have an overage "
        "agreement.",
    ),
    403: ("INSUFFICIENT_PERMISSIONS", "Project does not have access to the requested model."),
    413: ("PAYLOAD_TOO_LARGE", "Payload size exceeds limit of 2 MB."),
    415: (
        "UNSUPPORTED_MEDIA_TYPE",
        "`Content-Type` header is not supported. `Content-Type` must be either `text/plain` or "
        "`application/json`.",
    ),
    422: ("UNPROCESSABLE_ENTITY", "Failed to handle request."),
    ("tts", 429): ("Too Many Requests", "Please try again later."),
    ("stt", 429): ("TOO_MANY_REQUESTS", "Too many requests. Please try again later"),
    500: ("INTERNAL_SERVER_ERROR", "An internal server error occurred."),
    503: ("Service Unavailable", "Please try again later"),
    504: ("GATEWAY_TIMEOUT", "The request took longer than the processing limit."),
}

Answer = Callable[[Request, Call, str], Awaitable[Response]]


def refusal(
    status: int,
    family: str,
    call: Call,
    message: str | None = None,
    *,
    code: str | None = None,
    retry_after: float | None = None,
) -> JSONResponse:
    """Deepgram's error body for `status` on a `family` ("tts" or "stt") route."""
    default_code, default_message = _ERRORS.get((family, status)) or _ERRORS.get(
        status, ("Error", "The request failed.")
    )
    body: dict[str, str]
    if code == "INVALID_JSON":  # errors.mdx: JSON parse errors use this envelope
        body = {"category": code, "message": "Invalid JSON submitted.", "details": message or ""}
    else:
        # errors.mdx shows the 503 body with `error_code`; every other one with `err_code`.
        name = "error_code" if status == 503 else "err_code"
        body = {name: code or default_code, "err_msg": message or default_message}
    body["request_id"] = call.request_id
    headers = {}
    if retry_after is not None:
        # Whether Deepgram sends Retry-After is UNCONFIRMED (providers.md §3.4); the
        # emulator does, so clients that honour it can be tested.
        headers["Retry-After"] = str(max(math.ceil(retry_after), 0))
    return JSONResponse(body, status_code=status, headers=headers)


def token_key(request: Request, allowed: frozenset[str]) -> str | None:
    """The request's key when it is accepted (any non-empty key if none are listed)."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() in ("token", "bearer") and key and (not allowed or key in allowed):
        return key
    return None


class DeepgramGate:
    """Auth, the shared and Deepgram's own limits, and the log, for one family of routes."""

    def __init__(self, dials: Dials, family: str, concurrency: int) -> None:
        self.dials, self.family, self.concurrency = dials, family, concurrency
        self._in_flight: Counter[str] = Counter()

    async def exchange(self, request: Request, answer: Answer) -> Response:
        model = request.query_params.get("model")
        call = Call(request.method, request.url.path, model, uuid4().hex)
        response: Response = await self.dials.logged(call, self._admitted(request, call, answer))
        response.headers["dg-request-id"] = call.request_id
        return response

    async def _admitted(self, request: Request, call: Call, answer: Answer) -> Response:
        key = token_key(request, self.dials.config.api_keys)
        if key is None:
            return refusal(401, self.family, call)
        call.key_fingerprint = fingerprint(key)
        over = self.dials.try_rate(key)
        if over is not None:
            call.fault = over.kind
            return refusal(429, self.family, call, retry_after=over.retry_after)
        wait = self.dials.config.retry_after_s
        if self.concurrency and self._in_flight[key] >= self.concurrency:
            call.fault = "cap"
            return refusal(429, self.family, call, retry_after=wait)
        if not self.dials.try_admit(key):
            call.fault = "cap"
            return refusal(429, self.family, call, retry_after=wait)
        self._in_flight[key] += 1
        try:
            response = await answer(request, call, key)
        except BaseException:
            self._release(key)
            raise
        return release_after(response, partial(self._release, key))

    def _release(self, key: str) -> None:
        self.dials.release(key)
        self._in_flight[key] -= 1
        if self._in_flight[key] <= 0:
            del self._in_flight[key]
