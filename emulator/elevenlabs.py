"""ElevenLabs' API (providers.md §5), mounted under `/elevenlabs`.

TTS: `POST /v1/text-to-speech/{voice_id}` answers the whole audio in `output_format`
(query; default `mp3_44100_128`, also `pcm_<rate>`, `ulaw_8000`, `alaw_8000`, `opus_48000_*`);
`/stream` sends the same bytes chunked as they are "made", paced by `emulator/pacing.py`
(first chunk at `ttfb_ms`, the last when the latency dial says, no faster than
`realtime_factor`); `/with-timestamps` answers JSON with base64 audio and a per-character
alignment. The body is `{text, model_id, language_code?, voice_settings?, ...}`; the voice
id is taken from the path as it is (a voice id is 20 letters and digits; anything else is
404 `voice_not_found`). Scribe STT (`emulator/elevenlabs_stt.py`) is `POST /v1/speech-to-text`.

Each request goes: auth (401 `needs_authorization` / `invalid_api_key`) → the shared dials'
rate limit and cap → the plan's concurrency per key and model family (429
`too_many_concurrent_requests`, `elevenlabs_wire.PLANS`) → `Dials.hold` (faults, latency) →
validation (422 FastAPI-shaped, 400/404 in `detail`) → the character quota if one is set
(401 `quota_exceeded`) → the answer, which an answer fault may spoil (`emulator/faults.py`).
Answers carry `request-id`, `current-concurrent-requests` and `maximum-concurrent-requests`.
"""

from __future__ import annotations

import base64
import random
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from emulator import audio, faults, pacing
from emulator.config import TTS_ANSWER_FAULTS
from emulator.dials import Call, Dials, strip_tokens
from emulator.elevenlabs_stt import ScribeApi
from emulator.elevenlabs_wire import (
    DEFAULT_PLAN,
    Gate,
    Usage,
    detail,
    family_of,
    fault_answer,
    invalid,
)
from emulator.smallest_wire import json_object

PREFIX = "/elevenlabs"

# Per-request character limits (providers.md §5.2).
TTS_MODELS = {
    "eleven_multilingual_v2": 10000,
    "eleven_flash_v2_5": 40000,
    "eleven_turbo_v2_5": 40000,
    "eleven_flash_v2": 30000,
    "eleven_turbo_v2": 30000,
    "eleven_v3": 3000,
    "eleven_multilingual_v1": 10000,
}
DEFAULT_MODEL = "eleven_multilingual_v2"
LANGUAGE_MODELS = frozenset({"eleven_flash_v2_5", "eleven_turbo_v2_5"})
DEFAULT_FORMAT = "mp3_44100_128"
# output_format → (encoding, container, sample rate) as `audio.render_speech` names them.
FORMATS: dict[str, tuple[str, str, int]] = {
    "mp3_22050_32": ("mp3", "none", 22050),
    **{f"mp3_44100_{kbps}": ("mp3", "none", 44100) for kbps in (32, 64, 96, 128, 192)},
    **{f"pcm_{r}": ("linear16", "none", r) for r in (8000, 16000, 22050, 24000, 44100, 48000)},
    "ulaw_8000": ("mulaw", "none", 8000),
    "alaw_8000": ("alaw", "none", 8000),
    **{f"opus_48000_{kbps}": ("opus", "ogg", 48000) for kbps in (32, 64, 96, 128, 192)},
}
# The spec declares audio/mpeg for every format; what the live API labels PCM is UNCONFIRMED.
MEDIA_TYPES = {"linear16": "audio/pcm", "mulaw": "audio/basic"}
SPEED_RANGE = (0.7, 1.2)
VOICE_ID = re.compile(r"^[A-Za-z0-9]{20}$")
# Answer faults that apply to a chunked stream; the others (lying_wav, long_flac) leave it be.
STREAM_FAULTS = ("html", "random", "huge", "drip", "cut")


def routes(dials: Dials, *, plan: str = DEFAULT_PLAN, quota: int | None = None) -> list[BaseRoute]:
    gate = Gate(dials, plan)
    tts, stt = ElevenLabsApi(dials, gate, Usage(quota)), ScribeApi(dials, gate)
    base = "/v1/text-to-speech/{voice_id}"
    return [
        Route(base, partial(tts.speak, variant="whole"), methods=["POST"]),
        Route(f"{base}/stream", partial(tts.speak, variant="stream"), methods=["POST"]),
        Route(f"{base}/with-timestamps", partial(tts.speak, variant="timed"), methods=["POST"]),
        Route("/v1/speech-to-text", stt.listen, methods=["POST"]),
    ]


@dataclass(frozen=True)
class TtsRequest:
    text: str
    model: str
    output_format: str
    speed: float


def parse_tts(  # noqa: PLR0911 - one refusal per field
    body: dict[str, Any] | None, voice_id: str, query: Mapping[str, str], call: Call
) -> TtsRequest | JSONResponse:
    """The request, or ElevenLabs' refusal of its first bad part."""
    if body is None:
        return invalid(["body"], "JSON decode error", "json_invalid")
    text = body.get("text")
    if not isinstance(text, str):
        return invalid(["body", "text"], "Field required", "missing")
    if not VOICE_ID.match(voice_id):
        message = f"A voice with the voice_id {voice_id[:64]} was not found."
        return detail(404, "voice_not_found", message, call)
    model = body.get("model_id") or DEFAULT_MODEL
    if model not in TTS_MODELS:
        return detail(404, "model_not_found", f"A model with model ID {model} does not exist.",
                      call)  # fmt: skip
    fmt = query.get("output_format", DEFAULT_FORMAT)
    if fmt not in FORMATS:
        return invalid(["query", "output_format"], f"Input should be one of {', '.join(FORMATS)}")
    if body.get("language_code") and model not in LANGUAGE_MODELS:
        message = f"Model '{model}' does not support the language_code parameter."
        return detail(400, "invalid_parameters", message, call, param="language_code")
    settings = body.get("voice_settings") or {}
    speed = settings.get("speed", 1.0) if isinstance(settings, dict) else None
    low, high = SPEED_RANGE
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not low <= speed <= high:
        return invalid(["body", "voice_settings", "speed"], f"speed must be from {low} to {high}")
    if not text.strip():
        return detail(400, "invalid_parameters", "The text must not be empty.", call, param="text")
    limit = TTS_MODELS[model]
    if len(text) > limit:
        message = (
            f"This request's text has {len(text)} characters and exceeds the character limit "
            f"of {limit} characters."
        )
        return detail(400, "max_character_limit_exceeded", message, call, param="text")
    return TtsRequest(text, str(model), fmt, float(speed))


class ElevenLabsApi:
    """The TTS handlers; one instance per app, sharing the process's `Dials` and gate."""

    def __init__(self, dials: Dials, gate: Gate, usage: Usage | None = None) -> None:
        self.dials, self.gate, self.usage = dials, gate, usage or Usage()
        self.speech_cache = audio.SpeechCache()

    async def speak(self, request: Request, *, variant: str) -> Response:
        answer = partial(self._held, variant=variant)
        return await self.gate.exchange(request, answer)

    async def _held(self, request: Request, call: Call, key: str, *, variant: str) -> Response:
        body = json_object(await request.body())
        asked = body.get("model_id") if body is not None else None
        family = family_of(asked if isinstance(asked, str) else DEFAULT_MODEL)
        refused = self.gate.take(key, family, call)
        if refused is not None:
            return refused
        try:
            response = await self._speak(request, call, key, body, variant=variant)
        except BaseException:
            self.gate.free(key, family)
            raise
        return self.gate.held(response, key, family)

    async def _speak(  # noqa: PLR0911 - one return per kind of answer
        self, request: Request, call: Call, key: str, body: dict[str, Any] | None, *, variant: str
    ) -> Response:
        stream = variant == "stream"
        text = body.get("text") if body is not None else None
        text = text if isinstance(text, str) else None
        call.text_chars = len(text) if text is not None else None
        fault = await self.dials.hold(call.path, text, request.receive, paced=stream)
        if fault is not None:
            call.fault = fault.kind
            return fault_answer(fault, call)
        parsed = parse_tts(body, request.path_params["voice_id"], request.query_params, call)
        if isinstance(parsed, Response):
            return parsed
        call.model = parsed.model
        over = self.usage.charge(key, len(parsed.text), call)
        if over is not None:
            return over
        encoding, container, rate = FORMATS[parsed.output_format]
        seconds = audio.speech_duration(strip_tokens(parsed.text)) / parsed.speed
        content, media_type = await self._render(seconds, encoding, rate, container)
        media_type = MEDIA_TYPES.get(encoding, media_type)
        if not stream:
            await self.dials.generated(call, seconds)
        spoiled = self.dials.answer_fault(parsed.text, TTS_ANSWER_FAULTS)
        if stream and spoiled not in STREAM_FAULTS:
            spoiled = None
        if spoiled is not None:
            call.fault = f"answer:{spoiled}"
        if variant == "timed":
            return JSONResponse(timed_answer(parsed.text, content, seconds))
        if stream:
            timing = self.dials.stream_timing(text)
            chunks = list(pacing.chunked(content, rate))
            paced = pacing.paced(chunks, seconds, timing, started=call.started_clock)
            return self._stream(content, chunks, media_type, spoiled, paced)
        if spoiled is None:
            return Response(content, media_type=media_type)
        config = self.dials.config
        return faults.tts_answer(
            spoiled,
            content,
            media_type,
            huge_bytes=config.huge_bytes,
            drip_interval_s=config.drip_interval_s,
        )

    async def _render(
        self, seconds: float, encoding: str, rate: int, container: str
    ) -> tuple[bytes, str]:
        cache_key = (round(seconds, 3), encoding, rate, container)
        rendered = self.speech_cache.get(cache_key)
        if rendered is None:
            rendered = await run_in_threadpool(audio.render_speech, *cache_key)
            self.speech_cache.put(cache_key, rendered)
        return rendered

    def _stream(
        self,
        content: bytes,
        chunks: list[memoryview],
        media_type: str,
        spoiled: str | None,
        paced: AsyncIterator[memoryview],
    ) -> Response:
        """The audio chunked on `paced`'s schedule, or spoiled as `spoiled` (STREAM_FAULTS)."""
        config = self.dials.config
        if spoiled in ("html", "huge", "drip"):
            return faults.tts_answer(
                spoiled,
                content,
                media_type,
                huge_bytes=config.huge_bytes,
                drip_interval_s=config.drip_interval_s,
            )
        body: AsyncIterator[bytes | memoryview]
        if spoiled == "random":
            body = _noise(chunks)
        elif spoiled == "cut":
            body = faults.cut_stream([bytes(c) for c in chunks], len(content) // 2)
        else:
            body = paced
        return StreamingResponse(body, media_type=media_type)


async def _noise(chunks: list[memoryview]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield random.Random(len(chunk)).randbytes(len(chunk))


def timed_answer(text: str, content: bytes, seconds: float) -> dict[str, Any]:
    """`/with-timestamps`: the audio as base64 and each character's start and end."""
    step = seconds / max(len(text), 1)
    alignment = {
        "characters": list(text),
        "character_start_times_seconds": [round(n * step, 3) for n in range(len(text))],
        "character_end_times_seconds": [round((n + 1) * step, 3) for n in range(len(text))],
    }
    return {
        "audio_base64": base64.b64encode(content).decode(),
        "alignment": alignment,
        "normalized_alignment": alignment,
    }
