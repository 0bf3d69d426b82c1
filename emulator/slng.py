"""SLNG's per-model HTTP routes (providers.md §1.3, §1.5), mounted under `/slng`.

Each request goes: model lookup (404) → Bearer auth (401) → per-key rate limit (429) →
per-key concurrency cap (429) → body read → `Dials.hold` (injected faults, latency) →
validation and the real answer, which `EmulatorConfig.answer_fault` or a `[[answer:KIND]]`
token may spoil into a misbehaving 200 (`emulator/faults.py`).
Bodies and error shapes copy SLNG's: problem-style 401s on TTS, `{"error",...}` elsewhere,
Deepgram-shaped nova transcripts and `{text, language, segments}` for Whisper. Every
response carries `x-slng-request-id`.
"""

from __future__ import annotations

import binascii
import json
from base64 import b64decode
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from uuid import uuid4

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emulator import audio, faults
from emulator.config import STT_ANSWER_FAULTS, TTS_ANSWER_FAULTS
from emulator.dials import Call, Dials, Fault, fingerprint, strip_tokens

PREFIX = "/slng"

AURA_MODELS = frozenset({"slng/deepgram/aura:2-en", "slng/deepgram/aura:2-es"})
DEEPGRAM_AURA = "deepgram/aura:2"
TTS_MODELS = AURA_MODELS | {DEEPGRAM_AURA}
NOVA_VARIANTS = ("en", "es", "hi", "kn", "mr", "multi", "ta", "te")
NOVA_MODELS = frozenset(f"slng/deepgram/nova:3-{v}" for v in NOVA_VARIANTS)
WHISPER = "slng/openai/whisper:large-v3"
STT_MODELS = NOVA_MODELS | {WHISPER}

_FAULT_BODIES: dict[int, dict[str, Any]] = {
    429: {"error": "Too many requests", "status": 429},
    500: {"error": "Service error", "details": "Internal processing error"},
    503: {"error": "Service unavailable", "status": 503},
    504: {"error": "Gateway timeout", "status": 504},
}
_MULTIPART_SLACK = 1024 * 1024  # form fields and boundaries around the audio part
_TOO_BIG = "Audio file size exceeds maximum limit of 25MB"
_ENCODINGS = ("linear16", "mp3", "opus", "flac", "aac", "mulaw", "alaw")
_SAMPLE_RATES = (8000, 16000, 24000, 32000, 48000)
_CONTAINERS = ("none", "wav", "ogg")

Answer = Callable[[Request, Call], Awaitable[Response]]


def routes(dials: Dials) -> list[BaseRoute]:
    api = SlngApi(dials)
    return [
        Route("/v1/tts/{model:path}", api.tts, methods=["POST"]),
        Route("/v1/stt/{model:path}", api.stt, methods=["POST"]),
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
        return await self._exchange(request, TTS_MODELS, self._tts)

    async def stt(self, request: Request) -> Response:
        return await self._exchange(request, STT_MODELS, self._stt)

    async def _exchange(self, request: Request, models: frozenset[str], answer: Answer) -> Response:
        model = request.path_params["model"]
        call = Call(request.method, request.url.path, model, str(uuid4()))
        status = 500
        try:
            response = await self._guarded(request, call, models, answer)
            status = response.status_code
        finally:
            self.dials.record(call, status)
        response.headers["x-slng-request-id"] = call.request_id
        return response

    async def _guarded(
        self, request: Request, call: Call, models: frozenset[str], answer: Answer
    ) -> Response:
        if call.model not in models:
            return error(404, {"error": "Model not found"})
        key, auth_error = self._authenticate(request, problem_style=models is TTS_MODELS)
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
            return await answer(request, call)
        finally:
            self.dials.release(key)

    def _authenticate(
        self, request: Request, *, problem_style: bool
    ) -> tuple[str, Response | None]:
        header = request.headers.get("authorization")
        scheme, _, key = (header or "").partition(" ")
        key = key.strip()
        allowed = self.dials.config.api_keys
        if header and scheme.lower() == "bearer" and key and (not allowed or key in allowed):
            return key, None
        detail = "No Authorization Header" if not header else "Invalid API key"
        if problem_style:
            return "", error(401, {"title": "Unauthorized", "status": 401, "detail": detail})
        return "", error(401, {"error": "Unauthorized", "status": 401, "details": detail})

    async def _hold(self, request: Request, call: Call, text: str | None) -> Response | None:
        fault = await self.dials.hold(call.path, text, request.receive)
        if fault is None:
            return None
        call.fault = fault.kind
        return fault_response(fault)

    # -- TTS -------------------------------------------------------------------------------

    async def _tts(self, request: Request, call: Call) -> Response:
        body = _json_object(await request.body())
        text = body.get("text") if body is not None else None
        text = text if isinstance(text, str) else None
        call.text_chars = len(text) if text is not None else None
        held = await self._hold(request, call, text)
        if held is not None:
            return held
        if body is None:
            return error(400, {"error": "Invalid JSON body"})
        parsed = parse_tts_body(body, family="aura" if call.model in AURA_MODELS else "deepgram")
        if not isinstance(parsed, TtsRequest):
            return error(400, parsed)
        limit = self.dials.config.max_text_chars
        if len(parsed.text) > limit:
            message = f"Text length {len(parsed.text)} exceeds the maximum of {limit} characters."
            return self._tts_upstream_error(call, message)
        duration = round(audio.speech_duration(strip_tokens(parsed.text)), 3)
        cache_key = (duration, parsed.encoding, parsed.sample_rate, parsed.container)
        rendered = self.speech_cache.get(cache_key)
        if rendered is None:
            try:
                rendered = await run_in_threadpool(audio.render_speech, *cache_key)
            except audio.UnsupportedAudio as exc:
                return self._tts_upstream_error(call, str(exc))
            self.speech_cache.put(cache_key, rendered)
        return self._tts_answer(call, parsed.text, *rendered)

    def _tts_answer(self, call: Call, text: str, content: bytes, media_type: str) -> Response:
        """The audio, unless a `[[answer:KIND]]` token or `answer_fault` spoils it."""
        spoiled = self.dials.answer_fault(text, TTS_ANSWER_FAULTS)
        if spoiled is None:
            return Response(content, media_type=media_type)
        call.fault = f"answer:{spoiled}"
        config = self.dials.config
        return faults.tts_answer(
            spoiled,
            content,
            media_type,
            huge_bytes=config.huge_bytes,
            drip_interval_s=config.drip_interval_s,
        )

    @staticmethod
    def _tts_upstream_error(call: Call, message: str) -> JSONResponse:
        details = {
            "err_code": "INVALID_QUERY_PARAMETER",
            "err_msg": message,
            "request_id": call.request_id,
        }
        return error(400, {"error": "TTS service error", "details": json.dumps(details)})

    # -- STT -------------------------------------------------------------------------------

    async def _stt(self, request: Request, call: Call) -> Response:
        limit = self.dials.config.max_audio_bytes
        if int(request.headers.get("content-length") or 0) > 2 * limit + _MULTIPART_SLACK:
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
        digest, duration = await run_in_threadpool(_inspect, upload.data or b"")
        if duration is None and call.model == WHISPER:
            return error(500, {"error": "Failed to process audio file"})
        if duration is None:
            return error(400, {"error": "Failed to process audio file", "status": 400})
        if call.model == WHISPER:
            result = _whisper_result(digest, duration, upload.options)
        else:
            result = _nova_result(call, digest, duration, upload.options)
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


@dataclass(frozen=True)
class TtsRequest:
    text: str
    encoding: str
    sample_rate: int
    container: str


def parse_tts_body(body: dict[str, Any], *, family: str) -> TtsRequest | dict[str, Any]:
    """The request, or a zod-style 400 body naming every bad field.

    `family` is "aura" (SLNG-hosted: voice in `model`, required) or "deepgram" (third-party:
    optional `voice`). SLNG's documented defaults (mp3 in a wav container) are a combination
    Deepgram rejects, so a missing encoding means linear16 here, which every client can decode.
    """
    problems: dict[str, list[str]] = {}
    text = body.get("text")
    if not isinstance(text, str) or not text:
        problems["text"] = ["Required" if text in (None, "") else "Expected string"]
    voice_field = "model" if family == "aura" else "voice"
    voice = body.get(voice_field)
    if family == "aura" and not voice:
        problems["model"] = ["Required"]
    elif voice is not None and not isinstance(voice, str):
        problems[voice_field] = ["Expected string"]
    encoding = body.get("encoding") or "linear16"
    if encoding not in _ENCODINGS:
        problems["encoding"] = [f"Invalid enum value. Expected {_choices(_ENCODINGS)}"]
    sample_rate = body.get("sample_rate") or 24000
    if sample_rate not in _SAMPLE_RATES or isinstance(sample_rate, bool):
        problems["sample_rate"] = [f"Invalid enum value. Expected {_choices(_SAMPLE_RATES)}"]
    default_container = "wav" if family == "aura" else "none"
    container = body.get("container") or default_container
    if container not in _CONTAINERS:
        problems["container"] = [f"Invalid enum value. Expected {_choices(_CONTAINERS)}"]
    if problems:
        first = next(iter(problems))
        verb = "is required" if problems[first] == ["Required"] else "is invalid"
        return {"error": f"{first.replace('_', ' ').capitalize()} {verb}", "fieldErrors": problems}
    return TtsRequest(str(text), str(encoding), int(sample_rate), str(container))


def _choices(values: tuple[object, ...]) -> str:
    return " | ".join(repr(v) for v in values)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _inspect(data: bytes) -> tuple[str, float | None]:
    return audio.audio_digest(data), audio.probe_duration(data)


@dataclass(frozen=True)
class Upload:
    """An STT body: the audio, the other fields as strings, or why it could not be read."""

    data: bytes | None = None
    options: dict[str, str] = field(default_factory=dict)
    problem: str | None = None


async def read_stt_upload(request: Request, limit: int) -> Upload:
    """The audio from a multipart (`audio` part), JSON (base64 `audio`) or raw-audio body."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return await _read_multipart(request, limit)
    if not content_type.startswith("application/json"):
        return Upload(await request.body())
    body = _json_object(await request.body())
    if body is None:
        return Upload(problem="Invalid JSON body")
    options = {k: str(v) for k, v in body.items() if k != "audio" and v is not None}
    field_value = body.get("audio")
    if "url" in body and field_value is None:
        return Upload(options=options, problem="Audio URLs are not supported by the emulator")
    data = _decode_base64(field_value) if isinstance(field_value, str) else None
    return Upload(data, options)


async def _read_multipart(request: Request, limit: int) -> Upload:
    try:
        form = await request.form(max_part_size=limit + _MULTIPART_SLACK)
    except HTTPException:
        return Upload(problem="Invalid multipart body")
    try:
        options = {k: v for k, v in form.items() if isinstance(v, str) and k != "audio"}
        field_value = form.get("audio")
        if isinstance(field_value, UploadFile):
            return Upload(await field_value.read(), options)
        data = _decode_base64(field_value) if isinstance(field_value, str) else None
        return Upload(data, options)
    finally:
        await form.close()


def _decode_base64(text: str) -> bytes:
    try:
        return b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text.encode()  # not base64: let the decoder reject it as "not audio"


def _truthy(options: dict[str, str], name: str) -> bool:
    return options.get(name, "").lower() in {"true", "1", "yes"}


def _nova_result(call: Call, digest: str, duration: float, options: dict[str, str]) -> Any:
    variant = (call.model or "").rsplit("-", 1)[-1]
    return audio.deepgram_transcript(
        request_id=call.request_id,
        model=call.model or "",
        digest=digest,
        duration_s=duration,
        language="en" if variant == "multi" else variant,
        punctuate=_truthy(options, "punctuate") or _truthy(options, "smart_format"),
        report_language=variant == "multi" or _truthy(options, "detect_language"),
    )


def _whisper_result(digest: str, duration: float, options: dict[str, str]) -> Any:
    return audio.whisper_transcript(digest, duration, options.get("language") or "en")
