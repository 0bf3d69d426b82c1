"""Deepgram's REST API (providers.md §3), mounted under `/deepgram`.

Aura TTS: `POST /v1/speak?model=&encoding=&container=&sample_rate=` with JSON `{"text"}` or a
`text/plain` body answers audio, always as a chunked body paced by `emulator/pacing.py` (the
first chunk at `ttfb_ms`, the last when the latency dial says, no faster than
`realtime_factor`), with `dg-request-id`, `dg-model-name`, `dg-model-uuid` and `dg-char-count`.
`model` is a voice (`aura-2-thalia-en`; default `aura-asteria-en`); encoding defaults to mp3,
linear16/mulaw/alaw to a WAV container (`container=none`: bare samples). Text over 2,400
characters is a 413, over the voice family's limit (Aura-2 1,000, Aura-1 2,000) a 422: the
two documented limits (which one is current is UNCONFIRMED). `aac`, which soundfile cannot
write, and `{"url"}` bodies (the emulator fetches no text) are refused with a 400.
`callback` on /v1/speak is refused (400): the emulator delivers TTS callbacks to no one.
Pre-recorded STT is `emulator/deepgram_listen.py` (`POST /v1/listen`).

Each request goes: Token auth (401) → the shared dials' rate limit and cap → Deepgram's own
in-flight limit (429, `deepgram_wire`) → body → `Dials.hold` (faults) → validation and the
answer, which an answer fault may spoil (`emulator/faults.py`; `cut` breaks the chunked body
off mid-way).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from emulator import audio, faults, pacing
from emulator.config import TTS_ANSWER_FAULTS
from emulator.deepgram_listen import ListenApi
from emulator.deepgram_wire import TTS_CONCURRENCY, DeepgramGate, refusal
from emulator.dials import Call, Dials, strip_tokens

PREFIX = "/deepgram"

AURA_2_EN = (
    *("amalthea", "andromeda", "apollo", "arcas", "aries", "asteria", "athena", "atlas"),
    *("aurora", "callista", "cora", "cordelia", "delia", "draco", "electra", "harmonia"),
    *("helena", "hera", "hermes", "hyperion", "iris", "janus", "juno", "jupiter", "luna"),
    *("mars", "minerva", "neptune", "odysseus", "ophelia", "orion", "orpheus", "pandora"),
    *("phoebe", "pluto", "saturn", "selene", "thalia", "theia", "vesta", "zeus"),
)
# Newer than the docs snapshot the English list comes from: UNCONFIRMED.
AURA_2_ES = (
    *("alvaro", "aquila", "carina", "celeste", "diana", "estrella", "javier", "nestor"),
    *("selena", "sirio"),
)
AURA_1_EN = (
    *("angus", "arcas", "asteria", "athena", "helios", "hera", "luna", "orion", "orpheus"),
    *("perseus", "stella", "zeus"),
)
VOICES = frozenset(
    (
        *(f"aura-2-{v}-en" for v in AURA_2_EN),
        *(f"aura-2-{v}-es" for v in AURA_2_ES),
        *(f"aura-{v}-en" for v in AURA_1_EN),
    )
)
DEFAULT_VOICE = "aura-asteria-en"
MAX_CHARS = 2400  # errors.mdx: over it, 413
FAMILY_CHARS = {"aura-2": 1000, "aura": 2000}  # text-to-speech.mdx: over it, 422
MAX_BODY_BYTES = 2 * 1024 * 1024
# encoding → (containers, default container, sample rates (None: fixed), default rate).
ENCODINGS: dict[str, tuple[tuple[str, ...], str, tuple[int, ...] | None, int]] = {
    "linear16": (("wav", "none"), "wav", (8000, 16000, 24000, 32000, 48000), 24000),
    "mulaw": (("wav", "none"), "wav", (8000, 16000), 8000),
    "alaw": (("wav", "none"), "wav", (8000, 16000), 8000),
    "mp3": (("none",), "none", None, 22050),
    "opus": (("ogg",), "ogg", None, 48000),
    "flac": (("none",), "none", (8000, 16000, 22050, 32000, 48000), 48000),
}


def routes(dials: Dials) -> list[BaseRoute]:
    speak, listen = SpeakApi(dials), ListenApi(dials)
    return [
        Route("/v1/speak", speak.speak, methods=["POST"]),
        Route("/v1/listen", listen.listen, methods=["POST"]),
    ]


@dataclass(frozen=True)
class SpeakRequest:
    text: str
    model: str
    encoding: str
    container: str
    sample_rate: int


@dataclass(frozen=True)
class Refused:
    """A request /v1/speak turns down: status, Deepgram's err_code and sentence."""

    status: int
    code: str
    message: str


def parse_speak(query: dict[str, str], text: str) -> SpeakRequest | Refused:  # noqa: PLR0911
    """The request, or its refusal in Deepgram's words (errors.mdx)."""
    model = query.get("model") or DEFAULT_VOICE
    if model not in VOICES:
        return Refused(400, "Bad Request", "Bad Request: No such model/version combination found.")
    encoding = query.get("encoding") or "mp3"
    if encoding == "aac" or encoding not in ENCODINGS:
        return Refused(400, "INVALID_QUERY_PARAMETER", f"Unsupported audio format: {encoding}")
    containers, container, rates, rate = ENCODINGS[encoding]
    asked_container = query.get("container")
    if asked_container is not None and asked_container not in containers:
        message = f"`container={asked_container}` is invalid when `encoding={encoding}`"
        return Refused(400, "INVALID_QUERY_PARAMETER", f"Unsupported audio format: {message}")
    asked_rate = query.get("sample_rate")
    if asked_rate is not None:
        if rates is None:
            message = f"`sample_rate` is not applicable when `encoding={encoding}`"
            return Refused(400, "INVALID_QUERY_PARAMETER", f"Unsupported audio format: {message}")
        if not asked_rate.isdigit() or int(asked_rate) not in rates:
            listed = ", ".join(map(str, rates))
            message = f"`sample_rate` must be {listed} when `encoding={encoding}`"
            return Refused(400, "INVALID_QUERY_PARAMETER", f"Unsupported audio format: {message}")
        rate = int(asked_rate)
    if not strip_tokens(text).strip():
        return Refused(400, "Bad Request", "Input text contains no characters.")
    if len(text) > MAX_CHARS:
        message = f"Input text exceeds maximum character limit of {MAX_CHARS}."
        return Refused(413, "Payload Too Large", message)
    family = "aura-2" if model.startswith("aura-2-") else "aura"
    if len(text) > FAMILY_CHARS[family]:
        message = f"Input text exceeds the {FAMILY_CHARS[family]}-character limit of {family}."
        return Refused(422, "UNPROCESSABLE_ENTITY", message)
    return SpeakRequest(text, model, encoding, asked_container or container, rate)


def read_text(content_type: str, raw: bytes) -> str | Refused:  # noqa: PLR0911
    """The text of a `text/plain` or JSON `{"text"}` body, or its refusal."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in ("application/json", "text/plain"):
        return Refused(415, "UNSUPPORTED_MEDIA_TYPE", "")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Refused(400, "PAYLOAD_ERROR", "Failed to decode payload as UTF-8.")
    if media == "text/plain":
        return decoded
    try:
        body: Any = json.loads(decoded)
    except ValueError as exc:
        return Refused(400, "INVALID_JSON", f"Json deserialize error: {exc}")
    if isinstance(body, dict) and isinstance(body.get("url"), str) and "text" not in body:
        return Refused(400, "REMOTE_CONTENT_ERROR", "The emulator fetches no remote text.")
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        message = (
            "Failed to deserialize JSON payload. Please specify exactly one of `text` or `url` "
            "in the JSON body."
        )
        return Refused(400, "PAYLOAD_ERROR", message)
    return str(body["text"])


class SpeakApi:
    """The /v1/speak handler; one instance per app, sharing the process's `Dials`."""

    def __init__(self, dials: Dials, *, concurrency: int = TTS_CONCURRENCY) -> None:
        self.dials = dials
        self.gate = DeepgramGate(dials, "tts", concurrency)
        self.speech_cache = audio.SpeechCache()

    async def speak(self, request: Request) -> Response:
        return await self.gate.exchange(request, self._speak)

    async def _speak(self, request: Request, call: Call, key: str) -> Response:  # noqa: PLR0911
        if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
            return refusal(413, "tts", call)
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return refusal(413, "tts", call)
        text = read_text(request.headers.get("content-type", ""), raw)
        call.text_chars = len(text) if isinstance(text, str) else None
        fault = await self.dials.hold(
            call.path, text if isinstance(text, str) else None, request.receive, paced=True
        )
        if fault is not None:
            call.fault = fault.kind
            return refusal(fault.status, "tts", call, retry_after=fault.retry_after)
        if isinstance(text, Refused):
            return self._refused(text, call)
        if request.query_params.get("callback"):
            message = "The emulator delivers no callbacks; leave out `callback`."
            return refusal(400, "tts", call, message, code="INVALID_QUERY_PARAMETER")
        parsed = parse_speak(dict(request.query_params), text)
        if isinstance(parsed, Refused):
            return self._refused(parsed, call)
        call.model = parsed.model
        seconds = audio.speech_duration(strip_tokens(parsed.text))
        content, media_type = await self._render(parsed, seconds)
        spoiled = self.dials.answer_fault(parsed.text, TTS_ANSWER_FAULTS)
        response = self._answer(call, parsed, content, media_type, seconds, spoiled)
        if spoiled is not None:
            call.fault = f"answer:{spoiled}"
        response.headers["dg-model-name"] = parsed.model
        response.headers["dg-model-uuid"] = _uuid_of(parsed.model)
        response.headers["dg-char-count"] = str(len(parsed.text))
        return response

    def _refused(self, refused: Refused, call: Call) -> Response:
        return refusal(refused.status, "tts", call, refused.message or None, code=refused.code)

    async def _render(self, parsed: SpeakRequest, seconds: float) -> tuple[bytes, str]:
        key = (round(seconds, 3), parsed.encoding, parsed.sample_rate, parsed.container)
        rendered = self.speech_cache.get(key)
        if rendered is None:
            rendered = await run_in_threadpool(audio.render_speech, *key)
            self.speech_cache.put(key, rendered)
        content, media = rendered
        if media in ("audio/l16", "audio/mulaw", "audio/alaw"):
            media = f"{media};rate={parsed.sample_rate}"
        elif media == "audio/ogg":
            media = "audio/ogg;codecs=opus"
        return content, media

    def _answer(
        self,
        call: Call,
        parsed: SpeakRequest,
        content: bytes,
        media_type: str,
        seconds: float,
        spoiled: str | None,
    ) -> Response:
        """The audio as a paced chunked body, or spoiled as `spoiled`."""
        config = self.dials.config
        # 16-bit samples per chunk of 0.25 s; 8-bit and compressed audio come in fewer chunks.
        rate = parsed.sample_rate if parsed.encoding == "linear16" else parsed.sample_rate // 2
        chunks = pacing.chunked(content, rate)
        if spoiled == "cut":
            body: AsyncIterator[Any] = faults.cut_stream(
                [bytes(c) for c in chunks], len(content) // 2
            )
            return StreamingResponse(body, media_type=media_type)
        if spoiled is not None:
            return faults.tts_answer(
                spoiled,
                content,
                media_type,
                huge_bytes=config.huge_bytes,
                drip_interval_s=config.drip_interval_s,
            )
        timing = self.dials.stream_timing(parsed.text)
        paced = pacing.paced(chunks, seconds, timing, started=call.started_clock)
        return StreamingResponse(_bytes(paced), media_type=media_type)


async def _bytes(chunks: AsyncIterator[memoryview]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield bytes(chunk)


def _uuid_of(model: str) -> str:
    """A stable UUID per voice, as Deepgram's `dg-model-uuid` is per model."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, model))
