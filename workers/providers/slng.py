"""SLNG gateway adapter: per-model TTS `POST /v1/tts/{model}` and STT `POST /v1/stt/{model}`.

Request and response shapes follow providers.md §1.3 and §1.5. SLNG does not document the
codec of TTS answers, so the audio is recognised by its magic bytes, and bytes that match no
container are taken to be the raw linear16 PCM we asked for and wrapped in a WAV header.
STT answers come Deepgram-shaped (nova) or Whisper-shaped; both become one `Transcript`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import httpx

from jobs.catalog import PROVIDERS
from jobs.error_codes import ErrorCode
from jobs.media import sniff_audio
from workers.audio import pcm16_to_wav
from workers.providers import exchange, http
from workers.providers.answers import (
    audio_seconds,
    bad_output,
    check_content_type,
    check_speech,
    check_transcript,
)
from workers.providers.base import AudioInput, Synthesis, Transcript
from workers.providers.errors import (
    InvalidInput,
    ProviderError,
    ProviderUnavailable,
    UnsupportedAudio,
)
from workers.providers.exchange import Bounds, Limit
from workers.providers.transcripts import (
    as_str,
    clip,
    json_object,
    parse_deepgram,
    parse_whisper,
)

TTS_SAMPLE_RATES = (8000, 16000, 24000, 32000, 48000)
DEFAULT_TTS_SAMPLE_RATE = 24000
# The catalog's default voice is English; Spanish Aura needs a Spanish one.
_DEFAULT_VOICES = {"slng/deepgram/aura:2-es": "aura-2-celeste-es"}
# Third-party Deepgram route: Deepgram's own body and a raw PCM answer (providers.md §1.3).
_DEEPGRAM_HOSTED = "deepgram/aura:2"
_KEY_NAME = "SLNG_API_KEY"
# Deadline input for a recording whose header libsndfile cannot read (m4a, webm): 32 kbit/s.
_FALLBACK_BYTES_PER_S = 4000


class SlngProvider:
    """One SLNG account behind an injected `httpx.Client`; one HTTP request per call."""

    name = "slng"

    def __init__(
        self, client: httpx.Client, *, base_url: str, api_key: str, bounds: Bounds | None = None
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._spec = PROVIDERS["slng"]
        self._bounds = bounds or Bounds()

    def synthesize(
        self, text: str, *, model: str, voice: str | None, options: Mapping[str, Any]
    ) -> Synthesis:
        if model not in self._spec.tts_models:
            raise http.unknown_model("SLNG", model, self._spec.tts_models)
        http.check_tts_text(text, limit=self._spec.text_limit(model), model=model)
        rate = tts_sample_rate(options)
        chosen = voice or _DEFAULT_VOICES.get(model) or self._spec.default_voice
        body: dict[str, Any]
        if model == _DEEPGRAM_HOSTED:
            body = {"text": text, "voice": chosen, "encoding": "linear16", "sample_rate": rate}
        else:
            # Aura calls its voices "model"; encoding and container are sent explicitly
            # because the documented defaults (mp3 in wav) contradict each other.
            body = {
                "text": text,
                "model": chosen,
                "encoding": "linear16",
                "container": "wav",
                "sample_rate": rate,
            }
        limit = Limit(
            self._bounds.tts_deadline_s(len(text)),
            self._bounds.max_tts_bytes,
            "SPEECHBATCH_MAX_TTS_RESPONSE_BYTES",
        )
        response = self._post(
            f"/v1/tts/{model}", limit=limit, json=body, headers={"Accept": "audio/*"}
        )
        request_id = response.headers.get("x-slng-request-id")
        audio = response.content
        if not audio:
            raise ProviderUnavailable(
                f"SLNG answered HTTP {response.status_code} with no audio; "
                "retrying later may help.",
                code=ErrorCode.EMPTY_RESPONSE,
                status_code=response.status_code,
                request_id=request_id,
            )
        payload = json_object(audio)
        if payload is not None:
            raise InvalidInput(
                f"SLNG answered with an error instead of audio: {self._reason(payload)}. "
                "Check the voice and options for this model.",
                status_code=response.status_code,
                request_id=request_id or as_str(payload.get("slng_request_id")),
            )
        declared = response.headers.get("content-type", "")
        check_content_type(declared, audio, "SLNG", request_id)
        content_type = sniff_audio(audio[:16])
        if content_type == "audio/mpeg" and not audio.startswith(b"ID3") and "mpeg" not in declared:
            # A bare MPEG frame sync is only 11 bits: PCM starting with a small negative
            # sample (0xFFFF = -1) matches it, so without ID3 the header must agree.
            content_type = None
        if content_type is None:
            audio, content_type = pcm16_to_wav(audio, rate), "audio/wav"
        check_speech(
            audio,
            text=text,
            max_samples=self._bounds.max_decode_samples,
            provider="SLNG",
            request_id=request_id,
        )
        return Synthesis(
            audio=audio,
            content_type=content_type,
            request_id=request_id,
            status_code=response.status_code,
        )

    def transcribe(
        self, audio: AudioInput, *, model: str, options: Mapping[str, Any]
    ) -> Transcript:
        if model not in self._spec.stt_models:
            raise http.unknown_model("SLNG", model, self._spec.stt_models)
        if not audio.data:
            raise UnsupportedAudio(
                "The audio is empty (0 bytes); upload the recording again.",
                code=ErrorCode.EMPTY_AUDIO,
            )
        form = {"language": str(options["language"])} if options.get("language") else {}
        files = {
            "audio": (
                audio.filename or "audio",
                audio.data,
                audio.content_type or "application/octet-stream",
            )
        }
        known_s = audio_seconds(audio.data)
        limit = Limit(
            self._bounds.stt_deadline_s(
                known_s if known_s is not None else len(audio.data) / _FALLBACK_BYTES_PER_S
            ),
            self._bounds.max_stt_bytes,
            "SPEECHBATCH_MAX_STT_RESPONSE_BYTES",
        )
        response = self._post(f"/v1/stt/{model}", limit=limit, data=form, files=files)
        request_id = response.headers.get("x-slng-request-id")
        if response.content.lstrip()[:1] == b"<":
            raise bad_output("SLNG", "markup (an HTML page) instead of a transcript", request_id)
        try:
            body = response.json()
        except ValueError:
            body = None
        parsed = None
        if isinstance(body, dict):
            parsed = parse_deepgram(body, model, options) or parse_whisper(body, model, options)
        if parsed is None:
            raise ProviderUnavailable(
                "SLNG answered with a transcript in a shape speechbatch does not know "
                f"({self._redact(clip(response.text))!r}); "
                "retrying later may help, else report it.",
                code=ErrorCode.UNEXPECTED_RESPONSE,
                status_code=response.status_code,
                request_id=request_id,
            )
        if parsed.request_id is None and request_id is not None:
            parsed = replace(parsed, request_id=request_id)
        return check_transcript(parsed, audio_s=known_s, request_id=parsed.request_id)

    def _post(
        self, path: str, *, limit: Limit, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        # `path` keeps the model's "/" and ":" as they are: httpx leaves both unescaped.
        merged = {"Authorization": f"Bearer {self._key}", **(headers or {})}
        response = exchange.call(
            self._client,
            "POST",
            self._base + path,
            limit=limit,
            provider="SLNG",
            secret=self._key,
            headers=merged,
            **kw,
        )
        if not response.is_success:
            raise self._error(response)
        return response

    def _error(self, response: httpx.Response) -> ProviderError:
        try:
            body = response.json()
        except ValueError:
            body = None
        reason = self._reason(body) if isinstance(body, dict) else self._redact(response.text)
        request_id = response.headers.get("x-slng-request-id")
        if request_id is None and isinstance(body, dict):
            request_id = as_str(body.get("slng_request_id"))
        return http.error_from_response(
            response,
            vendor_message=reason,
            provider="SLNG",
            request_id=request_id,
            key_name=_KEY_NAME,
        )

    def _reason(self, body: Mapping[str, Any]) -> str:
        """SLNG's error fields as one line: error/title, detail/message, details, fieldErrors."""
        parts: list[str] = []
        for key in ("error", "title", "detail", "message"):
            value = body.get(key)
            if isinstance(value, Mapping):  # some upstreams nest {"error": {"message": ...}}
                value = value.get("message") or json.dumps(value)
            if isinstance(value, str) and value.strip() and value.strip() not in parts:
                parts.append(value.strip())
        details = body.get("details")
        if details:
            parts.append(f"details: {details if isinstance(details, str) else json.dumps(details)}")
        field_errors = body.get("fieldErrors")
        if isinstance(field_errors, Mapping) and field_errors:
            rendered = "; ".join(
                f"{name}: {', '.join(map(str, msgs)) if isinstance(msgs, list) else msgs}"
                for name, msgs in field_errors.items()
            )
            parts.append(f"fields: {rendered}")
        return self._redact(" — ".join(parts) if parts else json.dumps(body))

    def _redact(self, text: str) -> str:
        # Gateways sometimes echo the Authorization header back; never let the key reach a log.
        return http.redact(text, self._key)


def tts_sample_rate(options: Mapping[str, Any]) -> int:
    """options.sample_rate moved up to the next rate Aura offers (24 kHz when absent)."""
    raw = options.get("sample_rate")
    if raw is None:
        return DEFAULT_TTS_SAMPLE_RATE
    try:
        wanted = int(raw)
    except (TypeError, ValueError):
        raise InvalidInput(
            f"sample_rate must be a whole number of Hz, got {raw!r}.", code=ErrorCode.INVALID_OPTION
        ) from None
    return next((r for r in TTS_SAMPLE_RATES if r >= wanted), TTS_SAMPLE_RATES[-1])
