"""Deepgram's pre-recorded STT (providers.md §3.2): `POST /v1/listen?model=&...`.

The body is the recording's bytes (any `audio/*` type or `application/octet-stream`, as the
SDK sends them) or JSON `{"url": ...}`, which the emulator downloads itself. Features are
boolean query parameters: `punctuate`/`smart_format` capitalise and punctuate, `diarize`
gives words and utterances speakers (alternating every six words), `utterances` adds
`results.utterances`, `detect_language` adds `detected_language`. The answer has the
metadata the SDK's model requires (`request_id, sha256, created, duration, channels, models,
model_info`). No `model` means `base`, as on Deepgram; an unknown one is a 400, undecodable
audio the documented "failed to process audio" 400, a body over `max_audio_bytes` a 413.
With `callback=URL` (and `callback_method` POST or PUT) the answer is `{"request_id"}` at
once and the transcript is sent to the URL, retried up to 10 times a short `CALLBACK_RETRY_S`
apart (Deepgram: 30 s) until it answers 2xx; Deepgram's own port restriction (80, 443, 8080,
8443) is not applied, so tests can listen anywhere.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from emulator import audio, faults
from emulator.config import STT_ANSWER_FAULTS
from emulator.deepgram_wire import STT_CONCURRENCY, DeepgramGate, refusal
from emulator.dials import Call, Dials
from emulator.smallest_wire import json_object

STT_MODELS = frozenset(
    {
        *("nova-3", "nova-3-medical", "nova-2", "nova", "enhanced", "base"),
        *("whisper", "whisper-tiny", "whisper-base", "whisper-small"),
        *("whisper-medium", "whisper-large"),
    }
)
BOOLEANS = ("punctuate", "smart_format", "diarize", "utterances", "detect_language")
NO_SUCH_MODEL = "Bad Request: No such model/version combination found."
UNDECODABLE = "Bad Request: failed to process audio: corrupt or unsupported data"
WORDS_PER_UTTERANCE = 6
# Deepgram retries a failed callback delivery 10 times, 30 s apart; the emulator shortens it.
CALLBACK_ATTEMPTS = 10
CALLBACK_RETRY_S = 0.2
_URL_TIMEOUT_S = 10.0


class ListenApi:
    """The /v1/listen handler; one instance per app, sharing the process's `Dials`."""

    def __init__(self, dials: Dials, *, concurrency: int = STT_CONCURRENCY) -> None:
        self.dials = dials
        self.gate = DeepgramGate(dials, "stt", concurrency)
        self._deliveries: set[asyncio.Task[int]] = set()  # callbacks still being delivered

    async def listen(self, request: Request) -> Response:
        return await self.gate.exchange(request, self._listen)

    async def _listen(self, request: Request, call: Call, key: str) -> Response:  # noqa: PLR0911
        query = request.query_params
        model = query.get("model") or "base"
        bad_flag = next((b for b in BOOLEANS if query.get(b, "false") not in ("true", "false")), "")
        if bad_flag:
            message = f"Failed to deserialize query parameters: invalid value for `{bad_flag}`"
            return refusal(400, "stt", call, message, code="INVALID_QUERY_PARAMETER")
        if model not in STT_MODELS:
            return refusal(400, "stt", call, NO_SUCH_MODEL)
        call.model = model
        callback = query.get("callback")
        method = query.get("callback_method", "POST").upper()
        if callback is not None and (
            not callback.startswith(("http://", "https://")) or method not in ("POST", "PUT")
        ):
            return refusal(
                400, "stt", call, "Invalid callback url.", code="INVALID_QUERY_PARAMETER"
            )
        data = await self._read_audio(request, call)
        call.audio_bytes = len(data) if isinstance(data, bytes) else None
        fault = await self.dials.hold(call.path, None, request.receive)
        if fault is not None:
            call.fault = fault.kind
            return refusal(fault.status, "stt", call, retry_after=fault.retry_after)
        if isinstance(data, Response):
            return data
        digest, duration = await run_in_threadpool(_inspect, data)
        if duration is None:
            return refusal(400, "stt", call, UNDECODABLE)
        result = listen_result(call.request_id, model, digest, duration, query)
        if callback is not None:
            # Answered at once; the transcript follows to the callback URL (callback.mdx).
            task = asyncio.create_task(deliver(callback, method, result, call.key_fingerprint))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
            return JSONResponse({"request_id": call.request_id})
        spoiled = self.dials.answer_fault(None, STT_ANSWER_FAULTS)
        if spoiled is None:
            return JSONResponse(result)
        call.fault = f"answer:{spoiled}"
        config = self.dials.config
        return faults.stt_answer(
            spoiled, result, huge_bytes=config.huge_bytes, drip_interval_s=config.drip_interval_s
        )

    async def _read_audio(self, request: Request, call: Call) -> bytes | Response:
        """The recording, from the body or the JSON body's `url`; else the refusal to send."""
        limit = self.dials.config.max_audio_bytes

        def too_big() -> Response:
            return refusal(413, "stt", call, f"Payload size exceeds limit of {limit} bytes.")

        if int(request.headers.get("content-length") or 0) > limit:
            return too_big()
        if request.headers.get("content-type", "").startswith("application/json"):
            body = json_object(await request.body())
            url = body.get("url") if body is not None else None
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                message = "Invalid JSON submitted: a `url` with an http(s) URL is required."
                return refusal(400, "stt", call, message, code="INVALID_JSON")
            data = await _download(url, limit)
            if data is None:
                message = "The remote server hosting the media failed to return valid data."
                return refusal(400, "stt", call, message, code="REMOTE_CONTENT_ERROR")
        else:
            data = await read_capped(request.stream(), limit)
        if len(data) > limit:
            return too_big()
        if not data:
            return refusal(400, "stt", call, UNDECODABLE)
        return data


def listen_result(
    request_id: str, model: str, digest: str, duration: float, query: Mapping[str, str]
) -> dict[str, Any]:
    """A Deepgram pre-recorded answer for one recording, with the features `query` asks."""
    on = {name: query.get(name) == "true" for name in BOOLEANS}
    language = query.get("language") or "en"
    result = audio.deepgram_transcript(
        request_id=request_id,
        model=model,
        digest=digest,
        duration_s=duration,
        language=language,
        punctuate=on["punctuate"] or on["smart_format"],
        report_language=on["detect_language"],
    )
    alternative = result["results"]["channels"][0]["alternatives"][0]
    words: list[dict[str, Any]] = alternative["words"]
    for n, word in enumerate(words):
        if on["diarize"]:
            word["speaker"] = (n // WORDS_PER_UTTERANCE) % 2
            word["speaker_confidence"] = 0.9
        else:
            del word["speaker"]
        if not (on["punctuate"] or on["smart_format"]):
            del word["punctuated_word"]
    if on["utterances"]:
        result["results"]["utterances"] = [
            _utterance(words[i : i + WORDS_PER_UTTERANCE])
            for i in range(0, len(words), WORDS_PER_UTTERANCE)
        ]
    model_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, model))
    result["metadata"] = {
        "transaction_key": "deprecated",
        "request_id": request_id,
        "sha256": digest,
        "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "duration": round(duration, 3),
        "channels": 1,
        "models": [model_uuid],
        "model_info": {model_uuid: {"name": model, "version": "emulated", "arch": model}},
    }
    return result


def _utterance(words: list[dict[str, Any]]) -> dict[str, Any]:
    text = " ".join(str(w.get("punctuated_word", w["word"])) for w in words)
    return {
        "start": words[0]["start"],
        "end": words[-1]["end"],
        "confidence": 0.97,
        "channel": 0,
        "transcript": text,
        "words": words,
        "speaker": words[0].get("speaker", 0),
        "id": str(uuid.uuid4()),
    }


async def read_capped(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The bytes of `chunks`, stopping once they pass `limit` (so at most a chunk over it)."""
    data = bytearray()
    async for chunk in chunks:
        data += chunk
        if len(data) > limit:
            break
    return bytes(data)


async def _download(url: str, limit: int) -> bytes | None:
    try:
        async with (
            httpx.AsyncClient(timeout=_URL_TIMEOUT_S, follow_redirects=True) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                return None
            return await read_capped(response.aiter_bytes(), limit)
    except httpx.HTTPError:
        return None


async def deliver(
    url: str,
    method: str,
    result: dict[str, Any],
    token: str | None,
    *,
    attempts: int = CALLBACK_ATTEMPTS,
    delay_s: float = CALLBACK_RETRY_S,
) -> int:
    """Send `result` to the callback `url` until it answers 2xx, `attempts` times at most,
    `delay_s` apart; the number of attempts made. `dg-token` names the key, as Deepgram's
    own header does (here its fingerprint, never the key)."""
    headers = {"dg-token": token or ""}
    async with httpx.AsyncClient(timeout=_URL_TIMEOUT_S) as client:
        for attempt in range(1, attempts + 1):
            try:
                response = await client.request(method, url, json=result, headers=headers)
                if response.is_success:
                    return attempt
            except httpx.HTTPError:
                pass
            if attempt < attempts:
                await asyncio.sleep(delay_s)
    return attempts


def _inspect(data: bytes) -> tuple[str, float | None]:
    return audio.audio_digest(data), audio.probe_duration(data)
