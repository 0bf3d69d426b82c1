"""OpenAI end to end: API → Redis → worker → emulator (OpenAI audio) → S3 → poll, real processes.

A 30-line TTS job over HTTP (WAV answers), a 20-line job streamed as raw PCM into storage,
a 10-file whisper-1 job with timed words and segments, and a gpt-4o transcription job whose
transcripts have text and no timings. The Smallest file's stack serves this module too.
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

LINES = 30  # the 200-line shape runs for the seed vendors; 30 keep the suite in budget
STREAMED_LINES = 20
FILES = 10
# The catalog's OpenAI limit (8 in flight per key, UNCONFIRMED): the throttle keeps to it.
MOST_IN_FLIGHT = 8

stack = test_smallest.stack
accepted, fetch = test_smallest.accepted, test_smallest.fetch


def emulated(stack: Stack) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The emulator's log and stats since the last call (then reset)."""
    with stack.emulator() as emulator:
        records: list[dict[str, Any]] = emulator.get("/_emulator/requests").json()
        stats: dict[str, Any] = emulator.get("/_emulator/stats").json()
        emulator.delete("/_emulator/requests")
    return records, stats


def tts_body(texts: list[str], **options: Any) -> dict[str, Any]:
    return {
        "kind": "tts",
        "provider": "openai",
        "options": {"format": "wav", "sample_rate": 8000, **options},
        "items": [{"id": f"line-{n:03d}", "text": t} for n, t in enumerate(texts)],
    }


@pytest.mark.parametrize(("transport", "lines"), [("http", LINES), ("stream", STREAMED_LINES)])
def test_tts_job_over_each_transport(stack: Stack, transport: str, lines: int) -> None:
    """Every line, spoken over HTTP (a WAV) or streamed (raw PCM into storage), becomes a WAV
    in S3 that decodes to its recorded length, in one attempt each, within OpenAI's limit."""
    emulated(stack)
    texts = [f"Line {n} of the OpenAI voiceover, over {transport}." for n in range(lines)]
    job = accepted(stack, tts_body(texts, transport=transport))
    assert job["status"] == "succeeded", job
    items = stack.items(job["id"])
    assert len(items) == lines
    for item in items:
        audio, rate = sf.read(io.BytesIO(fetch(item["output"]["url"])))
        assert rate == 8000
        assert len(audio) / rate == pytest.approx(item["output"]["duration_s"], rel=0.01)
        assert item["attempts"] == 1
    records, stats = emulated(stack)
    assert {r["path"] for r in records} == {"/openai/v1/audio/speech"}
    assert [r for r in records if r["status"] != 200] == []
    assert stats["max_in_flight"] <= MOST_IN_FLIGHT


def make_clips(stack: Stack) -> list[bytes]:
    """Recordings of 1.3-7.6 s made by the emulator's own OpenAI speech route."""
    headers = {"Authorization": f"Bearer {stack.env['OPENAI_API_KEY']}"}
    with httpx.Client(base_url=stack.emulator_url, timeout=30) as emulator:
        return [
            emulator.post(
                "/openai/v1/audio/speech",
                headers=headers,
                json={
                    "model": "tts-1",
                    "input": "word " * (4 + n),
                    "voice": "alloy",
                    "response_format": "wav",
                },
            ).content
            for n in range(FILES)
        ]


def transcribed(stack: Stack, model: str, clips: list[bytes]) -> list[dict[str, Any]]:
    """Each clip's stored item files by format, after an STT job with `model` succeeds."""
    sources = [stack.upload(f"call-{n}.wav", wav) for n, wav in enumerate(clips)]
    body = {
        "kind": "stt",
        "provider": "openai",
        "model": model,
        "items": [{"id": f"call-{n:02d}", "source": s} for n, s in enumerate(sources)],
    }
    job = accepted(stack, body)
    assert job["status"] == "succeeded", job
    items = stack.items(job["id"])
    assert len(items) == len(clips)
    return [{f["format"]: f["url"] for f in item["output"]["files"]} for item in items]


def test_20_file_whisper_job_writes_timed_transcripts(stack: Stack) -> None:
    """Ten recordings come back from whisper-1 as transcripts with timed words and
    segments inside each recording, plus SRT/VTT/TXT renderings that parse."""
    clips = make_clips(stack)
    emulated(stack)
    for n, files in enumerate(transcribed(stack, "whisper-1", clips)):
        assert set(files) == {"json", "txt", "srt", "vtt"}
        transcript = json.loads(fetch(files["json"]))
        assert (transcript["provider"], transcript["model"]) == ("openai", "whisper-1")
        length = sf.info(io.BytesIO(clips[n])).duration
        assert transcript["duration_s"] == pytest.approx(length, abs=0.01)
        assert transcript["text"] and transcript["words"] and transcript["segments"]
        assert all(0 <= w["start"] <= w["end"] <= length for w in transcript["words"])
        assert fetch(files["srt"]).startswith(b"1\n")
        assert fetch(files["vtt"]).startswith(b"WEBVTT")
        assert fetch(files["txt"]).strip()
    records, _ = emulated(stack)
    assert {(r["path"], r["model"], r["status"]) for r in records} == {
        ("/openai/v1/audio/transcriptions", "whisper-1", 200)
    }


def test_gpt4o_transcripts_have_text_and_no_made_up_timings(stack: Stack) -> None:
    """gpt-4o-mini-transcribe answers only text: the stored transcripts keep it, with the
    recording's length and empty words and segments."""
    clips = make_clips(stack)[:5]
    for n, files in enumerate(transcribed(stack, "gpt-4o-mini-transcribe", clips)):
        transcript = json.loads(fetch(files["json"]))
        assert transcript["text"] and transcript["model"] == "gpt-4o-mini-transcribe"
        assert (transcript["words"], transcript["segments"]) == ([], [])
        length = sf.info(io.BytesIO(clips[n])).duration
        assert transcript["duration_s"] == pytest.approx(length, abs=0.01)
        assert fetch(files["txt"]).strip()
        assert fetch(files["srt"]).startswith(b"1\n00:00:00,000 --> ")
