"""The OpenAI adapter against httpx.MockTransport: the speech and transcription requests it
sends, how it reads WAV and streamed PCM, whisper-1 and gpt-4o transcripts, and OpenAI's
error bodies."""

from __future__ import annotations

import email
import json
import random
import struct
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from workers.audio import pcm16_to_wav
from workers.providers.base import AudioInput, Segment, Transcript, Word
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
from workers.providers.exchange import Bounds
from workers.providers.openai import MAX_UPLOAD_BYTES, OpenAIProvider, upload_name
from workers.providers.registry import build_provider

KEY = "sk-proj-openai_test_secret_0123"
BASE = "http://127.0.0.1:9100/openai"
# A tone of 1.5 s at 24 kHz: speech-like enough for the answer checks (not noise, not silence).
PCM = b"".join(
    int(3000 * ((n % 60) - 30) / 30).to_bytes(2, "little", signed=True) for n in range(36000)
)
WAV = pcm16_to_wav(PCM, 24000)
NOISE = random.Random(7).randbytes(48000)
CLIP = AudioInput(data=WAV, filename="call.wav", content_type="audio/wav")
TEXT = "Hello there, how are you?"

Handler = Callable[[httpx.Request], httpx.Response]


class RecordingSink:
    """An AudioSink keeping what it was given."""

    def __init__(self) -> None:
        self.rate: int | None = None
        self.pcm = bytearray()

    def start(self, sample_rate: int) -> None:
        self.rate = sample_rate

    def write(self, pcm: bytes) -> None:
        self.pcm += pcm


def provider(handler: Handler, bounds: Bounds | None = None) -> OpenAIProvider:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return OpenAIProvider(client, base_url=BASE, api_key=KEY, bounds=bounds)


def answering(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    return handler


def never_called(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no request expected, got {request.method} {request.url}")


def speak(
    handler: Handler,
    text: str = TEXT,
    *,
    sink: RecordingSink | None = None,
    voice: str | None = None,
    **options: Any,
) -> Any:
    model = options.pop("model", "tts-1")
    return provider(handler).synthesize(text, model=model, voice=voice, options=options, sink=sink)


def listen(
    handler: Handler, model: str = "whisper-1", clip: AudioInput = CLIP, **options: Any
) -> Transcript:
    return provider(handler).transcribe(clip, model=model, options=options)


def pcm_stream(body: bytes, split: int = 4801, media: str = "application/octet-stream") -> Handler:
    """A handler answering `body` as a chunked body in `split`-byte pieces."""

    def pieces() -> Iterator[bytes]:
        for n in range(0, len(body), split):
            yield body[n : n + split]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=pieces(), headers={"content-type": media})

    return handler


def form_fields(request: httpx.Request) -> dict[str, list[tuple[str | None, bytes]]]:
    """Each multipart field's (file name, bytes), in order, by field name."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = email.message_from_bytes(head + request.read())
    fields: dict[str, list[tuple[str | None, bytes]]] = {}
    for part in message.walk():
        if part.is_multipart():
            continue
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        fields.setdefault(str(name), []).append((part.get_filename(), payload))
    return fields


# --- TTS over HTTP ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"])
def test_http_request_path_auth_and_body_per_model(model: str) -> None:
    """HTTP TTS posts {model, input, voice, response_format: wav, speed} to /v1/audio/speech
    with Bearer auth, and returns the checked WAV with OpenAI's x-request-id."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, content=WAV, headers={"content-type": "audio/wav", "x-request-id": "req_1"}
        )

    result = speak(handler, model=model)
    (request,) = seen
    assert (request.method, request.url.raw_path) == ("POST", b"/openai/v1/audio/speech")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(request.content) == {
        "model": model,
        "input": TEXT,
        "voice": "alloy",
        "response_format": "wav",
        "speed": 1.0,
    }
    assert (result.audio, result.content_type, result.request_id) == (WAV, "audio/wav", "req_1")
    assert result.streamed is False


def test_voice_and_speed_are_sent_as_asked() -> None:
    """The item's voice and options.speed reach the body as given."""
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, content=WAV)

    speak(handler, voice="cedar", speed=1.5, model="gpt-4o-mini-tts")
    assert (bodies[0]["voice"], bodies[0]["speed"]) == ("cedar", 1.5)


def test_a_wav_whose_header_leaves_its_length_open_is_accepted() -> None:
    """A WAV made while streaming (RIFF and data sizes 0xFFFFFFFF) is read by its bytes."""
    fmt = struct.pack("<HHIIHH", 1, 1, 24000, 48000, 2, 16)
    unknown = struct.pack("<I", 0xFFFFFFFF)
    streamed = b"RIFF" + unknown + b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + unknown
    result = speak(lambda r: httpx.Response(200, content=streamed + PCM))
    assert result.audio == streamed + PCM


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (httpx.Response(200, content=b""), "empty_response"),
        (httpx.Response(200, text="<html>oops</html>"), "bad_provider_output"),
        (httpx.Response(200, json={"error": None}), "bad_provider_output"),
        (httpx.Response(200, content=NOISE), "bad_provider_output"),
        (httpx.Response(200, content=PCM[:4800]), "bad_provider_output"),  # not a WAV
    ],
)
def test_http_answers_that_are_not_speech_are_transient(
    response: httpx.Response, code: str
) -> None:
    """An empty body, HTML, JSON, noise or headerless bytes on a 200 is retryable, never audio."""
    with pytest.raises(ProviderUnavailable) as excinfo:
        speak(lambda r: response)
    assert excinfo.value.code == code


# --- TTS streamed ----------------------------------------------------------------------------


def test_stream_pushes_the_pcm_into_the_sink_as_it_arrives() -> None:
    """transport=stream asks for response_format pcm, starts the sink at 24 kHz and hands it
    every byte of the chunked body, returning a streamed Synthesis with no audio of its own."""
    seen: list[httpx.Request] = []
    answer = pcm_stream(PCM)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        response = answer(request)
        response.headers["x-request-id"] = "req_s"
        return response

    sink = RecordingSink()
    result = speak(handler, sink=sink, transport="stream")
    assert json.loads(seen[0].content)["response_format"] == "pcm"
    assert (sink.rate, bytes(sink.pcm)) == (24000, PCM)
    assert (result.audio, result.content_type, result.streamed) == (b"", "audio/L16", True)
    assert result.request_id == "req_s"


def test_auto_streams_a_long_line_and_keeps_short_ones_on_http() -> None:
    """With a sink, `auto` streams a line over 1,000 characters as PCM and asks for a WAV for
    a short one; without a sink even `stream` reads a whole WAV."""
    formats: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        formats.append(json.loads(request.content)["response_format"])
        return httpx.Response(200, content=PCM if formats[-1] == "pcm" else WAV)

    long_line = ("A long line of narration goes on. " * 31)[:1001]
    speak(handler, long_line, sink=RecordingSink())  # the sink, not the adapter, judges length
    speak(handler, sink=RecordingSink())
    speak(handler, transport="stream")
    assert formats == ["pcm", "wav", "wav"]


def test_a_stream_that_breaks_off_is_transient() -> None:
    """A connection lost mid-body is ProviderUnavailable, worth a retry."""

    def broken() -> Iterator[bytes]:
        yield PCM[:4800]
        raise httpx.RemoteProtocolError("peer closed connection (incomplete chunked read)")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=broken())

    sink = RecordingSink()
    with pytest.raises(ProviderUnavailable) as excinfo:
        speak(handler, sink=sink, transport="stream")
    assert excinfo.value.code == "provider_unavailable"
    assert bytes(sink.pcm) == PCM[:4800]


@pytest.mark.parametrize(
    ("handler", "code"),
    [
        (pcm_stream(b'{"error": {"message": "odd"}}', media="application/json"),
         "bad_provider_output"),
        (pcm_stream(b"<html>gateway</html>", media="text/html"), "bad_provider_output"),
        (pcm_stream(b"<html>gateway</html>", media=""), "bad_provider_output"),
        (pcm_stream(WAV, media="audio/wav"), "bad_provider_output"),
        (pcm_stream(b""), "empty_response"),
    ],
)  # fmt: skip
def test_a_stream_that_is_not_raw_pcm_is_refused(handler: Handler, code: str) -> None:
    """A 200 stream labelled JSON or HTML, starting with markup or a WAV header, or empty is
    a transient failure (the pipeline then stores nothing)."""
    with pytest.raises(ProviderUnavailable) as excinfo:
        speak(handler, sink=RecordingSink(), transport="stream")
    assert excinfo.value.code == code


def test_a_stream_is_held_to_its_texts_longest_reading() -> None:
    """A streamed body far longer than the text could take to say is cut off as too large."""
    endless = pcm_stream(bytes(24000 * 2 * 60), split=65536)  # a minute for five words
    with pytest.raises(PermanentProviderError) as excinfo:
        speak(endless, "Five words and no more.", sink=RecordingSink(), transport="stream")
    assert excinfo.value.code == "provider_response_too_large"


# --- pre-flight checks ------------------------------------------------------------------------


def test_pre_flight_refusals_make_no_request() -> None:
    """Unknown models and voices, text over 4,096 characters, an STT transport OpenAI lacks,
    an empty recording and one over 25 MiB fail at once, with their own codes."""
    huge = AudioInput(b"RIFF" + bytes(MAX_UPLOAD_BYTES), "long.wav", "audio/wav")
    cases: list[tuple[Callable[[], object], type[ProviderError], str]] = [
        (lambda: speak(never_called, model="tts-2"), InvalidInput, "unknown_model"),
        (lambda: speak(never_called, voice="robot"), InvalidInput, "unknown_voice"),
        (lambda: speak(never_called, "a" * 4097), InvalidInput, "text_too_long"),
        (lambda: speak(never_called, "   "), InvalidInput, "empty_text"),
        (lambda: speak(never_called, transport="websocket"), InvalidInput, "invalid_option"),
        (lambda: listen(never_called, model="tts-1"), InvalidInput, "unknown_model"),
        (lambda: listen(never_called, transport="stream"), InvalidInput, "invalid_option"),
        (lambda: listen(never_called, clip=AudioInput(b"", "a.wav", "audio/wav")),
         UnsupportedAudio, "empty_audio"),
        (lambda: listen(never_called, clip=huge), InvalidInput, "payload_too_large"),
        (lambda: listen(never_called, clip=AudioInput(b"\x00" * 64, "a.aiff", "")),
         UnsupportedAudio, "unsupported_audio"),
    ]  # fmt: skip
    for call, error_class, code in cases:
        with pytest.raises(error_class) as excinfo:
            call()
        assert excinfo.value.code == code
    with pytest.raises(InvalidInput) as too_big:
        listen(never_called, clip=huge)
    assert "25 MiB" in too_big.value.message and "split" in too_big.value.message


@pytest.mark.parametrize(
    ("filename", "content_type", "data", "sent"),
    [
        ("call", "audio/wav", WAV, "call.wav"),
        ("take.bin", "audio/flac", b"fLaC", "take.flac"),
        ("uploads/abc/voice.MP3", "", b"ID3\x04", "voice.mp3"),
        ("meeting.webm", "application/octet-stream", b"\x00" * 8, "meeting.webm"),
    ],
)
def test_the_upload_name_carries_the_recordings_format(
    filename: str, content_type: str, data: bytes, sent: str
) -> None:
    """The file part's name ends in the extension of the sniffed format (else the name's own,
    when OpenAI takes it), since OpenAI reads the format from the name."""
    assert upload_name(AudioInput(data, filename, content_type)) == sent


# --- STT requests and answers -----------------------------------------------------------------

VERBOSE: dict[str, Any] = {
    "task": "transcribe",
    "language": "english",
    "duration": 1.5,
    "text": "Hello world. How are you?",
    "words": [
        {"word": "Hello", "start": 0.1, "end": 0.4},
        {"word": "world.", "start": 0.45, "end": 0.9},
        {"word": "How", "start": 1.1, "end": 1.2},
        {"word": "are", "start": 1.22, "end": 1.3},
        {"word": "you?", "start": 1.32, "end": 1.45},
    ],
    "segments": [
        {"id": 0, "seek": 0, "start": 0.1, "end": 0.9, "text": " Hello world.", "tokens": [1],
         "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.1,
         "no_speech_prob": 0.01},
        {"id": 1, "seek": 0, "start": 1.1, "end": 1.45, "text": " How are you?", "tokens": [2],
         "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.1,
         "no_speech_prob": 0.01},
    ],
    "usage": {"type": "duration", "seconds": 2},
}  # fmt: skip


def test_whisper_request_asks_for_timed_words_and_segments() -> None:
    """whisper-1 gets a multipart POST to /v1/audio/transcriptions: the file under a name with
    its extension, model, verbose_json, word and segment granularities, the ISO-639-1 language."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=VERBOSE, headers={"x-request-id": "req_t"})

    result = listen(handler, language="en-GB")
    (request,) = seen
    assert request.url.raw_path == b"/openai/v1/audio/transcriptions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    fields = form_fields(request)
    assert fields["file"] == [("call.wav", WAV)]
    assert fields["model"] == [(None, b"whisper-1")]
    assert fields["response_format"] == [(None, b"verbose_json")]
    assert fields["timestamp_granularities[]"] == [(None, b"word"), (None, b"segment")]
    assert fields["language"] == [(None, b"en")]
    assert result.request_id == "req_t"


def test_verbose_json_is_normalised_into_words_and_segments() -> None:
    """whisper-1's words and segments become the one transcript schema; OpenAI gives no word
    confidence or speaker, so those stay None, and its language name becomes a code."""
    result = listen(answering(200, VERBOSE))
    assert (result.provider, result.model, result.language) == ("openai", "whisper-1", "en")
    assert (result.text, result.duration_s) == ("Hello world. How are you?", 1.5)
    assert result.words[0] == Word(text="Hello", start=0.1, end=0.4, confidence=None, speaker=None)
    assert result.segments == [
        Segment(start=0.1, end=0.9, text="Hello world."),
        Segment(start=1.1, end=1.45, text="How are you?"),
    ]


def test_words_without_segments_are_grouped_and_the_asked_language_wins() -> None:
    """An answer with words but no segments gets segments grouped at sentence ends, and a
    language the job asked for is kept over the one OpenAI names."""
    body = {k: v for k, v in VERBOSE.items() if k not in ("segments", "duration")}
    result = listen(answering(200, body), language="en-US")
    assert [s.text for s in result.segments] == ["Hello world.", "How are you?"]
    assert result.language == "en-US"
    assert result.duration_s == 2.0  # usage.seconds, when the answer gives no duration


@pytest.mark.parametrize("model", ["gpt-4o-transcribe", "gpt-4o-mini-transcribe"])
def test_gpt4o_models_get_json_and_keep_text_without_timings(model: str) -> None:
    """The gpt-4o models are asked for plain json with no granularities, and their transcript
    has the text, the recording's own length and no words or segments made up."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        usage = {"type": "tokens", "input_tokens": 15, "output_tokens": 6, "total_tokens": 21}
        return httpx.Response(200, json={"text": "Hello world.", "usage": usage})

    result = listen(handler, model=model)
    fields = form_fields(seen[0])
    assert fields["response_format"] == [(None, b"json")]
    assert "timestamp_granularities[]" not in fields
    assert (result.text, result.model, result.words, result.segments) == (
        "Hello world.",
        model,
        [],
        [],
    )
    assert result.duration_s == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (httpx.Response(200, json={"transcript": "elsewhere"}), "unexpected_response"),
        (httpx.Response(200, json=["hello"]), "unexpected_response"),
        (httpx.Response(200, text="hello world"), "unexpected_response"),
        (httpx.Response(200, text="<html>gateway</html>"), "bad_provider_output"),
        (httpx.Response(200, json={**VERBOSE, "duration": 999.0}), "bad_provider_output"),
    ],
)
def test_transcripts_of_the_wrong_shape_or_times_are_transient(
    response: httpx.Response, code: str
) -> None:
    """A 200 that is not a transcript, or whose times do not fit the audio, is never stored."""
    with pytest.raises(ProviderUnavailable) as excinfo:
        listen(lambda r: response)
    assert excinfo.value.code == code


# --- OpenAI's error bodies --------------------------------------------------------------------


def openai_error(message: str, kind: str, code: str | None, param: str | None = None) -> Any:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


QUOTA = openai_error(
    "You exceeded your current quota, please check your plan and billing details.",
    "insufficient_quota",
    "insufficient_quota",
)
# status, body, headers, the error class and code it becomes, words the message must quote.
ERROR_BODIES: list[tuple[int, Any, dict[str, str], type[ProviderError], str, str]] = [
    (400, openai_error("Invalid value for 'speed'.", "invalid_request_error", None, "speed"),
     {}, InvalidInput, "invalid_input", "Invalid value for 'speed'."),
    (400, openai_error("Invalid voice.", "invalid_request_error", "invalid_value", "voice"),
     {}, InvalidInput, "unknown_voice", "Invalid voice."),
    (401, openai_error("Incorrect API key provided.", "invalid_request_error",
                       "invalid_api_key"), {}, AuthenticationFailed, "provider_auth_failed",
     "OPENAI_API_KEY"),
    (404, openai_error("The model `x` does not exist.", "invalid_request_error",
                       "model_not_found"), {}, InvalidInput, "unknown_model", "does not exist"),
    (413, openai_error("Maximum content size limit (26214400) exceeded.",
                       "invalid_request_error", None), {}, InvalidInput, "payload_too_large",
     "26214400"),
    (429, QUOTA, {}, QuotaExceeded, "provider_quota_exceeded", "exceeded your current quota"),
    (429, openai_error("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
     {"Retry-After": "3"}, RateLimited, "rate_limited", "Rate limit reached"),
    (500, openai_error("The server had an error.", "server_error", None), {},
     ProviderUnavailable, "provider_unavailable", "The server had an error."),
    (503, openai_error("The engine is currently overloaded.", "server_error", None), {},
     ProviderUnavailable, "provider_unavailable", "overloaded"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body", "headers", "error_class", "code", "quoted"), ERROR_BODIES
)
def test_documented_error_bodies_map_onto_the_error_tree(
    status: int,
    body: Any,
    headers: dict[str, str],
    error_class: type[ProviderError],
    code: str,
    quoted: str,
) -> None:
    """OpenAI's error bodies on speech and transcription become the documented classes and
    codes, quoting OpenAI's own words and keeping its x-request-id."""
    for call in (speak, listen):
        answer = answering(status, body, {**headers, "x-request-id": "req_e"})
        with pytest.raises(ProviderError) as excinfo:
            call(answer)
        error = excinfo.value
        assert (type(error), error.code, error.status_code) == (error_class, code, status)
        assert quoted in error.message
        assert error.request_id == "req_e"


def test_quota_is_permanent_while_a_rate_limit_waits_its_retry_after() -> None:
    """insufficient_quota is a permanent refusal that says to add credit; any other 429 is a
    RateLimited honouring Retry-After or OpenAI's retry-after-ms."""
    with pytest.raises(QuotaExceeded) as quota:
        speak(answering(429, QUOTA, {"Retry-After": "20"}))
    assert isinstance(quota.value, PermanentProviderError)
    assert "add credit" in quota.value.message
    rate = openai_error("Rate limit reached.", "requests", "rate_limit_exceeded")
    for headers, wait in (({"Retry-After": "3"}, 3.0), ({"retry-after-ms": "1500"}, 1.5)):
        with pytest.raises(RateLimited) as limited:
            listen(answering(429, rate, headers))
        assert limited.value.retry_after == wait
    with pytest.raises(RateLimited) as untimed:
        speak(answering(429, {"error": {"message": "Slow down."}}))
    assert untimed.value.retry_after is None


def test_an_error_that_is_not_openais_shape_is_still_quoted() -> None:
    """A gateway's plain-text 502 becomes a transient error quoting its text."""
    with pytest.raises(ProviderUnavailable) as excinfo:
        speak(lambda r: httpx.Response(502, text="Bad gateway from the edge"))
    assert "Bad gateway from the edge" in excinfo.value.message


def test_the_key_never_reaches_a_message() -> None:
    """An error body or transcript echoing the Authorization header has the key redacted."""

    def echo(request: httpx.Request) -> httpx.Response:
        said = request.headers["authorization"]
        return httpx.Response(401, json=openai_error(said, "invalid_request_error", None))

    def odd_transcript(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"echo": request.headers["authorization"]})

    def quota_echo(request: httpx.Request) -> httpx.Response:
        said = f"Quota gone for {request.headers['authorization']}"
        return httpx.Response(429, json=openai_error(said, "insufficient_quota", None))

    for call in (
        lambda: speak(echo),
        lambda: listen(echo),
        lambda: listen(odd_transcript),
        lambda: speak(quota_echo),
    ):
        with pytest.raises(ProviderError) as excinfo:
            call()
        assert KEY not in excinfo.value.message
        assert "[redacted]" in excinfo.value.message


# --- build_provider ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "  "])
def test_build_provider_openai_needs_a_key(key: str | None) -> None:
    """A missing OPENAI_API_KEY is missing_api_key naming the setting, before any call."""
    client = httpx.Client(transport=httpx.MockTransport(never_called))
    with pytest.raises(AuthenticationFailed) as excinfo:
        build_provider("openai", client=client, base_url=BASE, api_key=key)
    assert excinfo.value.code == "missing_api_key"
    assert "OPENAI_API_KEY" in excinfo.value.message


def test_build_provider_openai_sends_the_stripped_key() -> None:
    """The registry builds the OpenAI adapter, which sends the key without its padding."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["authorization"])
        return httpx.Response(200, content=WAV)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    built = build_provider("openai", client=client, base_url=BASE, api_key=f" {KEY}\n")
    built.synthesize(TEXT, model="tts-1", voice=None, options={})
    assert (built.name, sent) == ("openai", [f"Bearer {KEY}"])
