"""One transcript schema for every vendor: the same two timed words, answered in each vendor's
own raw shape, become the same stored JSON words and segments and the same TXT, SRT and VTT."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from workers.audio import pcm16_to_wav
from workers.providers.base import AudioInput, Transcript
from workers.providers.deepgram import DeepgramProvider
from workers.providers.elevenlabs import ElevenLabsProvider
from workers.providers.openai import OpenAIProvider
from workers.providers.slng import SlngProvider
from workers.providers.smallest import SmallestProvider
from workers.transcript_files import transcript_files

KEY = "sk-schema-test-0123456789"
# 1.5 s of a speech-like tone: a recording the two words fit in.
PCM = b"".join(
    int(3000 * ((n % 60) - 30) / 30).to_bytes(2, "little", signed=True) for n in range(24000)
)
CLIP = AudioInput(data=pcm16_to_wav(PCM, 16000), filename="call.wav", content_type="audio/wav")
WORDS = [("Hello", 0.1, 0.5), ("world.", 0.6, 1.0)]

DEEPGRAM = {
    "metadata": {"request_id": "r1", "duration": 1.5, "channels": 1},
    "results": {
        "channels": [
            {
                "alternatives": [
                    {
                        "transcript": "Hello world.",
                        "confidence": 0.9,
                        "words": [
                            {
                                "word": w.lower().strip("."),
                                "punctuated_word": w,
                                "start": s,
                                "end": e,
                                "confidence": 0.9,
                            }
                            for w, s, e in WORDS
                        ],
                    }
                ]
            }
        ],
        "utterances": [
            {
                "start": 0.1,
                "end": 1.0,
                "confidence": 0.9,
                "channel": 0,
                "transcript": "Hello world.",
                "words": [],
                "id": "u1",
            }
        ],
    },
}
OPENAI = {
    "language": "english",
    "duration": 1.5,
    "text": "Hello world.",
    "words": [{"word": w, "start": s, "end": e} for w, s, e in WORDS],
    "segments": [{"id": 0, "seek": 0, "start": 0.1, "end": 1.0, "text": " Hello world."}],
}
ELEVENLABS = {
    "language_code": "eng",
    "language_probability": 0.98,
    "text": "Hello world.",
    "words": [
        {"text": "Hello", "start": 0.1, "end": 0.5, "type": "word", "logprob": -0.1},
        {"text": " ", "start": 0.5, "end": 0.6, "type": "spacing"},
        {"text": "world.", "start": 0.6, "end": 1.0, "type": "word", "logprob": -0.1},
    ],
}
SMALLEST = {
    "status": "success",
    "transcription": "Hello world.",
    "words": [{"word": w, "start": s, "end": e, "confidence": 0.9} for w, s, e in WORDS],
    "utterances": [{"text": "Hello world.", "start": 0.1, "end": 1.0}],
    "metadata": {"duration": 1.5},
}


def answering(body: dict[str, Any]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body, headers={"content-type": "application/json"})

    return httpx.Client(transport=httpx.MockTransport(handler))


BASE = "http://127.0.0.1:9"
VENDORS: dict[str, Callable[[], Transcript]] = {
    "deepgram": lambda: DeepgramProvider(
        answering(DEEPGRAM), base_url=BASE, api_key=KEY
    ).transcribe(CLIP, model="nova-3", options={}),
    "openai": lambda: OpenAIProvider(answering(OPENAI), base_url=BASE, api_key=KEY).transcribe(
        CLIP, model="whisper-1", options={}
    ),
    "elevenlabs": lambda: ElevenLabsProvider(
        answering(ELEVENLABS), base_url=BASE, api_key=KEY
    ).transcribe(CLIP, model="scribe_v1", options={}),
    "smallest": lambda: SmallestProvider(
        answering(SMALLEST), base_url=BASE, api_key=KEY
    ).transcribe(CLIP, model="pulse", options={}),
    "slng": lambda: SlngProvider(answering(DEEPGRAM), base_url=BASE, api_key=KEY).transcribe(
        CLIP, model="slng/deepgram/nova:3-en", options={}
    ),
}


def rendered(transcript: Transcript) -> dict[str, Any]:
    """What is stored for it, minus what names the vendor or was measured by it."""
    files = {f.key: f.body for f in transcript_files(transcript, "t.json", ["txt", "srt", "vtt"])}
    stored = json.loads(files.pop("t.json"))
    words = [(w["text"], w["start"], w["end"]) for w in stored["words"]]
    segments = [(s["start"], s["end"], s["text"]) for s in stored["segments"]]
    return {"text": stored["text"], "words": words, "segments": segments, **files}


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_every_vendor_shape_renders_the_same_transcript(vendor: str) -> None:
    """The same words in each vendor's shape store the same text, words, segments, TXT,
    SRT and VTT as Deepgram's do."""
    expected = rendered(VENDORS["deepgram"]())
    assert expected["words"] == [("Hello", 0.1, 0.5), ("world.", 0.6, 1.0)]
    assert expected["segments"] == [(0.1, 1.0, "Hello world.")]
    assert rendered(VENDORS[vendor]()) == expected
