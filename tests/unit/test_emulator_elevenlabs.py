"""The emulator's ElevenLabs routes: TTS audio whole, chunked and with timestamps, Scribe
transcripts from multipart uploads, the plan's concurrency, the quota and ElevenLabs' own
error bodies; and the adapter against the emulator served on loopback."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from starlette.applications import Starlette
from starlette.routing import Mount

from emulator import elevenlabs
from emulator.config import EmulatorConfig
from emulator.dials import Dials, Script
from emulator.faults import StreamCut
from tests.unit.emulator_client import run
from tests.unit.ws_emulator import serving
from workers.audio import pcm16_to_wav
from workers.providers.base import AudioInput
from workers.providers.elevenlabs import ElevenLabsProvider
from workers.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    QuotaExceeded,
    RateLimited,
)

KEY = "xi-test-key-0123456789"
AUTH = {"xi-api-key": KEY}
VOICE = "JBFqnCBsd6RMkjVDRZzb"
TTS = f"/elevenlabs/v1/text-to-speech/{VOICE}"
STT = "/elevenlabs/v1/speech-to-text"
TEXT = "Hello there, this is a test of the emulator voice."  # 50 chars -> ~3.33 s
SPEECH = {"text": TEXT, "model_id": "eleven_multilingual_v2"}


def post(path: str, config: EmulatorConfig | None = None, **kwargs: Any) -> httpx.Response:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    response: httpx.Response = run(
        lambda client: client.post(path, headers=headers, **kwargs), config
    )
    return response


def app_with(dials: Dials, **kw: Any) -> Starlette:
    """An app of the ElevenLabs routes alone, built with `kw` (plan, quota)."""
    return Starlette(routes=[Mount(elevenlabs.PREFIX, routes=elevenlabs.routes(dials, **kw))])


def on(app: Starlette, check: Any) -> Any:
    async def main() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://e") as client:
            return await check(client)

    return asyncio.run(main())


def wav_bytes(seconds: float, rate: int = 16000) -> bytes:
    """A 300 Hz tone of `seconds` as a 16-bit WAV."""
    tone = 6000 * np.sin(2 * np.pi * 300 * np.arange(int(seconds * rate)) / rate)
    return pcm16_to_wav(tone.astype("<i2").tobytes(), rate)


def scribe(data: bytes, config: EmulatorConfig | None = None, /, **fields: str) -> httpx.Response:
    form = {"model_id": "scribe_v1", **fields}
    return post(STT, config, data=form, files={"file": ("clip.wav", data, "audio/wav")})


# --- TTS --------------------------------------------------------------------------------------


def test_the_default_format_is_mp3_of_plausible_length_with_elevenlabs_headers() -> None:
    """No output_format gives mp3_44100_128 about len(text)/15 s long, with request-id and
    the plan's concurrency headers."""
    response = post(TTS, json=SPEECH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/mpeg"
    info = sf.info(io.BytesIO(response.content))
    assert (info.format, info.samplerate) == ("MP3", 44100)
    assert info.duration == pytest.approx(len(TEXT) / 15, abs=0.1)
    assert response.headers["request-id"]
    assert response.headers["maximum-concurrent-requests"] == "2"
    assert response.headers["current-concurrent-requests"] == "1"


@pytest.mark.parametrize(("fmt", "rate"), [("pcm_16000", 16000), ("pcm_24000", 24000)])
def test_pcm_formats_are_headerless_pcm_at_their_rate(fmt: str, rate: int) -> None:
    """output_format pcm_<rate> is raw 16-bit PCM of the text's length at that rate, and
    voice_settings.speed shortens it."""
    plain = post(f"{TTS}?output_format={fmt}", json=SPEECH)
    fast = post(f"{TTS}?output_format={fmt}", json={**SPEECH, "voice_settings": {"speed": 1.2}})
    assert not plain.content.startswith(b"RIFF")
    assert len(plain.content) / 2 / rate == pytest.approx(len(TEXT) / 15, abs=0.01)
    assert len(fast.content) / 2 / rate == pytest.approx(len(TEXT) / 15 / 1.2, abs=0.01)


def test_opus_and_ulaw_formats_decode() -> None:
    """opus_48000_64 is an Ogg Opus file; ulaw_8000 is 8 kHz mu-law, one byte a sample."""
    opus = post(f"{TTS}?output_format=opus_48000_64", json=SPEECH)
    ulaw = post(f"{TTS}?output_format=ulaw_8000", json=SPEECH)
    assert sf.info(io.BytesIO(opus.content)).format == "OGG"
    assert len(ulaw.content) / 8000 == pytest.approx(len(TEXT) / 15, abs=0.01)


def test_stream_sends_the_same_bytes_chunked_and_paced() -> None:
    """Served on loopback, /stream answers the bytes the whole route sends, in several chunks:
    the first at ttfb_ms, the last at latency_ms."""
    with serving(EmulatorConfig(ttfb_ms=300, latency_ms=700)) as (url, _):
        whole = httpx.post(f"{url}{TTS}?output_format=pcm_16000", headers=AUTH, json=SPEECH)
        started = time.perf_counter()
        chunks, stamps = [], []
        with httpx.stream(
            "POST", f"{url}{TTS}/stream?output_format=pcm_16000", headers=AUTH, json=SPEECH
        ) as response:
            for chunk in response.iter_raw():
                chunks.append(chunk)
                stamps.append(time.perf_counter() - started)
    assert len(chunks) > 1 and b"".join(chunks) == whole.content
    assert 0.25 <= stamps[0] < 0.6
    assert stamps[-1] >= 0.65


def test_with_timestamps_gives_base64_audio_and_an_alignment() -> None:
    """/with-timestamps answers the audio as base64 with one time per character."""
    response = post(f"{TTS}/with-timestamps?output_format=pcm_16000", json=SPEECH)
    body = response.json()
    assert len(base64.b64decode(body["audio_base64"])) / 32000 == pytest.approx(3.33, abs=0.01)
    alignment = body["alignment"]
    assert "".join(alignment["characters"]) == TEXT
    assert len(alignment["character_start_times_seconds"]) == len(TEXT)


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        (TTS, {"model_id": "eleven_v3"}, 422, None),
        ("/elevenlabs/v1/text-to-speech/not-a-voice", SPEECH, 404, "voice_not_found"),
        (TTS, {**SPEECH, "model_id": "eleven_v9"}, 404, "model_not_found"),
        (TTS, {**SPEECH, "language_code": "de"}, 400, "invalid_parameters"),
        (TTS, {**SPEECH, "model_id": "eleven_v3", "text": "a" * 3001}, 400,
         "max_character_limit_exceeded"),
        (f"{TTS}?output_format=wav", SPEECH, 422, None),
        (TTS, {**SPEECH, "voice_settings": {"speed": 2}}, 422, None),
        (TTS, {**SPEECH, "text": "  "}, 400, "invalid_parameters"),
    ],
)  # fmt: skip
def test_bad_requests_are_refused_in_elevenlabs_shapes(
    path: str, body: dict[str, Any], status: int, code: str | None
) -> None:
    """Schema misfits are FastAPI's 422 list; other refusals are `detail` with type, code,
    message, the legacy status mirror and the request id."""
    response = post(path, json=body)
    assert response.status_code == status
    detail = response.json()["detail"]
    if code is None:
        assert isinstance(detail, list) and {"loc", "msg", "type"} <= set(detail[0])
    else:
        assert (detail["code"], detail["status"]) == (code, code)
        assert detail["request_id"] == response.headers["request-id"] and detail["message"]


def test_language_code_is_taken_by_flash_v2_5() -> None:
    """language_code is accepted on eleven_flash_v2_5 (and refused on Multilingual v2)."""
    body = {**SPEECH, "model_id": "eleven_flash_v2_5", "language_code": "de"}
    assert post(TTS, json=body).status_code == 200


def test_auth_failures_name_their_reason() -> None:
    """No key is 401 needs_authorization, an unlisted key 401 invalid_api_key; a listed key
    passes as xi-api-key or as a Bearer token."""
    config = EmulatorConfig(api_keys=frozenset({KEY}))
    missing = post(TTS, config, json=SPEECH, headers={"xi-api-key": ""})
    wrong = post(TTS, config, json=SPEECH, headers={"xi-api-key": "nope"})
    bearer = run(
        lambda c: c.post(TTS, json=SPEECH, headers={"Authorization": f"Bearer {KEY}"}), config
    )
    assert (missing.status_code, missing.json()["detail"]["status"]) == (
        401,
        "needs_authorization",
    )
    assert (wrong.status_code, wrong.json()["detail"]["code"]) == (401, "invalid_api_key")
    assert wrong.json()["detail"]["type"] == "authentication_error"
    assert bearer.status_code == 200


# --- limits and faults ------------------------------------------------------------------------


def test_the_plan_caps_requests_in_flight_per_key_and_family() -> None:
    """On the Free plan a third Multilingual request in flight is 429
    too_many_concurrent_requests, while a Flash one (its own column) and another key pass."""
    dials = Dials(EmulatorConfig(latency_ms=300))

    async def check(client: httpx.AsyncClient) -> list[httpx.Response]:
        held = [
            asyncio.ensure_future(client.post(TTS, headers=AUTH, json=SPEECH)) for _ in range(2)
        ]
        await asyncio.sleep(0.1)
        third = await client.post(TTS, headers=AUTH, json=SPEECH)
        flash = await client.post(
            TTS, headers=AUTH, json={**SPEECH, "model_id": "eleven_flash_v2_5"}
        )
        other = await client.post(TTS, headers={"xi-api-key": "k2"}, json=SPEECH)
        return [*(await asyncio.gather(*held)), third, flash, other]

    answers = on(app_with(dials), check)
    assert [a.status_code for a in answers] == [200, 200, 429, 200, 200]
    detail = answers[2].json()["detail"]
    assert detail["status"] == "too_many_concurrent_requests"
    assert "maximum of 2" in detail["message"]
    roomy = on(app_with(Dials(EmulatorConfig(latency_ms=300)), plan="pro"), check)
    assert [a.status_code for a in roomy] == [200] * 5


def test_the_character_quota_is_a_401_quota_exceeded() -> None:
    """Past the key's character quota ElevenLabs answers 401 quota_exceeded."""
    app = app_with(Dials(EmulatorConfig()), quota=len(TEXT) + 10)

    async def check(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.post(TTS, headers=AUTH, json=SPEECH) for _ in range(2)]

    first, second = on(app, check)
    assert (first.status_code, second.status_code) == (200, 401)
    assert second.json()["detail"]["code"] == "quota_exceeded"


def test_injected_429s_are_rate_limits_with_retry_after_or_system_busy_without() -> None:
    """A [[status:429]] (with the dials' Retry-After) is rate_limit_exceeded; a scripted 429
    with no Retry-After is system_busy; a 503 comes in the `detail` shape."""
    limited = post(
        TTS, EmulatorConfig(retry_after_s=2), json={**SPEECH, "text": "hi [[status:429]]"}
    )
    dials = Dials(EmulatorConfig())
    dials.add_script(Script(1, 429, None, "text-to-speech"))
    busy = on(app_with(dials), lambda c: c.post(TTS, headers=AUTH, json=SPEECH))
    down = post(TTS, json={**SPEECH, "text": "hi [[status:503]]"})
    assert limited.json()["detail"]["code"] == "rate_limit_exceeded"
    assert limited.headers["retry-after"] == "2"
    assert (busy.status_code, busy.json()["detail"]["status"]) == (429, "system_busy")
    assert "retry-after" not in busy.headers
    assert down.status_code == 503 and down.json()["detail"]["type"] == "service_error"


def test_a_cut_stream_breaks_off_mid_body() -> None:
    """[[answer:cut]] on /stream sends part of the audio and drops the connection."""
    body = {**SPEECH, "text": f"{TEXT} [[answer:cut]]"}
    with pytest.raises(StreamCut):
        post(f"{TTS}/stream?output_format=pcm_16000", json=body)


# --- Scribe STT -------------------------------------------------------------------------------


def test_scribe_answers_words_and_spacing_over_the_recording() -> None:
    """A WAV upload gets {language_code, language_probability, text, words}: word and spacing
    entries alternating inside the recording, with speaker ids and logprobs."""
    response = scribe(wav_bytes(3.0))
    body = response.json()
    assert response.status_code == 200 and response.headers["request-id"]
    assert body["language_code"] == "eng" and body["text"]
    kinds = [w["type"] for w in body["words"]]
    assert kinds[0] == "word" and kinds[1::2] == ["spacing"] * (len(kinds) // 2)
    assert all(0 <= w["start"] <= w["end"] <= 3.0 for w in body["words"])
    assert {w["speaker_id"] for w in body["words"]} == {"speaker_0"}
    words = [w["text"] for w in body["words"] if w["type"] == "word"]
    assert " ".join(words) == body["text"]


def test_scribe_diarises_gives_characters_and_takes_the_sdk_nulls() -> None:
    """diarize gives two speakers, character granularity gives per-character times, the SDK's
    literal "null" fields are ignored, and a language sets language_code."""
    nulls = {"webhook_metadata": "null", "entity_detection": "null"}
    response = scribe(
        wav_bytes(3.0), diarize="true", timestamps_granularity="character", language_code="es",
        **nulls,
    )  # fmt: skip
    body = response.json()
    assert response.status_code == 200
    assert body["language_code"] == "spa" and body["language_probability"] == 1.0
    words = [w for w in body["words"] if w["type"] == "word"]
    assert {w["speaker_id"] for w in words} == {"speaker_0", "speaker_1"}
    assert "".join(c["text"] for c in words[0]["characters"]) == words[0]["text"]


def test_raw_pcm_is_read_with_file_format_pcm_s16le_16() -> None:
    """file_format pcm_s16le_16 takes headerless 16 kHz PCM, timed by its length."""
    pcm = wav_bytes(2.0)[44:]
    body = scribe(pcm, file_format="pcm_s16le_16").json()
    assert body["words"][-1]["end"] <= 2.0 and body["text"]


def test_webhook_requests_are_accepted_with_202() -> None:
    """webhook=true answers 202 {message, request_id}."""
    response = scribe(wav_bytes(1.0), webhook="true")
    assert response.status_code == 202
    assert response.json()["request_id"] == response.headers["request-id"]


@pytest.mark.parametrize(
    ("fields", "data", "status", "code"),
    [
        ({"model_id": "scribe_v9"}, wav_bytes(1.0), 400, "invalid_parameters"),
        ({"keyterms": "speechbatch"}, wav_bytes(1.0), 400, "invalid_parameters"),
        ({"cloud_storage_url": "https://x.test/a.wav"}, wav_bytes(1.0), 400,
         "invalid_parameters"),
        ({}, b"not audio at all" * 20, 400, "invalid_audio"),
        ({"timestamps_granularity": "phoneme"}, wav_bytes(1.0), 422, None),
        ({"num_speakers": "33"}, wav_bytes(1.0), 422, None),
    ],
)  # fmt: skip
def test_scribe_refusals(
    fields: dict[str, str], data: bytes, status: int, code: str | None
) -> None:
    """Bad fields and undecodable audio are refused in ElevenLabs' shapes."""
    response = scribe(data, **fields)
    assert response.status_code == status
    detail = response.json()["detail"]
    assert detail[0]["loc"] if code is None else detail["code"] == code


def test_scribe_without_model_or_file_is_refused() -> None:
    """A form without model_id is 422; one without a file (or URL) is 400; JSON is 422."""
    no_model = post(STT, files={"file": ("a.wav", wav_bytes(1.0), "audio/wav")})
    no_file = post(STT, data={"model_id": "scribe_v1"}, files={"x": ("a", b"1")})
    as_json = post(STT, json={"model_id": "scribe_v1"})
    assert no_model.status_code == 422 and no_model.json()["detail"][0]["loc"][-1] == "model_id"
    assert no_file.status_code == 400
    assert as_json.status_code == 422


def test_uploads_over_the_cap_are_413_whether_or_not_they_say_their_length() -> None:
    """Past max_audio_bytes (and the form's slack) the upload is 413 file_too_large, by its
    Content-Length or, chunked, while it is read."""
    clip = wav_bytes(3.0)
    small = EmulatorConfig(max_audio_bytes=len(clip) // 2)
    declared = scribe(clip, small)
    form = httpx.Request(
        "POST", "http://e", data={"model_id": "scribe_v1"}, files={"file": ("a.wav", clip)}
    )
    payload, headers = form.read(), {"content-type": form.headers["content-type"]}

    async def pieces() -> Any:
        for n in range(0, len(payload), 4096):
            yield payload[n : n + 4096]

    chunked = post(STT, small, content=pieces(), headers=headers)
    assert (declared.status_code, chunked.status_code) == (413, 413)
    assert chunked.json()["detail"]["code"] == "file_too_large"


def test_an_unordered_answer_fault_really_reverses_scribe_times() -> None:
    """answer_fault=unordered makes the word times run backwards."""
    body = scribe(wav_bytes(3.0), EmulatorConfig(answer_fault="unordered")).json()
    starts = [w["start"] for w in body["words"]]
    assert len(starts) > 1 and starts == sorted(starts, reverse=True)


# --- the adapter against the emulator ---------------------------------------------------------


def test_the_adapter_and_the_emulator_agree() -> None:
    """Over loopback the adapter gets a WAV over HTTP, streamed PCM into a sink and a Scribe
    transcript, and reads the emulator's refusals as the documented errors."""
    pieces: list[bytes] = []

    class Sink:
        rate = 0

        def start(self, sample_rate: int) -> None:
            self.rate = sample_rate

        def write(self, pcm: bytes) -> None:
            pieces.append(pcm)

    with serving(EmulatorConfig(api_keys=frozenset({KEY}))) as (url, _):
        client = httpx.Client(timeout=10)
        adapter = ElevenLabsProvider(client, base_url=f"{url}/elevenlabs", api_key=KEY)
        whole = adapter.synthesize(TEXT, model="eleven_turbo_v2_5", voice=None, options={})
        sink = Sink()
        streamed = adapter.synthesize(
            TEXT, model="eleven_flash_v2_5", voice=VOICE, options={"transport": "stream"},
            sink=sink,
        )  # fmt: skip
        clip = AudioInput(whole.audio, "line.wav", "audio/wav")
        transcript = adapter.transcribe(clip, model="scribe_v2", options={"language": "en"})
        with pytest.raises(InvalidInput) as unknown:
            adapter.synthesize(TEXT, model="eleven_v3", voice="Rachel", options={})
        over = ElevenLabsProvider(client, base_url=f"{url}/elevenlabs", api_key="other-key-1234")
        with pytest.raises(AuthenticationFailed) as refused:
            over.synthesize(TEXT, model="eleven_v3", voice=None, options={})
    assert sf.info(io.BytesIO(whole.audio)).duration == pytest.approx(len(TEXT) / 15, abs=0.05)
    assert streamed.streamed and sink.rate == 24000
    assert len(b"".join(pieces)) / 2 / 24000 == pytest.approx(len(TEXT) / 15, abs=0.01)
    assert transcript.words and transcript.segments and transcript.language == "eng"
    assert unknown.value.code == "unknown_voice"
    assert "invalid_api_key" in refused.value.message


def test_the_adapter_reads_the_plan_cap_and_the_quota() -> None:
    """The emulator's plan-cap 429 is RateLimited with the short wait, its quota 401 is
    QuotaExceeded."""
    dials = Dials(EmulatorConfig(latency_ms=200))
    app = app_with(dials, quota=len(TEXT) * 2)
    results: list[Any] = []

    async def check(client: httpx.AsyncClient) -> None:
        held = [
            asyncio.ensure_future(client.post(TTS, headers=AUTH, json=SPEECH)) for _ in range(2)
        ]
        await asyncio.sleep(0.05)
        results.append(await client.post(TTS, headers=AUTH, json=SPEECH))
        await asyncio.gather(*held)
        results.append(await client.post(TTS, headers=AUTH, json=SPEECH))

    on(app, check)
    capped, broke = results

    def replay(response: httpx.Response) -> Any:
        adapter = ElevenLabsProvider(
            httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(
                response.status_code, content=response.content, headers=response.headers))),
            base_url="http://e/elevenlabs", api_key=KEY,
        )  # fmt: skip
        return adapter.synthesize(TEXT, model="eleven_multilingual_v2", voice=None, options={})

    with pytest.raises(RateLimited) as limited:
        replay(capped)
    with pytest.raises(QuotaExceeded):
        replay(broke)
    assert limited.value.retry_after == 1.0
