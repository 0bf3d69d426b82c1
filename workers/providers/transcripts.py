"""Provider STT answers normalised to the one transcript schema (`Transcript`).

Deepgram-shaped (`results.channels[0].alternatives[0]`), Whisper-shaped (`text`,
`segments`) and SLNG-bridge-shaped (`{"type": "transcription", "alternatives": [...]}`)
bodies, as SLNG relays them; every field is checked for its type, so a body of the wrong
shape gives None (the caller reports `unexpected_response`), never a half-read transcript
recorded as success.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from workers.providers import http
from workers.providers.base import Segment, Transcript, Word


def parse_deepgram(
    body: Mapping[str, Any], model: str, options: Mapping[str, Any], provider: str = "slng"
) -> Transcript | None:
    """A Deepgram-shaped answer (`results.channels[0].alternatives[0]`), or None."""
    results = body.get("results")
    channels = results.get("channels") if isinstance(results, Mapping) else None
    if not isinstance(channels, list) or not channels or not isinstance(channels[0], Mapping):
        return None
    channel = channels[0]
    alternatives = channel.get("alternatives")
    if not isinstance(alternatives, list):
        return None
    best = alternatives[0] if alternatives and isinstance(alternatives[0], Mapping) else {}
    words = [w for w in (deepgram_word(raw) for raw in best.get("words") or []) if w]
    utterances = results.get("utterances") if isinstance(results, Mapping) else None
    segments = [
        Segment(start=s, end=e, text=str(u.get("transcript", "")).strip(), speaker=speaker_of(u))
        for u in (utterances or [])
        if isinstance(u, Mapping)
        and (s := as_float(u.get("start"))) is not None
        and (e := as_float(u.get("end"))) is not None
    ] or http.segments_from_words(words)
    metadata = body.get("metadata")
    if not isinstance(metadata, Mapping):
        metadata = {}
    duration = as_float(metadata.get("duration"))
    language = as_str(channel.get("detected_language")) or language_of(options, model)
    return Transcript(
        text=str(best.get("transcript") or "").strip(),
        language=language,
        duration_s=duration if duration is not None else (words[-1].end if words else None),
        provider=provider,
        model=model,
        words=words,
        segments=segments,
        request_id=as_str(metadata.get("request_id")),
    )


def parse_whisper(
    body: Mapping[str, Any], model: str, options: Mapping[str, Any], provider: str = "slng"
) -> Transcript | None:
    """A Whisper-shaped answer (`text`, `segments`), or None."""
    # {"transcript": ...} is a third shape seen in one SLNG example (providers.md §1.5).
    text = body.get("text", body.get("transcript"))
    if not isinstance(text, str):
        return None
    words = [
        Word(text=str(w.get("word", "")).strip(), start=s, end=e)
        for w in body.get("words") or []
        if isinstance(w, Mapping)
        and (s := as_float(w.get("start"))) is not None
        and (e := as_float(w.get("end"))) is not None
    ]
    segments = [
        Segment(start=s, end=e, text=str(seg.get("text", "")).strip())
        for seg in body.get("segments") or []
        if isinstance(seg, Mapping)
        and (s := as_float(seg.get("start"))) is not None
        and (e := as_float(seg.get("end"))) is not None
    ] or http.segments_from_words(words)
    duration = as_float(body.get("duration"))
    if duration is None:
        ends = [s.end for s in segments] + [w.end for w in words]
        duration = max(ends) if ends else None
    return Transcript(
        text=text.strip(),
        language=as_str(body.get("language")) or language_of(options, model),
        duration_s=duration,
        provider=provider,
        model=model,
        words=words,
        segments=segments,
        request_id=as_str(body.get("slng_request_id")),
    )


def parse_bridge(
    body: Mapping[str, Any], model: str, options: Mapping[str, Any], provider: str = "slng"
) -> Transcript | None:
    """A bridge answer (`type: transcription`, `alternatives[0].transcript`), or None.

    It is a Whisper answer without timing (providers.md §1.6), so it is read as one.
    """
    alternatives = body.get("alternatives")
    if body.get("type", "transcription") != "transcription" or not isinstance(alternatives, list):
        return None
    best = alternatives[0] if alternatives and isinstance(alternatives[0], Mapping) else {}
    untimed = {k: body.get(k) for k in ("language", "slng_request_id")}
    return parse_whisper(untimed | {"text": best.get("transcript", "")}, model, options, provider)


def deepgram_word(raw: object) -> Word | None:
    if not isinstance(raw, Mapping):
        return None
    start, end = as_float(raw.get("start")), as_float(raw.get("end"))
    text = raw.get("punctuated_word") or raw.get("word")
    if start is None or end is None or not isinstance(text, str):
        return None
    return Word(
        text=text,
        start=start,
        end=end,
        confidence=as_float(raw.get("confidence")),
        speaker=speaker_of(raw),
    )


def language_of(options: Mapping[str, Any], model: str) -> str | None:
    """The language asked for, else the one a model variant implies (`nova:3-es` → es),
    on a per-model route or a bridge to one (`unmute/slng/deepgram/nova:3-es`)."""
    if options.get("language"):
        return str(options["language"])
    _, found, variant = model.partition("slng/deepgram/nova:3-")
    return variant if found and variant and variant != "multi" else None


def speaker_of(raw: Mapping[str, Any]) -> str | None:
    value = raw.get("speaker")
    return None if value is None else str(value)


def as_float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def as_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def json_object(data: bytes) -> dict[str, Any] | None:
    if data.lstrip()[:1] != b"{":
        return None
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None  # raw PCM can start with 0x7B too
    return parsed if isinstance(parsed, dict) else None


def clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
