"""What the emulator's SLNG STT routes read and answer (providers.md §1.5, §1.6).

The recording comes multipart with the file in `audio` (or base64 text in that field), as
JSON with base64 `audio` (a `url` is refused: the emulator fetches nothing), or as the raw
body; the other fields come back as strings, the way a form carries them. Answers are
Deepgram-shaped (nova), Whisper-shaped or bridge-shaped, per the model table at the end.
"""

from __future__ import annotations

import binascii
import json
from base64 import b64decode
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from emulator import audio
from emulator.dials import Call

MULTIPART_SLACK = 1024 * 1024  # form fields and boundaries around the audio part
NOVA_VARIANTS = ("en", "es", "hi", "kn", "mr", "multi", "ta", "te")
NOVA_MODELS = frozenset(f"slng/deepgram/nova:3-{v}" for v in NOVA_VARIANTS)
WHISPER = "slng/openai/whisper:large-v3"
BRIDGE_STT_VARIANTS = frozenset(
    {
        "deepgram/nova:2",
        "deepgram/nova:3",
        "deepgram/nova:3-medical",
        "reson8/reson8stt:v1",
        *NOVA_MODELS,
        WHISPER,
        "soniox/speech-ai:rt-v4",
        "sarvam/saaras:v3",
    }
)
BRIDGE_STT_RATES = ("8000", "16000", "22050", "24000", "32000", "48000")
BRIDGE_STT_ENCODINGS = ("linear16", "mp3", "opus")


@dataclass(frozen=True)
class Upload:
    """An STT body: the audio, the other fields as strings, or why it could not be read."""

    data: bytes | None = None
    options: dict[str, str] = field(default_factory=dict)
    problem: str | None = None


def json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def read_stt_upload(request: Request, limit: int) -> Upload:
    """The audio from a multipart (`audio` part), JSON (base64 `audio`) or raw-audio body."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return await _read_multipart(request, limit)
    if not content_type.startswith("application/json"):
        return Upload(await request.body())
    body = json_object(await request.body())
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
        form = await request.form(max_part_size=limit + MULTIPART_SLACK)
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


@dataclass(frozen=True)
class SttModel:
    """What one STT route answers, what it says to undecodable audio, and its field checks."""

    result: Callable[[Call, str, float, Mapping[str, str]], dict[str, Any]]
    undecodable: tuple[int, dict[str, Any]]
    check_fields: bool = False  # the bridge validates sample_rate and encoding (§1.6)


def _truthy(options: Mapping[str, str], name: str) -> bool:
    return options.get(name, "").lower() in {"true", "1", "yes"}


def variant_language(model: str) -> str | None:
    """The language a nova variant implies (`nova:3-es` → es); None for multi and others."""
    _, found, variant = model.partition("slng/deepgram/nova:3-")
    return variant if found and variant != "multi" else None


def _nova(call: Call, digest: str, duration: float, options: Mapping[str, str]) -> dict[str, Any]:
    model = call.model or ""
    implied = variant_language(model)
    return audio.deepgram_transcript(
        request_id=call.request_id,
        model=model,
        digest=digest,
        duration_s=duration,
        language=implied or "en",
        punctuate=_truthy(options, "punctuate") or _truthy(options, "smart_format"),
        report_language=implied is None or _truthy(options, "detect_language"),
    )


def _whisper(
    call: Call, digest: str, duration: float, options: Mapping[str, str]
) -> dict[str, Any]:
    return audio.whisper_transcript(digest, duration, options.get("language") or "en")


def _bridge_stt(
    call: Call, digest: str, duration: float, options: Mapping[str, str]
) -> dict[str, Any]:
    """The bridge's one answer shape, "CognigySTTTranscriptionResponse" (no word timing)."""
    language = options.get("language") or variant_language(call.model or "") or "en"
    words = audio.canned_words(digest, duration, language)
    alternative = {"confidence": 0.97, "transcript": " ".join(w.word for w in words)}
    return {
        "type": "transcription",
        "is_final": True,
        "alternatives": [alternative],
        "channel": 0,
        "language": language,
    }


def check_bridge_fields(options: Mapping[str, str]) -> str | None:
    """Why the bridge refuses these form fields, or None."""
    if options.get("sample_rate", "16000") not in BRIDGE_STT_RATES:
        return f"sample_rate must be one of {', '.join(BRIDGE_STT_RATES)}"
    if options.get("encoding", "linear16") not in BRIDGE_STT_ENCODINGS:
        return f"encoding must be one of {', '.join(BRIDGE_STT_ENCODINGS)}"
    return None


_UNREADABLE = "Failed to process audio file"
STT_MODELS: dict[str, SttModel] = {
    **{m: SttModel(_nova, (400, {"error": _UNREADABLE, "status": 400})) for m in NOVA_MODELS},
    WHISPER: SttModel(_whisper, (500, {"error": _UNREADABLE})),
}
BRIDGE_STT_MODELS = {
    v: SttModel(_bridge_stt, (400, {"error": _UNREADABLE, "status": 400}), check_fields=True)
    for v in BRIDGE_STT_VARIANTS
}
