"""What every provider adapter offers: `synthesize` and/or `transcribe`, one call each.

Adapters make exactly one request per call and raise the error tree in `errors.py`;
retrying, throttling and recording attempts are the caller's job (`workers/retry.py`).
Adapters take an injected `httpx.Client` so tests can pass a MockTransport.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Synthesis:
    """Audio as the provider sent it (the pipeline converts it to the requested format)."""

    audio: bytes
    content_type: str
    request_id: str | None = None
    status_code: int | None = 200
    # True when the audio went to the call's AudioSink as it arrived (`audio` is then empty).
    streamed: bool = False


class AudioSink(Protocol):
    """Where a streaming transport pushes audio as it arrives: 16-bit mono PCM.

    The pipeline passes one per call attempt (`workers.streamed.StoredSpeech` writes it
    straight to the item's output key); a transport that gets its audio whole ignores it.
    `start` comes once, before the first `write`; whatever either raises ends the call.
    """

    def start(self, sample_rate: int) -> None: ...

    def write(self, pcm: bytes) -> None: ...


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float
    confidence: float | None = None
    speaker: str | None = None


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    speaker: str | None = None


@dataclass(frozen=True)
class Transcript:
    """A provider-neutral transcript (design §7); `to_json()` is what we store."""

    text: str
    language: str | None
    duration_s: float | None
    provider: str
    model: str
    words: list[Word] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    request_id: str | None = None
    status_code: int | None = 200

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "language": self.language,
            "duration_s": self.duration_s,
            "provider": self.provider,
            "model": self.model,
            "provider_request_id": self.request_id,
            "words": [vars(w) for w in self.words],
            "segments": [vars(s) for s in self.segments],
        }


@dataclass(frozen=True)
class AudioInput:
    """An STT source, already fetched: bytes plus what we know about them."""

    data: bytes
    filename: str
    content_type: str


class SpeechProvider(Protocol):
    """One vendor. A provider that lacks a direction raises InvalidInput for it."""

    name: str

    def synthesize(
        self,
        text: str,
        *,
        model: str,
        voice: str | None,
        options: Mapping[str, Any],
        sink: AudioSink | None = None,
    ) -> Synthesis: ...

    def transcribe(
        self, audio: AudioInput, *, model: str, options: Mapping[str, Any]
    ) -> Transcript: ...
