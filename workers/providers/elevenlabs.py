"""ElevenLabs adapter (issue 11): TTS over HTTP or its chunked `/stream`, Scribe STT over HTTP.

Shapes follow providers.md §5. TTS posts `{text, model_id, language_code?, voice_settings?}`
to `/v1/text-to-speech/{voice_id}` (`options.transport` http, what `auto` picks for lines up
to 1,000 characters) or `/v1/text-to-speech/{voice_id}/stream` (stream), always asking for
`output_format=pcm_<rate>`: headerless 16-bit PCM, whatever media type the answer declares
(the spec declares `audio/mpeg` for every format), is lossless, needs no MP3 decoder and is
what the pipeline's `AudioSink` takes. Over HTTP the whole body is wrapped in a WAV and
checked; over `/stream` with a sink each chunk goes to the sink as it arrives. The voice id
travels in the path untouched, so one that could change the path is refused before any call.
Scribe gets the recording as multipart `file` with `model_id`, word timestamps and
diarisation; its `word` entries become words (`logprob` as a confidence, `speaker_id` as the
speaker), `spacing` and `audio_event` entries are not words (ElevenLabs' own `text` keeps
the events). Errors (`elevenlabs_errors`) tell a quota 401 from a bad key and a busy
ElevenLabs from our own concurrency being over the plan's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import httpx

from jobs.catalog import PROVIDERS
from jobs.error_codes import ErrorCode
from workers.audio import pcm16_to_wav
from workers.providers import http
from workers.providers.answers import (
    audio_seconds,
    bad_output,
    check_content_type,
    check_transcript,
)
from workers.providers.base import AudioInput, AudioSink, Synthesis, Transcript, Word
from workers.providers.elevenlabs_errors import error_of
from workers.providers.errors import InvalidInput, ProviderUnavailable, UnsupportedAudio
from workers.providers.exchange import Limit
from workers.providers.hosted import HostedHttp, streamed
from workers.providers.transcripts import as_float, as_str, clip, json_object

# The PCM rates ElevenLabs offers (providers.md §5.2; pcm_44100 needs a Pro plan or above).
SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
DEFAULT_SAMPLE_RATE = 24000
# Only these models take `language_code`; the others answer an error for it (§5.2) and
# detect the language from the text, so for them the option is not sent.
LANGUAGE_MODELS = frozenset({"eleven_flash_v2_5", "eleven_turbo_v2_5"})
# `voice_settings.speed` as ElevenLabs accepts it. UNCONFIRMED: from its docs, not the spec.
SPEED_RANGE = (0.7, 1.2)
# Anything else in a voice id could change the request path (a slash, `?`, `#`, `%`).
_VOICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_PROVIDER = "ElevenLabs"
_KEY_NAME = "ELEVENLABS_API_KEY"


class ElevenLabsProvider(HostedHttp):
    """One ElevenLabs account behind an injected `httpx.Client`; one HTTP request per call."""

    name = "elevenlabs"
    vendor = _PROVIDER
    _spec = PROVIDERS["elevenlabs"]

    def synthesize(
        self,
        text: str,
        *,
        model: str,
        voice: str | None,
        options: Mapping[str, Any],
        sink: AudioSink | None = None,
    ) -> Synthesis:
        if model not in self._spec.tts_models:
            raise http.unknown_model(_PROVIDER, model, self._spec.tts_models)
        http.check_tts_text(text, limit=self._spec.text_limit(model), model=model)
        transport = http.transport_for(self._spec, "tts", options, chars=len(text))
        voice_id = voice_of(voice or self._spec.default_voice or "")
        asked = int(options.get("sample_rate") or DEFAULT_SAMPLE_RATE)
        rate = next((r for r in SAMPLE_RATES if r >= asked), SAMPLE_RATES[-1])
        body = tts_body(text, model, options)
        path = f"/v1/text-to-speech/{voice_id}" + ("/stream" if transport == "stream" else "")
        params = {"output_format": f"pcm_{rate}"}
        if sink is not None and transport == "stream":
            return self._streamed(path, body, params, rate, sink)
        response = self._post(
            path, limit=self._bounds.tts_limit(len(text)), json=body, params=params
        )
        request_id = response.headers.get("request-id")
        audio = whole_audio(response, rate, request_id)
        return self._spoken(audio, text, response, request_id)

    def _streamed(
        self,
        path: str,
        body: dict[str, Any],
        params: dict[str, str],
        rate: int,
        sink: AudioSink,
    ) -> Synthesis:
        """`/stream`'s PCM pushed into `sink` chunk by chunk as it arrives; the sink checks it
        and the caller commits it, so no whole answer is ever held here."""
        sink.start(rate)
        limit = self._bounds.tts_stream_limit(len(body["text"]), rate)
        response = self._post(path, limit=limit, json=body, params=params, sink=sink.write)
        request_id = response.headers.get("request-id")
        # Checked once the body is over: what went to the sink is then thrown away.
        check_content_type(response.headers.get("content-type", ""), b"", _PROVIDER, request_id)
        return streamed(response, request_id)

    def transcribe(
        self, audio: AudioInput, *, model: str, options: Mapping[str, Any]
    ) -> Transcript:
        if model not in self._spec.stt_models:
            raise http.unknown_model(_PROVIDER, model, self._spec.stt_models)
        http.transport_for(self._spec, "stt", options)
        if not audio.data:
            raise UnsupportedAudio(
                "The audio is empty (0 bytes); upload the recording again.",
                code=ErrorCode.EMPTY_AUDIO,
            )
        fields = {"model_id": model, "timestamps_granularity": "word", "diarize": "true"}
        if options.get("language"):
            fields["language_code"] = language_code(options)
        known_s = audio_seconds(audio.data)
        response = self._post(
            "/v1/speech-to-text",
            limit=self._bounds.stt_limit(known_s, len(audio.data)),
            data=fields,
            files={"file": (audio.filename or "audio", audio.data, audio.content_type or None)},
        )
        request_id = response.headers.get("request-id")
        if response.content.lstrip()[:1] == b"<":
            raise bad_output(_PROVIDER, "markup (an HTML page) instead of a transcript", request_id)
        body = json_object(response.content)
        parsed = parse_scribe(body, model, known_s) if body is not None else None
        if parsed is None or response.status_code != 200:  # 202: a webhook answer
            raise ProviderUnavailable(
                f"{_PROVIDER} answered with a transcript in a shape speechbatch does not know "
                f"({http.redact(clip(response.text), self._key)!r}); "
                "retrying later may help, else report it.",
                code=ErrorCode.UNEXPECTED_RESPONSE,
                status_code=response.status_code,
                request_id=request_id,
            )
        parsed = replace(parsed, request_id=request_id)
        return check_transcript(parsed, audio_s=known_s, request_id=request_id)

    def _post(self, path: str, *, limit: Limit, **kw: Any) -> httpx.Response:
        headers = {"xi-api-key": self._key}
        response = self._call(self._base + path, limit=limit, headers=headers, **kw)
        if not response.is_success:
            raise error_of(response, secret=self._key, provider=_PROVIDER, key_name=_KEY_NAME)
        return response


def whole_audio(response: httpx.Response, rate: int, request_id: str | None) -> bytes:
    """A whole answer's audio as a WAV, or the transient error a body that is not audio is."""
    audio = response.content
    check_content_type(response.headers.get("content-type", ""), b"", _PROVIDER, request_id)
    # Raw PCM may begin with the byte "<"; only a page that says it is markup is refused.
    if audio.lstrip()[:5].lower() in (b"<!doc", b"<html", b"<?xml"):
        raise bad_output(_PROVIDER, "markup (an HTML or XML page) instead of audio", request_id)
    if not audio:
        raise ProviderUnavailable(
            f"{_PROVIDER} answered HTTP {response.status_code} with no audio; "
            "retrying later may help.",
            code=ErrorCode.EMPTY_RESPONSE,
            status_code=response.status_code,
            request_id=request_id,
        )
    # What we asked for is headerless 16-bit PCM; a WAV would be kept as it is.
    return audio if audio[:4] == b"RIFF" else pcm16_to_wav(audio, rate)


def voice_of(voice: str) -> str:
    """`voice` if it can go into the path as it is; else InvalidInput(unknown_voice)."""
    if not _VOICE_ID.match(voice):
        raise InvalidInput(
            f"{voice[:80]!r} is not an ElevenLabs voice id (letters, digits, _ and -, such as "
            "JBFqnCBsd6RMkjVDRZzb); use the id shown under My Voices, not the voice's name.",
            code=ErrorCode.UNKNOWN_VOICE,
        )
    return voice


def tts_body(text: str, model: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body for one line: `language_code` where the model takes it, and the
    job's speed as `voice_settings.speed` (refused outside what ElevenLabs accepts)."""
    body: dict[str, Any] = {"text": text, "model_id": model}
    if options.get("language") and model in LANGUAGE_MODELS:
        body["language_code"] = language_code(options)
    speed = float(options.get("speed") or 1.0)
    if speed != 1.0:
        low, high = SPEED_RANGE
        if not low <= speed <= high:
            raise InvalidInput(
                f"ElevenLabs speaks at speeds from {low} to {high}, not {speed:g}; "
                "change options.speed.",
                code=ErrorCode.INVALID_OPTION,
            )
        body["voice_settings"] = {"speed": speed}
    return body


def language_code(options: Mapping[str, Any]) -> str:
    """The job's language tag as ElevenLabs takes it: its primary code (`en-US` → en)."""
    return str(options["language"]).replace("_", "-").split("-", 1)[0].lower()


def parse_scribe(
    body: Mapping[str, Any], model: str, audio_s: float | None = None
) -> Transcript | None:
    """A Scribe answer (`text`, `language_code`, `words`; multichannel: the first of
    `transcripts`), or None for any other shape."""
    transcripts = body.get("transcripts")
    if isinstance(transcripts, list) and transcripts and isinstance(transcripts[0], Mapping):
        body = transcripts[0]
    text = body.get("text")
    raw_words = body.get("words", [])
    if not isinstance(text, str) or not isinstance(raw_words, list):
        return None
    words = [w for w in (scribe_word(raw) for raw in raw_words) if w is not None]
    ends = [as_float(w.get("end")) for w in raw_words if isinstance(w, Mapping)]
    last = max((e for e in ends if e is not None), default=None)
    return Transcript(
        text=text.strip(),
        language=as_str(body.get("language_code")),
        duration_s=audio_s if audio_s is not None else last,
        provider="elevenlabs",
        model=model,
        words=words,
        segments=http.segments_from_words(words),
    )


def scribe_word(raw: object) -> Word | None:
    """One `words` entry as a Word, or None for spacing, audio events and broken entries."""
    if not isinstance(raw, Mapping) or raw.get("type", "word") != "word":
        return None
    start, end, text = as_float(raw.get("start")), as_float(raw.get("end")), raw.get("text")
    if start is None or end is None or not isinstance(text, str) or not text.strip():
        return None
    logprob = as_float(raw.get("logprob"))
    # A log-probability of at most 0 is a confidence of exp(logprob); anything else is not one.
    confidence = math.exp(logprob) if logprob is not None and logprob <= 0 else None
    return Word(
        text=text.strip(),
        start=start,
        end=end,
        confidence=confidence,
        speaker=as_str(raw.get("speaker_id")),
    )
