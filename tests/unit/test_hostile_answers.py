"""Misbehaving 200s from the emulator (emulator/faults.py) replayed to the SLNG adapter.

Each answer is made by the in-process emulator, then handed to `SlngProvider` through an
httpx.MockTransport, so the emulator's faults and the worker's checks are proven together.
"""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from emulator.config import EmulatorConfig
from tests.unit.emulator_client import AURA_EN, run
from workers.audio import pcm16_to_wav
from workers.providers.base import AudioInput
from workers.providers.errors import PermanentProviderError, ProviderError, ProviderUnavailable
from workers.providers.exchange import Bounds
from workers.providers.slng import SlngProvider

KEY = "zpka_live_0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {KEY}"}
SMALL = Bounds(max_tts_bytes=2 * 1024 * 1024, max_stt_bytes=1024 * 1024)
CLIP = AudioInput(
    data=pcm16_to_wav(b"\x10\x00\x20\x00" * 24000, 16000),
    filename="a.wav",
    content_type="audio/wav",
)


def emulated(method: str, path: str, config: EmulatorConfig | None = None, **kw: Any) -> Any:
    """The emulator's answer to one request: (status, headers, body)."""

    async def check(client: httpx.AsyncClient) -> tuple[int, httpx.Headers, bytes]:
        response = await client.request(method, path, headers=HEADERS, **kw)
        return response.status_code, response.headers, response.content

    return run(check, config)


def replayed(status: int, headers: httpx.Headers, body: bytes) -> SlngProvider:
    def handler(request: httpx.Request) -> httpx.Response:
        kept = {k: v for k, v in headers.items() if k.lower() != "content-length"}
        return httpx.Response(status, headers=kept, content=body)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    return SlngProvider(client, base_url="http://emulator/slng", api_key=KEY, bounds=SMALL)


@pytest.mark.parametrize("kind", ["html", "random", "lying_wav", "long_flac"])
def test_tts_200s_that_are_not_speech_are_bad_provider_output(kind: str) -> None:
    """HTML, noise, a WAV claiming 10x its frames and a FLAC of 2 h for one line are each a
    transient bad_provider_output, never audio to store."""
    text = f"Hello there. [[answer:{kind}]]"
    body = {"text": text, "model": "aura-2-thalia-en", "container": "wav"}
    status, headers, content = emulated("POST", AURA_EN, json=body)
    assert status == 200 and content
    with pytest.raises(ProviderUnavailable) as excinfo:
        replayed(status, headers, content).synthesize(
            text, model="slng/deepgram/aura:2-en", voice=None, options={}
        )
    assert excinfo.value.code == "bad_provider_output"


def test_random_bytes_as_raw_pcm_are_refused_too() -> None:
    """On the raw-PCM route (deepgram/aura:2) noise cannot hide as headerless samples."""
    text = "Hello there. [[answer:random]]"
    status, headers, content = emulated(
        "POST", "/slng/v1/tts/deepgram/aura:2", json={"text": text, "voice": "asteria-en"}
    )
    with pytest.raises(ProviderUnavailable) as excinfo:
        replayed(status, headers, content).synthesize(
            text, model="deepgram/aura:2", voice=None, options={}
        )
    assert excinfo.value.code == "bad_provider_output"


def test_a_tts_answer_over_the_size_cap_is_cut_off() -> None:
    """A streamed answer beyond SPEECHBATCH_MAX_TTS_RESPONSE_BYTES fails as too large."""
    text = "Hello. [[answer:huge]]"
    config = EmulatorConfig(huge_bytes=3 * 1024 * 1024)
    status, headers, content = emulated(
        "POST", AURA_EN, config, json={"text": text, "model": "aura-2-thalia-en"}
    )
    assert len(content) == 3 * 1024 * 1024 and "content-length" not in headers
    with pytest.raises(PermanentProviderError) as excinfo:
        replayed(status, headers, content).synthesize(
            text, model="slng/deepgram/aura:2-en", voice=None, options={}
        )
    assert excinfo.value.code == "provider_response_too_large"
    assert "SPEECHBATCH_MAX_TTS_RESPONSE_BYTES" in excinfo.value.message


NOVA, WHISPER = "slng/deepgram/nova:3-en", "slng/openai/whisper:large-v3"


@pytest.mark.parametrize(
    ("kind", "model"),
    [
        (kind, model)
        for kind in ("html", "nan", "negative", "unordered")
        for model in (NOVA, WHISPER)
    ]
    + [("huge_transcript", WHISPER)],
)
def test_stt_200s_with_bad_transcripts_are_refused(kind: str, model: str) -> None:
    """HTML, NaN or -1e300 times, times going backwards and a million-word transcript never
    become a Transcript: bad_provider_output (or too large), so nothing reaches usage."""
    config = EmulatorConfig(answer_fault=kind)
    files = {"audio": ("a.wav", CLIP.data, "audio/wav")}
    status, headers, content = emulated("POST", f"/slng/v1/stt/{model}", config, files=files)
    assert status == 200
    if kind == "nan":
        assert b"NaN" in content
    with pytest.raises((ProviderUnavailable, PermanentProviderError)) as excinfo:
        replayed(status, headers, content).transcribe(CLIP, model=model, options={})
    expected = "provider_response_too_large" if kind == "huge_transcript" else "bad_provider_output"
    assert excinfo.value.code == expected


def test_a_good_emulated_transcript_still_passes() -> None:
    """The checks accept the emulator's ordinary transcript (finite, ordered, within the audio)."""
    files = {"audio": ("a.wav", CLIP.data, "audio/wav")}
    status, headers, content = emulated("POST", "/slng/v1/stt/slng/deepgram/nova:3-en", files=files)
    transcript = replayed(status, headers, content).transcribe(
        CLIP, model="slng/deepgram/nova:3-en", options={}
    )
    assert transcript.words and transcript.duration_s is not None
    assert math.isfinite(transcript.duration_s) and 0 < transcript.duration_s <= 3.5


def test_the_key_is_redacted_in_any_case_and_as_a_prefix() -> None:
    """An error body echoing the key upper-cased, or cut to its first 10 characters, is redacted."""
    echoed = f"bad header {KEY.upper()} and {KEY[:10]}… also {KEY}"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": echoed})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    slng = SlngProvider(client, base_url="http://emulator/slng", api_key=KEY)
    with pytest.raises(ProviderError) as excinfo:
        slng.synthesize("Hi.", model="slng/deepgram/aura:2-en", voice=None, options={})
    message = excinfo.value.message.lower()
    assert KEY[:8].lower() not in message
    assert message.count("[redacted]") == 3


def test_answer_faults_are_checked_and_switchable_at_runtime() -> None:
    """An unknown answer fault is refused; PATCH /_emulator/config turns a known one on."""
    with pytest.raises(ValueError, match="answer_fault"):
        EmulatorConfig(answer_fault="bogus")

    async def check(client: httpx.AsyncClient) -> Any:
        patched = await client.patch("/_emulator/config", json={"answer_fault": "html"})
        body = {"text": "Hi.", "model": "aura-2-thalia-en"}
        spoiled = await client.post(AURA_EN, headers=HEADERS, json=body)
        return patched.json()["answer_fault"], spoiled.headers["content-type"]

    assert run(check) == ("html", "text/html; charset=utf-8")
