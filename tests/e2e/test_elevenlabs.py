"""ElevenLabs end to end: API → Redis → worker → emulator (ElevenLabs) → S3 → poll, real processes.

A 30-line TTS job over HTTP, a 20-line job over the chunked `/stream` (PCM stored as it
arrives) and a 10-file Scribe job: every output decodes, every transcript parses, and the
catalog's concurrency keeps the emulator's Free-plan cap from refusing anything.
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
from workers.audio import pcm16_to_wav

pytestmark = pytest.mark.e2e

LINES = 30  # the 200-line shape runs for the seed vendors; 30 keep the suite in budget
STREAMED_LINES = 20
FILES = 10
VOICE = "JBFqnCBsd6RMkjVDRZzb"

# The Smallest file's stack fixture (every vendor at the emulator), started once for this
# module too; `accepted` submits and waits, `fetch` downloads an output.
stack = test_smallest.stack
accepted, fetch, emulated_requests = (
    test_smallest.accepted,
    test_smallest.fetch,
    test_smallest.emulated_requests,
)


def tts_body(texts: list[str], **options: Any) -> dict[str, Any]:
    return {
        "kind": "tts",
        "provider": "elevenlabs",
        "options": {"format": "wav", **options},
        "items": [{"id": f"line-{n:03d}", "text": t} for n, t in enumerate(texts)],
    }


@pytest.mark.parametrize(
    ("transport", "lines", "rate", "route"),
    [("http", LINES, 8000, ""), ("stream", STREAMED_LINES, 16000, "/stream")],
)
def test_tts_job_over_each_transport(
    stack: Stack, transport: str, lines: int, rate: int, route: str
) -> None:
    """Every line, over HTTP (a 200-line script) or /stream (20 lines), becomes a WAV in S3
    that decodes to its recorded length at the asked rate, in one attempt each, with no 429
    from the plan's cap."""
    emulated_requests(stack)
    texts = [f"Line {n} of the ElevenLabs voiceover, over {transport}." for n in range(lines)]
    job = accepted(stack, tts_body(texts, transport=transport, sample_rate=rate))
    assert job["status"] == "succeeded", job
    items = stack.items(job["id"])
    assert len(items) == lines
    for item in items:
        audio, got = sf.read(io.BytesIO(fetch(item["output"]["url"])))
        assert got == rate
        assert len(audio) / rate == pytest.approx(item["output"]["duration_s"], rel=0.01)
        text = texts[int(item["id"].removeprefix("line-"))]
        assert len(audio) / rate == pytest.approx(len(text) / 15, abs=0.05)
        assert item["attempts"] == 1
    records = emulated_requests(stack)
    assert {r["path"] for r in records} == {f"/elevenlabs/v1/text-to-speech/{VOICE}{route}"}
    assert [r for r in records if r["status"] != 200] == []


def test_20_file_scribe_job_writes_parseable_transcripts(stack: Stack) -> None:
    """Ten recordings (made by the emulator's own TTS) come back as Scribe transcripts with
    timed words and speakers inside each recording, plus SRT/VTT/TXT renderings."""
    with httpx.Client(base_url=stack.emulator_url, timeout=30) as emulator:
        clips = [
            pcm16_to_wav(
                emulator.post(
                    f"/elevenlabs/v1/text-to-speech/{VOICE}",
                    params={"output_format": "pcm_16000"},
                    headers={"xi-api-key": stack.env["ELEVENLABS_API_KEY"]},
                    json={"text": "word " * (4 + n), "model_id": "eleven_flash_v2_5"},
                ).content,
                16000,
            )
            for n in range(FILES)
        ]
    sources = [stack.upload(f"call-{n}.wav", wav) for n, wav in enumerate(clips)]
    body = {
        "kind": "stt",
        "provider": "elevenlabs",
        "items": [{"id": f"call-{n}", "source": s} for n, s in enumerate(sources)],
    }
    job = accepted(stack, body)
    assert job["status"] == "succeeded", job
    items = stack.items(job["id"])
    assert len(items) == FILES
    for item in items:
        n = int(item["id"].removeprefix("call-"))
        files = {f["format"]: f["url"] for f in item["output"]["files"]}
        assert set(files) == {"json", "txt", "srt", "vtt"}
        transcript = json.loads(fetch(files["json"]))
        assert (transcript["provider"], transcript["model"]) == ("elevenlabs", "scribe_v1")
        assert transcript["text"] and transcript["words"] and transcript["segments"]
        length = sf.info(io.BytesIO(clips[n])).duration
        assert transcript["duration_s"] == pytest.approx(length, abs=0.01)
        assert all(0 <= w["start"] <= w["end"] <= length for w in transcript["words"])
        assert {w["speaker"] for w in transcript["words"]} <= {"speaker_0", "speaker_1"}
        assert fetch(files["srt"]).startswith(b"1\n")
        assert fetch(files["vtt"]).startswith(b"WEBVTT")
        assert fetch(files["txt"]).strip()
