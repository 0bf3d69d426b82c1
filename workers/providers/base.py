"""What every provider adapter offers: `synthesize` and/or `transcribe`, one HTTP call each.

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
        self, text: str, *, model: str, voice: str | None, options: Mapping[str, Any]
    ) -> Synthesis: ...

    def transcribe(
        self, audio: AudioInput, *, model: str, options: Mapping[str, Any]
    ) -> Transcript: ...
