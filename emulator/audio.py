"""Audio in and out of the emulator: synthetic speech for TTS, inspection and transcripts for STT.

`render_speech` makes a quiet tone with a word-like amplitude envelope, so clients get real,
decodable audio of a plausible length; results are cached by their parameters because the
emulator has to answer hundreds of small TTS requests a second. `probe_duration` tells
decodable audio from garbage, and `canned_words` spreads a sentence chosen by the audio's
SHA-256 over its real duration, so the same file always gets the same transcript; the
Deepgram- and Whisper-shaped renderings live here because several vendors answer in them.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf

# encoding -> (soundfile format, subtype, media type); "raw" variants are headerless.
_CONTAINED = {
    ("linear16", "wav"): ("WAV", "PCM_16", "audio/wav"),
    ("mulaw", "wav"): ("WAV", "ULAW", "audio/wav"),
    ("alaw", "wav"): ("WAV", "ALAW", "audio/wav"),
    ("linear16", "none"): ("RAW", "PCM_16", "audio/l16"),
    ("mulaw", "none"): ("RAW", "ULAW", "audio/mulaw"),
    ("alaw", "none"): ("RAW", "ALAW", "audio/alaw"),
    ("flac", "none"): ("FLAC", "PCM_16", "audio/flac"),
    ("mp3", "none"): ("MP3", "MPEG_LAYER_III", "audio/mpeg"),
    ("opus", "ogg"): ("OGG", "OPUS", "audio/ogg"),
}
# Codecs that carry their own framing, so the requested container does not change the bytes.
SELF_CONTAINED = {"flac": "none", "mp3": "none", "opus": "ogg"}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_CACHE_BYTES = 256 * 1024 * 1024
# The envelope (0.4 s) and the pitch's wobble (1/0.7 s) both repeat every 10 s, and over it
# the carrier makes whole cycles (180 Hz x 10 s; the wobble sums to zero), so the tone does too.
_PERIOD_S = 10

_SENTENCES = {
    "en": (
        "the quick brown fox jumps over the lazy dog",
        "please call stella and ask her to bring these things with her from the store",
        "a batch of speech requests arrived and every one of them was answered",
        "the emulator pretends to listen carefully and writes down what it hears",
    ),
    "es": (
        "el veloz murcielago hindu comia feliz cardillo y kiwi",
        "la cigüeña tocaba el saxofon detras del palenque de paja",
    ),
}


class UnsupportedAudio(ValueError):
    """The emulator cannot produce this encoding/container combination."""


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float


def speech_duration(text: str) -> float:
    """Seconds of audio for `text`: about 15 characters a second, never under half a second."""
    return max(0.5, len(text) / 15)


def audio_format(encoding: str, container: str) -> tuple[str, str, str]:
    """(soundfile format, subtype, media type) for a request, or UnsupportedAudio."""
    container = SELF_CONTAINED.get(encoding, container)
    try:
        return _CONTAINED[(encoding, container)]
    except KeyError:
        raise UnsupportedAudio(
            f"encoding {encoding!r} with container {container!r} is not supported"
        ) from None


class SpeechCache:
    """An LRU of rendered audio bounded by total bytes, keyed by every rendering parameter."""

    def __init__(self, max_bytes: int = _CACHE_BYTES) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._items: OrderedDict[tuple[float, str, int, str], tuple[bytes, str]] = OrderedDict()

    def get(self, key: tuple[float, str, int, str]) -> tuple[bytes, str] | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: tuple[float, str, int, str], item: tuple[bytes, str]) -> None:
        if key in self._items or len(item[0]) > self._max_bytes:
            return
        self._items[key] = item
        self._bytes += len(item[0])
        while self._bytes > self._max_bytes:
            _, (old, _) = self._items.popitem(last=False)
            self._bytes -= len(old)


def render_speech(
    duration_s: float, encoding: str, sample_rate: int, container: str
) -> tuple[bytes, str]:
    """Encoded audio of `duration_s` seconds and its media type; CPU-bound, so cache it."""
    fmt, subtype, media_type = audio_format(encoding, container)
    if subtype == "OPUS" and sample_rate not in OPUS_RATES:
        sample_rate = 48000  # Opus cannot carry other rates; Deepgram's Opus is 48 kHz anyway
    buffer = io.BytesIO()
    endian = "LITTLE" if fmt == "RAW" else "FILE"
    with sf.SoundFile(buffer, "w", sample_rate, 1, subtype, endian, fmt) as out:
        for block in _tone(round(duration_s * sample_rate), sample_rate):
            out.write(block)
    return buffer.getvalue(), media_type


def _tone(frames: int, sample_rate: int) -> Iterator[np.ndarray]:
    """`frames` samples of the tone, one period at a time, so a ten-minute answer costs one
    period's work and memory (a whole-array render of 10 min at 44.1 kHz peaked near 700 MB)."""
    period = _tone_period(sample_rate)
    for start in range(0, frames, len(period)):
        yield period[: frames - start]


@functools.lru_cache(maxsize=8)
def _tone_period(sample_rate: int) -> np.ndarray:
    """One `_PERIOD_S` of the tone; read-only, since every render shares it."""
    t = np.arange(_PERIOD_S * sample_rate, dtype=np.float64) / sample_rate
    # Bursts of ~0.3 s separated by short gaps, so the audio looks like words to a VAD.
    phase = np.mod(t, 0.4) / 0.3
    envelope = np.where(phase < 1.0, np.sin(np.pi * np.minimum(phase, 1.0)), 0.0)
    pitch = 180.0 + 40.0 * np.sin(2 * np.pi * 0.7 * t)
    samples = (0.1 * envelope * np.sin(2 * np.pi * np.cumsum(pitch) / sample_rate)).astype(
        np.float32
    )
    samples.flags.writeable = False
    return samples


def probe_duration(data: bytes) -> float | None:
    """Duration in seconds if soundfile can decode `data`, else None."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as audio:
            frames = audio.frames
            rate = audio.samplerate
            audio.read(min(frames, rate), dtype="int16")  # a header alone is not audio
    except (RuntimeError, TypeError, ValueError):
        return None
    return frames / rate if rate else None


def audio_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canned_words(digest: str, duration_s: float, language: str = "en") -> list[Word]:
    """A sentence picked by `digest`, its words spread evenly over `duration_s`."""
    sentences = _SENTENCES.get(language.split("-", maxsplit=1)[0], _SENTENCES["en"])
    words = sentences[int(digest[:8], 16) % len(sentences)].split()
    # Keep at least ~0.2 s per word, so a short clip gets a short transcript.
    words = words[: max(1, min(len(words), int(duration_s / 0.2)))] if duration_s > 0 else []
    if not words:
        return []
    slot = duration_s / len(words)
    return [
        Word(w, round(i * slot + 0.1 * slot, 3), round((i + 1) * slot - 0.1 * slot, 3))
        for i, w in enumerate(words)
    ]


def deepgram_transcript(
    *,
    request_id: str,
    model: str,
    digest: str,
    duration_s: float,
    language: str,
    punctuate: bool,
    report_language: bool,
) -> dict[str, Any]:
    """A Deepgram pre-recorded response (`metadata` + `results.channels[0]`) for one clip."""
    words = canned_words(digest, duration_s, language)
    plain = [w.word for w in words]
    punctuated = _punctuate(plain)
    channel: dict[str, Any] = {
        "alternatives": [
            {
                "transcript": " ".join(punctuated if punctuate else plain),
                "confidence": 0.97,
                "words": [
                    {
                        "word": w.word,
                        "punctuated_word": p,
                        "start": w.start,
                        "end": w.end,
                        "confidence": 0.97,
                        "speaker": 0,
                    }
                    for w, p in zip(words, punctuated, strict=True)
                ],
            }
        ]
    }
    if report_language:
        channel["detected_language"] = language
    metadata = {
        "request_id": request_id,
        "model": model,
        "duration": round(duration_s, 3),
        "channels": 1,
    }
    return {"metadata": metadata, "results": {"channels": [channel]}}


def whisper_transcript(digest: str, duration_s: float, language: str) -> dict[str, Any]:
    """Whisper's `{text, language, segments}` for one clip, six words to a segment."""
    words = canned_words(digest, duration_s, language)
    punctuated = _punctuate([w.word for w in words])
    segments = [
        {
            "start": words[i].start,
            "end": words[min(i + 6, len(words)) - 1].end,
            "text": " ".join(punctuated[i : i + 6]),
        }
        for i in range(0, len(words), 6)
    ]
    return {"text": " ".join(punctuated), "language": language, "segments": segments}


def _punctuate(words: list[str]) -> list[str]:
    if not words:
        return []
    out = list(words)
    out[0] = out[0].capitalize()
    out[-1] += "."
    return out
