"""Smallest AI (Waves) adapter: Lightning TTS over HTTP, SSE or WebSocket, Pulse STT over HTTP.

Shapes follow providers.md §2. TTS posts `{text, voice_id, model, sample_rate, speed,
language?, output_format}`: to `/waves/v1/tts` with `Accept: audio/wav` (`options.transport`
http, what `auto` picks), or to `/waves/v1/tts/live` (stream), whose SSE frames of base64 PCM
are assembled as they arrive (`sse.AudioFrames`), or over the pooled WebSocket session of
`smallest_ws` (websocket). Given the pipeline's `AudioSink`, both streaming transports push
each frame's PCM into it as it arrives instead (written to storage on the fly, checked there
as it comes); a stream that ends without its `done: true`
frame, or breaks off, is a transient failure, never audio. Raw PCM, which Lightning sends by
default and may send when the WAV is not honoured, is wrapped in a WAV header. Pulse gets the
recording's bytes with `model`, `language`, `word_timestamps` and (pulse) `diarize` as query
parameters; its words, utterances and integer speakers become the one `Transcript`. A retired
model answers 410 MODEL_DEPRECATED: a permanent `model_deprecated` quoting the successor.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any

import httpx

from jobs.catalog import PROVIDERS
from jobs.error_codes import ErrorCode
from workers.audio import pcm16_to_wav
from workers.providers import exchange, http, smallest_ws
from workers.providers.answers import (
    audio_seconds,
    bad_output,
    check_content_type,
    check_speech,
    check_transcript,
)
from workers.providers.base import AudioInput, AudioSink, Segment, Synthesis, Transcript
from workers.providers.errors import (
    InvalidInput,
    ProviderError,
    ProviderUnavailable,
    UnsupportedAudio,
)
from workers.providers.exchange import Bounds, Limit
from workers.providers.exchange_end import exchange_ended
from workers.providers.sse import AudioFrames
from workers.providers.transcripts import (
    as_float,
    as_str,
    clip,
    deepgram_word,
    json_object,
    speaker_of,
)
from workers.providers.ws_link import WsLink

SAMPLE_RATES = (8000, 16000, 24000, 44100)
DEFAULT_SAMPLE_RATE = 44100  # Lightning's own default (providers.md §2.2)
_PROVIDER = "Smallest AI"
_KEY_NAME = "SMALLEST_API_KEY"
_ROUTES = {"http": "/waves/v1/tts", "stream": "/waves/v1/tts/live"}


class SmallestProvider:
    """One Smallest account behind an injected `httpx.Client`; one HTTP request per call."""

    name = "smallest"
    _spec = PROVIDERS["smallest"]

    def __init__(
        self,
        client: httpx.Client,
        *,
        base_url: str,
        api_key: str,
        bounds: Bounds | None = None,
        ws_link: WsLink | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._bounds = bounds or Bounds()
        link = ws_link or WsLink(_PROVIDER, _KEY_NAME, api_key, idle_s=smallest_ws.IDLE_S)
        self._ws = smallest_ws.SmallestWebSocket(link, base_url=self._base)
        # Every call goes through the exchange's deadline and size cap, the key redacted.
        self._call = partial(exchange.call, client, "POST", provider=_PROVIDER, secret=api_key)

    def synthesize(
        self,
        text: str,
        *,
        model: str,
        voice: str | None,
        options: Mapping[str, Any],
        sink: AudioSink | None = None,
    ) -> Synthesis:
        if model not in self._spec.tts_models:
            raise http.unknown_model(_PROVIDER, model, self._spec.tts_models)
        http.check_tts_text(text, limit=self._spec.text_limit(model), model=model)
        transport = http.transport_for(self._spec, "tts", options, chars=len(text))
        asked = int(options.get("sample_rate") or DEFAULT_SAMPLE_RATE)
        rate = next((r for r in SAMPLE_RATES if r >= asked), SAMPLE_RATES[-1])
        body: dict[str, Any] = {
            "text": text,
            "voice_id": voice or self._spec.default_voice,
            "model": model,
            "sample_rate": rate,
            "speed": float(options.get("speed") or 1.0),
            # SSE and WS frames carry raw PCM (providers.md §2.3); over HTTP ask for the WAV.
            "output_format": "wav" if transport == "http" else "pcm",
        }
        if options.get("language"):
            body["language"] = language_code(options)
        if sink is not None and transport != "http":
            return self._streamed(body, transport, sink)
        limit = self._bounds.tts_limit(len(text))
        request_id: str | None = None
        status_code = 200
        if transport == "websocket":
            audio, request_id = self._ws.synthesize(body, limit)
        elif transport == "stream":
            response, audio = self._stream(body, limit)
        else:
            response = self._post(
                _ROUTES["http"], limit=limit, json=body, headers={"Accept": "audio/wav"}
            )
            exchange_ended()  # a whole 2xx answer: the slot may go while it is checked
            audio = response.content
        if transport != "websocket":
            request_id = response.headers.get("x-request-id")
            status_code = response.status_code
        if transport == "http":
            check_content_type(
                response.headers.get("content-type", ""), audio, _PROVIDER, request_id
            )
        if not audio:
            raise ProviderUnavailable(
                f"{_PROVIDER} answered {_answer(transport, status_code)} with no audio; "
                "retrying later may help.",
                code=ErrorCode.EMPTY_RESPONSE,
                status_code=status_code,
                request_id=request_id,
            )
        if audio[:4] != b"RIFF":  # anything else we asked for is headerless 16-bit PCM
            audio = pcm16_to_wav(audio, rate)
        check_speech(
            audio,
            text=text,
            max_samples=self._bounds.max_decode_samples,
            provider=_PROVIDER,
            request_id=request_id,
        )
        return Synthesis(
            audio=audio, content_type="audio/wav", request_id=request_id, status_code=status_code
        )

    def _streamed(self, body: dict[str, Any], transport: str, sink: AudioSink) -> Synthesis:
        """SSE or WebSocket audio pushed into `sink` frame by frame as it arrives; the sink
        checks it and the caller commits it, so no whole answer is ever held here."""
        rate = int(body["sample_rate"])
        limit = self._bounds.tts_stream_limit(len(body["text"]), rate)
        sink.start(rate)
        if transport == "websocket":
            _, request_id = self._ws.synthesize(body, limit, sink.write)
            return Synthesis(b"", "audio/L16", request_id=request_id, streamed=True)
        response, _ = self._stream(body, limit, sink.write)
        return Synthesis(
            b"",
            "audio/L16",
            request_id=response.headers.get("x-request-id"),
            status_code=response.status_code,
            streamed=True,
        )

    def close(self) -> None:
        """Close the pooled WebSocket sessions (worker shutdown)."""
        self._ws.link.close()

    def _stream(
        self,
        body: dict[str, Any],
        limit: Limit,
        on_audio: Callable[[bytes], None] | None = None,
    ) -> tuple[httpx.Response, bytes]:
        """The SSE answer and its assembled audio (or each frame's audio handed to
        `on_audio`), or the error an incomplete stream is."""
        frames = AudioFrames(_PROVIDER, key_name=_KEY_NAME, secret=self._key, on_audio=on_audio)
        response = self._post(
            _ROUTES["stream"],
            limit=limit,
            json=body,
            headers={"Accept": "text/event-stream"},
            sink=frames,
        )
        request_id = response.headers.get("x-request-id")
        media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "text/event-stream":
            what = f"{media or 'no content type'} instead of an event stream"
            raise bad_output(_PROVIDER, what, request_id)
        frames.finish()
        if not frames.done:
            what = f"{frames.frames} audio frames but no final done frame (the audio is cut short)"
            raise bad_output(_PROVIDER, what, request_id)
        return response, bytes(frames.audio)

    def transcribe(
        self, audio: AudioInput, *, model: str, options: Mapping[str, Any]
    ) -> Transcript:
        if model not in self._spec.stt_models:
            raise http.unknown_model(_PROVIDER, model, self._spec.stt_models)
        self._transport("stt", options)
        if not audio.data:
            raise UnsupportedAudio(
                "The audio is empty (0 bytes); upload the recording again.",
                code=ErrorCode.EMPTY_AUDIO,
            )
        # Pulse needs a language; the job's option is a BCP 47 tag, Pulse takes its primary code.
        language = language_code(options) if options.get("language") else "en"
        if model == "pulse-pro" and language != "en":
            raise InvalidInput(
                f"Pulse Pro transcribes English only, not {language!r}; "
                "use the pulse model for other languages.",
                code=ErrorCode.UNSUPPORTED_LANGUAGE,
            )
        params = {"model": model, "language": language, "word_timestamps": "true"}
        if model == "pulse":  # Pulse Pro has no speakers
            params["diarize"] = "true"
        known_s = audio_seconds(audio.data)
        response = self._post(
            "/waves/v1/stt/",
            limit=self._bounds.stt_limit(known_s, len(audio.data)),
            params=params,
            content=audio.data,
            headers={"Content-Type": "application/octet-stream"},
        )
        request_id = response.headers.get("x-request-id")
        if response.content.lstrip()[:1] == b"<":
            raise bad_output(_PROVIDER, "markup (an HTML page) instead of a transcript", request_id)
        body = json_object(response.content)
        parsed = parse_pulse(body, model, language) if body is not None else None
        if parsed is None:
            raise ProviderUnavailable(
                f"{_PROVIDER} answered with a transcript in a shape speechbatch does not know "
                f"({http.redact(clip(response.text), self._key)!r}); "
                "retrying later may help, else report it.",
                code=ErrorCode.UNEXPECTED_RESPONSE,
                status_code=response.status_code,
                request_id=request_id,
            )
        parsed = replace(parsed, request_id=parsed.request_id or request_id)
        return check_transcript(parsed, audio_s=known_s, request_id=parsed.request_id)

    def _transport(self, kind: str, options: Mapping[str, Any]) -> str:
        return http.transport_for(self._spec, kind, options)

    def _post(
        self, path: str, *, limit: Limit, headers: dict[str, str], **kw: Any
    ) -> httpx.Response:
        auth = {"Authorization": f"Bearer {self._key}", **headers}
        response = self._call(self._base + path, limit=limit, headers=auth, **kw)
        if not response.is_success:
            raise self._error(response)
        return response

    def _error(self, response: httpx.Response) -> ProviderError:
        """Smallest's `{error, message}` (TTS), `{error, request_id}` (Pulse) and 410
        `{error_code, message, recommended_endpoint}` bodies, quoted in one sentence."""
        body = json_object(response.content) or {}
        said = [str(body[k]) for k in ("error_code", "error", "message") if body.get(k)]
        if body.get("recommended_endpoint"):
            said.append(f"recommended endpoint: {body['recommended_endpoint']}")
        reason = " — ".join(said) if said else (json.dumps(body) if body else response.text)
        return http.error_from_response(
            response,
            vendor_message=http.redact(reason, self._key),
            provider=_PROVIDER,
            request_id=response.headers.get("x-request-id") or as_str(body.get("request_id")),
            key_name=_KEY_NAME,
        )


def _answer(transport: str, status_code: int) -> str:
    return "over its WebSocket" if transport == "websocket" else f"HTTP {status_code}"


def language_code(options: Mapping[str, Any]) -> str:
    """The job's language tag as Smallest names languages: its primary code (`en-US` → en)."""
    return str(options["language"]).replace("_", "-").split("-", 1)[0].lower()


def parse_pulse(body: Mapping[str, Any], model: str, language: str) -> Transcript | None:
    """A Pulse or Pulse Pro answer (`status: success`, `transcription`, `words`,
    `utterances`), or None for any other shape (an async `processing` answer included)."""
    text = body.get("transcription")
    if body.get("status", "success") != "success" or not isinstance(text, str):
        return None
    words = [w for w in (deepgram_word(raw) for raw in body.get("words") or []) if w]
    segments = [
        Segment(start=s, end=e, text=str(u.get("text", "")).strip(), speaker=speaker_of(u))
        for u in body.get("utterances") or []
        if isinstance(u, Mapping)
        and (s := as_float(u.get("start"))) is not None
        and (e := as_float(u.get("end"))) is not None
    ] or http.segments_from_words(words)
    metadata = body.get("metadata")
    duration = as_float(metadata.get("duration")) if isinstance(metadata, Mapping) else None
    if duration is None and words:
        duration = words[-1].end
    return Transcript(
        text=text.strip(),
        language=as_str(body.get("language")) or language,
        duration_s=duration,
        provider="smallest",
        model=model,
        words=words,
        segments=segments,
        request_id=as_str(body.get("request_id")),
    )
