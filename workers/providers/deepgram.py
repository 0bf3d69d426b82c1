"""Deepgram adapter (issue 11): Aura TTS over `POST /v1/speak`, pre-recorded STT over `/v1/listen`.

Shapes follow providers.md §3; every call sends `Authorization: Token <key>`.

Models and voices. Deepgram names a TTS voice by one `model` query parameter that is family,
voice and language at once (`aura-2-thalia-en`, Aura-1 `aura-asteria-en`). speechbatch keeps
its two fields: the job `model` is the family (`aura-2`, or `aura` for Aura-1), which is what
the catalog's per-model character limits need (Aura-2 1,000, Aura-1 2,000, providers.md §3.3),
and `voice` is the rest (`thalia-en`); the adapter sends `model=<model>-<voice>`. A voice given
whole (`aura-2-thalia-en` under `aura-2`) is accepted too. The default voice is `thalia-en`,
an Aura-2 voice: an `aura` job has to name one of Aura-1's. A voice the family does not have is
refused before any request with the list of those it has (`deepgram_voices`).

TTS. `/v1/speak` always answers with a chunked body. Over `http` (what `auto` picks for
lines up to 1,000 characters) the whole body is read as a 16-bit WAV (`encoding=linear16&
container=wav`) and checked; over `stream` (or given the pipeline's `AudioSink`) it is raw
PCM (`container=none`) pushed into the sink as each chunk arrives, so a body that breaks off
is a transient failure, never stored audio. Deepgram's `sample_rate` for linear16 is one of
8/16/24/32/48 kHz (the next one up from `options.sample_rate`, else 24 kHz, its default).
`/v1/speak` documents no speed control, so `options.speed` other than 1 is refused.

STT. The recording's bytes go as the body with their own `audio/*` content type (anything
else as `application/octet-stream`, as Deepgram's SDK sends it), with `smart_format`,
`punctuate`, `utterances` and `diarize` on (what a batch transcript wants: formatted words,
speakers, segments) and `language` when the job names one. Words keep `punctuated_word`,
`speaker` and `confidence`; utterances become segments (`transcripts.parse_deepgram`).

Errors. Deepgram's `{err_code, err_msg, request_id}` (also `{category, message, details}` for
JSON errors and `{error_code, err_msg}` on 503) go through `http.error_from_response`: 401
INVALID_AUTH is an auth failure, 402 ASR_PAYMENT_REQUIRED is quota (stops the job), 413 and
422 are text or payload too large, 429 is rate limited, 5xx transient. A 403
INSUFFICIENT_PERMISSIONS means the key is good but the project may not use this model: a
permanent refusal of the item naming the model, not an auth failure (another voice may work).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
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
from workers.providers.base import AudioInput, AudioSink, Synthesis, Transcript
from workers.providers.deepgram_voices import aura_model
from workers.providers.errors import (
    InvalidInput,
    PermanentProviderError,
    ProviderError,
    ProviderUnavailable,
    UnsupportedAudio,
)
from workers.providers.exchange import Limit
from workers.providers.hosted import HostedHttp
from workers.providers.transcripts import as_str, clip, json_object, parse_deepgram

_PROVIDER = "Deepgram"
_KEY_NAME = "DEEPGRAM_API_KEY"
SAMPLE_RATES = (8000, 16000, 24000, 32000, 48000)  # linear16 (providers.md §3.3)
DEFAULT_SAMPLE_RATE = 24000


class DeepgramProvider(HostedHttp):
    """One Deepgram project key behind an injected `httpx.Client`; one request per call."""

    name = "deepgram"
    vendor = _PROVIDER
    _spec = PROVIDERS["deepgram"]

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
        voice_model = aura_model(model, voice or self._spec.default_voice or "")
        http.check_tts_text(text, limit=self._spec.text_limit(model), model=model)
        transport = http.transport_for(self._spec, "tts", options, chars=len(text))
        if float(options.get("speed") or 1.0) != 1.0:
            raise InvalidInput(
                "Deepgram's /v1/speak has no speed control; leave options.speed at 1.",
                code=ErrorCode.INVALID_OPTION,
            )
        asked = int(options.get("sample_rate") or DEFAULT_SAMPLE_RATE)
        rate = next((r for r in SAMPLE_RATES if r >= asked), SAMPLE_RATES[-1])
        params = {
            "model": voice_model,
            "encoding": "linear16",
            "sample_rate": str(rate),
            # Over HTTP a WAV to check whole; streamed, bare PCM for the sink.
            "container": "wav" if transport == "http" else "none",
        }
        if sink is not None and transport == "stream":
            sink.start(rate)
            limit = self._bounds.tts_stream_limit(len(text), rate)
            response = self._speak(params, text, limit, HeaderlessPcm(sink.write))
            return Synthesis(
                b"",
                "audio/L16",
                request_id=_request_id(response),
                status_code=response.status_code,
                streamed=True,
            )
        response = self._speak(params, text, self._bounds.tts_limit(len(text)))
        request_id = _request_id(response)
        audio = response.content
        check_content_type(response.headers.get("content-type", ""), audio, _PROVIDER, request_id)
        if not audio:
            raise ProviderUnavailable(
                f"{_PROVIDER} answered HTTP {response.status_code} with no audio; "
                "retrying later may help.",
                code=ErrorCode.EMPTY_RESPONSE,
                status_code=response.status_code,
                request_id=request_id,
            )
        if audio[:4] != b"RIFF":  # container=none (stream without a sink): bare PCM
            audio = pcm16_to_wav(audio, rate)
        return self._spoken(audio, text, response, request_id)

    def _speak(
        self,
        params: dict[str, str],
        text: str,
        limit: Limit,
        sink: Callable[[bytes], None] | None = None,
    ) -> httpx.Response:
        response = self._post(
            "/v1/speak",
            limit=limit,
            params=params,
            json={"text": text},
            headers={"Accept": "audio/*"},
            sink=sink,
            model=params["model"],
        )
        media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media and not media.startswith("audio/") and media != "application/octet-stream":
            # Streamed, the body already went to the sink; failing here keeps it uncommitted.
            raise bad_output(_PROVIDER, f"{media} instead of audio", _request_id(response))
        return response

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
        params = {
            "model": model,
            "smart_format": "true",
            "punctuate": "true",
            "utterances": "true",
            "diarize": "true",
        }
        if options.get("language"):
            params["language"] = str(options["language"])
        media = audio.content_type.split(";", 1)[0].strip().lower()
        known_s = audio_seconds(audio.data)
        response = self._post(
            "/v1/listen",
            limit=self._bounds.stt_limit(known_s, len(audio.data)),
            params=params,
            content=audio.data,
            headers={
                "Content-Type": media if media.startswith("audio/") else "application/octet-stream"
            },
            model=model,
        )
        request_id = _request_id(response)
        if response.content.lstrip()[:1] == b"<":
            raise bad_output(_PROVIDER, "markup (an HTML page) instead of a transcript", request_id)
        body = json_object(response.content)
        parsed = parse_deepgram(body, model, options, "deepgram") if body is not None else None
        if parsed is None:
            raise ProviderUnavailable(
                f"{_PROVIDER} answered with a transcript in a shape speechbatch does not know "
                f"({http.redact(clip(response.text), self._key)!r}); "
                "retrying later may help, else report it.",
                code=ErrorCode.UNEXPECTED_RESPONSE,
                status_code=response.status_code,
                request_id=request_id,
            )
        parsed = replace(parsed, request_id=parsed.request_id or request_id)
        return check_transcript(parsed, audio_s=known_s, request_id=parsed.request_id)

    def _post(
        self, path: str, *, limit: Limit, headers: dict[str, str], model: str, **kw: Any
    ) -> httpx.Response:
        auth = {"Authorization": f"Token {self._key}", **headers}
        response = self._call(self._base + path, limit=limit, headers=auth, **kw)
        if not response.is_success:
            raise self._error(response, model, tts=path == "/v1/speak")
        return response

    def _error(self, response: httpx.Response, model: str, *, tts: bool) -> ProviderError:
        """Deepgram's error bodies, quoted in one sentence, on the one status mapping."""
        body = json_object(response.content) or {}
        code = next(
            (str(body[k]) for k in ("err_code", "category", "error_code") if body.get(k)), ""
        )
        said = [code] if code else []
        said += [str(body[k]) for k in ("err_msg", "message", "details") if body.get(k)]
        reason = " — ".join(said) if said else (json.dumps(body) if body else response.text)
        reason = http.redact(reason, self._key)
        request_id = _request_id(response) or as_str(body.get("request_id"))
        status = response.status_code
        if status == 403 and code == "INSUFFICIENT_PERMISSIONS":
            return PermanentProviderError(
                f"{_PROVIDER} answered HTTP 403: {reason}. The project of {_KEY_NAME} may not "
                f"use model {model!r}; pick another model or voice, or ask Deepgram for access.",
                status_code=status,
                request_id=request_id,
            )
        default = None
        lowered = reason.lower()
        if status == 400 and "no such model" in lowered:
            default = ErrorCode.UNKNOWN_MODEL
        elif status == 422 and tts:
            default = ErrorCode.TEXT_TOO_LONG  # the Aura per-model limit (providers.md §3.3)
        error = http.error_from_response(
            response,
            vendor_message=reason,
            default_code=default,
            provider=_PROVIDER,
            request_id=request_id,
            key_name=_KEY_NAME,
        )
        if status == 413 and tts and "character" in lowered:
            # The text limit, not the 2 MB body limit: the line needs splitting.
            return InvalidInput(
                error.message, code=ErrorCode.TEXT_TOO_LONG, status_code=413, request_id=request_id
            )
        return error


def _request_id(response: httpx.Response) -> str | None:
    return response.headers.get("dg-request-id") or http.request_id_of(response)


class HeaderlessPcm:
    """Hands bare PCM on to `write`, dropping a WAV header if the answer carries one anyway
    (a `container=none` not honoured would otherwise store its header as a click)."""

    _MAX_HEADER = 4096

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._head = b""
        self._checked = False

    def __call__(self, chunk: bytes) -> None:
        if self._checked:
            self._write(chunk)
            return
        self._head += chunk
        if len(self._head) < 4 and self._head == b"RIFF"[: len(self._head)]:
            return  # too little yet to tell
        if self._head[:4] != b"RIFF":
            self._pass_on(self._head)
            return
        found = self._head.find(b"data", 12)
        if found >= 0 and len(self._head) >= found + 8:
            self._pass_on(self._head[found + 8 :])
        elif len(self._head) > self._MAX_HEADER:
            raise bad_output(_PROVIDER, "a WAV header with no data chunk")

    def _pass_on(self, pcm: bytes) -> None:
        self._checked, self._head = True, b""
        if pcm:
            self._write(pcm)
