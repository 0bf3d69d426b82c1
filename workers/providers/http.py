"""Helpers every vendor adapter shares: Retry-After, status → error mapping, key redaction.

Adapters extract the vendor's own reason from the body (each vendor words it differently) and
hand it to `error_from_response`, which picks the error class from the status code
(providers.md §7) so every vendor fails the same way. The pre-flight checks (text limits,
unknown models) and `segments_from_words` live here too, so the HTTP adapters and the local
engine word their errors and shape their transcripts identically. The HTTP exchange itself
(deadline, size cap) is `workers.providers.exchange`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from jobs.catalog import ProviderSpec
from jobs.clock import utc_now
from jobs.error_codes import ErrorCode
from workers import metrics
from workers.providers.base import Segment, Word
from workers.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    PermanentProviderError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    UnsupportedAudio,
)

# Header names vendors use for their request id (providers.md §7), most specific first.
REQUEST_ID_HEADERS = ("x-slng-request-id", "dg-request-id", "x-request-id", "request-id")
_MAX_REASON_CHARS = 500
_MIN_SECRET_CHARS = 8
_SEGMENT_GAP_S = 1.0
# Sentence ends in Latin and CJK scripts (the escapes are fullwidth ? and !).
_SENTENCE_END = (".", "?", "!", "…", "。", "\uff1f", "\uff01")


def parse_retry_after(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds to wait, from `retry-after-ms`, `Retry-After: <seconds>` or `Retry-After: <date>`.

    None when no usable header is present; a value in the past or negative becomes 0.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = _finite_float(lowered.get("retry-after-ms"))
    if millis is not None:
        return max(0.0, millis / 1000.0)
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    seconds = _finite_float(raw)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, (_as_utc(when) - _as_utc(now)).total_seconds())


def _as_utc(moment: datetime) -> datetime:
    # RFC 9110 dates are GMT, but parsedate returns a naive datetime for a "-0000" zone.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _finite_float(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def request_id_of(response: httpx.Response) -> str | None:
    """The vendor's request id from the usual headers, for support tickets."""
    for name in REQUEST_ID_HEADERS:
        value = response.headers.get(name)
        if value:
            return str(value)
    return None


def error_from_response(
    response: httpx.Response,
    *,
    vendor_message: str,
    default_code: ErrorCode | None = None,
    provider: str = "The provider",
    request_id: str | None = None,
    now: datetime | None = None,
    key_name: str = "the API key",
) -> ProviderError:
    """The error for a non-2xx `response`, quoting `vendor_message` so users see the reason.

    `default_code` replaces the generic `invalid_input` code for 400/422 (statuses with no
    more specific meaning); the codes of every other status are fixed so callers can match
    them. `request_id` defaults to the usual request-id headers; `now` (for an HTTP-date
    Retry-After) defaults to the response's Date header, else the local clock. `key_name`
    (e.g. "SLNG_API_KEY") tells users which setting to fix on 401/403.
    """
    status = response.status_code
    reason = _clip(vendor_message.strip() or response.reason_phrase or "no reason given")
    said = f"{provider} answered HTTP {status}: {reason}."
    kw: dict[str, Any] = {
        "status_code": status,
        "request_id": request_id if request_id is not None else request_id_of(response),
    }
    if status == 429:
        retry_after = parse_retry_after(response.headers, now or _server_now(response))
        when = f"after {retry_after:g} s" if retry_after is not None else "with backoff"
        return RateLimited(
            f"{said} Too many requests; retry {when}.", retry_after=retry_after, **kw
        )
    error_class, code, advice = _BY_STATUS.get(status) or (
        _CLIENT_ERROR if 400 <= status <= 499 else _SERVER_ERROR if status >= 500 else _UNEXPECTED
    )
    if error_class is InvalidInput and code is None:
        code = default_code
    return error_class(f"{said} {advice.format(key_name=key_name)}", code=code, **kw)


_RETRY_LATER = "retrying later may help."
_FIX_INPUT = "Fix the input or options; retrying the same request will not help."
# status → (error class, code or None for the class default, advice sentence).
_BY_STATUS: dict[int, tuple[type[ProviderError], ErrorCode | None, str]] = {
    400: (InvalidInput, None, _FIX_INPUT),
    # A conflicting request still in progress on the provider's side: every vendor SDK
    # retries 409 (providers.md), as it does 408, 429 and 5xx.
    409: (
        ProviderUnavailable,
        ErrorCode.PROVIDER_CONFLICT,
        "The provider reported a conflict; " + _RETRY_LATER,
    ),
    422: (InvalidInput, None, _FIX_INPUT),
    404: (InvalidInput, ErrorCode.UNKNOWN_MODEL, "Check the model name against the catalog."),
    413: (
        InvalidInput,
        ErrorCode.PAYLOAD_TOO_LARGE,
        "The request is too large; split the text or audio into smaller parts.",
    ),
    401: (
        AuthenticationFailed,
        None,
        "Check that {key_name} is set, valid and allowed to use this model.",
    ),
    403: (
        AuthenticationFailed,
        None,
        "Check that {key_name} is set, valid and allowed to use this model.",
    ),
    402: (QuotaExceeded, None, "Add credit to the provider account, then retry."),
    408: (ProviderTimeout, None, "The provider timed out; " + _RETRY_LATER),
    415: (UnsupportedAudio, None, "Convert the audio to WAV, FLAC or MP3 and resubmit."),
    # Gone: Smallest's retired models and routes (MODEL_DEPRECATED, providers.md §2.1).
    410: (
        InvalidInput,
        ErrorCode.MODEL_DEPRECATED,
        "The model is retired; resubmit with the replacement the provider names.",
    ),
}
_SERVER_ERROR = (ProviderUnavailable, None, "The provider is failing; " + _RETRY_LATER)
_UNEXPECTED = (ProviderUnavailable, None, "This status was not expected; " + _RETRY_LATER)
# Any other 4xx: the provider refused this request, and sending it again will not change that.
_CLIENT_ERROR = (PermanentProviderError, None, "Retrying the same request will not help.")


def _server_now(response: httpx.Response) -> datetime:
    # A Retry-After date is relative to the server's clock; use its Date header when present
    # so a skewed local clock cannot turn "in 10 s" into "in an hour" or "now".
    date = response.headers.get("date")
    if date:
        try:
            return _as_utc(parsedate_to_datetime(date))
        except (TypeError, ValueError, IndexError):
            pass
    return utc_now()


def redact(text: str, secret: str | None) -> str:
    """`text` with `secret` removed in any letter case, and any prefix of 8+ of its characters.

    Gateways echo headers back, proxies truncate them, some upper-case them: a partial key is
    still a clue worth hiding. Secrets shorter than 8 characters are removed whole.
    """
    if not secret:
        return text
    head, rest = secret[:_MIN_SECRET_CHARS], secret[_MIN_SECRET_CHARS:]
    tail = ""
    for char in reversed(rest):  # nested optional groups: the longest prefix present wins
        tail = f"(?:{re.escape(char)}{tail})?"
    return re.sub(re.escape(head) + tail, "[redacted]", text, flags=re.IGNORECASE)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON_CHARS else text[: _MAX_REASON_CHARS - 1] + "…"


def segments_from_words(words: Iterable[Word], *, gap_s: float = _SEGMENT_GAP_S) -> list[Segment]:
    """Group words into segments at sentence punctuation, pauses over `gap_s` or speaker changes."""
    segments: list[Segment] = []
    current: list[Word] = []

    def close() -> None:
        if current:
            speakers = {w.speaker for w in current}
            segments.append(
                Segment(
                    start=current[0].start,
                    end=current[-1].end,
                    text=" ".join(w.text for w in current),
                    speaker=current[0].speaker if len(speakers) == 1 else None,
                )
            )
            current.clear()

    for word in words:
        if current and (
            word.start - current[-1].end > gap_s or word.speaker != current[-1].speaker
        ):
            close()
        current.append(word)
        if word.text.endswith(_SENTENCE_END):
            close()
    close()
    return segments


def check_tts_text(text: str, *, limit: int, model: str) -> None:
    """Reject empty text and text over the model's per-request limit before any call is made."""
    if not text.strip():
        raise InvalidInput(
            "The text is empty; give every TTS item some text to speak.", code=ErrorCode.EMPTY_TEXT
        )
    if len(text) > limit:
        raise InvalidInput(
            f"The text is {len(text)} characters, over the {limit}-character limit of "
            f"{model}; split the line into shorter items and resubmit.",
            code=ErrorCode.TEXT_TOO_LONG,
        )


def transport_for(
    spec: ProviderSpec, kind: str, options: Mapping[str, Any], *, chars: int = 0
) -> str:
    """The transport a call of `kind` on `chars` characters uses for its `options.transport`;
    InvalidInput when the vendor lacks it (checked at submit too; this catches a job stored
    before that check)."""
    asked = options.get("transport")
    refused = spec.transport_refusal(kind, asked)
    if refused is not None:
        raise InvalidInput(refused, code=ErrorCode.INVALID_OPTION)
    chosen = str(spec.pick_transport(kind, asked, chars=chars))
    metrics.transport_chosen(chosen)  # the latency metrics' `transport` (what `auto` picked)
    return chosen


def unknown_model(provider: str, model: str, known: Iterable[str]) -> InvalidInput:
    """The error for a model the catalog does not list for this provider and direction."""
    return InvalidInput(
        f"{provider} has no model {model!r} here; use one of: {', '.join(known)}.",
        code=ErrorCode.UNKNOWN_MODEL,
    )
