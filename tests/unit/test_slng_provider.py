"""The SLNG adapter against httpx.MockTransport: requests it sends, answers and errors it maps."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import soundfile as sf

from workers.audio import convert, pcm16_to_wav
from workers.providers import http
from workers.providers.base import AudioInput, Transcript, Word
from workers.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    PermanentProviderError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    UnsupportedAudio,
)
from workers.providers.registry import build_provider
from workers.providers.slng import SlngProvider
from workers.providers.slng_models import tts_sample_rate

KEY = "zpka_test_secret_key_123"
BASE = "http://127.0.0.1:9100/slng"
AURA_EN = "slng/deepgram/aura:2-en"
NOVA_EN = "slng/deepgram/nova:3-en"
WHISPER = "slng/openai/whisper:large-v3"
WAV = pcm16_to_wav(b"\x00\x01" * 2400, 24000)
CLIP = AudioInput(data=WAV, filename="clip.wav", content_type="audio/wav")

Handler = Callable[[httpx.Request], httpx.Response]


def provider(handler: Handler, *, base: str = BASE) -> SlngProvider:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return SlngProvider(client, base_url=base, api_key=KEY)


def never_called(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no request expected, got {request.method} {request.url}")


def speak(handler: Handler, text: str = "Hello there.", **kw: Any) -> Any:
    options = kw.pop("options", {})
    return provider(handler).synthesize(
        text, model=kw.pop("model", AURA_EN), voice=kw.pop("voice", None), options=options
    )


def listen(handler: Handler, model: str = NOVA_EN, **options: Any) -> Transcript:
    return provider(handler).transcribe(CLIP, model=model, options=options)


# --- TTS requests -------------------------------------------------------------------------


def test_aura_request_path_auth_and_body() -> None:
    """Aura TTS posts JSON to /v1/tts/<model> with `/` and `:` unescaped and a Bearer key."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=WAV, headers={"x-slng-request-id": "req-1"})

    result = speak(handler, voice="aura-2-orion-en", options={"sample_rate": 22050})
    (request,) = seen
    assert request.method == "POST"
    assert request.url.raw_path == b"/slng/v1/tts/slng/deepgram/aura:2-en"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(request.content) == {
        "text": "Hello there.",
        "model": "aura-2-orion-en",
        "encoding": "linear16",
        "container": "wav",
        "sample_rate": 24000,
    }
    assert result.audio == WAV
    assert result.content_type == "audio/wav"
    assert result.request_id == "req-1"


def test_aura_uses_catalog_default_voice_and_rate() -> None:
    """Without a voice or sample_rate, the catalog's default voice and 24 kHz are sent."""
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, content=WAV)

    speak(handler)
    speak(handler, model="slng/deepgram/aura:2-es", text="Hola.")
    assert bodies[0]["model"] == "aura-2-thalia-en"
    assert bodies[0]["sample_rate"] == 24000
    assert bodies[1]["model"] == "aura-2-celeste-es"


def test_deepgram_hosted_aura_body_and_raw_pcm_answer_is_wrapped() -> None:
    """deepgram/aura:2 gets Deepgram's body, and its raw PCM answer comes back as a WAV file."""
    seen: list[httpx.Request] = []
    pcm = b"\x10\x00\x20\x00" * 8000  # 16,000 samples

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=pcm, headers={"content-type": "audio/l16"})

    result = speak(
        handler, model="deepgram/aura:2", voice="asteria-en", options={"sample_rate": 16000}
    )
    assert seen[0].url.raw_path == b"/slng/v1/tts/deepgram/aura:2"
    assert json.loads(seen[0].content) == {
        "text": "Hello there.",
        "voice": "asteria-en",
        "encoding": "linear16",
        "sample_rate": 16000,
    }
    assert result.content_type == "audio/wav"
    info = sf.info(io.BytesIO(result.audio))
    assert (info.samplerate, info.frames) == (16000, 16000)


def test_audio_type_is_sniffed_not_trusted() -> None:
    """An MP3 body labelled audio/wav is reported as audio/mpeg from its magic bytes."""
    mp3 = b"ID3\x03\x00\x00\x00\x00\x00\x0a" + bytes(10) + convert(WAV, fmt="mp3").data

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=mp3, headers={"content-type": "audio/wav"})

    result = speak(handler)
    assert (result.audio, result.content_type) == (mp3, "audio/mpeg")


def test_pcm_that_looks_like_an_mpeg_frame_sync_is_still_pcm() -> None:
    """Raw PCM starting with sample -1 (FF FF, like an MPEG sync) is wrapped, not called MP3."""
    pcm = b"\xff\xff\x10\x00" * 4000

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=pcm, headers={"content-type": "application/octet-stream"}
        )

    result = speak(handler, model="deepgram/aura:2", options={"sample_rate": 24000})
    assert result.content_type == "audio/wav"
    assert sf.info(io.BytesIO(result.audio)).frames == 8000


def test_base_url_trailing_slash_and_plain_host() -> None:
    """A base URL with a trailing slash or at the host root yields a single-slash path."""
    paths: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path)
        return httpx.Response(200, content=WAV)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    for base in ("https://api.slng.ai/", "https://api.slng.ai"):
        SlngProvider(client, base_url=base, api_key=KEY).synthesize(
            "Hi.", model=AURA_EN, voice=None, options={}
        )
    assert paths == [b"/v1/tts/slng/deepgram/aura:2-en"] * 2


@pytest.mark.parametrize(
    ("asked", "sent"), [(8000, 8000), (11025, 16000), (44100, 48000), (96000, 48000)]
)
def test_sample_rate_snaps_up_to_aura_rates(asked: int, sent: int) -> None:
    """Any requested rate becomes the next rate Aura offers (capped at 48 kHz)."""
    assert tts_sample_rate({"sample_rate": asked}) == sent


def test_bad_sample_rate_is_invalid_option() -> None:
    """A sample_rate that is not a number is rejected before any request."""
    with pytest.raises(InvalidInput) as excinfo:
        speak(never_called, options={"sample_rate": "fast"})
    assert excinfo.value.code == "invalid_option"


# --- TTS pre-flight checks ----------------------------------------------------------------


def test_too_long_text_fails_before_any_request() -> None:
    """Text over the catalog limit raises text_too_long naming the limit, without calling SLNG."""
    with pytest.raises(InvalidInput) as excinfo:
        speak(never_called, text="a" * 1001)
    assert excinfo.value.code == "text_too_long"
    assert "1000" in excinfo.value.message
    assert "split" in excinfo.value.message


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_text_fails_before_any_request(text: str) -> None:
    """Empty or whitespace text raises empty_text without calling SLNG."""
    with pytest.raises(InvalidInput) as excinfo:
        speak(never_called, text=text)
    assert excinfo.value.code == "empty_text"


def test_unknown_models_fail_before_any_request() -> None:
    """Models missing from the catalog raise unknown_model for TTS and STT alike."""
    with pytest.raises(InvalidInput) as tts:
        speak(never_called, model="slng/rime/arcana:9-xx")
    with pytest.raises(InvalidInput) as stt:
        listen(never_called, model=AURA_EN)
    assert tts.value.code == stt.value.code == "unknown_model"


# --- TTS odd 200s -------------------------------------------------------------------------


def test_empty_200_is_transient_empty_response() -> None:
    """A 200 with no audio is ProviderUnavailable(empty_response), worth a retry."""
    with pytest.raises(ProviderUnavailable) as excinfo:
        speak(lambda r: httpx.Response(200, content=b"", headers={"x-slng-request-id": "r9"}))
    assert excinfo.value.code == "empty_response"
    assert excinfo.value.request_id == "r9"


def test_json_200_is_invalid_input_with_its_error() -> None:
    """A 200 carrying a JSON error instead of audio raises InvalidInput quoting that error."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"error": "Voice not available for this model"})

    with pytest.raises(InvalidInput) as excinfo:
        speak(handler)
    assert "Voice not available for this model" in excinfo.value.message


# --- status → error mapping ---------------------------------------------------------------

STATUS_TABLE = [
    (400, InvalidInput, "invalid_input"),
    (401, AuthenticationFailed, "provider_auth_failed"),
    (402, QuotaExceeded, "provider_quota_exceeded"),
    (403, AuthenticationFailed, "provider_auth_failed"),
    (404, InvalidInput, "unknown_model"),
    (408, ProviderTimeout, "provider_timeout"),
    (409, ProviderUnavailable, "provider_conflict"),
    (413, InvalidInput, "payload_too_large"),
    (415, UnsupportedAudio, "unsupported_audio"),
    (422, InvalidInput, "invalid_input"),
    (429, RateLimited, "rate_limited"),
    (500, ProviderUnavailable, "provider_unavailable"),
    (502, ProviderUnavailable, "provider_unavailable"),
    (503, ProviderUnavailable, "provider_unavailable"),
    (504, ProviderUnavailable, "provider_unavailable"),
    (599, ProviderUnavailable, "provider_unavailable"),
    (418, PermanentProviderError, "provider_rejected"),
    (451, PermanentProviderError, "provider_rejected"),
    (302, ProviderUnavailable, "provider_unavailable"),
]


@pytest.mark.parametrize(("status", "error_class", "code"), STATUS_TABLE)
def test_status_maps_to_error_class_and_code(
    status: int, error_class: type[ProviderError], code: str
) -> None:
    """Each status becomes the documented error class and code, with status, id and reason."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = {"error": f"reason-{status}", "details": "upstream said no"}
        return httpx.Response(status, json=body, headers={"x-slng-request-id": f"id-{status}"})

    for call in (lambda: speak(handler), lambda: listen(handler)):
        with pytest.raises(ProviderError) as excinfo:
            call()
        error = excinfo.value
        assert type(error) is error_class
        assert error.code == code
        assert error.status_code == status
        assert error.request_id == f"id-{status}"
        assert f"reason-{status}" in error.message
        assert "upstream said no" in error.message


def test_problem_style_and_field_errors_are_rendered() -> None:
    """SLNG's title/detail and fieldErrors bodies reach the message so users see why."""
    problem = {"title": "Unauthorized", "status": 401, "detail": "No Authorization Header"}
    with pytest.raises(AuthenticationFailed) as auth:
        speak(lambda r: httpx.Response(401, json=problem))
    assert "No Authorization Header" in auth.value.message
    assert "SLNG_API_KEY" in auth.value.message

    fields = {"error": "Text is required", "fieldErrors": {"text": ["Required"]}}
    with pytest.raises(InvalidInput) as invalid:
        speak(lambda r: httpx.Response(400, json=fields))
    assert "Text is required" in invalid.value.message
    assert "text: Required" in invalid.value.message


def test_plain_text_error_body_is_quoted() -> None:
    """A non-JSON error body (e.g. from a proxy) is quoted as-is."""
    with pytest.raises(ProviderUnavailable) as excinfo:
        speak(lambda r: httpx.Response(502, text="Bad Gateway from edge-7"))
    assert "Bad Gateway from edge-7" in excinfo.value.message


def test_429_retry_after_variants() -> None:
    """Retry-After seconds, HTTP-date and retry-after-ms set retry_after; none leaves it None."""
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    cases: list[tuple[dict[str, str], float | None]] = [
        ({"Retry-After": "7"}, 7.0),
        (
            {
                "Retry-After": format_datetime(now + timedelta(seconds=30), usegmt=True),
                "Date": format_datetime(now, usegmt=True),
            },
            30.0,
        ),
        ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5),
        ({}, None),
    ]
    for headers, expected in cases:
        with pytest.raises(RateLimited) as excinfo:
            speak(lambda r, h=headers: httpx.Response(429, json={"error": "slow down"}, headers=h))
        assert excinfo.value.retry_after == expected, headers
        assert excinfo.value.status_code == 429


def test_parse_retry_after_edge_cases() -> None:
    """Past dates and negative values clamp to 0; junk is ignored; names are case-insensitive."""
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    past = format_datetime(now - timedelta(minutes=5), usegmt=True)
    assert http.parse_retry_after({"Retry-After": past}, now) == 0.0
    assert http.parse_retry_after({"Retry-After": "-3"}, now) == 0.0
    assert http.parse_retry_after({"RETRY-AFTER-MS": "-10"}, now) == 0.0
    assert http.parse_retry_after({"Retry-After": "soon"}, now) is None
    assert http.parse_retry_after({"Retry-After": "nan"}, now) is None
    assert http.parse_retry_after(httpx.Headers({"retry-after": "2.5"}), now) == 2.5


def test_error_from_response_default_code_only_replaces_generic_invalid_input() -> None:
    """default_code renames a generic 400 but never the fixed codes of 404 or 429."""
    request = httpx.Request("POST", "https://x")

    def err(status: int) -> ProviderError:
        response = httpx.Response(status, request=request)
        return http.error_from_response(response, vendor_message="no", default_code="tts_rejected")

    assert err(400).code == "tts_rejected"
    assert err(404).code == "unknown_model"
    assert err(429).code == "rate_limited"


# --- transport failures and the API key -----------------------------------------------------


def raising(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("exc", "error_class"),
    [
        (httpx.ReadTimeout("read timed out"), ProviderTimeout),
        (httpx.ConnectTimeout("connect timed out"), ProviderTimeout),
        (httpx.ConnectError("[Errno 111] Connection refused"), ProviderUnavailable),
        (httpx.RemoteProtocolError("peer closed connection"), ProviderUnavailable),
        (httpx.ReadError("connection reset"), ProviderUnavailable),
    ],
)
def test_transport_failures_map_to_transient_errors(exc: Exception, error_class: type) -> None:
    """Timeouts become ProviderTimeout, connection failures ProviderUnavailable: both transient."""
    for call in (lambda: speak(raising(exc)), lambda: listen(raising(exc))):
        with pytest.raises(error_class) as excinfo:
            call()
        assert "127.0.0.1" in excinfo.value.message
        assert str(exc) in excinfo.value.message
        assert KEY not in excinfo.value.message


def test_transport_error_text_echoing_the_key_is_redacted() -> None:
    """If a transport error's text ever contains the Authorization value, the key is removed."""
    exc = httpx.ConnectError(f"proxy refused header Authorization: Bearer {KEY}")
    with pytest.raises(ProviderUnavailable) as excinfo:
        speak(raising(exc))
    assert KEY not in excinfo.value.message
    assert "[redacted]" in excinfo.value.message


def test_bad_base_url_scheme_is_permanent() -> None:
    """A base URL with a non-http scheme is a configuration error that retrying cannot fix."""
    client = httpx.Client()
    slng = SlngProvider(client, base_url="ftp://example.invalid", api_key=KEY)
    with pytest.raises(PermanentProviderError) as excinfo:
        slng.synthesize("Hi.", model=AURA_EN, voice=None, options={})
    assert excinfo.value.code == "invalid_base_url"
    client.close()


def test_api_key_never_appears_in_any_error_message() -> None:
    """Even when SLNG echoes the Authorization header back, the key is redacted from messages."""

    def echo(status: int) -> Handler:
        def handler(request: httpx.Request) -> httpx.Response:
            auth = request.headers["authorization"]
            return httpx.Response(status, json={"error": f"bad header {auth}", "details": auth})

        return handler

    errors: list[ProviderError] = []
    for status, _, _ in STATUS_TABLE:
        handler = echo(status)
        for call in (speak, listen):
            with pytest.raises(ProviderError) as excinfo:
                call(handler)
            errors.append(excinfo.value)
    with pytest.raises(InvalidInput) as json_200:
        speak(lambda r: httpx.Response(200, json={"error": r.headers["authorization"]}))
    errors.append(json_200.value)
    assert errors
    for error in errors:
        assert KEY not in error.message
        assert KEY not in str(error)
    assert "[redacted]" in errors[0].message


# --- STT requests and parsing ---------------------------------------------------------------

DEEPGRAM_BODY: dict[str, Any] = {
    "metadata": {"request_id": "dg-123", "duration": 3.2, "model": "nova-3"},
    "results": {
        "channels": [
            {
                "detected_language": "en",
                "alternatives": [
                    {
                        "transcript": "hello world how are you",
                        "confidence": 0.97,
                        "words": [
                            {
                                "word": "hello",
                                "punctuated_word": "Hello",
                                "start": 0.1,
                                "end": 0.4,
                                "confidence": 0.99,
                                "speaker": 0,
                            },
                            {
                                "word": "world",
                                "punctuated_word": "world.",
                                "start": 0.45,
                                "end": 0.9,
                                "confidence": 0.98,
                                "speaker": 0,
                            },
                            {
                                "word": "how",
                                "start": 2.5,
                                "end": 2.7,
                                "confidence": 0.9,
                                "speaker": 1,
                            },
                            {
                                "word": "are",
                                "start": 2.72,
                                "end": 2.8,
                                "confidence": 0.9,
                                "speaker": 1,
                            },
                            {
                                "word": "you",
                                "start": 2.82,
                                "end": 3.0,
                                "confidence": 0.9,
                                "speaker": 1,
                            },
                        ],
                    }
                ],
            }
        ]
    },
}


def test_stt_request_is_multipart_with_audio_field_and_language() -> None:
    """STT posts multipart to /v1/stt/<model> with the file in `audio` and `language` as a field."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=DEEPGRAM_BODY)

    listen(handler, language="en-US")
    (request,) = seen
    assert request.url.raw_path == b"/slng/v1/stt/slng/deepgram/nova:3-en"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    body = request.read()
    assert b'name="audio"; filename="clip.wav"' in body
    assert b"Content-Type: audio/wav" in body
    assert WAV in body
    assert b'name="language"\r\n\r\nen-US' in body


def test_stt_without_language_sends_no_language_field() -> None:
    """No language option means no language form field (SLNG picks the model's default)."""
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.read())
        return httpx.Response(200, json=DEEPGRAM_BODY)

    listen(handler)
    assert b'name="language"' not in seen[0]


def test_deepgram_shaped_answer_is_parsed() -> None:
    """A nova answer gives text, punctuated words with speakers, segments, duration and ids."""
    result = listen(lambda r: httpx.Response(200, json=DEEPGRAM_BODY))
    assert result.text == "hello world how are you"
    assert (result.provider, result.model, result.language) == ("slng", NOVA_EN, "en")
    assert result.duration_s == 3.2
    assert result.request_id == "dg-123"
    assert result.words[0] == Word(text="Hello", start=0.1, end=0.4, confidence=0.99, speaker="0")
    assert [w.text for w in result.words] == ["Hello", "world.", "how", "are", "you"]
    # Split after "world." (sentence end) and again at the 1.6 s pause / speaker change.
    assert [(s.text, s.start, s.end, s.speaker) for s in result.segments] == [
        ("Hello world.", 0.1, 0.9, "0"),
        ("how are you", 2.5, 3.0, "1"),
    ]
    assert result.to_json()["provider_request_id"] == "dg-123"


def test_deepgram_answer_without_metadata_uses_header_id_and_last_word() -> None:
    """Without metadata, the id comes from x-slng-request-id and duration from the last word end."""
    body = json.loads(json.dumps(DEEPGRAM_BODY))
    del body["metadata"]
    del body["results"]["channels"][0]["detected_language"]
    result = listen(
        lambda r: httpx.Response(200, json=body, headers={"x-slng-request-id": "slng-7"}),
        model="slng/deepgram/nova:3-es",
    )
    assert result.request_id == "slng-7"
    assert result.duration_s == 3.0
    assert result.language == "es"


def test_deepgram_gap_splits_segments_without_punctuation() -> None:
    """Unpunctuated words split into segments only where the pause exceeds one second."""
    words = [
        {"word": "a", "start": 0.0, "end": 0.2},
        {"word": "b", "start": 0.3, "end": 0.5},
        {"word": "c", "start": 1.6, "end": 1.8},
    ]
    body = {"results": {"channels": [{"alternatives": [{"transcript": "a b c", "words": words}]}]}}
    result = listen(lambda r: httpx.Response(200, json=body))
    assert [s.text for s in result.segments] == ["a b", "c"]


def test_whisper_shaped_answer_is_parsed() -> None:
    """A Whisper answer gives text, language, its own segments and a duration from them."""
    body = {
        "text": " Hello world. Bye. ",
        "language": "en",
        "segments": [
            {"start": 0.0, "end": 1.2, "text": " Hello world."},
            {"start": 1.5, "end": 2.25, "text": " Bye."},
        ],
    }
    result = listen(
        lambda r: httpx.Response(200, json=body, headers={"x-slng-request-id": "w-1"}),
        model=WHISPER,
    )
    assert result.text == "Hello world. Bye."
    assert result.language == "en"
    assert [(s.start, s.end, s.text) for s in result.segments] == [
        (0.0, 1.2, "Hello world."),
        (1.5, 2.25, "Bye."),
    ]
    assert result.words == []
    assert result.duration_s == 2.25
    assert result.request_id == "w-1"


def test_minimal_whisper_answer() -> None:
    """The minimal `{text, language}` answer parses with no segments; its duration is the
    recording's own when the header tells it, else None."""
    answer = httpx.Response(200, json={"text": "hi", "language": "en"})
    result = listen(lambda r: answer, model=WHISPER)
    assert (result.text, result.segments, result.duration_s) == ("hi", [], 0.1)
    webm = AudioInput(data=b"\x1a\x45\xdf\xa3" + bytes(64), filename="a.webm", content_type="")
    unknown = provider(lambda r: answer).transcribe(webm, model=WHISPER, options={})
    assert unknown.duration_s is None


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, json={"status": "ok"}),
        httpx.Response(200, json=["hello"]),
        httpx.Response(200, text="hello world"),
        httpx.Response(200, content=b""),
        httpx.Response(200, json={"results": {"channels": []}}),
    ],
)
def test_unknown_transcript_shape_is_unexpected_response(response: httpx.Response) -> None:
    """A 200 neither Deepgram- nor Whisper-shaped is ProviderUnavailable(unexpected_response)."""
    with pytest.raises(ProviderUnavailable) as excinfo:
        listen(lambda r: response)
    assert excinfo.value.code == "unexpected_response"


def test_empty_audio_fails_before_any_request() -> None:
    """Zero-byte audio raises UnsupportedAudio(empty_audio) without calling SLNG."""
    empty = AudioInput(data=b"", filename="x.wav", content_type="audio/wav")
    with pytest.raises(UnsupportedAudio) as excinfo:
        provider(never_called).transcribe(empty, model=NOVA_EN, options={})
    assert excinfo.value.code == "empty_audio"


# --- build_provider -------------------------------------------------------------------------


def test_build_provider_slng_needs_a_key() -> None:
    """A missing SLNG key is AuthenticationFailed(missing_api_key) naming SLNG_API_KEY."""
    client = httpx.Client(transport=httpx.MockTransport(never_called))
    for key in (None, "", "  "):
        with pytest.raises(AuthenticationFailed) as excinfo:
            build_provider("slng", client=client, base_url=BASE, api_key=key)
        assert excinfo.value.code == "missing_api_key"
        assert "SLNG_API_KEY" in excinfo.value.message
    built = build_provider("slng", client=client, base_url=BASE, api_key=KEY)
    assert isinstance(built, SlngProvider)
    assert built.name == "slng"


def test_build_provider_local_and_unknown() -> None:
    """`local` needs nothing; an unknown name is InvalidInput(unknown_provider)."""
    assert build_provider("local", client=None, base_url=None, api_key=None).name == "local"
    with pytest.raises(InvalidInput) as excinfo:
        build_provider("acme", client=None, base_url=None, api_key=None)
    assert excinfo.value.code == "unknown_provider"
    with pytest.raises(ValueError, match=r"httpx\.Client"):
        build_provider("slng", client=None, base_url=BASE, api_key=KEY)
