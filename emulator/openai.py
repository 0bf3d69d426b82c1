"""OpenAI's audio API (providers.md §4), mounted under `/openai`.

`POST /v1/audio/speech` takes JSON `{model, input (≤ 4,096 characters), voice, instructions?,
response_format (mp3 default, opus, flac, wav, pcm; aac is not emulated: 501), speed
(0.25-4), stream_format (audio, or sse but not for tts-1/tts-1-hd)}`. `pcm` (raw 24 kHz
16-bit mono) and SSE (`speech.audio.delta` events of base64 audio, then
`speech.audio.done` with usage) are streamed, paced by `emulator/pacing.py`: the first
chunk at `ttfb_ms`, the last when a whole answer would come. The other formats are files,
sent whole once `Dials.generated` says they could exist. Transcription
(`POST /v1/audio/transcriptions`, multipart) is `emulator/openai_stt.py`.

Each request goes: the gate (`emulator/openai_wire.py`: Bearer auth, the shared rate limit
and cap, OpenAI's error shapes) → body → `Dials.hold` (faults, latency) → validation and the
answer, which an answer fault (`emulator/faults.py`) may spoil; a raw PCM stream may be
`cut` mid-body, as a chunked answer that breaks off.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from emulator import audio, faults, pacing
from emulator.config import TTS_ANSWER_FAULTS
from emulator.dials import Call, Dials, strip_tokens
from emulator.openai_stt import TranscriptionApi
from emulator.openai_wire import Gate, Refused, held
from emulator.smallest_wire import json_object

PREFIX = "/openai"

TTS_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15")
_NO_SSE_MODELS = frozenset({"tts-1", "tts-1-hd"})
VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova"}
    | {"sage", "shimmer", "verse", "marin", "cedar"}
)
MAX_INPUT_CHARS = 4096  # the spec's maxLength for `input` and `instructions`
PCM_RATE = 24000
# response_format → (encoding, container) as `audio.render_speech` names them, and the media
# type sent (the spec declares only application/octet-stream: per format, UNCONFIRMED).
FORMATS = {
    "mp3": ("mp3", "none", "audio/mpeg"),
    "opus": ("opus", "ogg", "audio/opus"),
    "flac": ("flac", "none", "audio/flac"),
    "wav": ("linear16", "wav", "audio/wav"),
    "pcm": ("linear16", "none", "audio/pcm"),
}
_NOT_EMULATED = frozenset({"aac"})  # documented, but soundfile cannot write it
# Answer faults that apply to a raw PCM stream; lying_wav and long_flac leave it alone.
STREAM_FAULTS = ("html", "random", "huge", "drip", "cut")


def routes(dials: Dials) -> list[BaseRoute]:
    gate = Gate(dials)
    speech, stt = SpeechApi(dials), TranscriptionApi(dials)
    return [
        Route("/v1/audio/speech", partial(gate.exchange, answer=speech.speak), methods=["POST"]),
        Route(
            "/v1/audio/transcriptions",
            partial(gate.exchange, answer=stt.transcribe),
            methods=["POST"],
        ),
    ]


@dataclass(frozen=True)
class SpeechRequest:
    text: str
    model: str
    response_format: str
    speed: float
    sse: bool


def parse_speech(body: dict[str, Any]) -> SpeechRequest | Refused:  # noqa: PLR0911
    """The request, or its refusal naming the first bad parameter."""
    text, model, voice = body.get("input"), body.get("model"), body.get("voice")
    for name, value in (("model", model), ("input", text), ("voice", voice)):
        if value is None:
            return Refused(400, f"Missing required parameter: '{name}'.", name, "missing")
    if model not in TTS_MODELS:
        return Refused(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    if not isinstance(text, str) or not text.strip():
        return Refused(400, "Invalid value for 'input': expected a non-empty string.", "input")
    if len(text) > MAX_INPUT_CHARS:
        message = (
            f"Invalid 'input': string too long. Expected a string with maximum length "
            f"{MAX_INPUT_CHARS}, but got a string with length {len(text)} instead."
        )
        return Refused(400, message, "input", "string_above_max_length")
    custom = isinstance(voice, dict) and isinstance(voice.get("id"), str)
    if not custom and voice not in VOICES:
        message = f"Invalid value for 'voice': {voice!r}; use one of {', '.join(sorted(VOICES))}."
        return Refused(400, message, "voice", "invalid_value")
    instructions = body.get("instructions")
    if instructions is not None and (
        not isinstance(instructions, str) or len(instructions) > MAX_INPUT_CHARS
    ):
        return Refused(400, "Invalid value for 'instructions'.", "instructions")
    fmt = body.get("response_format", "mp3")
    if fmt in _NOT_EMULATED:
        return Refused(501, f"The emulator cannot make {fmt}; ask for mp3, wav or pcm.")
    if fmt not in FORMATS:
        message = f"Invalid value for 'response_format': {fmt!r}."
        return Refused(400, message, "response_format", "invalid_value")
    speed = body.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.25 <= speed <= 4:
        return Refused(400, "Invalid value for 'speed': expected 0.25 to 4.0.", "speed")
    stream_format = body.get("stream_format", "audio")
    if stream_format not in ("audio", "sse"):
        return Refused(400, "Invalid value for 'stream_format'.", "stream_format")
    if stream_format == "sse" and model in _NO_SSE_MODELS:
        message = f"stream_format 'sse' is not supported for model {model}."
        return Refused(400, message, "stream_format", "unsupported_value")
    return SpeechRequest(text, str(model), str(fmt), float(speed), stream_format == "sse")


class SpeechApi:
    """The speech handler; one instance per app, sharing the process's `Dials`."""

    def __init__(self, dials: Dials) -> None:
        self.dials = dials
        self.speech_cache = audio.SpeechCache()

    async def speak(self, request: Request, call: Call) -> Response:
        body = json_object(await request.body())
        text = body.get("input") if body is not None else None
        text = text if isinstance(text, str) else None
        call.text_chars = len(text) if text is not None else None
        model = body.get("model") if body is not None else None
        call.model = model if isinstance(model, str) else None
        streamed = body is not None and (
            body.get("response_format") == "pcm" or body.get("stream_format") == "sse"
        )
        fault = await held(self.dials, request, call, text, paced=streamed)
        if fault is not None:
            return fault
        if body is None:
            return Refused(400, "We could not parse the JSON body of your request.").response()
        parsed = parse_speech(body)
        if isinstance(parsed, Refused):
            return parsed.response()
        seconds = audio.speech_duration(strip_tokens(parsed.text)) / parsed.speed
        content, media_type = await self._render(parsed.response_format, seconds)
        spoiled = self.dials.answer_fault(parsed.text, TTS_ANSWER_FAULTS)
        timing = self.dials.stream_timing(parsed.text)
        pace = partial(pacing.paced, audio_s=seconds, timing=timing, started=call.started_clock)
        if parsed.sse:
            kind = spoiled if spoiled in ("html", "cut") else None
            response = self._sse(content, len(parsed.text), kind, pace)
        elif parsed.response_format == "pcm":
            kind = spoiled if spoiled in STREAM_FAULTS else None
            response = self._pcm(content, kind, pace)
        else:
            await self.dials.generated(call, seconds)
            kind = spoiled
            response = (
                Response(content, media_type=media_type)
                if kind is None
                else self._spoil(kind, content, media_type)
            )
        if kind is not None:
            call.fault = f"answer:{kind}"
        return response

    async def _render(self, fmt: str, seconds: float) -> tuple[bytes, str]:
        encoding, container, media_type = FORMATS[fmt]
        cache_key = (round(seconds, 3), encoding, PCM_RATE, container)
        rendered = self.speech_cache.get(cache_key)
        if rendered is None:
            rendered = await run_in_threadpool(audio.render_speech, *cache_key)
            self.speech_cache.put(cache_key, rendered)
        return rendered[0], media_type

    def _spoil(self, kind: str, content: bytes, media_type: str) -> Response:
        config = self.dials.config
        return faults.tts_answer(
            kind,
            content,
            media_type,
            huge_bytes=config.huge_bytes,
            drip_interval_s=config.drip_interval_s,
        )

    def _pcm(
        self, content: bytes, kind: str | None, pace: Callable[[list[Any]], AsyncIterator[Any]]
    ) -> Response:
        """Raw PCM as a chunked body sent by `pace`, or spoiled as `kind` (STREAM_FAULTS)."""
        if kind == "html":
            return self._spoil("html", content, "")
        chunks: list[bytes | memoryview] = list(pacing.chunked(content, PCM_RATE))
        body: AsyncIterator[bytes | memoryview]
        if kind == "random":
            chunks = [random.Random(len(c)).randbytes(len(c)) for c in chunks]
        if kind == "huge":
            body = _zeros(self.dials.config.huge_bytes)
        elif kind == "drip":
            body = faults.drip(content, self.dials.config.drip_interval_s)
        elif kind == "cut":
            body = faults.cut_stream([bytes(c) for c in chunks], len(content) // 2)
        else:
            body = pace(chunks)
        return StreamingResponse(body, media_type=FORMATS["pcm"][2])

    def _sse(
        self,
        content: bytes,
        chars: int,
        kind: str | None,
        pace: Callable[[list[Any]], AsyncIterator[Any]],
    ) -> Response:
        """The audio as `speech.audio.delta` events sent by `pace`, then `speech.audio.done`."""
        if kind == "html":
            return self._spoil("html", content, "")
        chunks = list(pacing.chunked(content, PCM_RATE))
        done = _event({"type": "speech.audio.done", "usage": _speech_usage(chars, len(content))})
        if kind == "cut":
            frames = [_delta(c) for c in chunks] + [done]
            body = faults.cut_stream(frames, sum(len(f) for f in frames) // 2)
        else:
            body = _paced_events(pace(chunks), done)
        return StreamingResponse(
            body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def _delta(chunk: bytes | memoryview) -> bytes:
    return _event({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()})


async def _paced_events(chunks: AsyncIterator[Any], done: bytes) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield _delta(chunk)
    yield done


def _speech_usage(chars: int, audio_bytes: int) -> dict[str, int]:
    """Token counts of the made-up kind OpenAI reports: ~4 characters a text token."""
    text_tokens, audio_tokens = max(1, chars // 4), max(1, audio_bytes // 2400)
    return {
        "input_tokens": text_tokens,
        "output_tokens": audio_tokens,
        "total_tokens": text_tokens + audio_tokens,
    }


async def _zeros(total: int) -> AsyncIterator[bytes]:
    chunk = bytes(64 * 1024)
    for _ in range(max(total // len(chunk), 1)):
        yield chunk
