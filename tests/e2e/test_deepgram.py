"""Deepgram end to end: API → Redis → worker → emulator (/v1/speak, /v1/listen) → S3 → poll.

A 30-line Aura-2 job over HTTP, a 20-line job streamed into storage as it arrives, a 10-file
nova-3 job, and an unknown voice failing its item alone. The stack is the Smallest file's (one
per module; every vendor points at the emulator with the same key).
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

stack = test_smallest.stack
fetch, emulated_requests = test_smallest.fetch, test_smallest.emulated_requests


def accepted(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    """Submit `body` and wait for the job; 120 s, since on a busy machine the worker's own
    per-item overhead (not Deepgram's 15 in flight) makes 200 lines take 30 s or more."""
    response = test_smallest.submit(stack, body)
    assert response.status_code == 202, response.text
    return stack.wait_for_job(str(response.json()["id"]), timeout=120)


def tts_body(texts: list[str], **options: Any) -> dict[str, Any]:
    return {
        "kind": "tts",
        "provider": "deepgram",
        "options": {"format": "wav", "sample_rate": 16000, **options},
        "items": [{"id": f"line-{n:03d}", "text": t} for n, t in enumerate(texts)],
    }


@pytest.mark.parametrize(("transport", "lines"), [("http", LINES), ("stream", STREAMED_LINES)])
def test_tts_job_over_each_transport(stack: Stack, transport: str, lines: int) -> None:
    """Every line, whole over HTTP or streamed into storage, becomes a 16 kHz WAV in S3 that
    decodes to its recorded length, in one attempt each, asking Deepgram for aura-2-thalia-en."""
    emulated_requests(stack)
    texts = [f"Line {n} of the Deepgram voiceover, over {transport}." for n in range(lines)]
    job = accepted(stack, tts_body(texts, transport=transport))
    assert job["status"] == "succeeded", job
    assert (job["model"], job["voice"]) == ("aura-2", "thalia-en")
    items = stack.items(job["id"])
    assert len(items) == lines
    for item in items:
        audio, rate = sf.read(io.BytesIO(fetch(item["output"]["url"])))
        assert rate == 16000
        assert len(audio) / rate == pytest.approx(item["output"]["duration_s"], rel=0.01)
        assert item["output"]["duration_s"] == pytest.approx(len(texts[0]) / 15, abs=0.2)
        assert item["attempts"] == 1
    records = emulated_requests(stack)
    assert {(r["path"], r["model"], r["status"]) for r in records} == {
        ("/deepgram/v1/speak", "aura-2-thalia-en", 200)
    }
    assert len(records) == lines


def test_20_file_nova_job_writes_parseable_transcripts(stack: Stack) -> None:
    """Ten recordings made by the emulator's own /v1/speak come back as nova-3 transcripts
    with punctuated words, speakers and segments, plus SRT/VTT/TXT renderings that parse."""
    with httpx.Client(base_url=stack.emulator_url, timeout=30) as emulator:
        clips = [
            emulator.post(
                "/deepgram/v1/speak",
                params={"model": "aura-2-thalia-en", "encoding": "linear16", "sample_rate": 16000},
                headers={"Authorization": f"Token {stack.env['DEEPGRAM_API_KEY']}"},
                json={"text": "word " * (4 + n)},
            ).content
            for n in range(FILES)
        ]
    sources = [stack.upload(f"call-{n}.wav", wav) for n, wav in enumerate(clips)]
    body = {
        "kind": "stt",
        "provider": "deepgram",
        "items": [{"id": f"call-{n}", "source": s} for n, s in enumerate(sources)],
    }
    job = accepted(stack, body)
    assert job["status"] == "succeeded", job
    items = stack.items(job["id"])
    assert len(items) == FILES
    for n, item in enumerate(items):
        files = {f["format"]: f["url"] for f in item["output"]["files"]}
        assert set(files) == {"json", "txt", "srt", "vtt"}
        transcript = json.loads(fetch(files["json"]))
        assert (transcript["provider"], transcript["model"]) == ("deepgram", "nova-3")
        assert transcript["text"] and transcript["words"] and transcript["segments"]
        assert transcript["provider_request_id"]
        length = sf.info(io.BytesIO(clips[n])).duration
        assert transcript["duration_s"] == pytest.approx(length, abs=0.01)
        assert all(0 <= w["start"] <= w["end"] <= length for w in transcript["words"])
        assert {w["speaker"] for w in transcript["words"]} <= {"0", "1"}
        assert fetch(files["srt"]).startswith(b"1\n")
        assert fetch(files["vtt"]).startswith(b"WEBVTT")
        assert fetch(files["txt"]).strip()
    records = emulated_requests(stack)
    assert {(r["path"], r["model"]) for r in records if r["path"].endswith("listen")} == {
        ("/deepgram/v1/listen", "nova-3")
    }


def test_an_unknown_voice_fails_its_item_alone_naming_the_voices(stack: Stack) -> None:
    """A line with a voice Aura-2 lacks fails at once (unknown_voice, no request to Deepgram)
    with the known voices named, while the other lines succeed."""
    emulated_requests(stack)
    body = tts_body(["Fine line one.", "Nobody speaks this.", "Fine line three."])
    body["items"][1]["voice"] = "nobody-en"
    job = accepted(stack, body)
    assert job["status"] == "completed_with_errors", job
    (bad,) = [i for i in stack.items(job["id"]) if i["status"] == "failed"]
    assert (bad["id"], bad["attempts"], bad["error"]["code"]) == ("line-001", 1, "unknown_voice")
    assert "thalia-en" in bad["error"]["message"]
    assert len(emulated_requests(stack)) == 2
