"""The Deepgram adapter against httpx.MockTransport: the /v1/speak and /v1/listen requests it
sends, how it reads Aura's whole and streamed audio, Deepgram's transcripts and its error bodies."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.unit.test_streamed_audio import Collected
from workers.audio import pcm16_to_wav
from workers.providers.base import AudioInput, Transcript, Word
from workers.providers.deepgram import DeepgramProvider
from workers.providers.deepgram_voices import AURA_VOICES, aura_model
from workers.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    PermanentProviderError,
    ProviderError,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    UnsupportedAudio,
)
from workers.providers.registry import build_provider

KEY = "dg_test_secret_key_0123456789"
BASE = "http://127.0.0.1:9100/deepgram"
# A tone of 1.5 s at 24 kHz: speech-like enough for the answer checks (not noise, not silence).
PCM = b"".join(
    int(3000 * ((n % 60) - 30) / 30).to_bytes(2, "little", signed=True) for n in range(36000)
)
WAV = pcm16_to_wav(PCM, 24000)
NOISE = random.Random(7).randbytes(48000)
CLIP = AudioInput(data=WAV, filename="call.wav", content_type="audio/wav")
TEXT = "Hello there, how are you?"

Handler = Callable[[httpx.Request], httpx.Response]


def provider(handler: Handler) -> DeepgramProvider:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return DeepgramProvider(client, base_url=BASE, api_key=KEY)


def wav_answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, content=WAV, headers={"content-type": "audio/wav", "dg-request-id": "dg-1"}
    )


def answering(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    return handler


def never_called(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no request expected, got {request.method} {request.url}")


def speak(handler: Handler, text: str = TEXT, **options: Any) -> Any:
    model = options.pop("model", "aura-2")
    voice = options.pop("voice", None)
    sink = options.pop("sink", None)
    return provider(handler).synthesize(text, model=model, voice=voice, options=options, sink=sink)


def listen(handler: Handler, model: str = "nova-3", **options: Any) -> Transcript:
    return provider(handler).transcribe(CLIP, model=model, options=options)


def chunked(body: bytes, split: int = 4097, media: str = "audio/l16;rate=24000") -> Handler:
    """A handler answering `body` in `split`-byte pieces, as /v1/speak's chunked body."""

    def pieces() -> Iterator[bytes]:
        for n in range(0, len(body), split):
            yield body[n : n + split]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=pieces(), headers={"content-type": media})

    return handler


# --- TTS over HTTP ----------------------------------------------------------------------------


def test_http_request_path_auth_query_and_body() -> None:
    """HTTP TTS posts {text} to /v1/speak with Token auth, the voice as Deepgram's model and a
    24 kHz linear16 WAV asked for, and returns the WAV with its dg-request-id."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return wav_answer(request)

    result = speak(handler)
    (request,) = seen
    assert request.url.path == "/deepgram/v1/speak"
    assert request.headers["authorization"] == f"Token {KEY}"
    assert dict(request.url.params) == {
        "model": "aura-2-thalia-en",
        "encoding": "linear16",
        "sample_rate": "24000",
        "container": "wav",
    }
    assert json.loads(request.content) == {"text": TEXT}
    assert (result.audio, result.content_type, result.request_id) == (WAV, "audio/wav", "dg-1")


@pytest.mark.parametrize(
    ("model", "voice", "sent"),
    [
        ("aura-2", "zeus-en", "aura-2-zeus-en"),
        ("aura-2", "aura-2-Celeste-es", "aura-2-celeste-es"),
        ("aura", "asteria-en", "aura-asteria-en"),
    ],
)
def test_model_and_voice_become_deepgrams_model_parameter(
    model: str, voice: str, sent: str
) -> None:
    """The job's family and voice (short or whole, any case) name one Aura voice model."""
    models: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        models.append(request.url.params["model"])
        return wav_answer(request)

    speak(handler, model=model, voice=voice)
    assert models == [sent]


@pytest.mark.parametrize(("asked", "sent"), [(8000, 8000), (22050, 24000), (44100, 48000)])
def test_sample_rate_moves_up_to_a_linear16_rate(asked: int, sent: int) -> None:
    """options.sample_rate becomes the next rate Deepgram offers for linear16 (48 kHz at most)."""
    rates: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        rates.append(request.url.params["sample_rate"])
        return httpx.Response(200, content=pcm16_to_wav(PCM, sent))

    speak(handler, sample_rate=asked)
    assert rates == [str(sent)]


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (httpx.Response(200, content=b""), "empty_response"),
        (httpx.Response(200, text="<html>oops</html>"), "bad_provider_output"),
        (httpx.Response(200, json={"audio": "nope"}), "bad_provider_output"),
        (httpx.Response(200, content=pcm16_to_wav(NOISE, 24000)), "bad_provider_output"),
    ],
)
def test_http_answers_that_are_not_speech_are_transient(
    response: httpx.Response, code: str
) -> None:
    """An empty body, HTML, JSON or noise on a 200 is a retryable failure, never audio."""
    with pytest.raises(ProviderUnavailable) as excinfo:
        speak(lambda r: response)
    assert excinfo.value.code == code


# --- TTS streamed -------------------------------------------------------------------------------


def test_stream_pushes_bare_pcm_into_the_sink_as_it_arrives() -> None:
    """transport=stream asks for container=none and hands every chunk of the body to the sink
    at the rate asked; the Synthesis holds no audio and says it was streamed."""
    seen: list[httpx.Request] = []
    answer = chunked(PCM)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        response = answer(request)
        response.headers["dg-request-id"] = "dg-s"
        return response

    sink = Collected()
    result = speak(handler, transport="stream", sample_rate=24000, sink=sink)
    assert seen[0].url.params["container"] == "none"
    assert (sink.rate, b"".join(sink.chunks), len(sink.chunks)) == (24000, PCM, 18)
    assert (result.streamed, result.audio, result.content_type) == (True, b"", "audio/L16")
    assert result.request_id == "dg-s"


def test_a_stream_that_breaks_off_is_transient_after_pushing_what_came() -> None:
    """A chunked body cut mid-way is ProviderUnavailable (so the caller discards what the sink
    stored), after the sink got the part that arrived."""

    def broken() -> Iterator[bytes]:
        yield PCM[:4000]
        raise httpx.RemoteProtocolError("peer closed connection (incomplete chunked read)")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=broken(), headers={"content-type": "audio/l16"})

    sink = Collected()
    with pytest.raises(ProviderUnavailable) as excinfo:
        speak(handler, transport="stream", sink=sink)
    assert excinfo.value.code == "provider_unavailable"
    assert sink.chunks == [PCM[:4000]]


def test_a_wav_header_on_a_stream_never_reaches_the_sink() -> None:
    """If Deepgram sends a WAV although container=none was asked, its header is dropped, even
    when it arrives split over chunks."""
    sink = Collected()
    speak(chunked(WAV, split=3), transport="stream", sink=sink)
    assert b"".join(sink.chunks) == PCM


def test_a_stream_labelled_as_something_else_is_refused() -> None:
    """A 200 on a stream that is not audio (an HTML page) is bad_provider_output."""
    sink = Collected()
    with pytest.raises(ProviderUnavailable) as excinfo:
        speak(chunked(b"<html>gateway</html>", media="text/html"), transport="stream", sink=sink)
    assert excinfo.value.code == "bad_provider_output"
    assert "text/html" in excinfo.value.message


def test_stream_without_a_sink_and_http_with_one_answer_whole() -> None:
    """Streamed without a sink, the bare PCM comes back as one WAV; over HTTP a sink is left
    unused; a long Aura-1 line on auto streams into its sink."""
    result = speak(chunked(PCM), transport="stream", sample_rate=24000)
    assert result.audio == WAV and not result.streamed
    sink = Collected()
    assert not speak(wav_answer, sink=sink).streamed
    assert sink.rate is None and sink.chunks == []
    long_pcm = PCM * 60  # 90 s for 1,500 characters
    result = speak(chunked(long_pcm), "word " * 300, model="aura", voice="luna-en", sink=sink)
    assert result.streamed and b"".join(sink.chunks) == long_pcm


# --- pre-flight checks --------------------------------------------------------------------------


def test_pre_flight_refusals_make_no_request() -> None:
    """Unknown models and voices, text over the family's limit, a speed, a transport Deepgram
    lacks and an empty recording all fail at once."""
    cases: list[tuple[Callable[[], object], type[ProviderError], str]] = [
        (lambda: speak(never_called, model="aura-3"), InvalidInput, "unknown_model"),
        (lambda: speak(never_called, voice="nobody-en"), InvalidInput, "unknown_voice"),
        (lambda: speak(never_called, model="aura"), InvalidInput, "unknown_voice"),
        (lambda: speak(never_called, text="a" * 1001), InvalidInput, "text_too_long"),
        (lambda: speak(never_called, text="a" * 2001, model="aura", voice="zeus-en"),
         InvalidInput, "text_too_long"),
        (lambda: speak(never_called, text="   "), InvalidInput, "empty_text"),
        (lambda: speak(never_called, speed=1.5), InvalidInput, "invalid_option"),
        (lambda: speak(never_called, transport="websocket"), InvalidInput, "invalid_option"),
        (lambda: listen(never_called, model="aura-2"), InvalidInput, "unknown_model"),
        (lambda: listen(never_called, transport="stream"), InvalidInput, "invalid_option"),
        (lambda: provider(never_called).transcribe(
            AudioInput(b"", "x.wav", "audio/wav"), model="nova-3", options={}),
         UnsupportedAudio, "empty_audio"),
    ]  # fmt: skip
    for call, error_class, code in cases:
        with pytest.raises(error_class) as excinfo:
            call()
        assert excinfo.value.code == code


def test_an_unknown_voice_is_refused_naming_the_voices_there_are() -> None:
    """The refusal lists the family's voices, so the user can pick one."""
    with pytest.raises(InvalidInput) as excinfo:
        aura_model("aura", "thalia-en")
    assert "'thalia-en'" in excinfo.value.message
    assert all(voice in excinfo.value.message for voice in AURA_VOICES["aura"])
    assert aura_model("aura-2", "thalia-en") == "aura-2-thalia-en"


# --- Deepgram's error bodies --------------------------------------------------------------------


def dg(code: str, message: str) -> dict[str, str]:
    return {"err_code": code, "err_msg": message, "request_id": "req-err"}


INVALID_JSON = {
    "category": "INVALID_JSON",
    "message": "Invalid JSON submitted.",
    "details": "Json deserialize error: missing field `text`",
    "request_id": "req-err",
}
UNAVAILABLE = {"error_code": "Service Unavailable", "err_msg": "Please try again later",
               "request_id": "req-err"}  # fmt: skip
NO_MODEL = "Bad Request: No such model/version combination found."
# status, body, the error class and code it becomes, words the message must quote.
ERROR_BODIES: list[tuple[int, dict[str, Any], type[ProviderError], str, str]] = [
    (400, dg("Bad Request", NO_MODEL), InvalidInput, "unknown_model", "No such model"),
    (400, INVALID_JSON, InvalidInput, "invalid_input", "missing field `text`"),
    (401, dg("INVALID_AUTH", "Invalid credentials."), AuthenticationFailed,
     "provider_auth_failed", "DEEPGRAM_API_KEY"),
    (401, dg("INSUFFICIENT_PERMISSIONS", "User does not have sufficient permissions."),
     AuthenticationFailed, "provider_auth_failed", "INSUFFICIENT_PERMISSIONS"),
    (402, dg("ASR_PAYMENT_REQUIRED", "Project does not have enough credits."), QuotaExceeded,
     "provider_quota_exceeded", "ASR_PAYMENT_REQUIRED"),
    (403, dg("INSUFFICIENT_PERMISSIONS", "Project does not have access to the requested model."),
     PermanentProviderError, "provider_rejected", "may not use model"),
    (413, dg("PAYLOAD_TOO_LARGE", "Payload size exceeds limit of 2 MB."), InvalidInput,
     "payload_too_large", "2 MB"),
    (429, dg("TOO_MANY_REQUESTS", "Too many requests. Please try again later"), RateLimited,
     "rate_limited", "TOO_MANY_REQUESTS"),
    (429, dg("Too Many Requests", "Please try again later."), RateLimited, "rate_limited",
     "retry after 3 s"),
    (500, dg("INTERNAL_SERVER_ERROR", "Oops."), ProviderUnavailable, "provider_unavailable",
     "Oops."),
    (503, UNAVAILABLE, ProviderUnavailable, "provider_unavailable", "Service Unavailable"),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body", "error_class", "code", "quoted"), ERROR_BODIES)
def test_documented_error_bodies_map_onto_the_error_tree(
    status: int, body: dict[str, Any], error_class: type[ProviderError], code: str, quoted: str
) -> None:
    """Deepgram's err_code, category and error_code bodies become the documented classes and
    codes on both routes, quoting Deepgram's words and keeping its request id."""
    for call in (speak, listen):
        with pytest.raises(ProviderError) as excinfo:
            call(answering(status, body, {"Retry-After": "3"}))
        error = excinfo.value
        assert (type(error), error.code, error.status_code) == (error_class, code, status)
        assert quoted in error.message
        assert error.request_id == "req-err"
    if isinstance(error, RateLimited):
        assert error.retry_after == 3.0


def test_a_403_on_the_model_names_it() -> None:
    """INSUFFICIENT_PERMISSIONS on 403 names the Deepgram model refused (the voice for TTS)."""
    body = dg("INSUFFICIENT_PERMISSIONS", "Project does not have access to the requested model.")
    with pytest.raises(PermanentProviderError) as excinfo:
        speak(answering(403, body), voice="orion-en")
    assert "'aura-2-orion-en'" in excinfo.value.message
    with pytest.raises(PermanentProviderError) as excinfo:
        listen(answering(403, body), model="whisper-large")
    assert "'whisper-large'" in excinfo.value.message


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (413, dg("Payload Too Large", "Input text exceeds maximum character limit of 2400.")),
        (422, dg("UNPROCESSABLE_ENTITY", "Failed to handle request.")),
    ],
)
def test_tts_text_over_deepgrams_limit_is_text_too_long(status: int, body: dict[str, Any]) -> None:
    """The 413 character-limit body and the 422 of the per-model limit are text_too_long: the
    line needs splitting (a 422 on STT stays invalid_input)."""
    with pytest.raises(InvalidInput) as excinfo:
        speak(answering(status, body))
    assert (excinfo.value.code, excinfo.value.status_code) == ("text_too_long", status)
    if status == 422:
        with pytest.raises(InvalidInput) as excinfo:
            listen(answering(status, body))
        assert excinfo.value.code == "invalid_input"


def test_the_key_never_reaches_a_message() -> None:
    """An error body echoing the Authorization header has the key redacted on both routes."""

    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json=dg("Bad Request", request.headers["authorization"]))

    for call in (speak, listen):
        with pytest.raises(ProviderError) as excinfo:
            call(echo)
        assert KEY not in excinfo.value.message
        assert "[redacted]" in excinfo.value.message


# --- pre-recorded STT ---------------------------------------------------------------------------


def word(text: str, start: float, end: float, speaker: int, punctuated: str) -> dict[str, Any]:
    return {
        "word": text,
        "start": start,
        "end": end,
        "confidence": 0.9,
        "punctuated_word": punctuated,
        "speaker": speaker,
        "speaker_confidence": 0.8,
    }


WORDS = [
    word("hello", 0.1, 0.4, 0, "Hello"),
    word("world", 0.45, 0.9, 0, "world."),
    word("how", 1.1, 1.2, 1, "How"),
    word("are", 1.22, 1.3, 1, "are"),
    word("you", 1.32, 1.45, 1, "you?"),
]
LISTEN: dict[str, Any] = {
    "metadata": {
        "transaction_key": "deprecated",
        "request_id": "meta-1",
        "sha256": "ab",
        "created": "2026-12-01T00:00:00Z",
        "duration": 1.5,
        "channels": 1,
        "models": ["m"],
        "model_info": {"m": {"name": "general-nova-3", "version": "1", "arch": "nova-3"}},
    },
    "results": {
        "channels": [
            {
                "alternatives": [
                    {"transcript": "Hello world. How are you?", "confidence": 0.95, "words": WORDS}
                ]
            }
        ],
        "utterances": [
            {"start": 0.1, "end": 0.9, "confidence": 0.9, "channel": 0, "speaker": 0,
             "transcript": "Hello world.", "words": WORDS[:2], "id": "u1"},
            {"start": 1.1, "end": 1.45, "confidence": 0.9, "channel": 0, "speaker": 1,
             "transcript": "How are you?", "words": WORDS[2:], "id": "u2"},
        ],
    },
}  # fmt: skip


def test_listen_sends_the_bytes_with_their_type_and_the_batch_features() -> None:
    """STT posts the recording to /v1/listen as audio/wav with Token auth, the model, the
    features a batch transcript needs and the job's language; other types go as octet-stream."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=LISTEN)

    listen(handler, model="nova-2", language="es-419")
    odd = AudioInput(data=WAV, filename="call.bin", content_type="binary/octet-stream")
    provider(handler).transcribe(odd, model="whisper-large", options={})
    first, second = seen
    assert first.url.path == "/deepgram/v1/listen"
    assert first.headers["authorization"] == f"Token {KEY}"
    assert first.headers["content-type"] == "audio/wav"
    assert first.content == WAV
    assert dict(first.url.params) == {
        "model": "nova-2",
        "smart_format": "true",
        "punctuate": "true",
        "utterances": "true",
        "diarize": "true",
        "language": "es-419",
    }
    assert second.headers["content-type"] == "application/octet-stream"
    assert "language" not in second.url.params and second.url.params["model"] == "whisper-large"


def test_words_speakers_and_utterances_are_normalised() -> None:
    """Punctuated words keep their times, confidence and speaker; utterances become segments;
    the duration and request id come from the metadata."""
    result = listen(answering(200, LISTEN, {"dg-request-id": "hdr-1"}))
    assert (result.provider, result.model, result.text) == (
        "deepgram",
        "nova-3",
        "Hello world. How are you?",
    )
    assert result.words[1] == Word("world.", 0.45, 0.9, 0.9, "0")
    assert [w.speaker for w in result.words] == ["0", "0", "1", "1", "1"]
    assert [(s.text, s.speaker, s.start, s.end) for s in result.segments] == [
        ("Hello world.", "0", 0.1, 0.9),
        ("How are you?", "1", 1.1, 1.45),
    ]
    assert (result.duration_s, result.request_id) == (1.5, "meta-1")


def test_without_utterances_segments_come_from_the_words() -> None:
    """An answer without utterances is segmented at sentence ends; the header id stands in
    for a missing metadata request id."""
    body = json.loads(json.dumps(LISTEN))
    del body["results"]["utterances"]
    del body["metadata"]["request_id"]
    result = listen(answering(200, body, {"dg-request-id": "hdr-1"}))
    assert [s.text for s in result.segments] == ["Hello world.", "How are you?"]
    assert result.request_id == "hdr-1"


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (httpx.Response(200, json={"request_id": "cb-1"}), "unexpected_response"),
        (httpx.Response(200, json={"results": {"channels": "x"}}), "unexpected_response"),
        (httpx.Response(200, text="not json at all"), "unexpected_response"),
        (httpx.Response(200, text="<html>gateway</html>"), "bad_provider_output"),
    ],
)
def test_unknown_transcript_shapes_are_transient(response: httpx.Response, code: str) -> None:
    """A callback acknowledgement, a wrong shape, plain text or HTML is never a transcript."""
    with pytest.raises(ProviderUnavailable) as excinfo:
        listen(lambda r: response)
    assert excinfo.value.code == code


def test_transcript_times_that_do_not_fit_are_refused() -> None:
    """A word ending long after the 1.5 s recording is bad_provider_output."""
    body = json.loads(json.dumps(LISTEN))
    body["results"]["channels"][0]["alternatives"][0]["words"][-1]["end"] = 900.0
    with pytest.raises(ProviderUnavailable) as excinfo:
        listen(answering(200, body))
    assert excinfo.value.code == "bad_provider_output"


# --- the registry -------------------------------------------------------------------------------


def test_build_provider_deepgram_sends_the_stripped_key() -> None:
    """The registry builds the Deepgram adapter, which sends the key as a Token without padding."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["authorization"])
        return wav_answer(request)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    built = build_provider("deepgram", client=client, base_url=BASE, api_key=f" {KEY}\n")
    built.synthesize(TEXT, model="aura-2", voice=None, options={})
    assert (built.name, sent) == ("deepgram", [f"Token {KEY}"])


def test_build_provider_deepgram_needs_a_key() -> None:
    """A missing DEEPGRAM_API_KEY is missing_api_key naming the setting, before any call."""
    client = httpx.Client(transport=httpx.MockTransport(never_called))
    with pytest.raises(AuthenticationFailed) as excinfo:
        build_provider("deepgram", client=client, base_url=BASE, api_key=" ")
    assert excinfo.value.code == "missing_api_key"
    assert "DEEPGRAM_API_KEY" in excinfo.value.message
