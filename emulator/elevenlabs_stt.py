"""ElevenLabs' Scribe STT (providers.md §5.4): `POST /v1/speech-to-text`, multipart.

Fields: `model_id` (scribe_v1, scribe_v1_experimental, scribe_v2; required), `file` or a
`cloud_storage_url`/`source_url` (the emulator fetches nothing, so a URL is refused),
`language_code`, `tag_audio_events`, `num_speakers` (≤ 32), `timestamps_granularity`
(none | word | character), `diarize`, `file_format` (`pcm_s16le_16`: raw 16 kHz PCM, else
any audio), `webhook` (→ 202 `{message, request_id}`, nothing delivered), v2-only
`keyterms`; the literal `"null"` the SDK sends for unset fields is ignored. The body is read
through a byte cap (`max_audio_bytes`, 413 past it) before the form is parsed. The answer is
`{language_code, language_probability, text, words}`, `words` alternating `word` and
`spacing` entries with `speaker_id` (two speakers every six words when diarised) and
`logprob`, spread over the recording's real length.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive

from emulator import audio, faults
from emulator.config import STT_ANSWER_FAULTS
from emulator.dials import Call, Dials
from emulator.elevenlabs_wire import Gate, detail, fault_answer, invalid

STT_MODELS = ("scribe_v1", "scribe_v1_experimental", "scribe_v2")
GRANULARITIES = ("none", "word", "character")
MAX_SPEAKERS = 32
MULTIPART_SLACK = 64 * 1024  # the form's other fields and boundaries around the file
_WORDS_PER_TURN = 6
# ISO 639-1 → the ISO 639-3 code Scribe answers with (`eng`); others are echoed as given.
_ISO3 = {"en": "eng", "es": "spa", "de": "deu", "fr": "fra", "it": "ita", "pt": "por"}


class _TooLarge(Exception):
    """The request body passed the byte cap while the form was being read."""


def _capped(receive: Receive, cap: int) -> Receive:
    seen = 0

    async def inner() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > cap:
                raise _TooLarge
        return message

    return inner


class ScribeApi:
    """The Scribe handler; one instance per app, sharing the process's `Dials` and gate."""

    def __init__(self, dials: Dials, gate: Gate) -> None:
        self.dials, self.gate = dials, gate

    async def listen(self, request: Request) -> Response:
        return await self.gate.exchange(request, self._held)

    async def _held(self, request: Request, call: Call, key: str) -> Response:
        refused = self.gate.take(key, "stt", call)
        if refused is not None:
            return refused
        try:
            response = await self._listen(request, call)
        except BaseException:
            self.gate.free(key, "stt")
            raise
        return self.gate.held(response, key, "stt")

    async def _listen(self, request: Request, call: Call) -> Response:  # noqa: PLR0911
        limit = self.dials.config.max_audio_bytes
        form = await read_form(request, limit, call)
        if isinstance(form, Response):
            return form
        fields, data = form
        call.model = fields.get("model_id")
        call.audio_bytes = len(data) if data is not None else None
        fault = await self.dials.hold(call.path, None, request.receive)
        if fault is not None:
            call.fault = fault.kind
            return fault_answer(fault, call)
        problem = check_fields(fields, data, call)
        if problem is not None:
            return problem
        assert data is not None  # check_fields refuses a form without a file
        if fields.get("file_format") == "pcm_s16le_16":
            duration: float | None = len(data) / 32000 if len(data) >= 2 else None
            digest = audio.audio_digest(data)
        else:
            digest, duration = await run_in_threadpool(_inspect, data)
        if duration is None:
            message = "The audio file could not be decoded; send a supported audio format."
            return detail(400, "invalid_audio", message, call, param="file")
        if _truthy(fields, "webhook"):
            message = "Request accepted. Transcription result will be sent to the webhook."
            return JSONResponse({"message": message, "request_id": call.request_id}, 202)
        result = scribe_result(digest, duration, fields)
        spoiled = self.dials.answer_fault(None, STT_ANSWER_FAULTS)
        if spoiled is None:
            return JSONResponse(result)
        call.fault = f"answer:{spoiled}"
        config = self.dials.config
        return faults.stt_answer(
            spoiled, result, huge_bytes=config.huge_bytes, drip_interval_s=config.drip_interval_s
        )


async def read_form(
    request: Request, limit: int, call: Call
) -> tuple[dict[str, str], bytes | None] | Response:
    """The form's text fields and its file's bytes, or 413 past `limit` (and the slack for
    the other fields), or 400 when the body is not a multipart form."""
    cap = limit + MULTIPART_SLACK
    too_big = detail(413, "file_too_large", f"The file is over the {limit} byte limit.", call,
                     param="file")  # fmt: skip
    if int(request.headers.get("content-length") or 0) > cap:
        return too_big
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return invalid(["body"], "The body must be multipart/form-data.", "value_error")
    capped = Request(request.scope, _capped(request.receive, cap))
    try:
        form = await capped.form(max_files=2, max_fields=64)
    except _TooLarge:
        return too_big
    except HTTPException:
        return invalid(["body"], "The multipart body could not be parsed.", "value_error")
    try:
        fields = {k: v for k, v in form.items() if isinstance(v, str) and v != "null"}
        upload = form.get("file")
        data = await upload.read() if isinstance(upload, UploadFile) else None
    finally:
        await form.close()
    if data is not None and len(data) > limit:
        return too_big
    return fields, data


def check_fields(  # noqa: PLR0911 - one refusal per field
    fields: Mapping[str, str], data: bytes | None, call: Call
) -> Response | None:
    """ElevenLabs' refusal of the first bad field, or None."""
    model = fields.get("model_id")
    if not model:
        return invalid(["body", "model_id"], "Field required", "missing")
    if model not in STT_MODELS:
        message = f"Invalid model_id '{model}'; use one of {', '.join(STT_MODELS)}."
        return detail(400, "invalid_parameters", message, call, param="model_id")
    if fields.get("keyterms") and model != "scribe_v2":
        message = (
            "The 'keyterms' parameter is only supported with the 'scribe_v2' model. "
            f"You specified '{model}'."
        )
        return detail(400, "invalid_parameters", message, call, param="keyterms")
    url = fields.get("cloud_storage_url") or fields.get("source_url")
    if (data is None) == (url is None):
        message = "Exactly one of file or cloud_storage_url (source_url) must be provided."
        return detail(400, "invalid_parameters", message, call, param="file")
    if url is not None:
        message = "The emulator fetches no URLs; upload the file instead."
        return detail(400, "invalid_parameters", message, call, param="cloud_storage_url")
    if fields.get("timestamps_granularity", "word") not in GRANULARITIES:
        return invalid(
            ["body", "timestamps_granularity"], "Input should be none, word or character"
        )
    speakers = fields.get("num_speakers")
    if speakers is not None and not (speakers.isdigit() and 1 <= int(speakers) <= MAX_SPEAKERS):
        return invalid(["body", "num_speakers"], f"num_speakers must be from 1 to {MAX_SPEAKERS}")
    if not data:
        return detail(400, "invalid_audio", "The audio file is empty.", call, param="file")
    return None


def scribe_result(digest: str, duration: float, fields: Mapping[str, str]) -> dict[str, Any]:
    """A Scribe answer for one recording, its words spread over its real length."""
    asked = fields.get("language_code", "").lower()
    language = asked.split("-", 1)[0] or "en"
    words = audio.canned_words(digest, duration, language if len(language) == 2 else "en")
    texts = [w.word for w in words]
    if texts:
        texts[0], texts[-1] = texts[0].capitalize(), texts[-1] + "."
    diarize = _truthy(fields, "diarize")
    granularity = fields.get("timestamps_granularity", "word")
    entries: list[dict[str, Any]] = []
    for n, (word, text) in enumerate(zip(words, texts, strict=True)):
        speaker = f"speaker_{(n // _WORDS_PER_TURN) % 2}" if diarize else "speaker_0"
        if n:
            gap = {"text": " ", "start": entries[-1]["end"], "end": word.start}
            entries.append({**gap, "type": "spacing", "speaker_id": speaker, "logprob": 0.0})
        entry: dict[str, Any] = {"text": text, "start": word.start, "end": word.end}
        entry |= {"type": "word", "speaker_id": speaker, "logprob": -0.05}
        if granularity == "character":
            step = (word.end - word.start) / len(text)
            entry["characters"] = [
                {
                    "text": c,
                    "start": round(word.start + i * step, 3),
                    "end": round(word.start + (i + 1) * step, 3),
                }
                for i, c in enumerate(text)
            ]
        entries.append(entry)
    return {
        "language_code": _ISO3.get(language, language),
        "language_probability": 1.0 if asked else 0.98,
        "text": " ".join(texts),
        "words": [] if granularity == "none" else entries,
    }


def _truthy(fields: Mapping[str, str], name: str) -> bool:
    return fields.get(name, "").lower() in {"true", "1"}


def _inspect(data: bytes) -> tuple[str, float | None]:
    return audio.audio_digest(data), audio.probe_duration(data)
