"""The emulator's Smallest routes: Lightning audio over HTTP and SSE, Pulse transcripts, the
retired models' 410, Smallest's own limits and error bodies."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from starlette.applications import Starlette
from starlette.routing import Route

from emulator.app import create_app
from emulator.config import EmulatorConfig
from emulator.dials import Dials
from emulator.faults import StreamCut
from emulator.smallest import audio_frame
from emulator.smallest_pulse import PulseApi
from tests.unit.emulator_client import run
from workers.audio import pcm16_to_wav

AUTH = {"Authorization": "Bearer test-key"}
TTS = "/smallest/waves/v1/tts"
LIVE = "/smallest/waves/v1/tts/live"
STT = "/smallest/waves/v1/stt/"
TEXT = "Hello there, this is a test of the emulator voice."  # 50 chars -> ~3.33 s
SPEECH = {"text": TEXT, "voice_id": "magnus"}


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


def events(body: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    """The (event name, JSON data) of each SSE event in `body`."""
    found = []
    for block in body.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in lines:
            found.append((lines.get("event"), json.loads(lines["data"])))
    return found


# --- Lightning over HTTP ----------------------------------------------------------------------


def test_accept_wav_gives_a_wav_of_plausible_length() -> None:
    """With Accept: audio/wav the answer is a 44.1 kHz WAV about len(text)/15 s long, with
    Smallest's request and session id headers."""
    response = post(TTS, json=SPEECH, headers={"Accept": "audio/wav"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    info = sf.info(io.BytesIO(response.content))
    assert info.samplerate == 44100
    assert info.duration == pytest.approx(len(TEXT) / 15, abs=0.05)
    assert response.headers["x-request-id"] and response.headers["x-session-id"]


def test_without_accept_the_default_output_format_is_raw_pcm() -> None:
    """No Accept header and no output_format: headerless 16-bit PCM at the asked rate."""
    response = post(TTS, json={**SPEECH, "sample_rate": 16000})
    assert not response.content.startswith(b"RIFF")
    assert len(response.content) / 2 / 16000 == pytest.approx(len(TEXT) / 15, abs=0.01)


def test_output_format_speed_and_client_ids() -> None:
    """output_format mp3 decodes as MP3, speed 2 halves the length, and the client's
    session_id/request_id come back as X-External-* headers."""
    body = {**SPEECH, "output_format": "mp3", "speed": 2, "session_id": "s.1", "request_id": "r-2"}
    response = post(TTS, json=body)
    info = sf.info(io.BytesIO(response.content))
    assert info.format == "MP3"
    assert info.duration == pytest.approx(len(TEXT) / 30, abs=0.1)
    assert response.headers["x-external-session-id"] == "s.1"
    assert response.headers["x-external-request-id"] == "r-2"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"voice_id": "magnus"}, "The 'text' field is required."),
        ({"text": "hi"}, "The 'voice_id' field is required."),
        ({**SPEECH, "sample_rate": 22050}, "sample_rate"),
        ({**SPEECH, "model": "lightning_v9"}, "model"),
        ({**SPEECH, "output_format": "flac"}, "output_format"),
    ],
)
def test_bad_bodies_are_invalid_request(body: dict[str, Any], message: str) -> None:
    """Each bad field is a 400 in Smallest's {"error": "InvalidRequest", "message"} shape."""
    response = post(TTS, json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "InvalidRequest"
    assert message in response.json()["message"]


def test_tts_auth_failure_shape() -> None:
    """A missing or unlisted key is 401 {"error": "Unauthorized", "message"}."""
    config = EmulatorConfig(api_keys=frozenset({"good"}))
    wrong = post(TTS, config, json=SPEECH, headers={"Authorization": "Bearer bad"})
    assert wrong.status_code == 401
    assert wrong.json() == {
        "error": "Unauthorized",
        "message": "Bearer token is missing or invalid.",
    }
    right = post(TTS, config, json=SPEECH, headers={"Authorization": "Bearer good"})
    assert right.status_code == 200


# --- retired and deprecated routes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/smallest/waves/v1/lightning-v2/get_speech", SPEECH),
        ("/smallest/waves/v1/lightning-large/stream", SPEECH),
        (TTS, {**SPEECH, "model": "lightning-large"}),
        (LIVE, {**SPEECH, "model": "lightning-v2"}),
    ],
)
def test_retired_routes_and_models_answer_410_naming_the_replacement(
    path: str, body: dict[str, Any]
) -> None:
    """Retired endpoints and model names answer 410 MODEL_DEPRECATED with the replacement."""
    response = post(path, json=body)
    assert response.status_code == 410
    assert response.json()["error_code"] == "MODEL_DEPRECATED"
    assert response.json()["recommended_endpoint"] == "/waves/v1/tts"
    assert "lightning_v3.1" in response.json()["message"]


def test_deprecated_v31_routes_still_answer() -> None:
    """/waves/v1/lightning-v3.1/get_speech and /stream are wire-compatible aliases."""
    sync = post("/smallest/waves/v1/lightning-v3.1/get_speech", json=SPEECH)
    live = post("/smallest/waves/v1/lightning-v3.1/stream", json=SPEECH)
    assert sync.status_code == live.status_code == 200
    assert live.headers["content-type"].startswith("text/event-stream")


# --- Lightning over SSE -------------------------------------------------------------------------


def test_sse_frames_carry_the_same_audio_and_end_with_done() -> None:
    """The SSE answer is `event: audio` frames (status 206) whose base64 joins to the PCM the
    HTTP route sends, then one data frame {"status": "200", "done": true}."""
    body = {**SPEECH, "sample_rate": 24000, "output_format": "pcm"}
    live = post(LIVE, json=body)
    whole = post(TTS, json=body).content
    assert live.headers["content-type"].startswith("text/event-stream")
    found = events(live.content)
    *audio, last = found
    assert len(audio) > 1
    assert all(name == "audio" and f["status"] == "206" and f["done"] is False for name, f in audio)
    assert last == (None, {"status": "200", "done": True})
    assert b"".join(base64.b64decode(f["audio"]) for _, f in audio) == whole


def test_cut_fault_breaks_the_stream_off_before_done() -> None:
    """[[answer:cut]] sends part of the frames and then drops the connection: no done frame."""
    body = {**SPEECH, "text": f"{TEXT} [[answer:cut]]"}

    async def partial(client: httpx.AsyncClient) -> bytes:
        response = await client.post(LIVE, headers=AUTH, json=body)
        return response.content

    async def main() -> bytes:
        app = create_app(EmulatorConfig())
        quiet = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=quiet, base_url="http://e") as client:
            return await partial(client)

    received = asyncio.run(main())
    assert received.startswith(b"event: audio")
    assert b'"done": true' not in received
    with pytest.raises(StreamCut):
        run(partial)


# --- Smallest's limits --------------------------------------------------------------------------


def test_one_tts_request_at_a_time_per_key() -> None:
    """A second TTS request while one (an SSE stream) is in flight is 429 in Smallest's shape,
    with Retry-After; another key, or a cap of 0, is not refused."""
    config = EmulatorConfig(latency_ms=300, retry_after_s=2)

    async def check(client: httpx.AsyncClient) -> tuple[httpx.Response, ...]:
        first = asyncio.ensure_future(client.post(LIVE, headers=AUTH, json=SPEECH))
        await asyncio.sleep(0.1)
        second = await client.post(TTS, headers=AUTH, json=SPEECH)
        other = await client.post(TTS, headers={"Authorization": "Bearer k2"}, json=SPEECH)
        return await first, second, other

    first, second, other = run(check, config)
    assert (first.status_code, second.status_code, other.status_code) == (200, 429, 200)
    assert second.json()["error"] == "TooManyRequests"
    assert second.headers["retry-after"] == "2"
    uncapped = run(check, EmulatorConfig(latency_ms=300, smallest_tts_concurrency=0))
    assert [r.status_code for r in uncapped] == [200, 200, 200]


def test_pulse_allows_its_requests_per_minute_per_model() -> None:
    """Over `smallest_stt_per_minute` a model answers 429 {"error", "request_id"} with the wait;
    the other model is counted apart, and the window frees up after a minute."""
    now = [1000.0]
    dials = Dials(EmulatorConfig(smallest_stt_per_minute=2))
    api = PulseApi(dials, clock=lambda: now[0])
    app = Starlette(routes=[Route("/stt", partial(api.listen, legacy=False), methods=["POST"])])
    clip = wav_bytes(0.5)

    async def check(client: httpx.AsyncClient) -> list[httpx.Response]:
        answers = []
        for model, advance in [("pulse", 0), ("pulse", 10), ("pulse", 10), ("pulse-pro", 0),
                               ("pulse", 41)]:  # fmt: skip
            now[0] += advance
            url = f"/stt?model={model}&language=en"
            answers.append(await client.post(url, headers=AUTH, content=clip))
        return answers

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://e") as client:
            return await check(client)

    answers = asyncio.run(main())
    assert [a.status_code for a in answers] == [200, 200, 429, 200, 200]
    refused = answers[2]
    assert refused.json()["request_id"] == refused.headers["x-request-id"]
    assert "2 requests per minute" in refused.json()["error"]
    assert refused.headers["retry-after"] == "40"


# --- Pulse STT ----------------------------------------------------------------------------------


def test_pulse_words_utterances_and_speakers() -> None:
    """word_timestamps and diarize give words and utterances inside the audio, with integer
    speakers; without them both lists are empty."""
    clip = wav_bytes(3.0)
    full = post(f"{STT}?model=pulse&language=en&word_timestamps=true&diarize=true", content=clip)
    bare = post(f"{STT}?model=pulse&language=en", content=clip)
    result = full.json()
    assert result["status"] == "success" and result["transcription"]
    assert result["metadata"] == {"duration": 3.0, "fileSize": len(clip)}
    assert result["words"] and all(0 <= w["start"] < w["end"] <= 3.0 for w in result["words"])
    assert {w["speaker"] for w in result["words"]} <= {0, 1}
    speakers = [u["speaker"] for u in result["utterances"]]
    assert len(speakers) >= 2 and speakers == [n % 2 for n in range(len(speakers))]
    assert (bare.json()["words"], bare.json()["utterances"]) == ([], [])
    assert bare.json()["transcription"] == result["transcription"]


def test_pulse_pro_shape() -> None:
    """Pulse Pro adds language, request_id and totalBytes, has no utterances or speakers."""
    clip = wav_bytes(2.0)
    response = post(f"{STT}?model=pulse-pro&language=en&word_timestamps=true&diarize=true",
                    content=clip)  # fmt: skip
    result = response.json()
    assert (result["language"], result["totalBytes"]) == ("en", len(clip))
    assert result["request_id"] == response.headers["x-request-id"]
    assert "utterances" not in result
    assert all("speaker" not in w for w in result["words"])
    assert set(result["metadata"]) == {"duration", "processing_time_ms", "rtfx", "num_chunks"}


@pytest.fixture
def served_clip() -> Iterator[tuple[str, bytes]]:
    """A WAV served over loopback HTTP, for Pulse's URL input."""
    clip = wav_bytes(1.5)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(clip)))
            self.end_headers()
            self.wfile.write(clip)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/clip.wav", clip
    finally:
        server.shutdown()
        server.server_close()


def test_pulse_takes_a_url_body_but_pulse_pro_does_not(served_clip: tuple[str, bytes]) -> None:
    """JSON {"url"} is downloaded and transcribed like the same bytes sent raw; Pulse Pro
    refuses URLs with 400."""
    url, clip = served_clip
    by_url = post(f"{STT}?model=pulse&language=en", json={"url": url})
    by_bytes = post(f"{STT}?model=pulse&language=en", content=clip)
    pro = post(f"{STT}?model=pulse-pro&language=en", json={"url": url})
    assert by_url.status_code == 200
    assert by_url.json()["transcription"] == by_bytes.json()["transcription"]
    assert by_url.json()["metadata"]["fileSize"] == len(clip)
    assert pro.status_code == 400


@pytest.mark.parametrize(
    ("query", "body", "status"),
    [
        ("language=en", wav_bytes(1), 400),  # no model
        ("model=pulse", wav_bytes(1), 400),  # no language
        ("model=pulse-pro&language=de", wav_bytes(1), 400),
        ("model=pulse&language=en", b"", 400),
        ("model=pulse&language=en", b"not audio at all" * 20, 400),
        ("model=pulse&language=en&webhook_url=https://x.test/h", wav_bytes(1), 400),
    ],
)
def test_pulse_refusals_use_its_error_shape(query: str, body: bytes, status: int) -> None:
    """Bad queries and bodies are refused as {"error": sentence, "request_id"}."""
    response = post(f"{STT}?{query}", content=body)
    assert response.status_code == status
    assert set(response.json()) == {"error", "request_id"}


def test_pulse_over_the_size_limit_is_413_and_legacy_route_works() -> None:
    """Audio over max_audio_bytes is 413; the legacy /waves/v1/pulse/get_text still answers."""
    clip = wav_bytes(1.0)
    big = post(f"{STT}?model=pulse&language=en", EmulatorConfig(max_audio_bytes=len(clip) - 1),
               content=clip)  # fmt: skip
    legacy = post("/smallest/waves/v1/pulse/get_text?language=en", content=clip)
    assert big.status_code == 413
    assert legacy.status_code == 200 and legacy.json()["transcription"]


def test_faults_come_in_smallest_shapes_and_spoil_pulse_times() -> None:
    """An injected 503 on TTS reads like Smallest's; an `unordered` answer fault really
    reverses Pulse's word times."""
    down = post(TTS, json={**SPEECH, "text": "hi [[status:503]]"})
    assert down.status_code == 503 and down.json()["error"] == "ServiceUnavailable"
    spoiled = post(f"{STT}?model=pulse&language=en&word_timestamps=true",
                   EmulatorConfig(answer_fault="unordered"), content=wav_bytes(3.0))  # fmt: skip
    starts = [w["start"] for w in spoiled.json()["words"]]
    assert starts == sorted(starts, reverse=True) and len(starts) > 1


@pytest.mark.parametrize("size", [0, 1, 2, 3, 22050])
def test_an_sse_audio_frame_is_byte_for_byte_the_json_frame(size: int) -> None:
    """The emulator's hand-joined SSE audio frame is exactly what `json.dumps` of Smallest's
    frame gives, for chunks of every base64 padding length."""
    chunk = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    frame = {"audio": base64.b64encode(chunk).decode(), "done": False, "status": "206"}
    expected = b"event: audio\ndata: " + json.dumps(frame).encode() + b"\n\n"
    assert audio_frame(memoryview(chunk)) == expected
