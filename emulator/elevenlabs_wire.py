"""What ElevenLabs' TTS and STT routes share: the gate, the plan's caps and the error bodies.

`Gate.exchange` authenticates (`xi-api-key`, or `Authorization: Bearer`, as the SDK allows),
applies the shared dials' per-key rate limit and cap, logs the call and stamps `request-id`.
`Gate.take` is ElevenLabs' own concurrency (providers.md §5.3): in-flight requests per key
and model family, capped by the plan's table, refused with the 429
`too_many_concurrent_requests`; slots are freed when a (streamed) body is over. Errors come
as ElevenLabs writes them (§5.5): `{"detail": {"type", "code", "message", "status" (the
legacy mirror of `code`), "request_id"}}`, or FastAPI's 422 list for a malformed request.
An injected 429 with a Retry-After is `rate_limit_exceeded`; one without (a script with
`retry_after: null`) is `system_busy`, ElevenLabs' overload, which names no wait.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from uuid import uuid4

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from emulator.dials import Call, Dials, Fault, fingerprint
from emulator.smallest_wire import release_after

# Concurrent requests per plan: (Multilingual v2 and v3, Turbo/Flash, STT), providers.md §5.3.
PLANS = {
    "free": (2, 4, 10),
    "starter": (3, 6, 15),
    "creator": (5, 10, 25),
    "pro": (10, 20, 50),
    "scale": (15, 30, 75),
}
DEFAULT_PLAN = "free"
FAMILIES = ("multilingual", "fast", "stt")
FAST_MODELS = frozenset(
    {"eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_flash_v2", "eleven_turbo_v2"}
)
# status → the error `type` ElevenLabs names. UNCONFIRMED beyond the examples in §5.5.
_TYPES = {
    400: "validation_error",
    401: "authentication_error",
    403: "authorization_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "validation_error",
    429: "rate_limit_error",
}
# status → (code, message) when an injected fault gives nothing more specific.
_FAULTS = {
    500: ("internal_server_error", "An internal server error occurred."),
    502: ("bad_gateway", "Bad gateway."),
    503: ("service_unavailable", "The service is temporarily unavailable."),
    504: ("gateway_timeout", "The request timed out."),
}

Answer = Callable[[Request, Call, str], Awaitable[Response]]


def family_of(model: str) -> str:
    """Which column of the plan table a TTS model counts against."""
    return "fast" if model in FAST_MODELS else "multilingual"


def detail(
    status: int,
    code: str,
    message: str,
    call: Call,
    *,
    param: str | None = None,
    retry_after: float | None = None,
) -> JSONResponse:
    """ElevenLabs' error body: `detail` with type, code, message, status and request_id."""
    body: dict[str, object] = {
        "type": _TYPES.get(status, "service_error" if status >= 500 else "invalid_request_error"),
        "code": code,
        "message": message,
        "status": code,
        "request_id": call.request_id,
    }
    if param is not None:
        body["param"] = param
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(math.ceil(retry_after), 0))
    return JSONResponse({"detail": body}, status_code=status, headers=headers)


def invalid(loc: list[str], message: str, kind: str = "value_error") -> JSONResponse:
    """FastAPI's 422 for a request that does not fit the schema."""
    return JSONResponse({"detail": [{"loc": loc, "msg": message, "type": kind}]}, status_code=422)


def fault_answer(fault: Fault, call: Call) -> JSONResponse:
    """The body an injected fault is answered with, in ElevenLabs' shape."""
    status = fault.status
    if status == 429 and fault.retry_after is None:
        message = "The system is experiencing heavy traffic, please try again later."
        return detail(429, "system_busy", message, call)
    if status == 429:
        message = "Too many requests; slow down."
        return detail(429, "rate_limit_exceeded", message, call, retry_after=fault.retry_after)
    if status == 401:
        return detail(401, "invalid_api_key", "Invalid API key", call)
    code, message = _FAULTS.get(status, ("error", f"The request failed with status {status}."))
    return detail(status, code, message, call)


def api_key(request: Request, allowed: frozenset[str]) -> tuple[str | None, str | None]:
    """(the accepted key, None) or (None, the 401's legacy status)."""
    key = request.headers.get("xi-api-key", "").strip()
    if not key:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else ""
    if not key:
        return None, "needs_authorization"
    if allowed and key not in allowed:
        return None, "invalid_api_key"
    return key, None


@dataclass
class Usage:
    """Characters spoken per key, against an optional quota (None: unlimited)."""

    quota: int | None = None

    def __post_init__(self) -> None:
        self.spent: Counter[str] = Counter()

    def charge(self, key: str, chars: int, call: Call) -> JSONResponse | None:
        """Count `chars` against `key`, or the 401 `quota_exceeded` when they do not fit."""
        if self.quota is not None and self.spent[key] + chars > self.quota:
            call.fault = "quota"
            left = max(self.quota - self.spent[key], 0)
            message = (
                f"This request exceeds your quota of {self.quota}. You have {left} credits "
                f"remaining, while {chars} credits are required for this request."
            )
            return detail(401, "quota_exceeded", message, call)
        self.spent[key] += chars
        return None


class Gate:
    """Auth, the shared dials' limits, ElevenLabs' plan caps and the log, for every route."""

    def __init__(self, dials: Dials, plan: str = DEFAULT_PLAN) -> None:
        self.dials = dials
        self.caps = dict(zip(FAMILIES, PLANS[plan], strict=True))
        self._in_flight: Counter[tuple[str, str]] = Counter()

    async def exchange(self, request: Request, answer: Answer) -> Response:
        call = Call(request.method, request.url.path, None, uuid4().hex)
        response: Response = await self.dials.logged(call, self._admitted(request, call, answer))
        response.headers["request-id"] = call.request_id
        return response

    async def _admitted(self, request: Request, call: Call, answer: Answer) -> Response:
        key, refused = api_key(request, self.dials.config.api_keys)
        if key is None:
            message = (
                "Neither authorization header nor xi-api-key received, please provide one."
                if refused == "needs_authorization"
                else "Invalid API key"
            )
            return detail(401, str(refused), message, call)
        call.key_fingerprint = fingerprint(key)
        over = self.dials.try_rate(key)
        if over is not None:
            call.fault = over.kind
            message = "Too many requests; slow down."
            return detail(429, "rate_limit_exceeded", message, call, retry_after=over.retry_after)
        if not self.dials.try_admit(key):
            call.fault = "cap"
            wait = self.dials.config.retry_after_s
            return self.too_many(call, self.dials.config.concurrency, wait)
        try:
            response = await answer(request, call, key)
        except BaseException:
            self.dials.release(key)
            raise
        return release_after(response, partial(self.dials.release, key))

    def too_many(self, call: Call, cap: int, retry_after: float | None = None) -> JSONResponse:
        message = (
            "Too many concurrent requests. Your current subscription is associated with a "
            f"maximum of {cap} concurrent requests; wait for running requests to finish."
        )
        return detail(429, "too_many_concurrent_requests", message, call, retry_after=retry_after)

    def take(self, key: str, family: str, call: Call) -> JSONResponse | None:
        """A slot of the plan's cap for `family`, or the 429 refusing it."""
        cap = self.caps[family]
        if self._in_flight[(key, family)] >= cap:
            call.fault = "cap"
            return self.too_many(call, cap)
        self._in_flight[(key, family)] += 1
        return None

    def free(self, key: str, family: str) -> None:
        self._in_flight[(key, family)] -= 1
        if self._in_flight[(key, family)] <= 0:
            del self._in_flight[(key, family)]

    def in_flight(self, key: str, family: str) -> int:
        return self._in_flight[(key, family)]

    def held(self, response: Response, key: str, family: str) -> Response:
        """`response` with the plan's headers, its slot freed once its body is over."""
        response.headers["current-concurrent-requests"] = str(self.in_flight(key, family))
        response.headers["maximum-concurrent-requests"] = str(self.caps[family])
        return release_after(response, partial(self.free, key, family))
