"""WebSocket end to end: API → Redis → worker → emulator (WS sessions) → S3 → poll, real processes.

A 200-line SLNG TTS job, a 200-line Smallest TTS job and a 20-file SLNG STT job, all with
`options.transport: websocket`: every output decodes, every transcript parses, and the
emulator saw far fewer WebSocket sessions than items (sessions are pooled per worker).
"""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest
import soundfile as sf

from tests.e2e import test_smallest
from tests.e2e.stack import Stack

pytestmark = pytest.mark.e2e

LINES = 200
FILES = 20
# One worker with 8 threads: at most 8 sessions in use at once per route, so a pool that
# works keeps the count near 8; one session per item would be 200.
MOST_SESSIONS = 16

# The Smallest file's stack fixture (both vendors at the emulator, Smallest's 25 calls a
# minute lifted), started once for this module too; `accepted` submits and waits.
stack = test_smallest.stack
accepted, fetch = test_smallest.accepted, test_smallest.fetch


def sessions_seen(stack: Stack) -> dict[str, Any]:
    """The emulator's WebSocket counts since the last call (then reset), and its log."""
    with stack.emulator() as emulator:
        ws: dict[str, Any] = emulator.get("/_emulator/stats").json()["ws"]
        ws["records"] = emulator.get("/_emulator/requests").json()
        emulator.delete("/_emulator/requests")
    return ws


@pytest.mark.parametrize("provider", ["slng", "smallest"])
def test_200_line_tts_job_over_websocket(stack: Stack, provider: str) -> None:
    """Every line of a 200-line script, spoken over pooled WebSocket sessions, becomes a WAV
    in S3 that decodes to its recorded length, with far fewer sessions than lines."""
    sessions_seen(stack)
    body = {
        "kind": "tts",
        "provider": provider,
        "options": {"format": "wav", "sample_rate": 8000, "transport": "websocket"},
        "items": [
            {"id": f"line-{n:03d}", "text": f"Line {n} of the voiceover."} for n in range(LINES)
        ],
    }
    job = accepted(stack, body)
    assert job["status"] == "succeeded", job
    items = stack.items(job["id"])
    assert len(items) == LINES
    for item in items:
        audio, rate = sf.read(io.BytesIO(fetch(item["output"]["url"])))
        assert rate == 8000 and len(audio) > 0
        assert len(audio) / rate == pytest.approx(item["output"]["duration_s"], rel=0.01)
    seen = sessions_seen(stack)
    assert 1 <= seen["opened_by_vendor"][provider] <= MOST_SESSIONS
    # Sessions are logged when they end (pooled ones later); nothing went over HTTP.
    assert [r for r in seen["records"] if r["method"] != "WS"] == []


def test_20_file_slng_stt_job_over_websocket(stack: Stack) -> None:
    """Twenty recordings streamed over pooled SLNG STT sessions come back as transcripts with
    timed words and segments inside each recording, plus SRT/VTT/TXT renderings."""
    with httpx.Client(base_url=stack.emulator_url, timeout=30) as emulator:
        clips = [
            emulator.post(
                "/slng/v1/tts/slng/deepgram/aura:2-en",
                headers={"Authorization": f"Bearer {stack.env['SLNG_API_KEY']}"},
                json={
                    "text": "word " * (4 + n),
                    "model": "aura-2-thalia-en",
                    "encoding": "linear16",
                    "container": "wav",
                    "sample_rate": 16000,
                },
            ).content
            for n in range(FILES)
        ]
    sources = [stack.upload(f"call-{n}.wav", wav) for n, wav in enumerate(clips)]
    sessions_seen(stack)
    body = {
        "kind": "stt",
        "provider": "slng",
        "options": {"transport": "websocket"},
        "items": [{"id": f"call-{n}", "source": s} for n, s in enumerate(sources)],
    }
    job = accepted(stack, body)
    assert job["status"] == "succeeded", job
    items = stack.items(job["id"])
    assert len(items) == FILES
    for n, item in enumerate(items):
        files = {f["format"]: f["url"] for f in item["output"]["files"]}
        transcript = json.loads(fetch(files["json"]))
        assert transcript["provider"] == "slng" and transcript["text"]
        length = sf.info(io.BytesIO(clips[n])).duration
        assert transcript["duration_s"] == pytest.approx(length, abs=0.01)
        assert transcript["words"] and transcript["segments"]
        assert all(0 <= w["start"] <= w["end"] <= length for w in transcript["words"])
        assert fetch(files["srt"]).startswith(b"1\n")
        assert fetch(files["vtt"]).startswith(b"WEBVTT")
    seen = sessions_seen(stack)
    assert 1 <= seen["opened_by_vendor"]["slng"] < FILES // 2


def test_sessions_dropped_mid_utterance_retry_their_items_and_store_no_truncated_audio(
    stack: Stack,
) -> None:
    """With every 7th utterance cut off mid-audio, the job still succeeds: the dropped lines
    are retried (on new sessions), and every stored WAV is as long as its whole line."""
    with stack.emulator() as emulator:
        emulator.patch("/_emulator/config", json={"ws_drop_every": 7})
    try:
        texts = [f"Retried line number {n} of this script." for n in range(40)]
        body = {
            "kind": "tts",
            "provider": "slng",
            "options": {"format": "wav", "sample_rate": 8000, "transport": "websocket"},
            "items": [{"id": f"line-{n:03d}", "text": t} for n, t in enumerate(texts)],
        }
        job = accepted(stack, body)
    finally:
        with stack.emulator() as emulator:
            emulator.patch("/_emulator/config", json={"ws_drop_every": 0})
    assert job["status"] == "succeeded", job
    items = stack.items(job["id"])
    assert len(items) == len(texts)
    for item in items:
        text = texts[int(item["id"].removeprefix("line-"))]
        audio, rate = sf.read(io.BytesIO(fetch(item["output"]["url"])))
        assert len(audio) / rate == pytest.approx(len(text) / 15, abs=0.05)
    records = sessions_seen(stack)["records"]
    # 40 utterances and their retries, every 7th cut off: at least 5 sessions were dropped.
    assert sum(r["fault"] == "dropped" for r in records) >= 5


def test_a_long_line_streams_over_websocket_on_auto_into_a_multipart_object(
    stack: Stack,
) -> None:
    """A 3,000-character line on `auto` goes over SLNG's WebSocket (past STREAM_ABOVE_CHARS)
    and is written to S3 as it arrives: 200 s of 24 kHz audio, more than one 8 MiB part,
    stored as one WAV that decodes to its whole length."""
    sessions_seen(stack)
    text = ("The river bends past the old mill and the town wakes up slowly. " * 47)[:3000]
    # 200 s of audio made at 250x real time: 0.9 s, inside the stack's 3 s provider timeout.
    with stack.emulator() as emulator:
        emulator.patch("/_emulator/config", json={"ttfb_ms": 100, "realtime_factor": 250})
    try:
        body = {
            "kind": "tts",
            "provider": "slng",
            "model": "unmute/soniox/tts-rt:v1",
            "options": {"sample_rate": 24000},
            "items": [{"id": "narration", "text": text}],
        }
        job = accepted(stack, body)
    finally:
        with stack.emulator() as emulator:
            emulator.patch("/_emulator/config", json={"ttfb_ms": 0, "realtime_factor": 0})
    assert job["status"] == "succeeded", job
    (item,) = stack.items(job["id"])
    data = fetch(item["output"]["url"])
    assert len(data) > 8 * 1024 * 1024
    audio, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == 24000
    assert len(audio) / rate == pytest.approx(200.0, abs=0.1)
    seen = sessions_seen(stack)
    assert seen["opened_by_vendor"]["slng"] == 1
    assert [r for r in seen["records"] if r["method"] != "WS"] == []  # nothing over HTTP
