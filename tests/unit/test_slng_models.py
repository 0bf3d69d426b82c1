"""SLNG's model table against httpx.MockTransport: each family's route, body and answer shape."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import httpx
import pytest
import soundfile as sf
from pydantic import ValidationError

from jobs.catalog import PROVIDERS
from jobs.catalog_slng import SLNG_BATCH_STT_MODEL
from jobs.settings import Settings
from tests.unit.emulator_client import run
from tests.unit.test_slng_provider import BASE, CLIP, KEY, WAV, Handler, never_called, provider
from workers.audio import convert, pcm16_to_wav
from workers.providers.base import AudioInput
from workers.providers.errors import InvalidInput, ProviderError, ProviderUnavailable
from workers.providers.registry import ProviderRegistry
from workers.providers.slng import SlngProvider
from workers.providers.slng_models import stt_route, tts_route

SPEC = PROVIDERS["slng"]
# The batch model is served by the batch API (workers/providers/slng_batch.py), not a route.
SYNC_STT_MODELS = tuple(m for m in SPEC.stt_models if m != SLNG_BATCH_STT_MODEL)
TEXT = "Hello there."
PCM = b"\x10\x00\x20\x00" * 6000  # 12,000 samples: 0.5 s at 24 kHz


def capture(answer: httpx.Response) -> tuple[list[httpx.Request], Handler]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer

    return seen, handler


def speak(model: str, answer: httpx.Response, **kw: Any) -> tuple[httpx.Request, Any]:
    seen, handler = capture(answer)
    result = provider(handler).synthesize(
        TEXT, model=model, voice=kw.get("voice"), options=kw.get("options", {})
    )
    return seen[0], result


def wav_answer() -> httpx.Response:
    return httpx.Response(200, content=WAV, headers={"content-type": "audio/wav"})


# --- the table covers the catalog -----------------------------------------------------------


def test_every_catalog_model_resolves_to_a_route_keeping_slashes_and_colons() -> None:
    """Each catalog model has a family; `unmute/X` maps to /v1/bridges/unmute/<kind>/X."""
    for kind, models, resolve in (
        ("tts", SPEC.tts_models, tts_route),
        ("stt", SYNC_STT_MODELS, stt_route),
    ):
        for model in models:
            route = resolve(model, models)
            if model.startswith("unmute/"):
                assert route.path == f"/v1/bridges/unmute/{kind}/{model.removeprefix('unmute/')}"
            else:
                assert route.path == f"/v1/{kind}/{model}"


def test_unknown_model_names_the_known_ones() -> None:
    """A model outside the catalog is unknown_model, and the message lists the bridge ids too."""
    with pytest.raises(InvalidInput) as excinfo:
        provider(never_called).synthesize(TEXT, model="unmute/acme/tts:1", voice=None, options={})
    assert excinfo.value.code == "unknown_model"
    assert "unmute/slng/deepgram/aura:2-en" in excinfo.value.message
    assert "slng/inworld/max:1.5" in excinfo.value.message


# --- TTS bodies -------------------------------------------------------------------------------

TTS_BODIES: list[tuple[str, str | None, dict[str, Any], str, dict[str, Any]]] = [
    (
        "slng/rime/arcana:3-en",
        None,
        {"speed": 1.25, "sample_rate": 22050},
        "/slng/v1/tts/slng/rime/arcana:3-en",
        {
            "text": TEXT,
            "speaker": "astra",
            "modelId": "arcana-3",
            "audioFormat": "audio/wav",
            "sample_rate": 22050,
            "speed": 1.25,
        },
    ),
    (
        "slng/rime/arcana:de",
        "aura-2-thalia-en",  # the catalog default the API fills in: not a Rime speaker
        {"speed": 1.0},
        "/slng/v1/tts/slng/rime/arcana:de",
        {
            "text": TEXT,
            "speaker": "sigurd",
            "modelId": "arcana",
            "audioFormat": "audio/wav",
            "sample_rate": 24000,
        },
    ),
    (
        "slng/rime/coda:0-id",
        "siswoko_sigit",
        {},
        "/slng/v1/tts/slng/rime/coda:0-id",
        {
            "text": TEXT,
            "speaker": "siswoko_sigit",
            "modelId": "coda",
            "audioFormat": "audio/wav",
            "sample_rate": 24000,
        },
    ),
    (
        "slng/canopylabs/orpheus:en",
        None,
        {"sample_rate": 16000, "speed": 0.75},
        "/slng/v1/tts/slng/canopylabs/orpheus:en",
        {"voice": "tara", "prompt": TEXT, "speed": 0.75},
    ),
    (
        "unmute/slng/deepgram/aura:2-es",
        None,
        {"sample_rate": 16000},
        "/slng/v1/bridges/unmute/tts/slng/deepgram/aura:2-es",
        {"text": TEXT, "voice": "aura-2-celeste-es"},
    ),
    (
        "unmute/cartesia/sonic:3",
        "aura-2-thalia-en",
        {"speed": 1.5},
        "/slng/v1/bridges/unmute/tts/cartesia/sonic:3",
        {"text": TEXT},
    ),
    (
        "unmute/elevenlabs/eleven-flash:2.5",
        "my-voice-id",
        {},
        "/slng/v1/bridges/unmute/tts/elevenlabs/eleven-flash:2.5",
        {"text": TEXT, "voice": "my-voice-id"},
    ),
]


@pytest.mark.parametrize(("model", "voice", "options", "path", "body"), TTS_BODIES)
def test_tts_family_body_and_path(
    model: str, voice: str | None, options: dict[str, Any], path: str, body: dict[str, Any]
) -> None:
    """Each family gets its own body: Rime `speaker`, Orpheus `prompt`, the bridge two fields."""
    request, result = speak(model, wav_answer(), voice=voice, options=options)
    assert request.url.raw_path == path.encode()
    assert request.headers["accept"] == "audio/*"
    assert json.loads(request.content) == body
    assert result.content_type == "audio/wav"


def test_inworld_body_and_base64_json_answer() -> None:
    """Inworld gets its flat audio fields and Accept: JSON; the base64 audioContent is the audio."""
    answer = httpx.Response(
        200,
        json={
            "audioContent": base64.b64encode(WAV).decode(),
            "usage": {"processedCharactersCount": len(TEXT), "modelId": "inworld-tts-1.5-max"},
        },
    )
    request, result = speak("slng/inworld/max:1.5", answer, options={"speed": 1.2})
    assert request.url.raw_path == b"/slng/v1/tts/slng/inworld/max:1.5"
    assert request.headers["accept"] == "application/json"
    assert json.loads(request.content) == {
        "text": TEXT,
        "voice": "Ashley",
        "modelId": "inworld-tts-1.5-max",
        "encoding": "WAV",
        "sample_rate": 24000,
        "speaking_rate": 1.2,
    }
    assert (result.audio, result.content_type) == (WAV, "audio/wav")


@pytest.mark.parametrize(
    ("body", "error_class", "code"),
    [
        ({"audioContent": "not base64 at all!"}, ProviderUnavailable, "bad_provider_output"),
        ({"error": "Voice Bob is not available"}, InvalidInput, "invalid_input"),
    ],
)
def test_inworld_answers_without_usable_audio(
    body: dict[str, Any], error_class: type[ProviderError], code: str
) -> None:
    """Inworld JSON with broken base64 is a transient bad output; a JSON error is InvalidInput."""
    with pytest.raises(error_class) as excinfo:
        speak("slng/inworld/max:1.5", httpx.Response(200, json=body))
    assert excinfo.value.code == code
    if error_class is InvalidInput:
        assert "Voice Bob is not available" in excinfo.value.message


def test_inworld_speed_outside_its_range_fails_before_any_request() -> None:
    """Inworld's speaking_rate is 0.5-1.5, so speed 1.8 is invalid_option without a call."""
    with pytest.raises(InvalidInput) as excinfo:
        provider(never_called).synthesize(
            TEXT, model="slng/inworld/max:1.5", voice=None, options={"speed": 1.8}
        )
    assert excinfo.value.code == "invalid_option"


def test_inworld_text_limit_is_2000_characters() -> None:
    """The catalog lets Inworld take 2,000 characters and refuses 2,001 before any request."""
    assert SPEC.text_limit("slng/inworld/max:1.5") == 2000
    with pytest.raises(InvalidInput) as excinfo:
        provider(never_called).synthesize(
            "a" * 2001, model="slng/inworld/max:1.5", voice=None, options={}
        )
    assert excinfo.value.code == "text_too_long"
    assert "2000" in excinfo.value.message


# --- TTS answers: the codec is sniffed ------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "declared", "content_type", "rate"),
    [
        (WAV, "audio/*", "audio/wav", 24000),
        (PCM, "application/octet-stream", "audio/wav", 24000),
        (convert(WAV, fmt="mp3").data, "audio/mpeg", "audio/mpeg", 24000),
        (convert(WAV, fmt="flac").data, "audio/*", "audio/flac", 24000),
    ],
)
def test_bridge_audio_codec_is_sniffed(
    content: bytes, declared: str, content_type: str, rate: int
) -> None:
    """The bridge's WAV, MP3 and FLAC are recognised by magic bytes; raw PCM becomes 24 kHz WAV."""
    answer = httpx.Response(200, content=content, headers={"content-type": declared})
    _, result = speak("unmute/slng/deepgram/aura:2-en", answer, options={"sample_rate": 8000})
    assert result.content_type == content_type
    assert sf.info(io.BytesIO(result.audio)).samplerate == rate


def test_orpheus_raw_pcm_is_taken_as_24_khz() -> None:
    """Orpheus' body cannot ask for a rate, so its raw PCM is wrapped at 24 kHz, not as asked."""
    answer = httpx.Response(200, content=PCM, headers={"content-type": "audio/*"})
    _, result = speak("slng/canopylabs/orpheus:en", answer, options={"sample_rate": 8000})
    info = sf.info(io.BytesIO(result.audio))
    assert (info.samplerate, info.frames) == (24000, 12000)


@pytest.mark.parametrize(
    ("status", "body", "error_class"),
    [
        (
            500,
            {
                "error": "TTS service error",
                "details": "Rime TTS API error: 400 Bad Request - Invalid argument: speaker",
            },
            InvalidInput,
        ),
        (500, {"error": "TTS service error", "status": 400, "details": "bad"}, InvalidInput),
        (500, {"error": "TTS service error", "details": "Internal processing error"}, None),
        (503, {"error": "Service unavailable", "status": 429}, None),
    ],
)
def test_a_500_naming_an_upstream_400_is_permanent(
    status: int, body: dict[str, Any], error_class: type | None
) -> None:
    """Rime's 500 for a bad speaker (upstream 400) fails the item; other 5xx stay transient."""
    with pytest.raises((InvalidInput, ProviderUnavailable)) as excinfo:
        speak("slng/rime/coda:0-id", httpx.Response(status, json=body))
    assert type(excinfo.value) is (error_class or ProviderUnavailable)
    assert excinfo.value.status_code == status


# --- the region header ----------------------------------------------------------------------


def test_region_header_is_sent_on_every_family_only_when_configured() -> None:
    """With a region every call carries X-Region-Override; without one no call does."""
    seen, handler = capture(wav_answer())
    client = httpx.Client(transport=httpx.MockTransport(handler))
    for region in ("eu-north-1", None):
        slng = SlngProvider(client, base_url=BASE, api_key=KEY, region=region)
        for model in ("slng/deepgram/aura:2-en", "unmute/slng/rime/arcana:en"):
            slng.synthesize(TEXT, model=model, voice=None, options={})
    assert [r.headers.get("x-region-override") for r in seen] == ["eu-north-1"] * 2 + [None] * 2


def test_registry_passes_the_configured_region_to_slng() -> None:
    """ProviderRegistry hands its per-provider region to the SLNG adapter it builds."""
    seen, handler = capture(wav_answer())
    registry = ProviderRegistry(
        httpx.Client(transport=httpx.MockTransport(handler)),
        base_urls={"slng": BASE},
        api_keys={"slng": KEY},
        regions={"slng": "us-east-1"},
    )
    registry.get("slng").synthesize(TEXT, model="slng/deepgram/aura:2-en", voice=None, options={})
    assert seen[0].headers["x-region-override"] == "us-east-1"


def test_region_setting_accepts_region_names_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEECHBATCH_SLNG_REGION empty means none; a value that is not a region name is refused."""
    monkeypatch.setenv("SPEECHBATCH_SLNG_REGION", "")
    assert Settings().slng_region is None
    monkeypatch.setenv("SPEECHBATCH_SLNG_REGION", "asia-south1")
    assert Settings().slng_region == "asia-south1"
    monkeypatch.setenv("SPEECHBATCH_SLNG_REGION", "eu-north-1\r\nX-Evil: 1")
    with pytest.raises(ValidationError):
        Settings()


# --- STT over the bridge ----------------------------------------------------------------------

BRIDGE_ANSWER = {
    "type": "transcription",
    "is_final": True,
    "alternatives": [{"confidence": 0.93, "transcript": " hello from the bridge "}],
    "channel": 0,
    "language": "en",
}


def listen(model: str, answer: httpx.Response, clip: AudioInput = CLIP, **options: Any) -> Any:
    seen, handler = capture(answer)
    return seen, provider(handler).transcribe(clip, model=model, options=options)


def test_bridge_stt_request_fields() -> None:
    """The bridge gets multipart `audio`, language, finals only, and the WAV's codec and rate."""
    answer = httpx.Response(200, json=BRIDGE_ANSWER)
    seen, _ = listen("unmute/slng/deepgram/nova:3-en", answer, language="en")
    request = seen[0]
    assert request.url.raw_path == b"/slng/v1/bridges/unmute/stt/slng/deepgram/nova:3-en"
    body = request.read()
    assert b'name="audio"; filename="clip.wav"' in body
    for name, value in (
        ("language", "en"),
        ("enable_partials", "false"),
        ("encoding", "linear16"),
        ("sample_rate", "24000"),
    ):
        assert f'name="{name}"\r\n\r\n{value}\r\n'.encode() in body, name


def test_bridge_stt_names_mp3_and_leaves_unknown_codecs_unsaid() -> None:
    """An MP3 is sent as encoding=mp3; a codec the bridge has no name for sends no encoding."""
    answer = httpx.Response(200, json=BRIDGE_ANSWER)
    mp3 = AudioInput(convert(WAV, fmt="mp3").data, "a.mp3", "audio/mpeg")
    flac = AudioInput(convert(WAV, fmt="flac").data, "a.flac", "audio/flac")
    mp3_seen, _ = listen("unmute/deepgram/nova:3", answer, clip=mp3)
    flac_seen, _ = listen("unmute/deepgram/nova:3", answer, clip=flac)
    assert b'name="encoding"\r\n\r\nmp3\r\n' in mp3_seen[0].read()
    assert b'name="encoding"' not in flac_seen[0].read()


def test_bridge_answer_becomes_a_transcript_spanning_the_recording() -> None:
    """The bridge shape gives text, language and request id; duration is the recording's."""
    answer = httpx.Response(200, json=BRIDGE_ANSWER, headers={"x-slng-request-id": "b-1"})
    _, result = listen("unmute/slng/openai/whisper:large-v3", answer)
    assert (result.text, result.language, result.request_id) == (
        "hello from the bridge",
        "en",
        "b-1",
    )
    assert (result.duration_s, result.words, result.model) == (
        0.1,
        [],
        "unmute/slng/openai/whisper:large-v3",
    )


def test_bridge_language_falls_back_to_the_nova_variant() -> None:
    """Without a language in the answer or the options, `nova:3-es` behind the bridge means es."""
    body = {k: v for k, v in BRIDGE_ANSWER.items() if k != "language"}
    _, result = listen("unmute/slng/deepgram/nova:3-es", httpx.Response(200, json=body))
    assert result.language == "es"


def test_a_route_answering_another_documented_shape_still_parses() -> None:
    """A bridge route that answers Deepgram-shaped JSON is parsed by the Deepgram reader."""
    body = {"results": {"channels": [{"alternatives": [{"transcript": "deep", "words": []}]}]}}
    _, result = listen("unmute/deepgram/nova:2", httpx.Response(200, json=body))
    assert result.text == "deep"


@pytest.mark.parametrize(
    "body",
    [
        {"type": "error", "alternatives": [{"transcript": "x"}]},
        {"type": "transcription", "alternatives": [{"transcript": 7}]},
        {"type": "transcription", "alternatives": "none"},
    ],
)
def test_malformed_bridge_answers_are_unexpected_responses(body: dict[str, Any]) -> None:
    """A bridge body that is an error or has the wrong types is unexpected_response, not text."""
    with pytest.raises(ProviderUnavailable) as excinfo:
        listen("unmute/slng/deepgram/nova:3-en", httpx.Response(200, json=body))
    assert excinfo.value.code == "unexpected_response"


def test_pcm_answer_is_wrapped_at_the_asked_rate_where_the_body_can_ask() -> None:
    """Rime asked for 16 kHz answers raw PCM: it is wrapped as 16 kHz, not the 24 kHz guess."""
    answer = httpx.Response(200, content=PCM, headers={"content-type": "audio/pcm"})
    _, result = speak("slng/rime/arcana:en", answer, options={"sample_rate": 16000})
    assert sf.info(io.BytesIO(result.audio)).samplerate == 16000
    assert pcm16_to_wav(PCM, 16000) == result.audio


# --- the adapter and the emulator agree on every catalog model ----------------------------------


def through_emulator(request: httpx.Request) -> httpx.Response:
    """`request` answered by a fresh in-process emulator, its path sent as the adapter built it."""

    async def check(client: httpx.AsyncClient) -> httpx.Response:
        return await client.request(
            request.method,
            request.url.raw_path.decode(),
            headers=request.headers,
            content=request.read(),
        )

    answer: httpx.Response = run(check)
    kept = {k: v for k, v in answer.headers.items() if k.lower() != "content-length"}
    return httpx.Response(answer.status_code, headers=kept, content=answer.content)


@pytest.mark.parametrize("model", SPEC.tts_models)
def test_every_tts_model_round_trips_through_the_emulator(model: str) -> None:
    """For each catalog TTS model the adapter's body is accepted and the answer is checked audio."""
    result = provider(through_emulator).synthesize(
        "A line spoken for the contract test.", model=model, voice=None, options={"speed": 1.0}
    )
    assert sf.info(io.BytesIO(result.audio)).duration > 1.0


@pytest.mark.parametrize("model", SYNC_STT_MODELS)
def test_every_stt_model_round_trips_through_the_emulator(model: str) -> None:
    """For each catalog STT model the adapter's upload is accepted and the answer parses."""
    clip = AudioInput(pcm16_to_wav(b"\x10\x00\x20\x00" * 24000, 16000), "a.wav", "audio/wav")
    result = provider(through_emulator).transcribe(clip, model=model, options={})
    assert result.text and result.duration_s == pytest.approx(3.0, abs=0.1)
