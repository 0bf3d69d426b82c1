"""One provider HTTP exchange, bounded in time and size (issue 9).

httpx timeouts are per read, so an answer that drips a byte every 2 s never trips them and
kept an item running (its lease renewed) for hours. Here every call gets a wall-clock
`Deadline` sized to its request (`Bounds.tts_deadline_s`, `Bounds.stt_deadline_s`, never
above SPEECHBATCH_PROVIDER_TIMEOUT_SECONDS) that shuts the socket down when it passes, and
the body is read in chunks into a buffer cut off at the kind's size cap, so a 200 MiB answer
costs at most the cap. A streamed answer (SSE) can be handed to a `sink` chunk by chunk as it
arrives, under the same deadline and cap. Failures become the provider error tree; messages
name the host and the failure, never headers, query strings or the API key.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from jobs.error_codes import ErrorCode
from workers import metrics
from workers.audio_decode import DEFAULT_MAX_DECODE_SAMPLES
from workers.deadline import Deadline
from workers.interrupt import watching
from workers.providers.answers import longest_reading_s
from workers.providers.errors import (
    PermanentProviderError,
    ProviderTimeout,
    ProviderUnavailable,
)
from workers.providers.http import redact

# An error body is only quoted (clipped to a sentence): no need to read more of it.
_MAX_ERROR_BODY = 64 * 1024
# A recording whose length its header does not tell is timed as if it were 32 kbit/s.
_FALLBACK_BYTES_PER_S = 4000
# Base64 is 4/3 of the bytes; JSON framing (SSE `data:` lines, WS messages) adds a little.
_STREAM_WIRE_FACTOR = 1.5
# Headers that describe the wire encoding, not the decoded body we hand on.
_WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


@dataclass(frozen=True)
class Bounds:
    """What one provider call may cost: time (sized to the request) and bytes (per kind)."""

    timeout_s: float = 60.0  # SPEECHBATCH_PROVIDER_TIMEOUT_SECONDS: the ceiling of any call
    max_tts_bytes: int = 32 * 1024 * 1024  # SPEECHBATCH_MAX_TTS_RESPONSE_BYTES
    max_stt_bytes: int = 8 * 1024 * 1024  # SPEECHBATCH_MAX_STT_RESPONSE_BYTES
    max_decode_samples: int = DEFAULT_MAX_DECODE_SAMPLES  # SPEECHBATCH_MAX_DECODE_SAMPLES
    # A short line is spoken in well under a second (HTTP latency 200-500 ms, providers.md
    # §1.10); the per-unit terms leave room for long texts and slow transcription.
    tts_base_s: float = 10.0
    tts_per_char_s: float = 0.05
    stt_base_s: float = 15.0
    stt_per_audio_s: float = 0.5

    def tts_deadline_s(self, chars: int) -> float:
        """Seconds one TTS call of `chars` characters may take, whole answer included."""
        return min(self.timeout_s, self.tts_base_s + self.tts_per_char_s * max(chars, 0))

    def stt_deadline_s(self, audio_s: float) -> float:
        """Seconds one STT call on `audio_s` seconds of audio may take."""
        return min(self.timeout_s, self.stt_base_s + self.stt_per_audio_s * max(audio_s, 0.0))

    def tts_limit(self, chars: int) -> Limit:
        """The caps of one TTS call on `chars` characters."""
        return Limit(
            self.tts_deadline_s(chars), self.max_tts_bytes, "SPEECHBATCH_MAX_TTS_RESPONSE_BYTES"
        )

    def tts_stream_limit(self, chars: int, sample_rate: int) -> Limit:
        """The caps of a TTS call whose audio streams to storage as it arrives: the deadline
        of `tts_limit`, and the wire bytes of the text's longest plausible reading as 16-bit
        PCM at `sample_rate` in base64 JSON frames (the stream's own check holds the audio to
        that reading), so a long text is held to its own length, not the whole-body cap."""
        pcm = longest_reading_s(chars) * sample_rate * 2
        wire = math.ceil(pcm * _STREAM_WIRE_FACTOR) + _MAX_ERROR_BODY
        return Limit(self.tts_deadline_s(chars), wire, "the text's longest plausible reading")

    def stt_limit(self, audio_s: float | None, size: int) -> Limit:
        """The caps of one STT call on a recording of `audio_s` seconds (None: its header
        could not be read, as for m4a or webm; then judged by its `size` at 32 kbit/s)."""
        seconds = audio_s if audio_s is not None else size / _FALLBACK_BYTES_PER_S
        return Limit(
            self.stt_deadline_s(seconds), self.max_stt_bytes, "SPEECHBATCH_MAX_STT_RESPONSE_BYTES"
        )


@dataclass(frozen=True)
class Limit:
    """The caps of one call: its deadline, its body size and the setting that sets the size."""

    deadline_s: float
    max_bytes: int
    setting: str


def call(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    limit: Limit,
    provider: str = "The provider",
    secret: str | None = None,
    sink: Callable[[bytes], None] | None = None,
    **kw: Any,
) -> httpx.Response:
    """`client.request(...)` under `limit`, as a Response whose body is already read.

    `secret` (the API key) is redacted from every message. Raises ProviderTimeout when the
    deadline passes, PermanentProviderError(provider_response_too_large) over the size cap.
    With `sink`, a 2xx body goes to it chunk by chunk instead (the Response's body is then
    empty); whatever the sink raises ends the call and reaches the caller as it is.
    """
    where = _safe_location(url)
    deadline = Deadline(limit.deadline_s)
    try:
        request = client.build_request(method, url, **kw)
        request.extensions = {
            **request.extensions,
            "trace": deadline.trace,  # sockets this call opens, on any client
            "timeout": _clipped_timeouts(client.timeout, limit.deadline_s),
        }
        # ... and, on the workers' interruptible transport, reused keep-alive sockets too.
        with watching(deadline):
            response = client.send(request, stream=True)
            metrics.first_byte()
            try:
                body = _read(response, limit, provider, deadline, sink)
            finally:
                response.close()
    except httpx.UnsupportedProtocol as exc:
        # A malformed base URL is configuration, not a blip: retrying cannot fix it.
        raise PermanentProviderError(
            f"The base URL for {provider} is not a valid http(s) URL ({where}); "
            "fix the configured base URL.",
            code=ErrorCode.INVALID_BASE_URL,
        ) from exc
    except httpx.HTTPError as exc:
        if deadline.expired or isinstance(exc, httpx.TimeoutException):
            raise ProviderTimeout(
                f"{provider} did not answer in time ({_describe(exc, secret)} calling {where}, "
                f"{limit.deadline_s:g} s allowed for this request); retrying later may help.",
            ) from exc
        raise ProviderUnavailable(
            f"Could not reach {provider} at {where} ({_describe(exc, secret)}); "
            "retrying later may help.",
        ) from exc
    finally:
        deadline.cancel()
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _WIRE_HEADERS]
    return httpx.Response(response.status_code, headers=headers, content=body, request=request)


def _read(
    response: httpx.Response,
    limit: Limit,
    provider: str,
    deadline: Deadline,
    sink: Callable[[bytes], None] | None,
) -> bytes:
    """The body in chunks, stopping at the cap (a quoted error body: at 64 KiB); a 2xx body
    goes to `sink` when there is one."""
    cap = limit.max_bytes if response.is_success else min(limit.max_bytes, _MAX_ERROR_BODY)
    declared = response.headers.get("content-length", "")
    if response.is_success and declared.isdigit() and int(declared) > cap:
        raise _too_large(provider, limit)
    body, seen = bytearray(), 0
    for chunk in response.iter_bytes():  # decoded, so a gzip bomb is cut at the cap too
        if deadline.expired:
            raise httpx.ReadTimeout("the call's deadline passed")
        room = cap - seen
        if len(chunk) > room:
            if response.is_success:
                raise _too_large(provider, limit)
            body += chunk[:room]
            break
        seen += len(chunk)
        if sink is not None and response.is_success:
            sink(chunk)
        else:
            body += chunk
    return bytes(body)


def _too_large(provider: str, limit: Limit) -> PermanentProviderError:
    return PermanentProviderError(
        f"{provider} answered with more than {limit.max_bytes} bytes ({limit.setting}); "
        "split the text or audio into smaller items, or raise the setting.",
        code=ErrorCode.PROVIDER_RESPONSE_TOO_LARGE,
    )


def _clipped_timeouts(timeout: httpx.Timeout, deadline_s: float) -> dict[str, float]:
    """The client's per-phase timeouts, none longer than the call's deadline."""
    return {
        phase: deadline_s if value is None else min(value, deadline_s)
        for phase, value in timeout.as_dict().items()
    }


def _describe(exc: Exception, secret: str | None) -> str:
    """The exception's class and text (clipped), minus the key."""
    text = redact(" ".join(str(exc).split())[:200], secret)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _safe_location(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "the configured URL"
    return f"{parsed.scheme}://{parsed.host}{':' + str(parsed.port) if parsed.port else ''}"
