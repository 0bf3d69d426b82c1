"""OpenAI audio adapter: speech over `POST /v1/audio/speech`, transcription over
`POST /v1/audio/transcriptions` (providers.md §4).

TTS posts `{model, input, voice, response_format, speed}` with Bearer auth. Over `http`
(what `auto` picks up to STREAM_ABOVE_CHARS) it asks for a WAV and checks the whole body;
over `stream` it asks for `pcm` — raw 24 kHz 16-bit mono, a rate providers.md leaves
UNCONFIRMED — and, given the pipeline's `AudioSink`, pushes the chunked body into it as it
arrives. Raw PCM has no terminator, so a body that ends early but cleanly is caught only by
the sink's shortest-reading check; one that breaks off is a transient failure.
STT sends the recording as multipart `file` under a name whose extension OpenAI accepts,
refusing one over 25 MiB before the call. whisper-1 is asked for `verbose_json` with word
and segment timestamps; the gpt-4o models take only `json`, so their transcripts carry text
and no timings (`openai_stt`). Errors are OpenAI's `{"error": {message, type, param, code}}`:
a 429 whose code is `insufficient_quota` is QuotaExceeded (out of credit: waiting cannot
help), every other status goes through `http.error_from_response`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx

from jobs.catalog import PROVIDERS
from jobs.error_codes import ErrorCode
from jobs.media import extension_for, sniff_audio
from workers.providers import http
from workers.providers.answers import audio_seconds, bad_output, check_content_type
from workers.providers.base import AudioInput, AudioSink, Synthesis, Transcript
from workers.providers.errors import (
    InvalidInput,
    ProviderError,
    ProviderUnavailable,
    QuotaExceeded,
    UnsupportedAudio,
)
from workers.providers.exchange import Limit
from workers.providers.hosted import HostedHttp, streamed
from workers.providers.openai_stt import UNTIMED_MODELS, parse_transcription
from workers.providers.transcripts import as_str, clip, json_object

VOICES = (
    *("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova"),
    *("sage", "shimmer", "verse", "marin", "cedar"),
)
PCM_RATE = 24000  # what `pcm` is, per providers.md §4.2 (UNCONFIRMED there)
# OpenAI's upload limit for one transcription (providers.md §4.3); longer recordings will
# be split before they reach here (the long-recordings work).
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
# Extensions OpenAI reads the recording's format from (providers.md §4.3).
UPLOAD_EXTENSIONS = frozenset({"flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "wav", "webm"})
_PROVIDER = "OpenAI"
_KEY_NAME = "OPENAI_API_KEY"
_SPEECH = "/v1/audio/speech"
_TRANSCRIPTIONS = "/v1/audio/transcriptions"
# A 400 naming one of these parameters has a more telling code than invalid_input.
_PARAM_CODES = {"voice": ErrorCode.UNKNOWN_VOICE, "model": ErrorCode.UNKNOWN_MODEL}


class OpenAIProvider(HostedHttp):
    """One OpenAI account behind an injected `httpx.Client`; one HTTP request per call."""

    name = "openai"
    vendor = _PROVIDER
    _spec = PROVIDERS["openai"]

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
        voice = voice or str(self._spec.default_voice)
        if voice not in VOICES:
            raise InvalidInput(
                f"{_PROVIDER} has no voice {voice!r}; use one of: {', '.join(VOICES)}.",
                code=ErrorCode.UNKNOWN_VOICE,
            )
        http.check_tts_text(text, limit=self._spec.text_limit(model), model=model)
        transport = http.transport_for(self._spec, "tts", options, chars=len(text))
        body = {
            "model": model,
            "input": text,
            "voice": voice,
            "response_format": "wav",  # decodes as it is, and check_speech reads it whole
            "speed": float(options.get("speed") or 1.0),
        }
        if sink is not None and transport == "stream":
            # Raw PCM is what a stream can hand on chunk by chunk.
            return self._streamed(body | {"response_format": "pcm"}, sink)
        response = self._post(_SPEECH, limit=self._bounds.tts_limit(len(text)), json=body)
        request_id = response.headers.get("x-request-id")
        audio = response.content
        check_content_type(response.headers.get("content-type", ""), audio, _PROVIDER, request_id)
        if not audio:
            raise _empty(response.status_code, request_id)
        return self._spoken(audio, text, response, request_id)

    def _streamed(self, body: dict[str, Any], sink: AudioSink) -> Synthesis:
        """The PCM body pushed into `sink` as it arrives; the sink checks it and the caller
        commits it, so a failure raised here leaves nothing stored."""
        counted = _Counted(sink.write)
        sink.start(PCM_RATE)
        response = self._post(
            _SPEECH,
            limit=self._bounds.tts_stream_limit(len(body["input"]), PCM_RATE),
            json=body,
            sink=counted,
        )
        request_id = response.headers.get("x-request-id")
        # Checked after the body (the exchange hands it on as it comes): raising here still
        # aborts the sink, so an HTML page or JSON labelled as such is never stored.
        media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media and not media.startswith("audio/") and media != "application/octet-stream":
            raise bad_output(_PROVIDER, f"{media} instead of raw PCM", request_id)
        if counted.head[:4] == b"RIFF" or counted.head.lstrip()[:1] == b"<":
            raise bad_output(_PROVIDER, "a file or a page instead of raw PCM", request_id)
        if not counted.size:
            raise _empty(response.status_code, request_id)
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
        if len(audio.data) > MAX_UPLOAD_BYTES:
            raise InvalidInput(
                f"The recording is {len(audio.data) / 2**20:.1f} MiB, over the 25 MiB "
                f"{_PROVIDER} accepts in one transcription; split it into shorter recordings "
                "(or use a provider that takes larger files) and resubmit.",
                code=ErrorCode.PAYLOAD_TOO_LARGE,
            )
        fields: dict[str, Any] = {"model": model}
        if model in UNTIMED_MODELS:
            fields["response_format"] = "json"  # the only format they take (providers.md §4.3)
        else:
            fields["response_format"] = "verbose_json"
            fields["timestamp_granularities[]"] = ["word", "segment"]
        if options.get("language"):
            fields["language"] = language_code(options)
        known_s = audio_seconds(audio.data)
        response = self._post(
            _TRANSCRIPTIONS,
            limit=self._bounds.stt_limit(known_s, len(audio.data)),
            data=fields,
            files={"file": (upload_name(audio), audio.data, audio.content_type)},
        )
        request_id = response.headers.get("x-request-id")
        if response.content.lstrip()[:1] == b"<":
            raise bad_output(_PROVIDER, "markup (an HTML page) instead of a transcript", request_id)
        body = json_object(response.content)
        parsed = (
            parse_transcription(body, model, options, audio_s=known_s, request_id=request_id)
            if body is not None
            else None
        )
        if parsed is None:
            raise ProviderUnavailable(
                f"{_PROVIDER} answered with a transcript in a shape speechbatch does not know "
                f"({http.redact(clip(response.text), self._key)!r}); "
                "retrying later may help, else report it.",
                code=ErrorCode.UNEXPECTED_RESPONSE,
                status_code=response.status_code,
                request_id=request_id,
            )
        return parsed

    def _post(self, path: str, *, limit: Limit, **kw: Any) -> httpx.Response:
        # The SDK's Accept for speech; transcription answers JSON either way.
        headers = {"Authorization": f"Bearer {self._key}", "Accept": "application/octet-stream"}
        if path == _TRANSCRIPTIONS:
            headers["Accept"] = "application/json"
        response = self._call(self._base + path, limit=limit, headers=headers, **kw)
        if not response.is_success:
            raise self._error(response)
        return response

    def _error(self, response: httpx.Response) -> ProviderError:
        """OpenAI's `{"error": {message, type, param, code}}`, quoted in one sentence."""
        body = json_object(response.content) or {}
        detail = body.get("error")
        detail = detail if isinstance(detail, Mapping) else {}
        message = as_str(detail.get("message")) or response.text
        code, kind = as_str(detail.get("code")), as_str(detail.get("type"))
        said = " — ".join(x for x in (message, code if code != kind else None, kind) if x)
        reason = http.redact(said, self._key)
        request_id = response.headers.get("x-request-id")
        if response.status_code == 429 and "insufficient_quota" in (code, kind):
            return QuotaExceeded(
                f"{_PROVIDER} answered HTTP 429: {http.redact(clip(said, 500), self._key)}. "
                "The account is out of credit or over its usage limit: add credit or raise "
                "the limit in OpenAI's billing settings, then retry the job.",
                status_code=429,
                request_id=request_id,
            )
        param = as_str(detail.get("param"))
        return http.error_from_response(
            response,
            vendor_message=reason,
            default_code=_PARAM_CODES.get(param or ""),
            provider=_PROVIDER,
            request_id=request_id,
            key_name=_KEY_NAME,
        )


class _Counted:
    """A sink's `write` that also keeps the body's size and first bytes, for the checks a
    raw PCM stream allows once it is over."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self.size = 0
        self.head = b""

    def __call__(self, chunk: bytes) -> None:
        if len(self.head) < 16:
            self.head += chunk[: 16 - len(self.head)]
        self.size += len(chunk)
        self._write(chunk)


def _empty(status_code: int, request_id: str | None) -> ProviderUnavailable:
    return ProviderUnavailable(
        f"{_PROVIDER} answered HTTP {status_code} with no audio; retrying later may help.",
        code=ErrorCode.EMPTY_RESPONSE,
        status_code=status_code,
        request_id=request_id,
    )


def language_code(options: Mapping[str, Any]) -> str:
    """The job's language tag as OpenAI takes it: ISO-639-1 (`en-US` → en)."""
    return str(options["language"]).replace("_", "-").split("-", 1)[0].lower()


def upload_name(audio: AudioInput) -> str:
    """A file name whose extension names the recording's format: OpenAI reads the format
    from it, and the pipeline's names (`call`, `take.bin`) need not have one.

    The sniffed content type wins over the name, since upload names say what the client
    guessed; UnsupportedAudio when neither gives a format OpenAI takes.
    """
    stem, dot, ext = audio.filename.rpartition("/")[2].rpartition(".")
    if not dot:
        stem, ext = ext, ""
    for media in (audio.content_type, sniff_audio(audio.data[:64]) or ""):
        found = extension_for(media)
        if found in UPLOAD_EXTENSIONS:
            return f"{stem or 'audio'}.{found}"
    if ext.lower() in UPLOAD_EXTENSIONS:
        return f"{stem or 'audio'}.{ext.lower()}"
    raise UnsupportedAudio(
        f"{_PROVIDER} transcribes {', '.join(sorted(UPLOAD_EXTENSIONS))} recordings, and "
        f"{audio.filename!r} ({audio.content_type or 'no type'}) is none of them; convert it "
        "to WAV, FLAC or MP3 and resubmit.",
        code=ErrorCode.UNSUPPORTED_AUDIO,
    )
