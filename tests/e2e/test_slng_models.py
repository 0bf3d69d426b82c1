"""SLNG's other model families and its bridge routes end to end: API → Redis → worker → S3."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import soundfile as sf

from tests.e2e.stack import Stack
from tests.e2e.test_pipeline import fetch, submit, tone_wav

pytestmark = pytest.mark.e2e

TTS_JOBS = {
    # family A, Rime: `speaker` body, WAV answer, stored as FLAC
    "slng/rime/arcana:3-en": "flac",
    # family A, Inworld: JSON answer carrying base64 audio
    "slng/inworld/max:1.5": "wav",
    # bridge to ElevenLabs: the emulator answers MP3, recognised by its magic bytes
    "unmute/elevenlabs/eleven-flash:2.5": "wav",
    # bridge to Deepgram: the emulator answers raw PCM, wrapped as 24 kHz WAV
    "unmute/deepgram/aura:2": "mp3",
}
BRIDGE_STT = "unmute/slng/deepgram/nova:3-en"


def tts_job(model: str, fmt: str) -> dict[str, Any]:
    return {
        "kind": "tts",
        "provider": "slng",
        "model": model,
        "options": {"format": fmt},
        "items": [{"id": f"line-{n}", "text": f"Line {n} read by {model}."} for n in range(3)],
    }


@pytest.mark.parametrize("stack", ["postgresql"], indirect=True)
def test_family_a_and_bridge_jobs_store_decodable_audio_and_parseable_transcripts(
    stack: Stack,
) -> None:
    """Rime and Inworld TTS, two bridge TTS jobs and a bridge STT job all succeed through the
    whole stack, every stored audio file decoding and every transcript parsing."""
    sources = [
        stack.upload(f"call-{n}.wav", tone_wav(1.0 + n * 0.5, 300 + 50 * n)) for n in range(3)
    ]
    stt_body = {
        "kind": "stt",
        "provider": "slng",
        "model": BRIDGE_STT,
        "items": [{"id": f"call-{n}", "source": s} for n, s in enumerate(sources)],
    }
    tts_ids = {model: submit(stack, tts_job(model, fmt)) for model, fmt in TTS_JOBS.items()}
    stt_id = submit(stack, stt_body)

    for model, job_id in tts_ids.items():
        job = stack.wait_for_job(job_id, timeout=60)
        assert job["status"] == "succeeded", (model, job)
        for item in stack.items(job_id):
            audio, rate = sf.read(io.BytesIO(fetch(item["output"]["url"])))
            assert len(audio) / rate == pytest.approx(item["output"]["duration_s"], rel=0.05)
            assert item["output"]["key"].endswith(f".{TTS_JOBS[model]}"), model

    job = stack.wait_for_job(stt_id, timeout=60)
    assert job["status"] == "succeeded", job
    for n, item in enumerate(sorted(stack.items(stt_id), key=lambda i: i["id"])):
        files = {f["format"]: f["url"] for f in item["output"]["files"]}
        transcript = json.loads(fetch(files["json"]))
        assert transcript["text"]
        assert (transcript["provider"], transcript["model"]) == ("slng", BRIDGE_STT)
        assert transcript["duration_s"] == pytest.approx(1.0 + n * 0.5, abs=0.05)
        assert fetch(files["srt"]).startswith(b"1\n")
        assert fetch(files["vtt"]).startswith(b"WEBVTT")
