"""SLNG's HTTP routes (providers.md §1.3-§1.6), mounted under `/slng`.

Per-model routes `/v1/tts|stt/{model}` and the bridges `/v1/bridges/unmute/tts|stt/{variant}`
(whose variant keeps its `/` and `:`, sent literally or percent-encoded: both arrive decoded).
Each request goes: model lookup (404) → Bearer auth (401, or the bridge's 403) → per-key rate
limit (429) → per-key concurrency cap (429) → body read → `Dials.hold` (injected faults,
latency) → validation and the real answer, which `EmulatorConfig.answer_fault` or a
`[[answer:KIND]]` token may spoil into a misbehaving 200 (`emulator/faults.py`).
What each model accepts and answers is in `slng_tts` and `slng_stt`; error shapes copy SLNG's:
problem-style 401s on per-model TTS, `{"error",...}` elsewhere, `{"error","message",
"statusCode"}` 403s on bridges. Every response carries `x-slng-request-id`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any
from uuid import uuid4

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from emulator import audio, faults
from emulator.config import STT_ANSWER_FAULTS, TTS_ANSWER_FAULTS
from emulator.dials import Call, Dials, Fault, fingerprint, strip_tokens
from emulator.slng_stt import (
    BRIDGE_STT_MODELS,
    MULTIPART_SLACK,
    STT_MODELS,
    SttModel,
    Upload,
    check_bridge_fields,
    json_object,
    read_stt_upload,
)
from emulator.slng_tts import BRIDGE_TTS_MODELS, TTS_MODELS, Refused, TtsModel, TtsRequest
from emulator.slng_ws import SlngTtsSession
from emulator.slng_ws_stt import SlngSttSession

PREFIX = "/slng"

_FAULT_BODIES: dict[int, dict[str, Any]] = {
    429: {"error": "Too many requests", "status": 429},
    500: {"error": "Service error", "details": "Internal processing error"},
    503: {"error": "Service unavailable", "status": 503},
    504: {"error": "Gateway timeout", "status": 504},
}
_TOO_BIG = "Audio file size exceeds maximum limit of 25MB"
# Faults that spoil the audio itself; Inworld carries the spoiled audio inside its JSON.
_AUDIO_FAULTS = frozenset({"random", "lying_wav", "long_flac"})
# Who refuses a missing or wrong key, and how (providers.md §8.2).
PROBLEM_401, ERROR_401, BRIDGE_403 = "problem", "error", "bridge"

Answer = Callable[[Request, Call, Any], Awaitable[Response]]


def routes(dials: Dials) -> list[BaseRoute]:
    api = SlngApi(dials)
    return [
        Route("/v1/tts/{model:path}", api.tts, methods=["POST"]),
        Route("/v1/stt/{model:path}", api.stt, methods=["POST"]),
        Route("/v1/bridges/unmute/tts/{model:path}", api.bridge_tts, methods=["POST"]),
        Route("/v1/bridges/unmute/stt/{model:path}", api.bridge_stt, methods=["POST"]),
        *ws_routes(dials),
    ]


def ws_routes(dials: Dials) -> list[BaseRoute]:
    """The same paths over WebSocket (`emulator/slng_ws.py`, `emulator/slng_ws_stt.py`)."""
    tts, stt = SlngTtsSession(dials), SlngSttSession(dials)
    return [
        WebSocketRoute("/v1/tts/{model:path}", tts.per_model),
        WebSocketRoute("/v1/bridges/unmute/tts/{model:path}", tts.bridge),
        WebSocketRoute("/v1/stt/{model:path}", stt.per_model),
        WebSocketRoute("/v1/bridges/unmute/stt/{model:path}", stt.bridge),
    ]


def retry_after_header(seconds: float) -> str:
    """Whole seconds when possible, since many clients parse Retry-After with int()."""
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def error(status: int, body: dict[str, Any], retry_after: float | None = None) -> JSONResponse:
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = retry_after_header(retry_after)
        headers["retry-after-ms"] = str(int(retry_after * 1000))
    return JSONResponse(body, status_code=status, headers=headers)


def fault_response(fault: Fault) -> JSONResponse:
    if fault.kind == "cap":
        body: dict[str, Any] = {"error": "Too many concurrent requests", "status": 429}
    elif fault.kind == "rate":
        body = {"error": "Rate limit exceeded", "status": 429}
    else:
        body = _FAULT_BODIES.get(fault.status) or {
            "error": _phrase(fault.status),
            "status": fault.status,
        }
    return error(fault.status, body, fault.retry_after)


class SlngApi:
    """The route handlers; one instance per app, sharing the process's `Dials`."""

    def __init__(self, dials: Dials) -> None:
        self.dials = dials
        self.speech_cache = audio.SpeechCache()

    async def tts(self, request: Request) -> Response:
        return await self._exchange(request, TTS_MODELS, PROBLEM_401, self._tts)

    async def stt(self, request: Request) -> Response:
        return await self._exchange(request, STT_MODELS, ERROR_401, self._stt)

    async def bridge_tts(self, request: Request) -> Response:
        return await self._exchange(request, BRIDGE_TTS_MODELS, BRIDGE_403, self._tts)

    async def bridge_stt(self, request: Request) -> Response:
        return await self._exchange(request, BRIDGE_STT_MODELS, BRIDGE_403, self._stt)

    async def _exchange(
        self, request: Request, models: Mapping[str, Any], auth: str, answer: Answer
    ) -> Response:
        model = request.path_params["model"]
        call = Call(request.method, request.url.path, model, str(uuid4()))
        response: Response = await self.dials.logged(
            call, self._guarded(request, call, models, auth, answer)
        )
        response.headers["x-slng-request-id"] = call.request_id
        return response

    async def _guarded(
        self, request: Request, call: Call, models: Mapping[str, Any], auth: str, answer: Answer
    ) -> Response:
        spec = models.get(call.model or "")
        if spec is None:
            return error(404, {"error": "Model not found"})
        key, auth_error = self._authenticate(request, auth)
        if auth_error is not None:
            return auth_error
        call.key_fingerprint = fingerprint(key)
        over_rate = self.dials.try_rate(key)
        if over_rate is not None:
            call.fault = over_rate.kind
            return fault_response(over_rate)
        if not self.dials.try_admit(key):
            call.fault = "cap"
            return fault_response(Fault("cap", 429, self.dials.config.retry_after_s))
        try:
            return await answer(request, call, spec)
        finally:
            self.dials.release(key)

    def _authenticate(self, request: Request, style: str) -> tuple[str, Response | None]:
        header = request.headers.get("authorization")
        scheme, _, key = (header or "").partition(" ")
        key = key.strip()
        allowed = self.dials.config.api_keys
        if header and scheme.lower() == "bearer" and key and (not allowed or key in allowed):
            return key, None
        detail = "No Authorization Header" if not header else "Invalid API key"
        if style == BRIDGE_403:
            body = {"error": "Forbidden", "message": "Missing or invalid Bearer token"}
            return "", error(403, {**body, "statusCode": 403})
        if style == PROBLEM_401:
            return "", error(401, {"title": "Unauthorized", "status": 401, "detail": detail})
        return "", error(401, {"error": "Unauthorized", "status": 401, "details": detail})

    async def _hold(self, request: Request, call: Call, text: str | None) -> Response | None:
        fault = await self.dials.hold(call.path, text, request.receive)
        if fault is None:
            return None
        call.fault = fault.kind
        return fault_response(fault)

    # -- TTS -------------------------------------------------------------------------------

    async def _tts(self, request: Request, call: Call, spec: TtsModel) -> Response:
        body = json_object(await request.body())
        text = body.get("text", body.get("prompt")) if body is not None else None
        text = text if isinstance(text, str) else None
        call.text_chars = len(text) if text is not None else None
        held = await self._hold(request, call, text)
        if held is not None:
            return held
        if body is None:
            return error(400, {"error": "Invalid JSON body"})
        try:
            parsed = spec.parse(body)
            content, media_type = await self._render(call, parsed)
        except Refused as refused:
            return error(refused.status, refused.body)
        await self.dials.generated(
            call, audio.speech_duration(strip_tokens(parsed.text)) / parsed.speed
        )
        answer = self._json_answer if spec.json_answer else self._tts_answer
        return answer(call, parsed.text, content, media_type)

    async def _render(self, call: Call, parsed: TtsRequest) -> tuple[bytes, str]:
        """The audio for `parsed`; Refused (an upstream-style 400) when it cannot be made."""
        limit = self.dials.config.max_text_chars
        if len(parsed.text) > limit:
            message = f"Text length {len(parsed.text)} exceeds the maximum of {limit} characters."
            raise _upstream_error(call, message)
        spoken = audio.speech_duration(strip_tokens(parsed.text)) / parsed.speed
        cache_key = (round(spoken, 3), parsed.encoding, parsed.sample_rate, parsed.container)
        rendered = self.speech_cache.get(cache_key)
        if rendered is None:
            try:
                rendered = await run_in_threadpool(audio.render_speech, *cache_key)
            except audio.UnsupportedAudio as exc:
                raise _upstream_error(call, str(exc)) from None
            self.speech_cache.put(cache_key, rendered)
        return rendered

    def _tts_answer(self, call: Call, text: str, content: bytes, media_type: str) -> Response:
        """The audio, unless a `[[answer:KIND]]` token or `answer_fault` spoils it."""
        spoiled = self.dials.answer_fault(text, TTS_ANSWER_FAULTS)
        if spoiled is None:
            return Response(content, media_type=media_type)
        call.fault = f"answer:{spoiled}"
        return self._spoil(spoiled, content, media_type)

    def _json_answer(self, call: Call, text: str, content: bytes, media_type: str) -> Response:
        """Inworld's JSON: the audio in base64 (spoiled inside, or the whole answer spoiled)."""
        spoiled = self.dials.answer_fault(text, TTS_ANSWER_FAULTS)
        if spoiled is not None:
            call.fault = f"answer:{spoiled}"
        if spoiled in _AUDIO_FAULTS:
            content = bytes(self._spoil(spoiled, content, media_type).body)
        usage = {"processedCharactersCount": len(text), "modelId": "inworld-tts-1.5-max"}
        answer = {"audioContent": base64.b64encode(content).decode(), "usage": usage}
        if spoiled is None or spoiled in _AUDIO_FAULTS:
            return JSONResponse(answer)
        return self._spoil(spoiled, json.dumps(answer).encode(), "application/json")

    def _spoil(self, kind: str, content: bytes, media_type: str) -> Response:
        config = self.dials.config
        return faults.tts_answer(
            kind,
            content,
            media_type,
            huge_bytes=config.huge_bytes,
            drip_interval_s=config.drip_interval_s,
        )

    # -- STT -------------------------------------------------------------------------------

    async def _stt(self, request: Request, call: Call, spec: SttModel) -> Response:
        limit = self.dials.config.max_audio_bytes
        if int(request.headers.get("content-length") or 0) > 2 * limit + MULTIPART_SLACK:
            upload = Upload(problem=_TOO_BIG)  # even base64 of a legal file is smaller
        else:
            upload = await read_stt_upload(request, limit)
        call.audio_bytes = len(upload.data) if upload.data else None
        held = await self._hold(request, call, None)
        if held is not None:
            return held
        if upload.problem is None and not upload.data:
            upload = Upload(problem="Missing required field: audio")
        elif upload.data and len(upload.data) > limit:
            upload = Upload(problem=_TOO_BIG)
        if upload.problem is not None:
            status = 413 if upload.problem == _TOO_BIG else 400
            return error(status, {"error": upload.problem})
        bad_field = check_bridge_fields(upload.options) if spec.check_fields else None
        if bad_field is not None:
            return error(400, {"error": "Invalid request", "status": 400, "details": bad_field})
        digest, duration = await run_in_threadpool(_inspect, upload.data or b"")
        if duration is None:
            return error(*spec.undecodable)
        result = spec.result(call, digest, duration, upload.options)
        spoiled = self.dials.answer_fault(None, STT_ANSWER_FAULTS)
        if spoiled is not None:
            call.fault = f"answer:{spoiled}"
            config = self.dials.config
            return faults.stt_answer(
                spoiled,
                result,
                huge_bytes=config.huge_bytes,
                drip_interval_s=config.drip_interval_s,
            )
        return JSONResponse(result)


def _upstream_error(call: Call, message: str) -> Refused:
    """Aura's 400 for a request its upstream (Deepgram) refused: details is Deepgram's JSON."""
    details = {
        "err_code": "INVALID_QUERY_PARAMETER",
        "err_msg": message,
        "request_id": call.request_id,
    }
    return Refused(400, {"error": "TTS service error", "details": json.dumps(details)})


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _inspect(data: bytes) -> tuple[str, float | None]:
    return audio.audio_digest(data), audio.probe_duration(data)
