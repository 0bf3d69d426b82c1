"""The emulator's OpenAI routes: speech as files, raw PCM and SSE, transcription in every
response format, OpenAI's auth, limits and error bodies, and the pacing of streamed speech."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from emulator.app import create_app
from emulator.config import EmulatorConfig
from emulator.dials import Dials, Script
from emulator.faults import StreamCut
from tests.unit.emulator_client import run
from tests.unit.ws_emulator import serving
from workers.audio import pcm16_to_wav

KEY = "sk-emulated-openai-0123"
AUTH = {"Authorization": f"Bearer {KEY}"}
SPEECH_PATH = "/openai/v1/audio/speech"
STT_PATH = "/openai/v1/audio/transcriptions"
TEXT = "Hello there, this is a test of the emulator voice."  # 50 chars -> ~3.33 s
SPEECH = {"model": "tts-1", "input": TEXT, "voice": "alloy"}


def post(path: str, config: EmulatorConfig | None = None, **kwargs: Any) -> httpx.Response:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    response: httpx.Response = run(
        lambda client: client.post(path, headers=headers, **kwargs), config
    )
    return response


def wav_bytes(seconds: float, rate: int = 16000) -> bytes:
    """A 300 Hz tone of `seconds` as a 16-bit WAV."""
    tone = 6000 * np.sin(2 * np.pi * 300 * np.arange(int(seconds * rate)) / rate)
    return pcm16_to_wav(tone.astype("<i2").tobytes(), rate)


CLIP = wav_bytes(2.0)


def transcribe(
    fields: dict[str, Any], clip: bytes = CLIP, name: str = "call.wav", **kwargs: Any
) -> httpx.Response:
    return post(STT_PATH, files={"file": (name, clip, "audio/wav")}, data=fields, **kwargs)


def events(body: bytes) -> list[dict[str, Any]]:
    """The JSON data of each SSE event in `body`."""
    return [
        json.loads(block.removeprefix("data: "))
        for block in body.decode().split("\n\n")
        if block.startswith("data: ")
    ]


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


# --- speech -----------------------------------------------------------------------------------


def test_speech_is_mp3_by_default_and_wav_or_pcm_when_asked() -> None:
    """No response_format gives an MP3; wav is a 24 kHz WAV and pcm headerless 24 kHz 16-bit
    audio, each about len(text)/15 s long, with x-request-id and openai-processing-ms."""
    default = post(SPEECH_PATH, json=SPEECH)
    assert default.headers["content-type"] == "audio/mpeg"
    assert sf.info(io.BytesIO(default.content)).format == "MP3"
    wav = post(SPEECH_PATH, json={**SPEECH, "response_format": "wav"})
    info = sf.info(io.BytesIO(wav.content))
    assert (info.samplerate, wav.headers["content-type"]) == (24000, "audio/wav")
    assert info.duration == pytest.approx(len(TEXT) / 15, abs=0.05)
    pcm = post(SPEECH_PATH, json={**SPEECH, "response_format": "pcm", "speed": 2})
    assert not pcm.content.startswith(b"RIFF")
    assert len(pcm.content) / 2 / 24000 == pytest.approx(len(TEXT) / 30, abs=0.01)
    for response in (default, wav, pcm):
        assert response.headers["x-request-id"].startswith("req_")
        assert response.headers["openai-processing-ms"].isdigit()


@pytest.mark.parametrize(
    ("change", "status", "param", "code"),
    [
        ({"input": None}, 400, "input", "missing"),
        ({"input": "a" * 4097}, 400, "input", "string_above_max_length"),
        ({"voice": "robot"}, 400, "voice", "invalid_value"),
        ({"model": "tts-2"}, 404, None, "model_not_found"),
        ({"speed": 5}, 400, "speed", None),
        ({"response_format": "wma"}, 400, "response_format", "invalid_value"),
        ({"stream_format": "sse"}, 400, "stream_format", "unsupported_value"),
        ({"response_format": "aac"}, 501, None, None),
    ],
)
def test_bad_speech_bodies_are_refused_in_openais_shape(
    change: dict[str, Any], status: int, param: str | None, code: str | None
) -> None:
    """Each bad field is refused with OpenAI's {"error": {message, type, param, code}}."""
    body = {k: v for k, v in {**SPEECH, **change}.items() if v is not None}
    response = post(SPEECH_PATH, json=body)
    assert response.status_code == status
    error = error_of(response)
    assert (error["param"], error["code"]) == (param, code)


def test_a_custom_voice_and_4096_characters_are_accepted() -> None:
    """A `{id}` custom voice and an input of exactly 4,096 characters get audio."""
    body = {**SPEECH, "voice": {"id": "voice_123"}, "input": "a" * 4096, "response_format": "pcm"}
    assert post(SPEECH_PATH, json=body).status_code == 200


def test_sse_deltas_carry_the_same_audio_and_end_with_done() -> None:
    """stream_format sse sends speech.audio.delta events whose base64 joins to the pcm the
    plain route sends, then speech.audio.done with usage."""
    body = {**SPEECH, "model": "gpt-4o-mini-tts", "response_format": "pcm"}
    sse = post(SPEECH_PATH, json={**body, "stream_format": "sse"})
    whole = post(SPEECH_PATH, json=body).content
    assert sse.headers["content-type"].startswith("text/event-stream")
    *deltas, done = events(sse.content)
    assert len(deltas) > 1 and {d["type"] for d in deltas} == {"speech.audio.delta"}
    assert b"".join(base64.b64decode(d["audio"]) for d in deltas) == whole
    assert done["type"] == "speech.audio.done" and done["usage"]["total_tokens"] > 0


def test_a_cut_pcm_stream_breaks_off_part_way() -> None:
    """[[answer:cut]] on a pcm answer sends half of the audio and drops the connection."""
    body = {**SPEECH, "input": f"{TEXT} [[answer:cut]]", "response_format": "pcm"}

    async def partial(client: httpx.AsyncClient) -> bytes:
        return (await client.post(SPEECH_PATH, headers=AUTH, json=body)).content

    async def main() -> bytes:
        quiet = httpx.ASGITransport(app=create_app(EmulatorConfig()), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=quiet, base_url="http://e") as client:
            return await partial(client)

    whole = post(SPEECH_PATH, json={**SPEECH, "response_format": "pcm"}).content
    received = asyncio.run(main())
    assert 0 < len(received) < len(whole)
    with pytest.raises(StreamCut):
        run(partial)


# --- auth, limits and faults ------------------------------------------------------------------


def test_auth_failures_in_openais_words() -> None:
    """No key is 401 with code null, a wrong key 401 invalid_api_key; the right key answers."""
    config = EmulatorConfig(api_keys=frozenset({KEY}))
    missing = run(lambda c: c.post(SPEECH_PATH, json=SPEECH), config)
    wrong = post(SPEECH_PATH, config, json=SPEECH, headers={"Authorization": "Bearer sk-nope"})
    right = post(STT_PATH, config, files={"file": ("a.wav", CLIP)}, data={"model": "whisper-1"})
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert error_of(missing)["code"] is None and "didn't provide" in error_of(missing)["message"]
    assert error_of(wrong)["code"] == "invalid_api_key"
    assert "sk-nope" not in wrong.text


def test_the_rate_limit_is_rate_limit_exceeded_with_its_waits() -> None:
    """Over rate_limit_rps a key gets 429 rate_limit_exceeded with Retry-After (whole
    seconds, at least 1), retry-after-ms and x-ratelimit-reset-requests."""

    async def check(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.post(SPEECH_PATH, headers=AUTH, json=SPEECH) for _ in range(3)]

    responses = run(check, EmulatorConfig(rate_limit_rps=2))
    assert [r.status_code for r in responses] == [200, 200, 429]
    limited = responses[-1]
    assert error_of(limited)["code"] == "rate_limit_exceeded"
    assert limited.headers["retry-after"] == "1"
    assert 0 < int(limited.headers["retry-after-ms"]) <= 500
    assert limited.headers["x-ratelimit-reset-requests"].endswith("ms")


def test_a_429_without_retry_after_is_insufficient_quota() -> None:
    """A scripted 429 with retry_after null is insufficient_quota with no Retry-After; with a
    wait it is a rate limit; [[status:503]] is OpenAI's overloaded server_error."""
    app = create_app(EmulatorConfig())
    dials: Dials = app.state.dials
    dials.add_script(Script(1, 429, None, "transcriptions"))
    dials.add_script(Script(1, 429, 2.0, "speech"))

    async def check(client: httpx.AsyncClient) -> list[httpx.Response]:
        files = {"file": ("a.wav", CLIP)}
        return [
            await client.post(STT_PATH, headers=AUTH, files=files, data={"model": "whisper-1"}),
            await client.post(SPEECH_PATH, headers=AUTH, json=SPEECH),
            await client.post(
                SPEECH_PATH, headers=AUTH, json={**SPEECH, "input": "x [[status:503]]"}
            ),
        ]

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://e"
        ) as client:
            return await check(client)

    quota, rate, overloaded = asyncio.run(main())
    assert (quota.status_code, error_of(quota)["code"]) == (429, "insufficient_quota")
    assert "retry-after" not in quota.headers
    assert (error_of(rate)["code"], rate.headers["retry-after"]) == ("rate_limit_exceeded", "2")
    assert overloaded.status_code == 503
    assert error_of(overloaded)["type"] == "server_error"
    assert "overloaded" in error_of(overloaded)["message"]


# --- transcription ----------------------------------------------------------------------------


def test_whisper_verbose_json_has_timed_words_and_segments_within_the_recording() -> None:
    """verbose_json with word and segment granularities gives words and Whisper's segment
    fields, all inside the recording's length, its language by name and usage in seconds."""
    response = transcribe(
        {
            "model": "whisper-1",
            "response_format": "verbose_json",
            "timestamp_granularities[]": ["word", "segment"],
        }
    )
    body = response.json()
    assert (body["language"], body["duration"], body["usage"]) == (
        "english",
        2.0,
        {"type": "duration", "seconds": 2},
    )
    assert body["words"] and all(0 <= w["start"] < w["end"] <= 2.0 for w in body["words"])
    segment = body["segments"][0]
    assert set(segment) >= {"id", "seek", "start", "end", "text", "tokens", "avg_logprob"}
    only_segments = transcribe({"model": "whisper-1", "response_format": "verbose_json"})
    assert "words" not in only_segments.json() and only_segments.json()["segments"]


def test_json_text_and_captions_formats() -> None:
    """json is {text, usage}; text, srt and vtt are plain text bodies of the same words."""
    json_body = transcribe({"model": "gpt-4o-transcribe"}).json()
    assert set(json_body) == {"text", "usage"} and json_body["usage"]["type"] == "tokens"
    text = transcribe({"model": "whisper-1", "response_format": "text"})
    srt = transcribe({"model": "whisper-1", "response_format": "srt"}).text
    vtt = transcribe({"model": "whisper-1", "response_format": "vtt"}).text
    assert text.headers["content-type"].startswith("text/plain")
    assert text.text.strip() == json_body["text"]
    assert srt.startswith("1\n00:00:00,") and vtt.startswith("WEBVTT\n\n00:00:00.")


def test_gpt4o_transcription_streams_deltas_then_done() -> None:
    """stream=true on a gpt-4o model answers transcript.text.delta events that join to the
    text of transcript.text.done; whisper-1 refuses stream."""
    response = transcribe({"model": "gpt-4o-mini-transcribe", "stream": "true"})
    *deltas, done = events(response.content)
    assert {d["type"] for d in deltas} == {"transcript.text.delta"}
    assert done["type"] == "transcript.text.done"
    assert "".join(d["delta"] for d in deltas) == done["text"]
    refused = transcribe({"model": "whisper-1", "stream": "true"})
    assert (refused.status_code, error_of(refused)["param"]) == (400, "stream")


@pytest.mark.parametrize(
    ("fields", "name", "clip", "status", "param"),
    [
        ({"model": "gpt-4o-transcribe", "response_format": "verbose_json"}, "a.wav", CLIP, 400,
         "response_format"),
        ({"model": "whisper-1", "timestamp_granularities[]": "word"}, "a.wav", CLIP, 400,
         "timestamp_granularities"),
        ({"model": "whisper-9"}, "a.wav", CLIP, 404, None),
        ({}, "a.wav", CLIP, 400, "model"),
        ({"model": "whisper-1"}, "recording", CLIP, 400, "file"),
        ({"model": "whisper-1"}, "a.txt", CLIP, 400, "file"),
        ({"model": "whisper-1", "language": "English"}, "a.wav", CLIP, 400, "language"),
        ({"model": "whisper-1", "temperature": "2"}, "a.wav", CLIP, 400, "temperature"),
        ({"model": "whisper-1"}, "a.wav", b"RIFF not really audio", 400, "file"),
    ],
)  # fmt: skip
def test_bad_transcription_requests_are_refused_in_openais_shape(
    fields: dict[str, Any], name: str, clip: bytes, status: int, param: str | None
) -> None:
    """Each bad field, file name or undecodable file is refused naming the parameter."""
    response = transcribe(fields, clip=clip, name=name)
    assert response.status_code == status
    assert error_of(response)["param"] == param


def test_a_missing_file_or_a_non_multipart_body_is_400() -> None:
    """Without a file part, or with JSON instead of a form, the request is a 400."""
    no_file = post(STT_PATH, data={"model": "whisper-1"}, files={"other": ("x", b"1")})
    as_json = post(STT_PATH, json={"model": "whisper-1"})
    assert (no_file.status_code, as_json.status_code) == (400, 400)
    assert error_of(no_file)["param"] == "file"


def test_a_recording_over_the_cap_is_413_without_being_parsed() -> None:
    """A file over max_audio_bytes is 413 in OpenAI's shape, whether it declares its length or
    streams it chunked (read no further than the cap)."""
    config = EmulatorConfig(max_audio_bytes=100_000)
    big = wav_bytes(4.0)  # 128 kB
    declared = post(STT_PATH, config, files={"file": ("a.wav", big)}, data={"model": "whisper-1"})
    assert (declared.status_code, error_of(declared)["param"]) == (413, "file")
    boundary = "xyz"
    parts = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        ).encode()
        + bytes(200_000)
        + f"\r\n--{boundary}--\r\n".encode()
    )

    def chunks() -> Iterator[bytes]:
        for n in range(0, len(parts), 16384):
            yield parts[n : n + 16384]

    async def streamed(client: httpx.AsyncClient) -> httpx.Response:
        headers = {**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"}
        return await client.post(STT_PATH, headers=headers, content=_aiter(chunks()))

    response = run(streamed, config)
    assert response.status_code == 413
    ok = post(
        STT_PATH, config, files={"file": ("a.wav", CLIP[:90_000])}, data={"model": "whisper-1"}
    )
    assert ok.status_code == 200


async def _aiter(chunks: Iterator[bytes]) -> Any:
    for chunk in chunks:
        yield chunk


def test_answer_faults_spoil_whisper_times() -> None:
    """With answer_fault nan the verbose_json answer carries NaN times, for the adapter's
    answer checks to refuse."""
    config = EmulatorConfig(answer_fault="nan")
    response = transcribe({"model": "whisper-1", "response_format": "verbose_json"}, config=config)
    assert "NaN" in response.text


# --- pacing -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Dials]]:
    with serving(EmulatorConfig(api_keys=frozenset({KEY}))) as running:
        yield running


def test_a_pcm_stream_starts_at_ttfb_and_ends_at_the_latency(served: tuple[str, Dials]) -> None:
    """A pcm answer sends its first bytes after ~ttfb_ms and its last at ~latency_ms, as a
    chunked body, while a wav answer comes whole after the latency."""
    base, dials = served
    dials.config = EmulatorConfig(api_keys=frozenset({KEY}), ttfb_ms=300, latency_ms=900)
    body = {**SPEECH, "input": "Hello there, this is a paced line.", "response_format": "pcm"}
    arrivals: list[float] = []
    with httpx.Client(base_url=base, timeout=10) as client:
        started = time.perf_counter()
        with client.stream("POST", SPEECH_PATH, headers=AUTH, json=body) as response:
            assert response.headers.get("transfer-encoding") == "chunked"
            for _ in response.iter_raw():
                arrivals.append(time.perf_counter() - started)
        first, last = arrivals[0], arrivals[-1]
        started = time.perf_counter()
        client.post(SPEECH_PATH, headers=AUTH, json={**body, "response_format": "wav"})
        whole = time.perf_counter() - started
    assert len(arrivals) > 2
    assert 0.25 <= first < 0.6
    assert last >= 0.8
    assert whole >= 0.85
