"""Smallest AI's Waves API (providers.md §2), mounted under `/smallest`.

Lightning TTS: `POST /waves/v1/tts` answers audio (a WAV for `Accept: audio/wav`, else the
default `output_format`, raw PCM); `POST /waves/v1/tts/live` sends the same audio as SSE
frames (`event: audio` / `data: {"audio": base64, "done": false, "status": "206"}`, then
`data: {"status": "200", "done": true}`), paced by `emulator/pacing.py`: the first frame at
`ttfb_ms`, the last when the latency dial says a whole answer would (no faster than
`realtime_factor`). The deprecated `/waves/v1/lightning-v3.1/{get_speech,stream}` still work;
the retired `lightning-v2` and `lightning-large` routes and model names answer 410
MODEL_DEPRECATED naming the replacement. Pulse STT (`emulator/smallest_pulse.py`) is
`POST /waves/v1/stt/?model=&language=`.

Each request goes: Bearer auth (401) → the shared dials' rate limit and cap → Smallest's own
limit (`smallest_tts_concurrency` TTS requests in flight per key; 429 in Smallest's shape) →
body → `Dials.hold` (faults, latency) → validation and the answer, which an answer fault may
spoil (`emulator/faults.py`; an SSE stream may be `cut` mid-body). Slots are held until a
streamed body is over. Every response carries `X-Request-Id`.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import pybase64
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute

from emulator import audio, faults, pacing
from emulator.config import TTS_ANSWER_FAULTS
from emulator.dials import Call, Dials, strip_tokens
from emulator.smallest_pulse import PulseApi
from emulator.smallest_wire import Gate, Refused, json_object, refusal, release_after

PREFIX = "/smallest"

TTS_MODELS = ("lightning_v3.1", "lightning_v3.1_pro")
RETIRED_MODELS = frozenset(
    {"lightning", "lightning-v2", "lightning_v2", "lightning-large", "lightning_large"}
)
SAMPLE_RATES = (8000, 16000, 24000, 44100)
# output_format → (encoding, container) as `audio.render_speech` names them.
FORMATS = {
    "pcm": ("linear16", "none"),
    "wav": ("linear16", "wav"),
    "mp3": ("mp3", "none"),
    "ulaw": ("mulaw", "none"),
    "alaw": ("alaw", "none"),
}
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
# Answer faults that apply to an SSE stream; the others (lying_wav, long_flac) leave it alone.
SSE_FAULTS = ("html", "random", "huge", "drip", "cut")
DONE_FRAME = b'data: {"status": "200", "done": true}\n\n'
Chunk = bytes | memoryview
# `pacing.paced` with the answer's timing bound: chunks in, the same chunks out on schedule.
Pace = Callable[[Sequence[Chunk]], AsyncIterator[Chunk]]


def routes(dials: Dials) -> list[BaseRoute]:
    # The WebSocket reads requests with this module's parse_tts, hence the late import.
    from emulator.smallest_ws import SmallestTtsSession  # noqa: PLC0415

    tts, pulse = SmallestApi(dials), PulseApi(dials)
    live = SmallestTtsSession(dials, tts.speech_cache)
    v31 = "lightning_v3.1"
    return [
        WebSocketRoute("/waves/v1/tts/live", live.live),
        Route("/waves/v1/tts", partial(tts.speak, stream=False), methods=["POST"]),
        Route("/waves/v1/tts/live", partial(tts.speak, stream=True), methods=["POST"]),
        Route(
            "/waves/v1/lightning-v3.1/get_speech",
            partial(tts.speak, stream=False, path_model=v31),
            methods=["POST"],
        ),
        Route(
            "/waves/v1/lightning-v3.1/stream",
            partial(tts.speak, stream=True, path_model=v31),
            methods=["POST"],
        ),
        Route("/waves/v1/lightning-v2/{rest:path}", tts.retired, methods=["GET", "POST"]),
        Route("/waves/v1/lightning-large/{rest:path}", tts.retired, methods=["GET", "POST"]),
        Route("/waves/v1/stt/", partial(pulse.listen, legacy=False), methods=["POST"]),
        Route("/waves/v1/stt", partial(pulse.listen, legacy=False), methods=["POST"]),
        Route("/waves/v1/pulse/get_text", partial(pulse.listen, legacy=True), methods=["POST"]),
    ]


@dataclass(frozen=True)
class TtsRequest:
    text: str
    voice_id: str
    model: str
    sample_rate: int
    speed: float
    output_format: str
    ids: dict[str, str]  # the client's session_id / request_id, echoed as X-External-* headers


def parse_tts(  # noqa: PLR0911 - one refusal per field
    body: dict[str, Any], *, accept: str, path_model: str | None
) -> TtsRequest | Refused:
    """The request, or its refusal: 400 naming the first bad field, 410 for a retired model."""

    def bad(message: str, status: int = 400) -> Refused:
        return Refused(status, message)

    text, voice = body.get("text"), body.get("voice_id")
    if not isinstance(text, str) or not text.strip():
        return bad("The 'text' field is required.")
    if not isinstance(voice, str) or not voice:
        return bad("The 'voice_id' field is required.")
    model = path_model or body.get("model") or TTS_MODELS[0]
    if model in RETIRED_MODELS:
        return bad("retired", 410)
    if model not in TTS_MODELS:
        return bad(f"The 'model' field must be one of {', '.join(TTS_MODELS)}.")
    rate = body.get("sample_rate", 44100)
    if isinstance(rate, bool) or rate not in SAMPLE_RATES:
        return bad(f"The 'sample_rate' field must be one of {SAMPLE_RATES}.")
    speed = body.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.5 <= speed <= 2:
        return bad("The 'speed' field must be a number from 0.5 to 2.")
    fmt = body.get("output_format") or ("wav" if "audio/wav" in accept else "pcm")
    if fmt not in FORMATS:
        return bad(f"The 'output_format' field must be one of {', '.join(FORMATS)}.")
    ids = {name: body[name] for name in ("session_id", "request_id") if name in body}
    if not all(isinstance(v, str) and _ID.match(v) for v in ids.values()):
        return bad("session_id and request_id take at most 128 of A-Z a-z 0-9 _ . -")
    echoed: dict[str, str] = {name: str(value) for name, value in ids.items()}
    return TtsRequest(text, voice, str(model), int(rate), float(speed), str(fmt), echoed)


class SmallestApi:
    """The Lightning TTS handlers; one instance per app, sharing the process's `Dials`."""

    def __init__(self, dials: Dials) -> None:
        self.dials = dials
        self.gate = Gate(dials, "tts")
        self.speech_cache = audio.SpeechCache()
        self._in_flight: Counter[str] = Counter()

    async def retired(self, request: Request) -> Response:
        return await self.gate.exchange(request, None, self._retired)

    async def _retired(self, request: Request, call: Call, key: str) -> Response:
        return refusal(410, "tts", call)

    async def speak(
        self, request: Request, *, stream: bool, path_model: str | None = None
    ) -> Response:
        answer = partial(self._one_at_a_time, stream=stream, path_model=path_model)
        return await self.gate.exchange(request, path_model, answer)

    async def _one_at_a_time(
        self, request: Request, call: Call, key: str, *, stream: bool, path_model: str | None
    ) -> Response:
        """Smallest's account-wide TTS concurrency: over it, 429 (providers.md §2.5)."""
        cap = self.dials.config.smallest_tts_concurrency
        if cap and self._in_flight[key] >= cap:
            call.fault = "cap"
            message = f"Too many concurrent requests: this plan allows {cap} at a time."
            return refusal(429, "tts", call, message, self.dials.config.retry_after_s)
        self._in_flight[key] += 1
        try:
            response = await self._speak(request, call, stream=stream, path_model=path_model)
        except BaseException:
            self._free(key)
            raise
        return release_after(response, partial(self._free, key))

    def _free(self, key: str) -> None:
        self._in_flight[key] -= 1
        if self._in_flight[key] <= 0:
            del self._in_flight[key]

    async def _speak(
        self, request: Request, call: Call, *, stream: bool, path_model: str | None
    ) -> Response:
        body = json_object(await request.body())
        text = body.get("text") if body is not None else None
        text = text if isinstance(text, str) else None
        call.text_chars = len(text) if text is not None else None
        fault = await self.dials.hold(call.path, text, request.receive, paced=stream)
        if fault is not None:
            call.fault = fault.kind
            return refusal(fault.status, "tts", call, None, fault.retry_after)
        if body is None:
            return refusal(400, "tts", call, "The request body must be a JSON object.")
        parsed = parse_tts(body, accept=request.headers.get("accept", ""), path_model=path_model)
        if isinstance(parsed, Refused):
            return refusal(parsed.status, "tts", call, parsed.message)
        call.model = parsed.model
        limit = self.dials.config.max_text_chars
        if len(parsed.text) > limit:
            message = f"The 'text' field has {len(parsed.text)} characters, over {limit}."
            return refusal(400, "tts", call, message)
        seconds = spoken_seconds(parsed)
        content, media_type = await self._render(parsed, seconds)
        if not stream:
            await self.dials.generated(call, seconds)
        spoiled = self.dials.answer_fault(parsed.text, TTS_ANSWER_FAULTS)
        config = self.dials.config
        if stream:
            kind = spoiled if spoiled in SSE_FAULTS else None
            timing = self.dials.stream_timing(text)
            pace = partial(pacing.paced, audio_s=seconds, timing=timing, started=call.started_clock)
            response = self._sse(content, parsed.sample_rate, kind, pace)
        elif spoiled is not None:
            response = faults.tts_answer(
                spoiled,
                content,
                media_type,
                huge_bytes=config.huge_bytes,
                drip_interval_s=config.drip_interval_s,
            )
        else:
            response = Response(content, media_type=media_type)
        if spoiled is not None and (not stream or spoiled in SSE_FAULTS):
            call.fault = f"answer:{spoiled}"
        response.headers["X-Session-Id"] = call.request_id
        for name, value in parsed.ids.items():
            response.headers[f"X-External-{name.replace('_id', '').title()}-Id"] = value
        return response

    async def _render(self, parsed: TtsRequest, seconds: float) -> tuple[bytes, str]:
        encoding, container = FORMATS[parsed.output_format]
        cache_key = (round(seconds, 3), encoding, parsed.sample_rate, container)
        rendered = self.speech_cache.get(cache_key)
        if rendered is None:
            rendered = await run_in_threadpool(audio.render_speech, *cache_key)
            self.speech_cache.put(cache_key, rendered)
        return rendered

    def _sse(self, content: bytes, rate: int, kind: str | None, pace: Pace) -> Response:
        """The audio as SSE frames sent by `pace`, or spoiled as `kind` (one of SSE_FAULTS)."""
        if kind == "html":
            return faults.tts_answer("html", content, "", huge_bytes=0, drip_interval_s=0)
        chunks: list[Chunk] = list(pacing.chunked(content, rate))
        if kind == "random":
            chunks = [random.Random(len(c)).randbytes(len(c)) for c in chunks]
        body: AsyncIterator[bytes]
        if kind == "huge":
            body = _huge_frames(self.dials.config.huge_bytes)
        elif kind in ("drip", "cut"):
            frames = [audio_frame(chunk) for chunk in chunks] + [DONE_FRAME]
            if kind == "drip":
                body = faults.drip(b"".join(frames), self.dials.config.drip_interval_s)
            else:
                body = faults.cut_stream(frames, sum(len(f) for f in frames) // 2)
        else:
            body = _paced_frames(pace(chunks))
        return StreamingResponse(
            body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )


def spoken_seconds(parsed: TtsRequest) -> float:
    """Seconds of audio the request's text makes at its speed."""
    return audio.speech_duration(strip_tokens(parsed.text)) / parsed.speed


def audio_frame(chunk: Chunk) -> bytes:
    """The bytes `json.dumps({"audio": <base64>, "done": False, "status": "206"})` gives, put
    together directly: base64 needs no JSON escaping, and the emulator shares the machine
    with the worker it serves (16 streams of ten frames a line were a third of its CPU)."""
    return b"".join((_FRAME_HEAD, pybase64.b64encode(chunk), _FRAME_TAIL))


_FRAME_HEAD = b'event: audio\ndata: {"audio": "'
_FRAME_TAIL = b'", "done": false, "status": "206"}\n\n'


async def _paced_frames(chunks: AsyncIterator[Chunk]) -> AsyncIterator[bytes]:
    """Each paced chunk as an audio frame when its time comes (a long answer is not encoded
    ahead), then the terminator."""
    async for chunk in chunks:
        yield audio_frame(chunk)
    yield DONE_FRAME


async def _huge_frames(total: int) -> AsyncIterator[bytes]:
    frame = audio_frame(bytes(48 * 1024))
    for _ in range(max(total // len(frame), 1)):
        yield frame
    yield DONE_FRAME
