"""The Smallest adapter against httpx.MockTransport: the requests it sends over HTTP and SSE,
and how it reads Lightning's audio, Pulse's transcripts and Smallest's error bodies."""

from __future__ import annotations

import base64
import io
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import soundfile as sf

from workers.audio import pcm16_to_wav
from workers.providers.base import AudioInput, Transcript, Word
from workers.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    PermanentProviderError,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from workers.providers.exchange import Bounds
from workers.providers.registry import build_provider
from workers.providers.smallest import SmallestProvider, language_code

KEY = "sk_smallest_test_secret_0123"
BASE = "http://127.0.0.1:9100/smallest"
# A tone of 1.5 s at 24 kHz: speech-like enough for the answer checks (not noise, not silence).
PCM = b"".join(
    int(3000 * ((n % 60) - 30) / 30).to_bytes(2, "little", signed=True) for n in range(36000)
)
WAV = pcm16_to_wav(PCM, 24000)
NOISE = random.Random(7).randbytes(48000)
CLIP = AudioInput(data=WAV, filename="call.wav", content_type="audio/wav")
TEXT = "Hello there, how are you?"

Handler = Callable[[httpx.Request], httpx.Response]


def provider(handler: Handler, bounds: Bounds | None = None) -> SmallestProvider:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return SmallestProvider(client, base_url=BASE, api_key=KEY, bounds=bounds)


def answering(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    return handler


def never_called(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no request expected, got {request.method} {request.url}")


def speak(handler: Handler, text: str = TEXT, **options: Any) -> Any:
    model = options.pop("model", "lightning_v3.1")
    return provider(handler).synthesize(text, model=model, voice=None, options=options)


def listen(handler: Handler, model: str = "pulse", **options: Any) -> Transcript:
    return provider(handler).transcribe(CLIP, model=model, options=options)


def audio_frame(pcm: bytes) -> bytes:
    data = {"audio": base64.b64encode(pcm).decode(), "done": False, "status": "206"}
    return b"event: audio\ndata: " + json.dumps(data).encode() + b"\n\n"


DONE = b'data: {"status":"200","done":true}\n\n'


def sse(*parts: bytes, split: int = 7) -> Handler:
    """A handler answering an event stream of `parts`, delivered in `split`-byte pieces."""
    body = b"".join(parts)

    def pieces() -> Iterator[bytes]:
        for n in range(0, len(body), split):
            yield body[n : n + split]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=pieces(), headers={"content-type": "text/event-stream"})

    return handler


# --- TTS over HTTP ---------------------------------------------------------------------------


def test_http_request_path_auth_accept_and_body() -> None:
    """HTTP TTS posts the documented JSON to /waves/v1/tts, Bearer auth, Accept: audio/wav."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, content=WAV, headers={"content-type": "audio/wav", "x-request-id": "req-1"}
        )

    result = speak(handler)
    (request,) = seen
    assert request.url.raw_path == b"/smallest/waves/v1/tts"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["accept"] == "audio/wav"
    assert json.loads(request.content) == {
        "text": TEXT,
        "voice_id": "magnus",
        "model": "lightning_v3.1",
        "sample_rate": 44100,
        "speed": 1.0,
        "output_format": "wav",
    }
    assert (result.audio, result.content_type, result.request_id) == (WAV, "audio/wav", "req-1")


@pytest.mark.parametrize(("asked", "sent"), [(8000, 8000), (22050, 24000), (48000, 44100)])
def test_sample_rate_moves_up_to_a_lightning_rate(asked: int, sent: int) -> None:
    """options.sample_rate becomes the next rate Lightning offers (44.1 kHz at most)."""
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, content=pcm16_to_wav(PCM, sent))

    speak(handler, sample_rate=asked, language="hi-IN", speed=1.5, model="lightning_v3.1_pro")
    assert bodies[0]["sample_rate"] == sent
    assert (bodies[0]["language"], bodies[0]["speed"]) == ("hi", 1.5)
    assert bodies[0]["model"] == "lightning_v3.1_pro"


def test_raw_pcm_answer_is_wrapped_in_a_wav() -> None:
    """Headerless PCM (Lightning's default format) comes back as a WAV at the rate asked for."""
    result = speak(
        lambda r: httpx.Response(200, content=PCM, headers={"content-type": "audio/wav"}),
        sample_rate=24000,
    )
    info = sf.info(io.BytesIO(result.audio))
    assert (result.content_type, info.samplerate, info.frames) == ("audio/wav", 24000, 36000)


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (httpx.Response(200, content=b""), "empty_response"),
        (httpx.Response(200, text="<html>oops</html>"), "bad_provider_output"),
        (httpx.Response(200, json={"audio": "nope"}), "bad_provider_output"),
        (httpx.Response(200, content=NOISE), "bad_provider_output"),
    ],
)
def test_http_answers_that_are_not_speech_are_transient(
    response: httpx.Response, code: str
) -> None:
    """An empty body, HTML, JSON or noise on a 200 is a retryable failure, never audio."""
    with pytest.raises(ProviderUnavailable) as excinfo:
        speak(lambda r: response)
    assert excinfo.value.code == code


# --- TTS over SSE ----------------------------------------------------------------------------


def test_stream_posts_to_live_and_assembles_the_frames() -> None:
    """transport=stream posts output_format pcm to /waves/v1/tts/live and joins the base64
    frames, whatever the chunk boundaries, into one WAV."""
    seen: list[httpx.Request] = []
    answer = sse(audio_frame(PCM[:20000]), b": keep-alive\n\n", audio_frame(PCM[20000:]), DONE)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    result = speak(handler, transport="stream", sample_rate=24000)
    assert seen[0].url.raw_path == b"/smallest/waves/v1/tts/live"
    assert seen[0].headers["accept"] == "text/event-stream"
    assert json.loads(seen[0].content)["output_format"] == "pcm"
    assert result.audio == WAV


def test_stream_without_its_done_frame_is_never_success() -> None:
    """A stream that ends cleanly but without done:true is transient bad_provider_output."""
    with pytest.raises(ProviderUnavailable) as excinfo:
        speak(sse(audio_frame(PCM)), transport="stream", sample_rate=24000)
    assert excinfo.value.code == "bad_provider_output"
    assert "done" in excinfo.value.message


def test_a_stream_that_breaks_off_is_transient() -> None:
    """A connection lost mid-stream is ProviderUnavailable, worth a retry."""

    def broken() -> Iterator[bytes]:
        yield audio_frame(PCM[:1000])
        raise httpx.RemoteProtocolError("peer closed connection (incomplete chunked read)")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=broken(), headers={"content-type": "text/event-stream"})

    with pytest.raises(ProviderUnavailable) as excinfo:
        speak(handler, transport="stream")
    assert excinfo.value.code == "provider_unavailable"


@pytest.mark.parametrize(
    ("frame", "error_class", "code"),
    [
        ({"status": "429", "error": "TooManyRequests"}, RateLimited, "rate_limited"),
        (
            {"status": "500", "error": "InternalServerError"},
            ProviderUnavailable,
            "provider_unavailable",
        ),
        ({"status": "400", "message": "bad voice"}, InvalidInput, "invalid_input"),
        ({"error": "worker crashed"}, ProviderUnavailable, "provider_unavailable"),
    ],
)
def test_an_error_frame_maps_by_its_status(
    frame: dict[str, Any], error_class: type[ProviderError], code: str
) -> None:
    """An error inside the stream fails the call as its status would over plain HTTP."""
    answer = sse(audio_frame(PCM[:100]), b"data: " + json.dumps(frame).encode() + b"\n\n", DONE)
    with pytest.raises(ProviderError) as excinfo:
        speak(answer, transport="stream")
    assert type(excinfo.value) is error_class
    assert excinfo.value.code == code


@pytest.mark.parametrize(
    "parts",
    [
        (b"data: not json\n\n", DONE),
        (b'data: {"audio": "***", "done": false}\n\n', DONE),
        (audio_frame(NOISE), DONE),
    ],
)
def test_garbled_frames_are_bad_provider_output(parts: tuple[bytes, ...]) -> None:
    """A frame that is not JSON, audio that is not base64, or noise is never stored."""
    with pytest.raises(ProviderUnavailable) as excinfo:
        speak(sse(*parts), transport="stream")
    assert excinfo.value.code == "bad_provider_output"


def test_stream_labelled_as_something_else_is_refused() -> None:
    """A 200 on the SSE route that is not text/event-stream (an HTML page) is refused."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, text="<html>gateway</html>", headers={"content-type": "text/html"}
        )

    with pytest.raises(ProviderUnavailable) as excinfo:
        speak(handler, transport="stream")
    assert excinfo.value.code == "bad_provider_output"
    assert "text/html" in excinfo.value.message


def test_a_stream_over_the_size_cap_is_cut_off() -> None:
    """An event stream longer than SPEECHBATCH_MAX_TTS_RESPONSE_BYTES fails as too large."""
    frames = [audio_frame(PCM)] * 10
    small = Bounds(max_tts_bytes=200_000)
    client = httpx.Client(transport=httpx.MockTransport(sse(*frames, DONE, split=65536)))
    smallest = SmallestProvider(client, base_url=BASE, api_key=KEY, bounds=small)
    with pytest.raises(PermanentProviderError) as excinfo:
        smallest.synthesize(
            TEXT, model="lightning_v3.1", voice=None, options={"transport": "stream"}
        )
    assert excinfo.value.code == "provider_response_too_large"


# --- pre-flight checks ------------------------------------------------------------------------


def test_pre_flight_refusals_make_no_request() -> None:
    """Unknown models, text over 250 characters and transports Smallest lacks (websocket for
    STT) fail at once."""
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: speak(never_called, model="lightning-v2"), "unknown_model"),
        (lambda: speak(never_called, text="a" * 251), "text_too_long"),
        (lambda: listen(never_called, transport="websocket"), "invalid_option"),
        (lambda: listen(never_called, model="lightning_v3.1"), "unknown_model"),
        (lambda: listen(never_called, transport="stream"), "invalid_option"),
        (lambda: listen(never_called, model="pulse-pro", language="de"), "unsupported_language"),
    ]
    for call, code in cases:
        with pytest.raises(InvalidInput) as excinfo:
            call()
        assert excinfo.value.code == code


# --- Smallest's error bodies ------------------------------------------------------------------


RETIRED = {
    "status": "error",
    "error_code": "MODEL_DEPRECATED",
    "message": "This model is retired. Please migrate to lightning-v3.1",
    "recommended_endpoint": "/waves/v1/tts",
}
# status, Smallest's body, the error class and code it becomes, words the message must quote.
ERROR_BODIES: list[tuple[int, dict[str, Any], type[ProviderError], str, str]] = [
    (400, {"error": "InvalidRequest", "message": "No 'text'."}, InvalidInput, "invalid_input",
     "No 'text'."),
    (401, {"error": "Unauthorized", "message": "Bad token."}, AuthenticationFailed,
     "provider_auth_failed", "SMALLEST_API_KEY"),
    (410, RETIRED, InvalidInput, "model_deprecated", "recommended endpoint: /waves/v1/tts"),
    (413, {"error": "File too large", "request_id": "p-1"}, InvalidInput, "payload_too_large",
     "File too large"),
    (429, {"error": "Rate limit exceeded", "request_id": "p-2"}, RateLimited, "rate_limited",
     "Rate limit exceeded"),
    (500, {"error": "InternalServerError", "message": "Oops."}, ProviderUnavailable,
     "provider_unavailable", "Oops."),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body", "error_class", "code", "quoted"), ERROR_BODIES)
def test_documented_error_bodies_map_onto_the_error_tree(
    status: int, body: dict[str, Any], error_class: type[ProviderError], code: str, quoted: str
) -> None:
    """Smallest's TTS and Pulse error bodies become the documented classes and codes, quoting
    its own words (and naming the replacement of a retired model)."""
    for call in (speak, listen):
        with pytest.raises(ProviderError) as excinfo:
            call(answering(status, body, {"Retry-After": "3"}))
        error = excinfo.value
        assert (type(error), error.code, error.status_code) == (error_class, code, status)
        assert quoted in error.message
    if "request_id" in body:
        assert error.request_id == body["request_id"]


def test_the_key_never_reaches_a_message() -> None:
    """An error body or frame echoing the Authorization header has the key redacted."""

    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": request.headers["authorization"]})

    frame = b'data: {"status": "500", "error": "bad key ' + KEY.encode() + b'"}\n\n'
    for call in (
        lambda: speak(echo),
        lambda: listen(echo),
        lambda: speak(sse(frame), transport="stream"),
    ):
        with pytest.raises(ProviderError) as excinfo:
            call()
        assert KEY not in excinfo.value.message
        assert "[redacted]" in excinfo.value.message


# --- Pulse STT --------------------------------------------------------------------------------

PULSE: dict[str, Any] = {
    "status": "success",
    "transcription": "Hello world. How are you?",
    "words": [
        {
            "word": "Hello",
            "start": 0.1,
            "end": 0.4,
            "confidence": 0.99,
            "speaker": 0,
            "speaker_confidence": 0.9,
        },
        {"word": "world.", "start": 0.45, "end": 0.9, "confidence": 0.98, "speaker": 0},
        {"word": "How", "start": 1.1, "end": 1.2, "confidence": 0.9, "speaker": 1},
        {"word": "are", "start": 1.22, "end": 1.3, "confidence": 0.9, "speaker": 1},
        {"word": "you?", "start": 1.32, "end": 1.45, "confidence": 0.9, "speaker": 1},
    ],
    "utterances": [
        {"text": "Hello world.", "start": 0.1, "end": 0.9, "speaker": 0},
        {"text": "How are you?", "start": 1.1, "end": 1.45, "speaker": 1},
    ],
    "metadata": {"duration": 1.5, "fileSize": 72044},
}


def test_pulse_request_is_raw_bytes_with_query_options() -> None:
    """Pulse gets the recording's bytes as octet-stream, with model, language, word timestamps
    and diarization as query parameters."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=PULSE, headers={"x-request-id": "stt-1"})

    result = listen(handler, language="en-GB")
    (request,) = seen
    assert request.url.path == "/smallest/waves/v1/stt/"
    assert dict(request.url.params) == {
        "model": "pulse",
        "language": "en",
        "word_timestamps": "true",
        "diarize": "true",
    }
    assert request.headers["content-type"] == "application/octet-stream"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.read() == WAV
    assert result.request_id == "stt-1"


def test_pulse_words_utterances_and_speakers_are_normalised() -> None:
    """Pulse's words, utterances and integer speakers become the one transcript schema."""
    result = listen(lambda r: httpx.Response(200, json=PULSE))
    assert (result.provider, result.model, result.language) == ("smallest", "pulse", "en")
    assert result.text == "Hello world. How are you?"
    assert result.duration_s == 1.5
    assert result.words[0] == Word(text="Hello", start=0.1, end=0.4, confidence=0.99, speaker="0")
    assert [(s.text, s.start, s.end, s.speaker) for s in result.segments] == [
        ("Hello world.", 0.1, 0.9, "0"),
        ("How are you?", 1.1, 1.45, "1"),
    ]


def test_pulse_pro_answer_without_utterances() -> None:
    """Pulse Pro (no diarize sent) answers words but no utterances: segments come from words,
    and its own language and request_id are kept."""
    body = {
        "status": "success",
        "transcription": "Hello world.",
        "language": "en",
        "request_id": "pro-7",
        "totalBytes": 72044,
        "words": [
            {"word": "Hello", "start": 0.1, "end": 0.4, "confidence": 0.99},
            {"word": "world.", "start": 0.45, "end": 0.9, "confidence": 0.98},
        ],
        "metadata": {"duration": 1.5, "processing_time_ms": 40, "rtfx": 37.5, "num_chunks": 1},
    }
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=body)

    result = listen(handler, model="pulse-pro")
    assert "diarize" not in seen[0].url.params
    assert result.request_id == "pro-7"
    assert [(s.text, s.speaker) for s in result.segments] == [("Hello world.", None)]


def test_pulse_without_timestamps_keeps_text_and_duration() -> None:
    """An answer with empty words and utterances still gives its text and metadata duration."""
    body = {**PULSE, "words": [], "utterances": []}
    result = listen(lambda r: httpx.Response(200, json=body))
    assert (result.text, result.duration_s, result.words, result.segments) == (
        "Hello world. How are you?",
        1.5,
        [],
        [],
    )


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, json={"status": "processing", "request_id": "later"}),
        httpx.Response(200, json={"text": "whisper shaped"}),
        httpx.Response(200, json=["hello"]),
        httpx.Response(200, text="hello world"),
    ],
)
def test_unknown_transcript_shapes_are_unexpected_response(response: httpx.Response) -> None:
    """A 200 that is not a finished Pulse answer is ProviderUnavailable(unexpected_response)."""
    with pytest.raises(ProviderUnavailable) as excinfo:
        listen(lambda r: response)
    assert excinfo.value.code == "unexpected_response"


def test_pulse_times_that_do_not_fit_are_refused() -> None:
    """Word times going backwards or past the audio are bad_provider_output, never stored."""
    backwards = json.loads(json.dumps(PULSE))
    backwards["words"][3]["start"] = 0.0
    too_long = {**PULSE, "metadata": {"duration": 999.0}}
    for body in (backwards, too_long):
        with pytest.raises(ProviderUnavailable) as excinfo:
            listen(answering(200, body))
        assert excinfo.value.code == "bad_provider_output"


# --- build_provider and helpers ---------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "  "])
def test_build_provider_smallest_needs_a_key(key: str | None) -> None:
    """A missing SMALLEST_API_KEY is missing_api_key naming the setting, before any call."""
    client = httpx.Client(transport=httpx.MockTransport(never_called))
    with pytest.raises(AuthenticationFailed) as excinfo:
        build_provider("smallest", client=client, base_url=BASE, api_key=key)
    assert excinfo.value.code == "missing_api_key"
    assert "SMALLEST_API_KEY" in excinfo.value.message


def test_build_provider_smallest_sends_the_stripped_key() -> None:
    """The registry builds the Smallest adapter, which sends the key without its padding."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["authorization"])
        return httpx.Response(200, content=WAV)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    built = build_provider("smallest", client=client, base_url=BASE, api_key=f" {KEY}\n")
    built.synthesize(TEXT, model="lightning_v3.1", voice=None, options={"sample_rate": 24000})
    assert (built.name, sent) == ("smallest", [f"Bearer {KEY}"])


@pytest.mark.parametrize(("tag", "code"), [("en", "en"), ("en-US", "en"), ("PT_br", "pt")])
def test_language_tags_become_smallest_codes(tag: str, code: str) -> None:
    """A BCP 47 tag is sent as its lower-case primary language code."""
    assert language_code({"language": tag}) == code


def test_an_unreadable_recording_is_timed_by_its_size() -> None:
    """A recording whose header gives no length gets a deadline from its size at 32 kbit/s."""
    bounds = Bounds(timeout_s=60, stt_base_s=15, stt_per_audio_s=0.5)
    assert bounds.stt_limit(None, 40_000).deadline_s == 15 + 0.5 * 10
    assert bounds.stt_limit(4.0, 40_000).deadline_s == 15 + 0.5 * 4
    assert bounds.stt_limit(None, 10**9).deadline_s == 60
