"""ElevenLabs' error bodies mapped onto the error tree (providers.md §5.3, §5.5).

ElevenLabs answers `{"detail": {"type", "code", "message", "status", "request_id"}}` (the
current shape, `status` a legacy mirror of `code`), `{"detail": {"status", "message"}}`
(the legacy shape, still seen), a plain-string `detail`, or FastAPI's 422 list of
`{"loc", "msg", "type"}`. Most statuses mean what they mean everywhere and go through
`http.error_from_response`; three do not:

- `quota_exceeded` arrives as a 401: the account is out of credits, not the key wrong, so
  it is QuotaExceeded (stops the job), not AuthenticationFailed.
- a 429 `too_many_concurrent_requests` / `concurrent_limit_exceeded` says our own
  concurrency is over the plan's: RateLimited with a short wait (the throttle adapts down);
- a 429 `system_busy` is ElevenLabs' load, not ours: ProviderUnavailable, retried with
  backoff, and no reason to lower our concurrency.

A voice that does not exist (400 or 404 `voice_not_found`) is a permanent `unknown_voice`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

import httpx

from jobs.clock import utc_now
from jobs.error_codes import ErrorCode
from workers.providers import http
from workers.providers.errors import (
    InvalidInput,
    ProviderError,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
)
from workers.providers.transcripts import as_str, json_object

# How long to wait after a concurrency 429 that names no Retry-After: a call in flight on
# the same key usually ends within a second or two. UNCONFIRMED: ElevenLabs gives no figure.
CONCURRENCY_WAIT_S = 1.0
QUOTA = frozenset({"quota_exceeded", "insufficient_quota"})
CONCURRENCY = frozenset({"too_many_concurrent_requests", "concurrent_limit_exceeded"})
BUSY = frozenset({"system_busy"})
TEXT_TOO_LONG = frozenset({"max_character_limit_exceeded", "text_too_long"})
VOICE_NOT_FOUND = frozenset({"voice_not_found", "voice_does_not_exist"})


def error_of(
    response: httpx.Response,
    *,
    secret: str,
    provider: str = "ElevenLabs",
    key_name: str = "ELEVENLABS_API_KEY",
    now: datetime | None = None,
) -> ProviderError:
    """The error a non-2xx ElevenLabs `response` is, quoting ElevenLabs' words minus the key."""
    body = json_object(response.content) or {}
    detail = body.get("detail")
    names, reason, request_id = _read_detail(detail)
    reason = http.redact(reason or (json.dumps(body) if body else response.text), secret)
    request_id = response.headers.get("request-id") or request_id
    status = response.status_code
    said = f"{provider} answered HTTP {status}: {reason.strip().rstrip('.') or 'no reason given'}."
    if names & QUOTA:
        return QuotaExceeded(
            f"{said} The account is out of credits; add credits or enable usage-based "
            "billing, then retry the job.",
            status_code=status,
            request_id=request_id,
        )
    if status == 429 and names & BUSY:
        return ProviderUnavailable(
            f"{said} ElevenLabs is overloaded (its load, not ours); retrying with backoff.",
            status_code=status,
            request_id=request_id,
        )
    if status == 429 and names & CONCURRENCY:
        wait = http.parse_retry_after(response.headers, now or utc_now())
        wait = CONCURRENCY_WAIT_S if wait is None else wait
        return RateLimited(
            f"{said} More requests in flight than the plan allows; retry after {wait:g} s "
            "(or lower SPEECHBATCH_PROVIDER_LIMITS for elevenlabs).",
            retry_after=wait,
            status_code=status,
            request_id=request_id,
        )
    if status in (400, 404) and (names & VOICE_NOT_FOUND or "voice" in names):
        return InvalidInput(
            f"{said} Check the voice id: use an id from My Voices (not the voice's name).",
            code=ErrorCode.UNKNOWN_VOICE,
            status_code=status,
            request_id=request_id,
        )
    default = ErrorCode.TEXT_TOO_LONG if names & TEXT_TOO_LONG else None
    return http.error_from_response(
        response,
        vendor_message=reason,
        default_code=default,
        provider=provider,
        request_id=request_id,
        now=now,
        key_name=key_name,
    )


def _read_detail(detail: object) -> tuple[frozenset[str], str, str | None]:
    """(the body's `type`/`code`/`status` names, its reason as one sentence, its request id)."""
    if isinstance(detail, str):
        return frozenset(), detail, None
    if isinstance(detail, list):  # FastAPI's validation errors
        said = [
            f"{'.'.join(str(p) for p in d.get('loc') or [])}: {d.get('msg', '')}".strip(": ")
            for d in detail
            if isinstance(d, Mapping)
        ]
        return frozenset(), "; ".join(said), None
    if not isinstance(detail, Mapping):
        return frozenset(), "", None
    names = {value.lower() for k in ("type", "code", "status") if (value := as_str(detail.get(k)))}
    message = as_str(detail.get("message")) or ""
    if "not found" in message.lower() and "voice" in message.lower():
        names.add("voice")
    code = as_str(detail.get("code")) or as_str(detail.get("status"))
    reason = " — ".join(p for p in (code, message) if p)
    return frozenset(names), reason, as_str(detail.get("request_id"))
