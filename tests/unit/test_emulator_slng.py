"""The emulator's SLNG routes (per-model and bridge): audio out, transcripts out, error bodies."""

from __future__ import annotations

import base64
import io
import itertools
import json
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from emulator.config import EmulatorConfig
from tests.unit.emulator_client import AURA_EN, run

AUTH = {"Authorization": "Bearer test-key"}
NOVA_EN = "/slng/v1/stt/slng/deepgram/nova:3-en"
WHISPER = "/slng/v1/stt/slng/openai/whisper:large-v3"


def post(path: str, **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", AUTH)
    response: httpx.Response = run(lambda client: client.post(path, headers=headers, **kwargs))
    return response


def wav_bytes(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    sf.write(buffer, 0.2 * np.sin(2 * np.pi * 300 * t), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


TEXT = "Hello there, this is a test of the emulator voice."  # 50 chars -> ~3.33 s


@pytest.mark.parametrize(
    ("encoding", "container", "media_type"),
    [
        ("linear16", "wav", "audio/wav"),
        ("flac", None, "audio/flac"),
        ("mp3", None, "audio/mpeg"),
        ("opus", "ogg", "audio/ogg"),
        ("mulaw", "wav", "audio/wav"),
    ],
)
def test_tts_returns_decodable_audio_of_plausible_length(
    encoding: str, container: str | None, media_type: str
) -> None:
    """Each supported encoding comes back as audio soundfile decodes, about len(text)/15 s long."""
    body: dict[str, Any] = {"text": TEXT, "model": "aura-2-thalia-en", "encoding": encoding}
    if container:
        body["container"] = container
    response = post(AURA_EN, json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    info = sf.info(io.BytesIO(response.content))
    assert info.duration == pytest.approx(len(TEXT) / 15, abs=0.15)


def test_tts_raw_linear16_is_headerless_pcm_at_the_requested_rate() -> None:
    """linear16 with container none is raw 16-bit PCM whose length matches the duration."""
    body = {"text": TEXT, "model": "aura-2-thalia-en", "encoding": "linear16"}
    response = post(AURA_EN, json={**body, "container": "none", "sample_rate": 16000})
    assert response.headers["content-type"] == "audio/l16"
    assert not response.content.startswith(b"RIFF")
    assert len(response.content) / 2 / 16000 == pytest.approx(len(TEXT) / 15, abs=0.01)


def test_tts_defaults_to_wav_and_third_party_route_to_raw_pcm() -> None:
    """Without an encoding the SLNG route sends WAV; deepgram/aura:2 sends raw audio/l16."""
    slng = post(AURA_EN, json={"text": "hi", "model": "aura-2-thalia-en"})
    third = post("/slng/v1/tts/deepgram/aura:2", json={"text": "hi", "voice": "asteria-en"})
    assert slng.status_code == 200
    assert slng.content.startswith(b"RIFF")
    assert third.status_code == 200
    assert third.headers["content-type"] == "audio/l16"
    assert len(third.content) == 2 * 24000 // 2  # the 0.5 s floor at 24 kHz, 2 bytes a sample


def test_every_response_carries_a_request_id() -> None:
    """Success and failure responses alike carry a distinct x-slng-request-id."""
    ok = post(AURA_EN, json={"text": "hi", "model": "aura-2-thalia-en"})
    missing = post("/slng/v1/tts/slng/nope:1", json={"text": "hi"})
    assert ok.headers["x-slng-request-id"] != missing.headers["x-slng-request-id"]


def test_unknown_model_is_404() -> None:
    """A model the emulator does not serve answers 404 with SLNG's body."""
    response = post("/slng/v1/tts/slng/deepgram/aura:9-xx", json={"text": "hi"})
    assert response.status_code == 404
    assert response.json() == {"error": "Model not found"}


def test_missing_text_is_a_field_error() -> None:
    """A TTS body without text is rejected with SLNG's zod-style field errors."""
    response = post(AURA_EN, json={"model": "aura-2-thalia-en"})
    assert response.status_code == 400
    assert response.json() == {"error": "Text is required", "fieldErrors": {"text": ["Required"]}}


def test_bad_encoding_and_missing_voice_name_each_field() -> None:
    """Every bad field is listed, each under its own name."""
    response = post(AURA_EN, json={"text": "hi", "encoding": "wma"})
    assert response.status_code == 400
    assert set(response.json()["fieldErrors"]) == {"model", "encoding"}


def test_text_over_the_limit_is_an_upstream_style_400() -> None:
    """Too-long text answers 400 whose details is Deepgram's INVALID_QUERY_PARAMETER JSON."""
    body = {"text": "x" * 11, "model": "aura-2-thalia-en"}
    response = run(
        lambda c: c.post(AURA_EN, headers=AUTH, json=body), EmulatorConfig(max_text_chars=10)
    )
    assert response.status_code == 400
    assert response.json()["error"] == "TTS service error"
    details = json.loads(response.json()["details"])
    assert details["err_code"] == "INVALID_QUERY_PARAMETER"
    assert "11" in details["err_msg"]


def test_tts_auth_failures_are_problem_style() -> None:
    """TTS answers 401 problem bodies for a missing header and for a key not on the list."""
    config = EmulatorConfig(api_keys=frozenset({"good"}))
    body = {"text": "hi", "model": "aura-2-thalia-en"}

    async def check(client: httpx.AsyncClient) -> tuple[httpx.Response, ...]:
        return (
            await client.post(AURA_EN, json=body),
            await client.post(AURA_EN, json=body, headers={"Authorization": "Bearer bad"}),
            await client.post(AURA_EN, json=body, headers={"Authorization": "Bearer good"}),
        )

    missing, wrong, right = run(check, config)
    assert missing.status_code == wrong.status_code == 401
    assert missing.json() == {
        "title": "Unauthorized",
        "status": 401,
        "detail": "No Authorization Header",
    }
    assert wrong.json()["detail"] == "Invalid API key"
    assert right.status_code == 200


def test_stt_auth_failure_uses_the_error_shape() -> None:
    """STT routes answer 401 as {"error","status","details"}."""
    response = post(NOVA_EN, files={"audio": ("a.wav", wav_bytes(1))}, headers={})
    assert response.status_code == 401
    assert response.json() == {
        "error": "Unauthorized",
        "status": 401,
        "details": "No Authorization Header",
    }


def test_nova_transcribes_a_wav_upload_in_deepgram_shape() -> None:
    """A multipart WAV gets a Deepgram-shaped result whose words fit inside the audio."""
    response = post(NOVA_EN, files={"audio": ("a.wav", wav_bytes(3.0))}, data={"language": "en"})
    assert response.status_code == 200
    result = response.json()
    assert result["metadata"]["duration"] == pytest.approx(3.0)
    assert result["metadata"]["request_id"] == response.headers["x-slng-request-id"]
    alternative = result["results"]["channels"][0]["alternatives"][0]
    words = alternative["words"]
    assert alternative["transcript"] == " ".join(w["word"] for w in words)
    assert words
    assert all(0 <= w["start"] < w["end"] <= 3.0 for w in words)
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(words))


def test_transcript_is_deterministic_per_audio() -> None:
    """The same bytes get the same transcript, sent as multipart or as base64 JSON."""
    clip = wav_bytes(2.0)
    first = post(NOVA_EN, files={"audio": ("a.wav", clip)}).json()
    second = post(NOVA_EN, json={"audio": base64.b64encode(clip).decode()}).json()
    transcript = first["results"]["channels"][0]["alternatives"][0]["transcript"]
    assert transcript == second["results"]["channels"][0]["alternatives"][0]["transcript"]


def test_whisper_returns_text_language_and_segments() -> None:
    """Whisper answers {text, language, segments} with segments inside the audio."""
    response = post(WHISPER, files={"audio": ("a.wav", wav_bytes(4.0))})
    assert response.status_code == 200
    result = response.json()
    assert result["language"] == "en"
    assert result["text"]
    assert result["segments"]
    assert result["segments"][-1]["end"] <= 4.0


def test_stt_without_audio_is_400() -> None:
    """A form without the audio part answers 400 "Missing required field: audio"."""
    response = post(NOVA_EN, data={"language": "en"}, files={"other": ("x", b"1")})
    assert response.status_code == 400
    assert response.json() == {"error": "Missing required field: audio"}


def test_non_audio_is_rejected_per_model() -> None:
    """Undecodable bytes get nova's 400 and Whisper's 500, as SLNG documents."""
    junk = {"audio": ("a.wav", b"this is not audio at all" * 10)}
    nova = post(NOVA_EN, files=junk)
    whisper = post(WHISPER, files=junk)
    assert nova.status_code == 400
    assert nova.json() == {"error": "Failed to process audio file", "status": 400}
    assert whisper.status_code == 500
    assert whisper.json() == {"error": "Failed to process audio file"}


def test_audio_over_the_size_limit_is_413() -> None:
    """Audio larger than max_audio_bytes answers 413 with SLNG's message."""
    clip = wav_bytes(1.0)
    response = run(
        lambda c: c.post(NOVA_EN, headers=AUTH, files={"audio": ("a.wav", clip)}),
        EmulatorConfig(max_audio_bytes=len(clip) - 1),
    )
    assert response.status_code == 413
    assert response.json() == {"error": "Audio file size exceeds maximum limit of 25MB"}


# --- other per-model TTS families ---------------------------------------------------------

RIME = "/slng/v1/tts/slng/rime/arcana:3-en"
CODA = "/slng/v1/tts/slng/rime/coda:0-id"
ORPHEUS = "/slng/v1/tts/slng/canopylabs/orpheus:en"
INWORLD = "/slng/v1/tts/slng/inworld/max:1.5"
BRIDGE_TTS = "/slng/v1/bridges/unmute/tts/"
BRIDGE_STT = "/slng/v1/bridges/unmute/stt/"


def test_rime_speaks_its_audio_format_at_its_rate_and_speed() -> None:
    """Rime's `audioFormat` MIME type and sample_rate pick the codec; speed 2 halves the length."""
    body = {"text": TEXT, "speaker": "astra", "audioFormat": "audio/mp3", "sample_rate": 22050}
    normal = post(RIME, json=body)
    fast = post(RIME, json={**body, "audioFormat": "audio/wav", "speed": 2.0})
    assert normal.headers["content-type"] == "audio/mpeg"
    info = sf.info(io.BytesIO(normal.content))
    assert info.samplerate == 22050
    assert info.duration == pytest.approx(len(TEXT) / 15, abs=0.15)
    assert sf.info(io.BytesIO(fast.content)).duration == pytest.approx(len(TEXT) / 30, abs=0.05)


@pytest.mark.parametrize(
    ("path", "body", "status", "answer"),
    [
        (
            RIME,
            {"text": "hi"},
            400,
            {"error": "Validation error", "details": "Missing required field: speaker"},
        ),
        (
            RIME,
            {"text": "hi", "speaker": "astra", "audioFormat": "audio/webm;codecs=opus"},
            400,
            {
                "error": "TTS service error",
                "details": "Rime TTS API error: 400 Bad Request - Unsupported audio format",
            },
        ),
        (
            CODA,
            {"text": "halo", "speaker": "astra"},
            500,
            {
                "error": "TTS service error",
                "details": "Rime TTS API error: 400 Bad Request - Invalid argument: "
                "Invalid speaker: astra",
            },
        ),
        (
            ORPHEUS,
            {"voice": "nobody", "prompt": "hi"},
            400,
            {
                "error": "Validation error",
                "details": "Invalid voice: nobody; expected one of "
                "'tara' | 'leah' | 'jess' | 'leo' | 'dan' | 'mia' | 'zac' | 'zoe'",
            },
        ),
        (
            INWORLD,
            {"text": "x" * 2001},
            400,
            {"error": "Validation error", "details": "text must be at most 2000 characters"},
        ),
    ],
)
def test_family_refusals_use_the_routes_own_bodies(
    path: str, body: dict[str, Any], status: int, answer: dict[str, Any]
) -> None:
    """Rime, Coda (a bad speaker is a 500), Orpheus and Inworld refuse in their own shapes."""
    response = post(path, json=body)
    assert (response.status_code, response.json()) == (status, answer)


def test_orpheus_takes_prompt_or_the_legacy_text_and_answers_24_khz_wav() -> None:
    """Orpheus reads `prompt` (or legacy `text`) and answers a 24 kHz WAV."""
    for body in ({"voice": "leo", "prompt": TEXT}, {"text": TEXT}):
        response = post(ORPHEUS, json=body)
        assert response.status_code == 200
        assert sf.info(io.BytesIO(response.content)).samplerate == 24000


def test_inworld_answers_json_with_base64_audio_in_the_asked_encoding() -> None:
    """Inworld answers JSON: base64 audioContent (MP3 at 48 kHz by default) and usage."""
    default = post(INWORLD, json={"text": TEXT})
    wav = post(INWORLD, json={"text": TEXT, "encoding": "WAV", "sample_rate": 16000})
    assert default.headers["content-type"] == "application/json"
    assert default.json()["usage"] == {
        "processedCharactersCount": len(TEXT),
        "modelId": "inworld-tts-1.5-max",
    }
    mp3 = base64.b64decode(default.json()["audioContent"])
    assert sf.info(io.BytesIO(mp3)).samplerate == 48000
    audio = base64.b64decode(wav.json()["audioContent"])
    assert audio.startswith(b"RIFF")
    assert sf.info(io.BytesIO(audio)).samplerate == 16000


def test_inworld_answer_faults_spoil_the_audio_inside_or_the_whole_answer() -> None:
    """`[[answer:lying_wav]]` lies inside the base64 audio; `[[answer:html]]` replaces the JSON."""
    lying = post(INWORLD, json={"text": "hi [[answer:lying_wav]]", "encoding": "WAV"})
    html = post(INWORLD, json={"text": "hi [[answer:html]]"})
    audio = base64.b64decode(lying.json()["audioContent"])
    claimed = int.from_bytes(audio[40:44], "little")  # the data chunk's size
    assert claimed > 5 * (len(audio) - 44)
    assert html.headers["content-type"].startswith("text/html")


# --- bridges ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "media_type", "magic"),
    [
        ("slng/deepgram/aura:2-en", "audio/wav", b"RIFF"),
        ("slng%2Fdeepgram%2Faura:2-en", "audio/wav", b"RIFF"),
        ("deepgram/aura:2", "audio/l16", None),
        ("elevenlabs/eleven-flash:2.5", "audio/mpeg", None),
    ],
)
def test_bridge_tts_codec_varies_by_upstream(
    variant: str, media_type: str, magic: bytes | None
) -> None:
    """The bridge sends WAV, raw PCM from Deepgram or MP3 from ElevenLabs; %2F paths work too."""
    response = post(BRIDGE_TTS + variant, json={"text": TEXT, "voice": "aura-2-thalia-en"})
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    if magic is not None:
        assert response.content.startswith(magic)
    if media_type == "audio/l16":
        assert len(response.content) / 2 / 24000 == pytest.approx(len(TEXT) / 15, abs=0.01)
    else:
        assert sf.info(io.BytesIO(response.content)).duration == pytest.approx(
            len(TEXT) / 15, abs=0.15
        )


def test_bridge_tts_accepts_only_text_and_voice() -> None:
    """A bridge body with a `config` is a 400 naming the key; one without text is a 400 too."""
    extra = post(BRIDGE_TTS + "cartesia/sonic:3", json={"text": "hi", "config": {}})
    missing = post(BRIDGE_TTS + "cartesia/sonic:3", json={"voice": "v"})
    assert extra.status_code == missing.status_code == 400
    assert extra.json()["details"] == "Unrecognized key(s) in object: 'config'"
    assert missing.json() == {"error": "Text is required", "status": 400}


def test_bridge_auth_failure_is_a_403_and_unknown_variants_404() -> None:
    """Bridges refuse a missing key with 403 {error,message,statusCode}; unknown variants 404."""
    tts = post(BRIDGE_TTS + "cartesia/sonic:3", json={"text": "hi"}, headers={})
    stt = post(BRIDGE_STT + "deepgram/nova:3", files={"audio": ("a.wav", wav_bytes(1))}, headers={})
    unknown = post(BRIDGE_TTS + "acme/tts:1", json={"text": "hi"})
    for response in (tts, stt):
        assert response.status_code == 403
        assert response.json() == {
            "error": "Forbidden",
            "message": "Missing or invalid Bearer token",
            "statusCode": 403,
        }
    assert (unknown.status_code, unknown.json()) == (404, {"error": "Model not found"})


def test_bridge_routes_share_the_dials() -> None:
    """A `[[fail:1]]` line on a bridge gets SLNG's 503 once, then its audio."""

    async def check(client: httpx.AsyncClient) -> list[httpx.Response]:
        body = {"text": "once more [[fail:1]]"}
        path = BRIDGE_TTS + "slng/rime/arcana:en"
        return [await client.post(path, json=body, headers=AUTH) for _ in range(2)]

    first, second = run(check)
    assert (first.status_code, first.json()) == (
        503,
        {"error": "Service unavailable", "status": 503},
    )
    assert second.status_code == 200


def test_bridge_stt_answers_the_cognigy_shape() -> None:
    """The bridge answers {type: transcription, is_final, alternatives, channel, language}."""
    clip = wav_bytes(2.0)
    form = {"sample_rate": "16000", "encoding": "linear16", "enable_partials": "false"}
    response = post(
        BRIDGE_STT + "slng/deepgram/nova:3-es", files={"audio": ("a.wav", clip)}, data=form
    )
    assert response.status_code == 200
    result = response.json()
    assert set(result) == {"type", "is_final", "alternatives", "channel", "language"}
    assert (result["type"], result["is_final"], result["language"]) == ("transcription", True, "es")
    assert result["alternatives"][0]["transcript"]


@pytest.mark.parametrize(
    ("form", "details"),
    [
        ({"sample_rate": "11025"}, "sample_rate must be one of"),
        ({"encoding": "flac"}, "encoding must be one of"),
    ],
)
def test_bridge_stt_checks_its_fields(form: dict[str, str], details: str) -> None:
    """The bridge refuses a sample_rate or encoding outside its enums with a 400."""
    response = post(
        BRIDGE_STT + "deepgram/nova:3", files={"audio": ("a.wav", wav_bytes(1))}, data=form
    )
    assert response.status_code == 400
    assert response.json()["details"].startswith(details)


def test_bridge_stt_refuses_undecodable_audio() -> None:
    """Bytes that are not audio get the bridge's 400 "Failed to process audio file"."""
    junk = {"audio": ("a.wav", b"this is not audio at all" * 10)}
    response = post(BRIDGE_STT + "slng/openai/whisper:large-v3", files=junk)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "Failed to process audio file", "status": 400},
    )
