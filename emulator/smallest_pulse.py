"""Smallest's Pulse STT (providers.md §2.4): `POST /waves/v1/stt/?model=pulse|pulse-pro&language=`.

The body is the recording's bytes (`application/octet-stream` or its audio type) or, for
`pulse` only, JSON `{"url": ...}`, which the emulator downloads itself. Options are query
parameters; `word_timestamps=true` fills `words` and `utterances`, `diarize=true` (pulse)
gives them integer speakers. Pulse Pro speaks English only, takes no URL and answers without
utterances or speakers, with its own `language`, `request_id`, `totalBytes` and metadata.
Each key may send `smallest_stt_per_minute` requests a minute per model (25 on the Standard
plan); more get Pulse's 429 with the seconds until the oldest one leaves the window.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from functools import partial
from typing import Any

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from emulator import audio, faults
from emulator.config import STT_ANSWER_FAULTS
from emulator.dials import Call, Dials
from emulator.smallest_wire import Gate, Refused, json_object, refusal

STT_MODELS = ("pulse", "pulse-pro")
_WINDOW_S = 60.0
_URL_TIMEOUT_S = 10.0
_WORDS_PER_UTTERANCE = 6  # as `audio.whisper_transcript` groups its segments


class PulseApi:
    """The Pulse handler; one instance per app, sharing the process's `Dials`."""

    def __init__(self, dials: Dials, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.dials = dials
        self.gate = Gate(dials, "stt")
        self._clock = clock
        self._calls: dict[tuple[str, str], deque[float]] = {}

    async def listen(self, request: Request, *, legacy: bool) -> Response:
        answer = partial(self._listen, legacy=legacy)
        return await self.gate.exchange(request, "pulse" if legacy else None, answer)

    async def _listen(  # noqa: PLR0911 - one return per refusal
        self, request: Request, call: Call, key: str, *, legacy: bool
    ) -> Response:
        query = request.query_params
        model = "pulse" if legacy else query.get("model", "")
        problem = check_query(model, query)
        if problem is not None:
            return refusal(problem.status, "stt", call, problem.message)
        call.model = model
        wait = self._take(key, model)
        if wait is not None:
            call.fault = "rate"
            limit = self.dials.config.smallest_stt_per_minute
            message = f"Rate limit exceeded: {limit} requests per minute for {model}."
            return refusal(429, "stt", call, message, wait)
        data = await self._read_audio(request, model)
        call.audio_bytes = len(data) if isinstance(data, bytes) else None
        fault = await self.dials.hold(call.path, None, request.receive)
        if fault is not None:
            call.fault = fault.kind
            return refusal(fault.status, "stt", call, None, fault.retry_after)
        if isinstance(data, Refused):
            return refusal(data.status, "stt", call, data.message)
        digest, duration = await run_in_threadpool(_inspect, data)
        if duration is None:
            message = "The audio could not be decoded; send WAV, FLAC, MP3 or OGG."
            return refusal(400, "stt", call, message)
        result = pulse_result(
            model, digest, duration, len(data), query=query, request_id=call.request_id
        )
        spoiled = self.dials.answer_fault(None, STT_ANSWER_FAULTS)
        if spoiled is None:
            return JSONResponse(result)
        call.fault = f"answer:{spoiled}"
        config = self.dials.config
        return faults.stt_answer(
            spoiled, result, huge_bytes=config.huge_bytes, drip_interval_s=config.drip_interval_s
        )

    def _take(self, key: str, model: str) -> float | None:
        """Count a request against the per-minute limit; None, or seconds until one is free."""
        limit = self.dials.config.smallest_stt_per_minute
        if not limit:
            return None
        now = self._clock()
        window = self._calls.setdefault((key, model), deque())
        while window and now - window[0] >= _WINDOW_S:
            window.popleft()
        if len(window) >= limit:
            return max(_WINDOW_S - (now - window[0]), 0.001)
        window.append(now)
        return None

    async def _read_audio(self, request: Request, model: str) -> bytes | Refused:
        limit = self.dials.config.max_audio_bytes
        too_big = Refused(413, f"The file is over the {limit / 1e6:g} MB limit.")
        if int(request.headers.get("content-length") or 0) > limit:
            return too_big
        if request.headers.get("content-type", "").startswith("application/json"):
            data = await self._download(await request.body(), model, limit)
        else:
            data = await read_capped(request.stream(), limit)
        if isinstance(data, bytes) and len(data) > limit:
            return too_big
        if data == b"":
            return Refused(400, "The request body is empty; send the audio bytes or a URL.")
        return data

    async def _download(self, raw: bytes, model: str, limit: int) -> bytes | Refused:
        body = json_object(raw)
        url = body.get("url") if body is not None else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return Refused(400, "The JSON body needs a 'url' field with an http(s) URL.")
        if model != "pulse":
            return Refused(400, f"{model} takes no URL; send the audio bytes instead.")
        try:
            async with (
                httpx.AsyncClient(timeout=_URL_TIMEOUT_S, follow_redirects=True) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    return Refused(400, f"The URL answered HTTP {response.status_code}.")
                return await read_capped(response.aiter_bytes(), limit)
        except httpx.HTTPError:
            return Refused(400, "The audio could not be downloaded from the URL.")


def check_query(model: str, query: Mapping[str, str]) -> Refused | None:
    """Why the query parameters are refused, or None."""
    if model not in STT_MODELS:
        return Refused(400, "The 'model' query parameter must be pulse or pulse-pro.")
    language = query.get("language", "")
    if not language:
        return Refused(400, "The 'language' query parameter is required.")
    if model == "pulse-pro" and language != "en":
        return Refused(400, "pulse-pro transcribes English only; use language=en.")
    if query.get("webhook_url"):
        if model == "pulse":
            return Refused(400, "webhook_url is only available with pulse-pro.")
        return Refused(501, "Webhook delivery is not emulated; leave out webhook_url.")
    return None


async def read_capped(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The bytes of `chunks`, stopping once they pass `limit` (so at most a chunk over it)."""
    data = bytearray()
    async for chunk in chunks:
        data += chunk
        if len(data) > limit:
            break
    return bytes(data)


def pulse_result(
    model: str,
    digest: str,
    duration: float,
    size: int,
    *,
    query: Mapping[str, str],
    request_id: str,
) -> dict[str, Any]:
    """A Pulse (or Pulse Pro) answer for one recording, words spread over its real length."""
    language = query.get("language", "en")
    plain = audio.whisper_transcript(digest, duration, language)
    timestamps = _truthy(query, "word_timestamps")
    diarize = model == "pulse" and _truthy(query, "diarize")
    words: list[dict[str, Any]] = []
    if timestamps:
        for n, w in enumerate(audio.canned_words(digest, duration, language)):
            word: dict[str, Any] = {"word": w.word, "start": w.start, "end": w.end}
            word["confidence"] = 0.95
            if diarize:
                word["speaker"] = (n // _WORDS_PER_UTTERANCE) % 2
                word["speaker_confidence"] = 0.9
            words.append(word)
    if model == "pulse-pro":
        metadata = {
            "duration": round(duration, 3),
            "processing_time_ms": 40,
            "rtfx": round(duration / 0.04, 1),
            "num_chunks": max(1, math.ceil(duration / 30)),
        }
        return {
            "status": "success",
            "transcription": plain["text"],
            "words": words,
            "language": language,
            "request_id": request_id,
            "totalBytes": size,
            "metadata": metadata,
        }
    utterances = [dict(segment) for segment in plain["segments"]] if timestamps else []
    if diarize:
        for n, utterance in enumerate(utterances):
            utterance["speaker"] = n % 2
    return {
        "status": "success",
        "transcription": plain["text"],
        "words": words,
        "utterances": utterances,
        "metadata": {"duration": round(duration, 3), "fileSize": size},
    }


def _truthy(query: Mapping[str, str], name: str) -> bool:
    return query.get(name, "").lower() in {"true", "1", "yes"}


def _inspect(data: bytes) -> tuple[str, float | None]:
    return audio.audio_digest(data), audio.probe_duration(data)
