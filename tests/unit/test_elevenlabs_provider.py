"""The ElevenLabs adapter against httpx.MockTransport: the requests it sends for whole and
streamed TTS and for Scribe, how it reads their answers, and how ElevenLabs' error bodies
map onto the error tree."""

from __future__ import annotations

import io
import json
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import soundfile as sf

from jobs.catalog import PROVIDERS
from workers.audio import pcm16_to_wav
from workers.providers.base import AudioInput, Transcript
from workers.providers.elevenlabs import ElevenLabsProvider
from workers.providers.elevenlabs_errors import CONCURRENCY_WAIT_S
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
from workers.providers.registry import build_provider

KEY = "sk_elevenlabs_test_secret_0123"
BASE = "http://127.0.0.1:9100/elevenlabs"
VOICE = "21m00Tcm4TlvDq8ikWAM"
# A tone of 1.5 s at 24 kHz: speech-like enough for the answer checks (not noise, not silence).
PCM = b"".join(
    int(3000 * ((n % 60) - 30) / 30).to_bytes(2, "little", signed=True) for n in range(36000)
)
WAV = pcm16_to_wav(PCM, 24000)
NOISE = random.Random(7).randbytes(48000)
CLIP = AudioInput(data=WAV, filename="call.wav", content_type="audio/wav")
TEXT = "Hello there, how are you?"

Handler = Callable[[httpx.Request], httpx.Response]


class Sink:
    """An AudioSink that keeps what it is given."""

    def __init__(self) -> None:
        self.rate: int | None = None
        self.pieces: list[bytes] = []

    def start(self, sample_rate: int) -> None:
        self.rate = sample_rate

    def write(self, pcm: bytes) -> None:
        self.pieces.append(pcm)


def provider(handler: Handler, bounds: Bounds | None = None) -> ElevenLabsProvider:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return ElevenLabsProvider(client, base_url=BASE, api_key=KEY, bounds=bounds)


def answering(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    return handler


def pcm_answer(pcm: bytes = PCM, content_type: str = "audio/mpeg") -> Handler:
    return lambda request: httpx.Response(200, content=pcm, headers={"content-type": content_type})


def never_called(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no request expected, got {request.method} {request.url}")


def speak(handler: Handler, text: str = TEXT, **options: Any) -> Any:
    model = options.pop("model", "eleven_multilingual_v2")
    voice = options.pop("voice", None)
    sink = options.pop("sink", None)
    return provider(handler).synthesize(text, model=model, voice=voice, options=options, sink=sink)


def listen(handler: Handler, model: str = "scribe_v1", **options: Any) -> Transcript:
    return provider(handler).transcribe(CLIP, model=model, options=options)


def chunked(body: bytes, split: int = 999) -> Handler:
    """A handler answering `body` as audio in `split`-byte pieces (odd, so samples split)."""

    def pieces() -> Iterator[bytes]:
        for n in range(0, len(body), split):
            yield body[n : n + split]

    return lambda request: httpx.Response(
        200, content=pieces(), headers={"content-type": "audio/pcm", "request-id": "s-1"}
    )


# --- TTS over HTTP ---------------------------------------------------------------------------


def test_http_request_path_auth_query_and_body() -> None:
    """HTTP TTS posts {text, model_id} to /v1/text-to-speech/{voice} with xi-api-key and
    output_format pcm_24000, and wraps the PCM it gets in a 24 kHz WAV."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=PCM, headers={"request-id": "req-1"})

    result = speak(handler, voice=VOICE)
    (request,) = seen
    assert (
        request.url.raw_path
        == f"/elevenlabs/v1/text-to-speech/{VOICE}?output_format=pcm_24000".encode()
    )
    assert request.headers["xi-api-key"] == KEY
    assert "authorization" not in request.headers
    assert json.loads(request.content) == {"text": TEXT, "model_id": "eleven_multilingual_v2"}
    assert (result.audio, result.content_type, result.request_id) == (WAV, "audio/wav", "req-1")


@pytest.mark.parametrize(
    ("model", "language_sent"),
    [("eleven_flash_v2_5", "pt"), ("eleven_turbo_v2_5", "pt"), ("eleven_multilingual_v2", None),
     ("eleven_v3", None)],
)  # fmt: skip
def test_language_code_goes_only_to_models_that_take_it(
    model: str, language_sent: str | None
) -> None:
    """options.language is sent as language_code to Flash/Turbo v2.5 only (the others error
    on it and detect the language), and options.speed as voice_settings.speed."""
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, content=PCM)

    speak(handler, model=model, language="pt-BR", speed=1.1)
    assert bodies[0].get("language_code") == language_sent
    assert bodies[0]["voice_settings"] == {"speed": 1.1}
    assert bodies[0]["model_id"] == model


@pytest.mark.parametrize(
    ("asked", "sent"),
    [(8000, 8000), (11025, 16000), (22050, 22050), (32000, 44100), (48000, 48000)],
)
def test_sample_rate_moves_up_to_a_rate_elevenlabs_offers(asked: int, sent: int) -> None:
    """options.sample_rate becomes the next pcm_<rate> ElevenLabs offers, and the WAV says so."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=PCM[: 2 * sent * 2])  # 2 s at that rate

    result = speak(handler, sample_rate=asked)
    assert seen[0].url.params["output_format"] == f"pcm_{sent}"
    assert sf.info(io.BytesIO(result.audio)).samplerate == sent


def test_voice_ids_stay_intact_in_the_path() -> None:
    """A voice id with _ and - goes into the path byte for byte, not re-encoded."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=PCM)

    speak(handler, voice="My_Voice-07")
    assert seen[0].url.raw_path.startswith(b"/elevenlabs/v1/text-to-speech/My_Voice-07?")


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (httpx.Response(200, content=b""), "empty_response"),
        (httpx.Response(200, text="<html>oops</html>", headers={"content-type": "audio/mpeg"}),
         "bad_provider_output"),
        (httpx.Response(200, json={"audio": "nope"}), "bad_provider_output"),
        (httpx.Response(200, content=NOISE), "bad_provider_output"),
    ],
)  # fmt: skip
def test_http_answers_that_are_not_speech_are_transient(
    response: httpx.Response, code: str
) -> None:
    """An empty body, an HTML page labelled audio, JSON or noise on a 200 is a retryable
    failure, never audio."""
    with pytest.raises(ProviderUnavailable) as excinfo:
        speak(lambda r: response)
    assert excinfo.value.code == code


def test_pcm_that_happens_to_start_with_a_bracket_is_still_audio() -> None:
    """Raw PCM whose first byte is "<" (a sample, not markup) is accepted and wrapped."""
    pcm = b"<\x00" + PCM[2:]
    result = speak(pcm_answer(pcm))
    assert result.audio == pcm16_to_wav(pcm, 24000)


# --- TTS over /stream -------------------------------------------------------------------------


def test_stream_pushes_the_pcm_into_the_sink_as_it_arrives() -> None:
    """transport=stream posts to /stream with output_format pcm_<rate>, starts the sink at that
    rate and hands it every chunk as it comes (odd pieces included), holding none itself."""
    seen: list[httpx.Request] = []
    answer = chunked(PCM)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    sink = Sink()
    result = speak(handler, transport="stream", sample_rate=16000, sink=sink, voice=VOICE)
    assert seen[0].url.path == f"/elevenlabs/v1/text-to-speech/{VOICE}/stream"
    assert seen[0].url.params["output_format"] == "pcm_16000"
    assert sink.rate == 16000
    assert len(sink.pieces) > 1 and b"".join(sink.pieces) == PCM
    assert (result.audio, result.content_type, result.streamed) == (b"", "audio/L16", True)
    assert result.request_id == "s-1"


def test_stream_without_a_sink_reads_the_whole_answer() -> None:
    """transport=stream with no sink reads the chunked body whole and returns a checked WAV."""
    result = speak(chunked(PCM), transport="stream")
    assert (result.audio, result.streamed) == (WAV, False)


def test_long_lines_stream_on_auto() -> None:
    """`auto` picks HTTP up to 1,000 characters and /stream beyond."""
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200, content=PCM * 10)

    speak(handler, text="word " * 20, sink=Sink())
    speak(handler, text="word " * 300, sink=Sink())
    assert [p.endswith("/stream") for p in paths] == [False, True]


def test_a_stream_that_breaks_off_is_transient() -> None:
    """A connection lost mid-stream is ProviderUnavailable, worth a retry."""

    def broken() -> Iterator[bytes]:
        yield PCM[:1000]
        raise httpx.RemoteProtocolError("peer closed connection (incomplete chunked read)")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=broken(), headers={"content-type": "audio/pcm"})

    for sink in (Sink(), None):
        with pytest.raises(ProviderUnavailable) as excinfo:
            speak(handler, transport="stream", sink=sink)
        assert excinfo.value.code == "provider_unavailable"


def test_a_stream_labelled_as_a_page_is_refused() -> None:
    """A 200 on /stream labelled text/html is bad_provider_output once the body is over."""

    def page(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>x</html>", headers={"content-type": "text/html"})

    with pytest.raises(ProviderUnavailable) as excinfo:
        speak(page, transport="stream", sink=Sink())
    assert excinfo.value.code == "bad_provider_output"
    assert "text/html" in excinfo.value.message


def test_a_stream_longer_than_its_text_could_take_is_cut_off() -> None:
    """A stream past the text's longest plausible reading fails as too large."""
    sink = Sink()
    with pytest.raises(PermanentProviderError) as excinfo:
        speak(chunked(bytes(2_000_000), split=65536), text="Hi.", transport="stream", sink=sink)
    assert excinfo.value.code == "provider_response_too_large"


# --- pre-flight checks ------------------------------------------------------------------------


def test_pre_flight_refusals_make_no_request() -> None:
    """Unknown models, text over the model's limit, voice ids that could change the path,
    speeds ElevenLabs lacks and transports it lacks fail at once."""
    cases: list[tuple[Callable[[], object], type[ProviderError], str]] = [
        (lambda: speak(never_called, model="eleven_monolingual_v9"), InvalidInput, "unknown_model"),
        (lambda: speak(never_called, model="eleven_v3", text="a" * 3001), InvalidInput,
         "text_too_long"),
        (lambda: speak(never_called, text="a" * 10001), InvalidInput, "text_too_long"),
        (lambda: speak(never_called, voice="../../v1/user"), InvalidInput, "unknown_voice"),
        (lambda: speak(never_called, voice="Rachel?x=1"), InvalidInput, "unknown_voice"),
        (lambda: speak(never_called, speed=2.0), InvalidInput, "invalid_option"),
        (lambda: speak(never_called, transport="websocket"), InvalidInput, "invalid_option"),
        (lambda: speak(never_called, text="   "), InvalidInput, "empty_text"),
        (lambda: listen(never_called, model="eleven_v3"), InvalidInput, "unknown_model"),
        (lambda: listen(never_called, transport="stream"), InvalidInput, "invalid_option"),
        (lambda: provider(never_called).transcribe(
            AudioInput(b"", "x.wav", "audio/wav"), model="scribe_v1", options={}),
         UnsupportedAudio, "empty_audio"),
    ]  # fmt: skip
    for call, error_class, code in cases:
        with pytest.raises(error_class) as excinfo:
            call()
        assert excinfo.value.code == code


def test_flash_takes_forty_thousand_characters() -> None:
    """The per-model limits come from the catalog: 40,000 characters pass on Flash v2.5."""
    assert PROVIDERS["elevenlabs"].text_limit("eleven_flash_v2_5") == 40000
    sent: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(len(json.loads(request.content)["text"]))
        return httpx.Response(200, content=PCM * 400)

    speak(handler, text="a" * 40000, model="eleven_flash_v2_5", sink=Sink())
    assert sent == [40000]


# --- ElevenLabs' error bodies -----------------------------------------------------------------


def current(status: str, message: str, kind: str = "validation_error") -> dict[str, Any]:
    """A body in the current shape, `status` mirroring `code`."""
    return {"detail": {"type": kind, "code": status, "message": message, "status": status,
                       "request_id": "el-9"}}  # fmt: skip


def legacy(status: str, message: str) -> dict[str, Any]:
    return {"detail": {"status": status, "message": message}}


# status, body, the error class and code it becomes, words the message must quote.
ERROR_BODIES: list[tuple[int, dict[str, Any], type[ProviderError], str, str]] = [
    (401, current("invalid_api_key", "Invalid API key", "authentication_error"),
     AuthenticationFailed, "provider_auth_failed", "ELEVENLABS_API_KEY"),
    (401, legacy("invalid_api_key", "Invalid API key"), AuthenticationFailed,
     "provider_auth_failed", "Invalid API key"),
    (401, legacy("quota_exceeded", "You have insufficient quota"), QuotaExceeded,
     "provider_quota_exceeded", "insufficient quota"),
    (401, current("quota_exceeded", "This request exceeds your quota of 10000."), QuotaExceeded,
     "provider_quota_exceeded", "credits"),
    (402, legacy("payment_required", "Payment required"), QuotaExceeded,
     "provider_quota_exceeded", "Payment required"),
    (403, legacy("missing_permissions", "The key lacks text_to_speech"), AuthenticationFailed,
     "provider_auth_failed", "lacks text_to_speech"),
    (400, legacy("max_character_limit_exceeded", "This request's text has 627 characters"),
     InvalidInput, "text_too_long", "627 characters"),
    (400, legacy("voice_not_found", "Voice not found"), InvalidInput, "unknown_voice",
     "voice id"),
    (404, current("voice_not_found", "A voice with the voice_id x was not found.", "not_found"),
     InvalidInput, "unknown_voice", "My Voices"),
    (404, current("model_not_found", "A model with model ID x does not exist.", "not_found"),
     InvalidInput, "unknown_model", "model ID x"),
    (422, {"detail": [{"loc": ["body", "text"], "msg": "Field required", "type": "missing"}]},
     InvalidInput, "invalid_input", "body.text: Field required"),
    (400, current("invalid_parameters", "The 'keyterms' parameter is only supported with "
                  "the 'scribe_v2' model."), InvalidInput, "invalid_input", "keyterms"),
    (413, current("file_too_large", "The file is too large.", "invalid_request"), InvalidInput,
     "payload_too_large", "too large"),
    (429, legacy("system_busy", "The system is experiencing heavy traffic"),
     ProviderUnavailable, "provider_unavailable", "heavy traffic"),
    (500, {"detail": "Internal Server Error"}, ProviderUnavailable, "provider_unavailable",
     "Internal Server Error"),
    (503, current("service_unavailable", "Try again later.", "service_error"),
     ProviderUnavailable, "provider_unavailable", "Try again later"),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body", "error_class", "code", "quoted"), ERROR_BODIES)
def test_documented_error_bodies_map_onto_the_error_tree(
    status: int, body: dict[str, Any], error_class: type[ProviderError], code: str, quoted: str
) -> None:
    """ElevenLabs' current, legacy, plain-string and FastAPI bodies become the documented
    classes and codes on TTS and STT alike, quoting ElevenLabs' own words."""
    for call in (speak, listen):
        with pytest.raises(ProviderError) as excinfo:
            call(answering(status, body))
        error = excinfo.value
        assert (type(error), error.code, error.status_code) == (error_class, code, status)
        assert quoted in error.message
    detail = body["detail"]
    if isinstance(detail, dict) and "request_id" in detail:
        assert error.request_id == "el-9"


@pytest.mark.parametrize(
    "body",
    [legacy("too_many_concurrent_requests", "Too many concurrent requests."),
     current("concurrent_limit_exceeded", "Too many concurrent requests.", "rate_limit_error")],
)  # fmt: skip
def test_a_concurrency_429_waits_briefly_and_spends_no_attempt(body: dict[str, Any]) -> None:
    """A 429 saying our concurrency is over the plan's is RateLimited with a short wait, or
    the Retry-After it names."""
    with pytest.raises(RateLimited) as excinfo:
        speak(answering(429, body))
    assert excinfo.value.retry_after == CONCURRENCY_WAIT_S
    assert "plan allows" in excinfo.value.message
    with pytest.raises(RateLimited) as excinfo:
        speak(answering(429, body, {"Retry-After": "3"}))
    assert excinfo.value.retry_after == 3.0


def test_system_busy_is_not_a_rate_limit() -> None:
    """A 429 system_busy is ProviderUnavailable (retried with backoff, an attempt spent), not
    RateLimited, so it never lowers our own concurrency."""
    with pytest.raises(ProviderError) as excinfo:
        speak(answering(429, legacy("system_busy", "Busy."), {"Retry-After": "2"}))
    assert type(excinfo.value) is ProviderUnavailable


def test_a_plain_rate_limit_429_honours_retry_after() -> None:
    """A 429 rate_limit_exceeded is RateLimited with the Retry-After it names (else backoff)."""
    body = current("rate_limit_exceeded", "Slow down.", "rate_limit_error")
    with pytest.raises(RateLimited) as excinfo:
        speak(answering(429, body, {"Retry-After": "4"}))
    assert excinfo.value.retry_after == 4.0
    with pytest.raises(RateLimited) as excinfo:
        speak(answering(429, body))
    assert excinfo.value.retry_after is None


def test_the_request_id_header_wins_over_the_body() -> None:
    """An error's request id is the `request-id` header when there is one."""
    with pytest.raises(ProviderError) as excinfo:
        speak(answering(500, current("x", "y", "service_error"), {"request-id": "hdr-1"}))
    assert excinfo.value.request_id == "hdr-1"


def test_the_key_never_reaches_a_message() -> None:
    """An error body echoing the xi-api-key header has the key redacted, in every shape."""

    def echo(shape: str) -> Handler:
        def handler(request: httpx.Request) -> httpx.Response:
            key = request.headers["xi-api-key"]
            bodies = {"legacy": legacy("invalid_api_key", f"bad key {key}"),
                      "string": {"detail": f"bad key {key}"}, "other": {"error": key}}  # fmt: skip
            return httpx.Response(401, json=bodies[shape])

        return handler

    for shape in ("legacy", "string", "other"):
        for call in (speak, listen):
            with pytest.raises(ProviderError) as excinfo:
                call(echo(shape))
            assert KEY not in excinfo.value.message
            assert "[redacted]" in excinfo.value.message


# --- Scribe STT -------------------------------------------------------------------------------

SCRIBE: dict[str, Any] = {
    "language_code": "eng",
    "language_probability": 0.98,
    "text": "Hello world. (laughter) How are you?",
    "words": [
        {"text": "Hello", "start": 0.1, "end": 0.4, "type": "word", "speaker_id": "speaker_0",
         "logprob": -0.01},
        {"text": " ", "start": 0.4, "end": 0.45, "type": "spacing", "speaker_id": "speaker_0",
         "logprob": 0.0},
        {"text": "world.", "start": 0.45, "end": 0.9, "type": "word", "speaker_id": "speaker_0",
         "logprob": -0.2},
        {"text": "(laughter)", "start": 0.9, "end": 1.05, "type": "audio_event",
         "speaker_id": "speaker_0", "logprob": -0.5},
        {"text": "How", "start": 1.1, "end": 1.2, "type": "word", "speaker_id": "speaker_1"},
        {"text": " ", "start": 1.2, "end": 1.22, "type": "spacing", "speaker_id": "speaker_1"},
        {"text": "are", "start": 1.22, "end": 1.3, "type": "word", "speaker_id": "speaker_1",
         "logprob": 3.0},
        {"text": "you?", "start": 1.32, "end": 1.45, "type": "word", "speaker_id": "speaker_1",
         "logprob": -0.1, "characters": [{"text": "y", "start": 1.32, "end": 1.36}]},
    ],
}  # fmt: skip


def test_scribe_request_is_multipart_with_model_and_options() -> None:
    """Scribe gets multipart `file` (the recording's bytes, name and type) and `model_id`,
    word timestamps, diarisation and the job's language, with xi-api-key."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=SCRIBE, headers={"request-id": "stt-1"})

    result = listen(handler, language="en-GB", model="scribe_v2")
    (request,) = seen
    assert request.url.path == "/elevenlabs/v1/speech-to-text"
    assert request.headers["xi-api-key"] == KEY
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    body = request.read()
    for name, value in [("model_id", b"scribe_v2"), ("timestamps_granularity", b"word"),
                        ("diarize", b"true"), ("language_code", b"en")]:  # fmt: skip
        assert f'name="{name}"'.encode() + b"\r\n\r\n" + value + b"\r\n" in body
    assert b'name="file"; filename="call.wav"\r\nContent-Type: audio/wav\r\n\r\n' in body
    assert WAV in body
    assert result.request_id == "stt-1"


def test_scribe_words_speakers_and_segments_are_normalised() -> None:
    """`word` entries become words (logprob as a confidence, speaker_id as the speaker);
    spacing and audio events are not words; segments break at sentences and speakers."""
    result = listen(lambda r: httpx.Response(200, json=SCRIBE))
    assert (result.provider, result.model, result.language) == ("elevenlabs", "scribe_v1", "eng")
    assert result.text == SCRIBE["text"]
    assert result.duration_s == pytest.approx(1.5)  # the recording's own length
    assert [w.text for w in result.words] == ["Hello", "world.", "How", "are", "you?"]
    assert result.words[0].confidence == pytest.approx(math.exp(-0.01))
    assert [w.confidence is None for w in result.words] == [False, False, True, True, False]
    assert [w.speaker for w in result.words] == ["speaker_0"] * 2 + ["speaker_1"] * 3
    assert [(s.text, s.start, s.end, s.speaker) for s in result.segments] == [
        ("Hello world.", 0.1, 0.9, "speaker_0"),
        ("How are you?", 1.1, 1.45, "speaker_1"),
    ]


def test_multichannel_answers_take_the_first_channel() -> None:
    """A `{"transcripts": [...]}` answer is read from its first channel."""
    body = {"transcripts": [{**SCRIBE, "channel_index": 0}, {**SCRIBE, "text": "other"}]}
    result = listen(answering(200, body))
    assert result.text == SCRIBE["text"] and len(result.words) == 5


def test_an_answer_without_words_keeps_its_text() -> None:
    """timestamps none (no words) still gives the text, with no words or segments."""
    result = listen(answering(200, {"language_code": "eng", "text": "Hi.", "words": []}))
    assert (result.text, result.words, result.segments) == ("Hi.", [], [])


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(202, json={"message": "Request accepted.", "request_id": "later"}),
        httpx.Response(200, json={"results": {"channels": []}}),
        httpx.Response(200, json={"text": "x", "words": "nope"}),
        httpx.Response(200, json=["hello"]),
        httpx.Response(200, text="hello world"),
        httpx.Response(200, text="<html>gateway</html>"),
    ],
)
def test_unknown_transcript_shapes_are_never_success(response: httpx.Response) -> None:
    """A webhook 202, another vendor's shape, a list, plain text or a page is transient."""
    with pytest.raises(ProviderUnavailable) as excinfo:
        listen(lambda r: response)
    assert excinfo.value.code in {"unexpected_response", "bad_provider_output"}


def test_scribe_times_that_do_not_fit_are_refused() -> None:
    """Word times going backwards or far past the audio are bad_provider_output."""
    backwards = json.loads(json.dumps(SCRIBE))
    backwards["words"][4]["start"] = 0.0
    too_late = json.loads(json.dumps(SCRIBE))
    too_late["words"][-1]["end"] = 999.0
    for body in (backwards, too_late):
        with pytest.raises(ProviderUnavailable) as excinfo:
            listen(answering(200, body))
        assert excinfo.value.code == "bad_provider_output"


# --- build_provider ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "  "])
def test_build_provider_elevenlabs_needs_a_key(key: str | None) -> None:
    """A missing ELEVENLABS_API_KEY is missing_api_key naming the setting, before any call."""
    client = httpx.Client(transport=httpx.MockTransport(never_called))
    with pytest.raises(AuthenticationFailed) as excinfo:
        build_provider("elevenlabs", client=client, base_url=BASE, api_key=key)
    assert excinfo.value.code == "missing_api_key"
    assert "ELEVENLABS_API_KEY" in excinfo.value.message


def test_build_provider_elevenlabs_sends_the_stripped_key() -> None:
    """The registry builds the ElevenLabs adapter, which sends the key without its padding."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["xi-api-key"])
        return httpx.Response(200, content=PCM)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    built = build_provider("elevenlabs", client=client, base_url=BASE + "/", api_key=f" {KEY}\n")
    built.synthesize(TEXT, model="eleven_flash_v2_5", voice=None, options={})
    assert (built.name, sent) == ("elevenlabs", [KEY])
