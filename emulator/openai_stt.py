"""OpenAI's transcription route (providers.md §4.3): `POST /v1/audio/transcriptions`.

Multipart fields: `file` (its name's extension says the format), `model`, `language`
(ISO-639-1), `prompt`, `response_format`, `temperature` (0-1), `timestamp_granularities[]`
(`word`, `segment`; only with `verbose_json`) and `stream` (not for whisper-1). The body is
read up to `max_audio_bytes` (25 MiB, OpenAI's limit) plus the form's own bytes, and
refused with 413 past that before it is parsed, so a huge upload costs the emulator at most
the cap. whisper-1 answers json, text, srt, vtt or verbose_json (timed words and segments);
the gpt-4o models take only json (text and token usage) and may stream it as SSE
`transcript.text.delta` events then `transcript.text.done`; the diarize model takes json or
text (`diarized_json` is not emulated: 501). Transcripts are canned sentences spread over
the recording's real length (`emulator/audio.py`), so the same file always gets the same.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.types import Message

from emulator import audio, faults
from emulator.config import STT_ANSWER_FAULTS
from emulator.dials import Call, Dials
from emulator.openai_wire import Refused, held
from emulator.smallest_pulse import read_capped

WHISPER = "whisper-1"
DIARIZE = "gpt-4o-transcribe-diarize"
# model → the response formats it takes (providers.md §4.3).
STT_FORMATS: dict[str, tuple[str, ...]] = {
    WHISPER: ("json", "text", "srt", "verbose_json", "vtt"),
    "gpt-4o-transcribe": ("json",),
    "gpt-4o-mini-transcribe": ("json",),
    "gpt-4o-mini-transcribe-2025-12-15": ("json",),
    "gpt-transcribe": ("json",),
    DIARIZE: ("json", "text", "diarized_json"),
}
EXTENSIONS = frozenset({"flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "wav", "webm"})
GRANULARITIES = ("word", "segment")
FORM_SLACK = 64 * 1024  # boundaries and the other fields around the file
_LANGUAGE_NAMES = {"en": "english", "es": "spanish"}  # verbose_json names its language
_WORDS_PER_SEGMENT = 6  # as `audio.whisper_transcript` groups them


@dataclass(frozen=True)
class Transcription:
    """A valid request: the recording and what to answer with."""

    data: bytes
    model: str
    response_format: str
    granularities: tuple[str, ...]
    language: str
    stream: bool


class TranscriptionApi:
    """The transcription handler; one instance per app, sharing the process's `Dials`."""

    def __init__(self, dials: Dials) -> None:
        self.dials = dials

    async def transcribe(self, request: Request, call: Call) -> Response:
        parsed = await self._read(request)
        if isinstance(parsed, Transcription):
            call.model, call.audio_bytes = parsed.model, len(parsed.data)
        fault = await held(self.dials, request, call, None, paced=False)
        if fault is not None:
            return fault
        if isinstance(parsed, Refused):
            return parsed.response()
        digest, duration = await run_in_threadpool(_inspect, parsed.data)
        if duration is None:
            message = "Audio file might be corrupted or unsupported"
            return Refused(400, message, "file", "invalid_value").response()
        if parsed.stream:
            return _streamed(digest, duration, parsed)
        return self._answer(call, transcript(digest, duration, parsed))

    def _answer(self, call: Call, result: dict[str, Any] | str) -> Response:
        """The transcript, unless `answer_fault` spoils it (JSON bodies only)."""
        if isinstance(result, str):
            return PlainTextResponse(result)
        spoiled = self.dials.answer_fault(None, STT_ANSWER_FAULTS)
        if spoiled is None:
            return JSONResponse(result)
        call.fault = f"answer:{spoiled}"
        config = self.dials.config
        return faults.stt_answer(
            spoiled, result, huge_bytes=config.huge_bytes, drip_interval_s=config.drip_interval_s
        )

    async def _read(self, request: Request) -> Transcription | Refused:
        """The request's fields, read under the size cap, or their refusal."""
        limit = self.dials.config.max_audio_bytes
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return Refused(400, "Expected a multipart/form-data body with a 'file' field.")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit + FORM_SLACK:
            return _too_large(limit, int(declared))  # refused unread
        raw = await read_capped(request.stream(), limit + FORM_SLACK)
        if len(raw) > limit + FORM_SLACK:
            return _too_large(limit, len(raw))
        replayed = Request(request.scope, _replay(raw))
        try:
            form = await replayed.form(max_files=1, max_fields=50)
        except (HTTPException, MultiPartException):
            return Refused(400, "The multipart body could not be parsed.")
        try:
            return await parse_form(form, limit)
        finally:
            await form.close()


async def parse_form(form: FormData, limit: int) -> Transcription | Refused:
    """The request a parsed form makes, or its refusal naming the first bad field."""
    upload, model = form.get("file"), form.get("model")
    if not isinstance(upload, UploadFile):
        return Refused(400, "Missing required parameter: 'file'.", "file", "missing")
    if not isinstance(model, str) or not model:
        return Refused(400, "Missing required parameter: 'model'.", "model", "missing")
    if model not in STT_FORMATS:
        message = f"The model `{model}` does not exist or you do not have access to it."
        return Refused(404, message, code="model_not_found")
    extension = (upload.filename or "").rpartition(".")[2].lower()
    if "." not in (upload.filename or "") or extension not in EXTENSIONS:
        message = f"Invalid file format. Supported formats: {sorted(EXTENSIONS)}"
        return Refused(400, message, "file", "invalid_value")
    data = await upload.read()
    if len(data) > limit:
        return _too_large(limit, len(data))
    return _options(form, data, model)


def _options(form: FormData, data: bytes, model: str) -> Transcription | Refused:  # noqa: PLR0911
    """The request with its options checked, or the refusal of the first bad one."""
    fmt = _text(form, "response_format") or "json"
    if fmt not in STT_FORMATS[model]:
        message = (
            f"response_format '{fmt}' is not compatible with model '{model}'; "
            f"use {' or '.join(STT_FORMATS[model])}."
        )
        return Refused(400, message, "response_format", "unsupported_value")
    if fmt == "diarized_json":
        return Refused(501, "The emulator does not make diarized_json; ask for json.")
    granularities = tuple(
        g for g in form.getlist("timestamp_granularities[]") if isinstance(g, str)
    )
    if any(g not in GRANULARITIES for g in granularities):
        return Refused(
            400, "Invalid value for 'timestamp_granularities[]'.", "timestamp_granularities"
        )
    if granularities and fmt != "verbose_json":
        message = "timestamp_granularities requires response_format=verbose_json."
        return Refused(400, message, "timestamp_granularities", "unsupported_value")
    language = _text(form, "language") or ""
    if language and not (len(language) == 2 and language.isalpha() and language.islower()):
        return Refused(400, "Invalid language: use an ISO-639-1 code such as 'en'.", "language")
    temperature = _text(form, "temperature") or "0"
    try:
        if not 0.0 <= float(temperature) <= 1.0:
            raise ValueError(temperature)
    except ValueError:
        return Refused(400, "Invalid value for 'temperature': expected 0 to 1.", "temperature")
    stream = (_text(form, "stream") or "false").lower() == "true"
    if stream and model == WHISPER:
        return Refused(
            400, "Streaming is not supported for whisper-1.", "stream", "unsupported_value"
        )
    return Transcription(data, model, fmt, granularities, language or "en", stream)


def transcript(digest: str, duration: float, asked: Transcription) -> dict[str, Any] | str:
    """The answer for one recording in the asked format: a JSON body, or text."""
    plain = audio.whisper_transcript(digest, duration, asked.language)
    text, segments = str(plain["text"]), list(plain["segments"])
    if asked.response_format == "text":
        return text + "\n"
    if asked.response_format in ("srt", "vtt"):
        return _captions(segments, vtt=asked.response_format == "vtt")
    if asked.response_format == "json":
        return {"text": text, "usage": _usage(asked.model, duration, text)}
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": _LANGUAGE_NAMES.get(asked.language, asked.language),
        "duration": round(duration, 3),
        "text": text,
    }
    granularities = asked.granularities or ("segment",)  # the documented default
    if "word" in granularities:
        words = audio.canned_words(digest, duration, asked.language)
        body["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in words]
    if "segment" in granularities:
        body["segments"] = [
            {
                "id": n,
                "seek": 0,
                "start": segment["start"],
                "end": segment["end"],
                "text": " " + segment["text"],
                "tokens": list(range(50364, 50364 + _WORDS_PER_SEGMENT)),
                "temperature": 0.0,
                "avg_logprob": -0.21,
                "compression_ratio": 1.18,
                "no_speech_prob": 0.01,
            }
            for n, segment in enumerate(segments)
        ]
    body["usage"] = _usage(asked.model, duration, text)
    return body


def _usage(model: str, duration: float, text: str) -> dict[str, Any]:
    """whisper-1 bills by the second; the gpt-4o models by tokens."""
    if model == WHISPER:
        return {"type": "duration", "seconds": math.ceil(duration)}
    audio_tokens, text_tokens = math.ceil(duration * 10), max(1, len(text) // 4)
    return {
        "type": "tokens",
        "input_tokens": audio_tokens,
        "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
        "output_tokens": text_tokens,
        "total_tokens": audio_tokens + text_tokens,
    }


def _streamed(digest: str, duration: float, asked: Transcription) -> Response:
    """The transcript as `transcript.text.delta` events, word by word, then `.done`."""
    plain = audio.whisper_transcript(digest, duration, asked.language)
    text = str(plain["text"])

    async def events() -> AsyncIterator[bytes]:
        for n, word in enumerate(text.split(" ")):
            delta = word if n == 0 else " " + word
            yield _event({"type": "transcript.text.delta", "delta": delta})
        usage = _usage(asked.model, duration, text)
        yield _event({"type": "transcript.text.done", "text": text, "usage": usage})

    return StreamingResponse(events(), media_type="text/event-stream")


def _captions(segments: list[Mapping[str, Any]], *, vtt: bool) -> str:
    sep = "." if vtt else ","
    blocks = [
        ("" if vtt else f"{n}\n")
        + f"{_stamp(s['start'], sep)} --> {_stamp(s['end'], sep)}\n{s['text']}\n"
        for n, s in enumerate(segments, start=1)
    ]
    return ("WEBVTT\n\n" if vtt else "") + "\n".join(blocks)


def _stamp(seconds: float, sep: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{sep}{rest % 1000:03d}"


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _too_large(limit: int, size: int) -> Refused:
    message = f"Maximum content size limit ({limit}) exceeded ({size} bytes read)"
    return Refused(413, message, "file", "content_too_large")


def _replay(raw: bytes) -> Any:
    """An ASGI `receive` that hands over `raw` once, so the form parser reads it again."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    return receive


def _inspect(data: bytes) -> tuple[str, float | None]:
    return audio.audio_digest(data), audio.probe_duration(data)
