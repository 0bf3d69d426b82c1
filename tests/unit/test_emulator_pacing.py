"""How the emulator paces streamed TTS answers: the schedule's arithmetic, its absolute
deadlines, and the first and last chunk times of Smallest's SSE and WebSocket and SLNG's
WebSocket (both framings) under `ttfb_ms`, `latency_ms` and `realtime_factor`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient
from websockets.sync.client import connect

from emulator.app import create_app
from emulator.config import EmulatorConfig
from emulator.dials import Dials
from emulator.pacing import CHUNK_S, StreamTiming, chunked, paced, schedule
from tests.unit.ws_emulator import serving

KEY = "sk-pacing-test-0123"
AUTH = {"Authorization": f"Bearer {KEY}"}  # copied per use: TestClient adds to what it gets
LINE = "Hello there, this is a paced line."  # 34 chars -> ~2.3 s, ten chunks
SLOW = {"ttfb_ms": 300, "latency_ms": 900}
SLNG_INIT = {"type": "init", "voice": "aura-2-thalia-en", "config": {"sample_rate": 8000}}
SLNG_ROUTES = {
    "base64": "/slng/v1/tts/slng/deepgram/aura:2-en",
    "binary": "/slng/v1/bridges/unmute/tts/slng/deepgram/aura:2-en",
}


# -- the schedule ------------------------------------------------------------------------------


def test_first_chunk_at_ttfb_the_rest_evenly_up_to_the_total() -> None:
    """Four chunks with ttfb 0.3 s and total 0.9 s go at 0.3, 0.5, 0.7 and 0.9 s, the
    terminator with the last."""
    planned = schedule(4, 1.0, StreamTiming(ttfb_s=0.3, total_s=0.9))
    assert planned.chunks == pytest.approx((0.3, 0.5, 0.7, 0.9))
    assert planned.end == pytest.approx(0.9)


def test_without_ttfb_the_first_chunk_goes_at_once() -> None:
    """ttfb 0 sends the first chunk at 0 and spreads the rest over the latency."""
    planned = schedule(3, 1.0, StreamTiming(ttfb_s=0.0, total_s=0.4))
    assert planned.chunks == pytest.approx((0.0, 0.2, 0.4))


def test_a_ttfb_past_the_total_sends_everything_at_ttfb() -> None:
    """When ttfb >= total every chunk and the terminator go at ttfb."""
    planned = schedule(3, 1.0, StreamTiming(ttfb_s=0.5, total_s=0.2))
    assert planned.chunks == pytest.approx((0.5, 0.5, 0.5))
    assert planned.end == pytest.approx(0.5)


def test_a_lone_chunk_goes_at_ttfb_and_the_terminator_at_the_total() -> None:
    """One chunk is the first chunk (ttfb); the terminator still waits for the total; no
    chunks at all leave only the terminator."""
    timing = StreamTiming(ttfb_s=0.1, total_s=0.6)
    lone = schedule(1, 0.25, timing)
    assert lone.chunks == (0.1,)
    assert lone.end == pytest.approx(0.6)
    assert schedule(0, 0.0, timing).chunks == ()


def test_realtime_factor_stretches_a_ten_minute_answer() -> None:
    """A 600 s answer at realtime_factor 2 ends 300 s after its first chunk although the
    latency dial says 1 s; a factor of 0 leaves the total alone, a slow enough one changes
    nothing."""
    count = int(600 / CHUNK_S)
    stretched = schedule(count, 600.0, StreamTiming(0.2, 1.0, realtime_factor=2.0))
    assert stretched.chunks[0] == pytest.approx(0.2)
    assert stretched.end == pytest.approx(300.2)
    assert stretched.chunks[-1] == pytest.approx(300.2)
    assert schedule(count, 600.0, StreamTiming(0.2, 1.0)).end == pytest.approx(1.0)
    assert schedule(count, 600.0, StreamTiming(0.2, 1000.0, 2.0)).end == pytest.approx(1000.0)


def test_paced_sleeps_to_absolute_deadlines_so_overhead_does_not_accumulate() -> None:
    """With 50 ms of work after each chunk, chunks still leave at 0.1, 0.3 and 0.5 s: each
    sleep is to a deadline, not a fixed pause."""
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    async def consume() -> list[float]:
        sent = []
        timing = StreamTiming(ttfb_s=0.1, total_s=0.5)
        async for _ in paced("abc", 0.75, timing, started=0.0, clock=lambda: now[0], sleep=sleep):
            sent.append(now[0])
            now[0] += 0.05
        return sent

    assert asyncio.run(consume()) == pytest.approx([0.1, 0.3, 0.5])
    assert slept == pytest.approx([0.1, 0.15, 0.15])


def test_chunks_are_whole_samples_and_views() -> None:
    """Chunks hold CHUNK_S of 16-bit audio in whole samples (even at 22,050 Hz) and share the
    rendered bytes instead of copying them."""
    content = bytes(22050 * 2 * 3)
    pieces = chunked(content, 22050)
    assert all(len(p) % 2 == 0 for p in pieces)
    assert len(pieces[0]) == 2 * int(22050 * CHUNK_S)
    assert b"".join(pieces) == content
    assert all(isinstance(p, memoryview) and p.obj is content for p in pieces)


def test_stream_timing_jitters_ttfb_and_total_by_one_draw() -> None:
    """latency_jitter_ms shifts ttfb and total together, never below 0, and tokens add to the
    total only."""
    dials = Dials(EmulatorConfig(ttfb_ms=100, latency_ms=400, latency_jitter_ms=50, seed=3))
    for _ in range(20):
        timing = dials.stream_timing("a line [[latency:200]]")
        assert 0.05 <= timing.ttfb_s <= 0.15
        assert timing.total_s - timing.ttfb_s == pytest.approx(0.5)
    assert Dials(EmulatorConfig(realtime_factor=1.5)).stream_timing(None).realtime_factor == 1.5


# -- the routes, timed for real ------------------------------------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Dials]]:
    with serving(EmulatorConfig(api_keys=frozenset({KEY}))) as running:
        yield running


def sse_times(served: tuple[str, Dials], **dials: Any) -> tuple[float, float, float]:
    """Seconds from the request to the first audio frame, the last one, and `done`."""
    base, state = served
    state.config = EmulatorConfig(api_keys=frozenset({KEY}), **dials)
    body = {"text": LINE, "voice_id": "magnus", "sample_rate": 8000}
    arrivals: list[float] = []
    with httpx.Client(base_url=base, timeout=10) as client:
        started = time.perf_counter()
        with client.stream(
            "POST", "/smallest/waves/v1/tts/live", headers=dict(AUTH), json=body
        ) as sse:
            for line in sse.iter_lines():
                if line.startswith("event: audio"):
                    arrivals.append(time.perf_counter() - started)
                elif '"done": true' in line:
                    done = time.perf_counter() - started
    assert len(arrivals) > 2
    return arrivals[0], arrivals[-1], done


def test_sse_first_frame_at_ttfb_and_done_at_the_latency(served: tuple[str, Dials]) -> None:
    """Smallest's SSE sends its first audio frame after ~ttfb_ms and its last and `done`
    at ~latency_ms."""
    first, last, done = sse_times(served, **SLOW)
    assert 0.25 <= first < 0.6
    assert last >= 0.8 and done >= last


def test_sse_without_ttfb_starts_at_once_and_ends_at_the_latency(
    served: tuple[str, Dials],
) -> None:
    """With only latency_ms set (as before ttfb_ms existed) the first frame comes at once and
    `done` at the latency."""
    first, _last, done = sse_times(served, latency_ms=400)
    assert first < 0.2
    assert 0.35 <= done < 1.0


def ws_client(**dials: Any) -> TestClient:
    return TestClient(create_app(EmulatorConfig(api_keys=frozenset({KEY}), **dials)))


def smallest_ws_times(**dials: Any) -> tuple[float, float, float]:
    """Seconds from a Smallest WS request to its first chunk, its last, and `complete`."""
    request = {"voice_id": "magnus", "sample_rate": 8000, "text": LINE}
    arrivals: list[float] = []
    with (
        ws_client(**dials) as emulator,
        emulator.websocket_connect("/smallest/waves/v1/tts/live", headers=dict(AUTH)) as ws,
    ):
        started = time.perf_counter()
        ws.send_json({**request, "continue": False})
        while (message := ws.receive_json())["status"] == "chunk":
            arrivals.append(time.perf_counter() - started)
        assert message["status"] == "complete"
        complete = time.perf_counter() - started
    assert len(arrivals) > 2
    return arrivals[0], arrivals[-1], complete


def test_smallest_ws_first_chunk_at_ttfb_and_complete_at_the_latency() -> None:
    """Smallest's WebSocket sends its first chunk after ~ttfb_ms and its last and `complete`
    at ~latency_ms, instead of everything at the end."""
    first, last, complete = smallest_ws_times(**SLOW)
    assert 0.25 <= first < 0.6
    assert last >= 0.8 and complete >= last


def slng_ws_times(framing: str, **dials: Any) -> tuple[float, float, float]:
    """Seconds from an SLNG WS flush to its first audio, its last, and `audio_end`."""
    arrivals: list[float] = []
    with (
        ws_client(**dials) as emulator,
        emulator.websocket_connect(SLNG_ROUTES[framing], headers=dict(AUTH)) as ws,
    ):
        ws.send_json(SLNG_INIT)
        assert ws.receive_json()["type"] == "ready"
        started = time.perf_counter()
        ws.send_json({"type": "text", "text": LINE, "flush": True})
        kinds: list[str] = []
        while not kinds or kinds[-1] != "audio_end":
            raw = ws.receive()
            kind = "audio" if raw.get("bytes") is not None else ws_type(raw["text"])
            kinds.append(kind)
            if kind in ("audio", "audio_chunk"):
                arrivals.append(time.perf_counter() - started)
        end = time.perf_counter() - started
    assert kinds[-3:] == ["segment_end", "flushed", "audio_end"]
    assert len(arrivals) > 2
    return arrivals[0], arrivals[-1], end


def ws_type(text: str) -> str:
    kind: str = json.loads(text)["type"]
    return kind


@pytest.mark.parametrize("framing", ["base64", "binary"])
def test_slng_ws_first_audio_at_ttfb_and_audio_end_at_the_latency(framing: str) -> None:
    """SLNG's WebSocket, in both framings, sends its first audio after ~ttfb_ms and its last,
    `flushed` and `audio_end` at ~latency_ms."""
    first, last, end = slng_ws_times(framing, **SLOW)
    assert 0.25 <= first < 0.6
    assert last >= 0.8 and end >= last


def test_realtime_factor_paces_a_stream_no_faster_than_it() -> None:
    """At realtime_factor 4 a ~2.3 s answer takes ~0.57 s from its first chunk to its last
    though no latency is set; without the dial it comes at once."""
    first, last, _end = slng_ws_times("base64", realtime_factor=4)
    assert last - first >= 0.45
    first, last, _end = slng_ws_times("base64")
    assert last - first < 0.3


class Collected(logging.Handler):
    """Keeps every record logged to it."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_client_leaving_mid_stream_ends_the_session_quietly(
    served: tuple[str, Dials],
) -> None:
    """A client that hangs up while a paced WebSocket answer is still going ends the session
    without an error in the emulator's log, and the session no longer counts as open."""
    base, state = served
    state.config = EmulatorConfig(api_keys=frozenset({KEY}), latency_ms=1000)
    handler = Collected()
    logging.getLogger("uvicorn.error").addHandler(handler)
    try:
        url = base.replace("http://", "ws://") + SLNG_ROUTES["base64"]
        with connect(url, additional_headers=dict(AUTH)) as ws:
            ws.send(json.dumps(SLNG_INIT))
            ws.recv()
            ws.send(json.dumps({"type": "flush", "text": LINE}))
            ws.recv()  # segment_start; the audio is still being paced
        deadline = time.monotonic() + 2
        while state.ws.stats()["open"] and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # the next chunk's send is what notices the hang-up
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
    assert state.ws.stats()["open"] == 0
    assert handler.records == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/smallest/waves/v1/tts", {"voice_id": "magnus", "sample_rate": 8000, "text": LINE}),
        ("/slng/v1/tts/slng/deepgram/aura:2-en", {"text": LINE, "model": "aura-2-thalia-en"}),
    ],
)
def test_a_plain_answer_waits_until_its_audio_could_have_been_made(
    served: tuple[str, Dials], path: str, body: dict[str, Any]
) -> None:
    """Under realtime_factor a whole (not streamed) TTS answer arrives only once its audio
    could have been generated, audio seconds / factor after the request: HTTP holds it all."""
    base, state = served
    seconds = len(LINE) / 15
    state.config = EmulatorConfig(api_keys=frozenset({KEY}), realtime_factor=seconds / 0.6)
    with httpx.Client(base_url=base, timeout=10) as client:
        started = time.perf_counter()
        response = client.post(path, headers=dict(AUTH), json=body)
        took = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert 0.55 <= took < 1.5
