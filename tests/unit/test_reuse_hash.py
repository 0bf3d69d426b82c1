"""The content hash that decides which TTS lines share one output."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.content_hash import tts_content_hash

BASE: dict[str, Any] = {
    "tenant_id": "t_1",
    "provider": "openai",
    "model": "tts-1",
    "voice": "alloy",
    "options": {"format": "wav", "sample_rate": None, "language": None, "speed": 1.0},
    "text": "Hello there.",
}


def test_the_same_line_hashes_the_same() -> None:
    """Equal inputs give an equal 64-hex-digit hash."""
    first, second = tts_content_hash(**BASE), tts_content_hash(**dict(BASE))
    assert first == second and len(first) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"tenant_id": "t_2"},
        {"provider": "deepgram"},
        {"model": "tts-1-hd"},
        {"voice": "nova"},
        {"text": "Hello there!"},
        {"options": {**BASE["options"], "format": "mp3"}},
        {"options": {**BASE["options"], "sample_rate": 24000}},
        {"options": {**BASE["options"], "language": "en"}},
        {"options": {**BASE["options"], "speed": 1.25}},
    ],
)
def test_anything_that_changes_the_audio_changes_the_hash(change: dict[str, Any]) -> None:
    """Tenant, provider, model, voice, text and each audio option are part of the hash."""
    assert tts_content_hash(**(BASE | change)) != tts_content_hash(**BASE)


def test_how_the_audio_travels_does_not_change_the_hash() -> None:
    """transport and transcript options do not change the audio, so they are left out."""
    options = {**BASE["options"], "transport": "websocket", "transcript_formats": ["txt"]}
    assert tts_content_hash(**(BASE | {"options": options})) == tts_content_hash(**BASE)
