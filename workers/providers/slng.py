"""SLNG gateway adapter: per-model routes (`/v1/tts|stt/{model}`) and bridges (`unmute/...`).

Request and response shapes follow providers.md §1.3-§1.6; which body a model takes and
where its answer keeps the audio come from the table in `slng_models`. SLNG does not
document the codec of TTS answers, so the audio is recognised by its magic bytes, and bytes
that match no container are taken to be raw linear16 PCM (at the rate asked for, else 24 kHz)
and wrapped in a WAV header. STT answers come Deepgram-shaped (nova), Whisper-shaped or
bridge-shaped; all become one `Transcript`. `X-Region-Override` is sent on every call when a
region is configured (SPEECHBATCH_SLNG_REGION, providers.md §1.1). With
`options.transport: websocket` both directions go over pooled sessions (`slng_ws`), and the
audio and transcripts pass the same answer checks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import httpx

from jobs.catalog import PROVIDERS
from jobs.error_codes import ErrorCode
from jobs.media import sniff_audio
from workers.audio import pcm16_to_wav
from workers.providers import exchange, http, slng_ws
from workers.providers.answers import audio_info, bad_output, check_speech, check_transcript
from workers.providers.base import AudioInput, AudioSink, Synthesis, Transcript
from workers.providers.errors import (
    InvalidInput,
    ProviderError,
    ProviderUnavailable,
    UnsupportedAudio,
)
from workers.providers.exchange import Bounds, Limit
from workers.providers.exchange_end import exchange_ended
from workers.providers.slng_models import (
    ANSWER_PARSERS,
    BRIDGE_PREFIX,
    pick_voice,
    stt_route,
    tts_call,
    tts_route,
)
from workers.providers.transcripts import as_str, clip, json_object
from workers.providers.ws_link import WsLink

_KEY_NAME = "SLNG_API_KEY"
# Rime answers some invalid requests (a bad speaker) with a 500 whose body names the upstream's
# 400 (providers.md §1.3): retrying those cannot help.
_UPSTREAM_STATUS = re.compile(r"\b(4\d\d) Bad Request\b")
_RETRIED_4XX = frozenset({408, 409, 429})


class SlngProvider:
    """One SLNG account behind an injected `httpx.Client`; one HTTP request per call."""

    name = "slng"

    def __init__(
        self,
        client: httpx.Client,
        *,
        base_url: str,
        api_key: str,
        bounds: Bounds | None = None,
        region: str | None = None,
        ws_link: WsLink | None = None,
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._spec = PROVIDERS["slng"]
        self._bounds = bounds or Bounds()
        self._headers = {"Authorization": f"Bearer {api_key}"}
        if region:
            self._headers["X-Region-Override"] = region
        link = ws_link or WsLink(
            "SLNG", _KEY_NAME, api_key, idle_s=slng_ws.IDLE_S, keepalive=slng_ws.KEEPALIVE
        )
        region_header = {k: v for k, v in self._headers.items() if k != "Authorization"}
        self._ws = slng_ws.SlngWebSocket(link, base_url=self._base, headers=region_header)

    def synthesize(
        self,
        text: str,
        *,
        model: str,
        voice: str | None,
        options: Mapping[str, Any],
        sink: AudioSink | None = None,
    ) -> Synthesis:
        route = tts_route(model, self._spec.tts_models)
        http.check_tts_text(text, limit=self._spec.text_limit(model), model=model)
        chosen = pick_voice(route, voice, self._spec.default_voice)
        call = tts_call(text, chosen, options, route.family)
        limit = self._bounds.tts_limit(len(text))
        if http.transport_for(self._spec, "tts", options, chars=len(text)) == "websocket":
            # Every WS route takes init's config: the rate asked for, not the family's table.
            call = replace(call, sample_rate=slng_ws.ws_sample_rate(options))
            variant = model.removeprefix(BRIDGE_PREFIX)
            if sink is not None:  # each chunk to storage as it arrives, checked there
                limit = self._bounds.tts_stream_limit(len(text), call.sample_rate)
                sink.start(call.sample_rate)
                _, session_id = self._ws.synthesize(
                    route.path, variant, call, options, limit, sink.write
                )
                return Synthesis(b"", "audio/L16", request_id=session_id, streamed=True)
            pcm, session_id = self._ws.synthesize(route.path, variant, call, options, limit)
            return self._checked(pcm, text, call.sample_rate, session_id, "")
        response = self._post(
            route.path,
            limit=limit,
            json=route.family.body(call),
            headers={"Accept": route.family.accept},
        )
        exchange_ended()  # a whole 2xx answer: the slot may go while it is checked
        request_id = response.headers.get("x-slng-request-id")
        if not response.content:
            raise ProviderUnavailable(
                f"SLNG answered HTTP {response.status_code} with no audio; "
                "retrying later may help.",
                code=ErrorCode.EMPTY_RESPONSE,
                status_code=response.status_code,
                request_id=request_id,
            )
        audio = route.family.audio(response, request_id)
        if audio is None:
            payload = json_object(response.content)
            if payload is None:
                raise bad_output("SLNG", "a body holding no audio", request_id)
            raise InvalidInput(
                f"SLNG answered with an error instead of audio: {self._reason(payload)}. "
                "Check the voice and options for this model.",
                status_code=response.status_code,
                request_id=request_id or as_str(payload.get("slng_request_id")),
            )
        declared = response.headers.get("content-type", "")
        return self._checked(
            audio, text, call.sample_rate, request_id, declared, response.status_code
        )

    def _checked(
        self,
        audio: bytes,
        text: str,
        rate: int,
        request_id: str | None,
        declared: str,
        status_code: int = 200,
    ) -> Synthesis:
        """`audio` as a Synthesis once it passes the answer checks (raw PCM wrapped in a WAV)."""
        if not audio:
            raise ProviderUnavailable(
                "SLNG sent no audio; retrying later may help.",
                code=ErrorCode.EMPTY_RESPONSE,
                request_id=request_id,
            )
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
            audio=audio, content_type=content_type, request_id=request_id, status_code=status_code
        )

    def transcribe(
        self, audio: AudioInput, *, model: str, options: Mapping[str, Any]
    ) -> Transcript:
        route = stt_route(model, self._spec.stt_models)
        if not audio.data:
            raise UnsupportedAudio(
                "The audio is empty (0 bytes); upload the recording again.",
                code=ErrorCode.EMPTY_AUDIO,
            )
        files = {
            "audio": (
                audio.filename or "audio",
                audio.data,
                audio.content_type or "application/octet-stream",
            )
        }
        info = audio_info(audio.data)
        known_s = info.duration_s if info is not None else None
        limit = self._bounds.stt_limit(known_s, len(audio.data))
        if http.transport_for(self._spec, "stt", options) == "websocket":
            max_samples = self._bounds.max_decode_samples
            heard = self._ws.transcribe(route.path, model, audio.data, options, limit, max_samples)
            return check_transcript(heard, audio_s=heard.duration_s, request_id=heard.request_id)
        form = route.family.form(options, audio.data, info)
        response = self._post(route.path, limit=limit, data=form, files=files)
        request_id = response.headers.get("x-slng-request-id")
        if response.content.lstrip()[:1] == b"<":
            raise bad_output("SLNG", "markup (an HTML page) instead of a transcript", request_id)
        try:
            body = response.json()
        except ValueError:
            body = None
        parsed = None
        if isinstance(body, dict):
            parsers = (route.family.parse, *(p for p in ANSWER_PARSERS if p != route.family.parse))
            parsed = next((t for p in parsers if (t := p(body, model, options))), None)
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
        if parsed.duration_s is None and known_s is not None:
            # Whisper's minimal and the bridge's answers carry no timing: the recording's
            # own length keeps SRT/VTT cues spanning the audio.
            parsed = replace(parsed, duration_s=round(known_s, 3))
        return check_transcript(parsed, audio_s=known_s, request_id=parsed.request_id)

    def close(self) -> None:
        """Close the pooled WebSocket sessions (worker shutdown)."""
        self._ws.link.close()

    def _post(
        self, path: str, *, limit: Limit, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        response = exchange.call(
            self._client,
            "POST",
            self._base + path,
            limit=limit,
            provider="SLNG",
            secret=self._key,
            headers={**self._headers, **(headers or {})},
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
        if response.status_code >= 500 and _upstream_refused(body):
            return InvalidInput(
                f"SLNG answered HTTP {response.status_code}: {reason}. The model refused the "
                "request as invalid; fix the voice or options, retrying will not help.",
                status_code=response.status_code,
                request_id=request_id,
            )
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


def _upstream_refused(body: object) -> bool:
    """True when a 5xx body says the upstream refused the request as invalid (a 4xx)."""
    if not isinstance(body, Mapping):
        return False
    status = body.get("status")
    details = body.get("details")
    if not isinstance(status, int) or isinstance(status, bool):
        found = _UPSTREAM_STATUS.search(details) if isinstance(details, str) else None
        status = int(found.group(1)) if found else None
    return status is not None and 400 <= status <= 499 and status not in _RETRIED_4XX
