"""Transcript renderings: plain text, SubRip (SRT) and WebVTT, from a normalised transcript."""

from __future__ import annotations

from workers.providers.base import Segment, Transcript


def _clock(seconds: float, sep: str) -> str:
    millis = round(max(seconds, 0.0) * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{ms:03d}"


def _segments(transcript: Transcript) -> list[Segment]:
    if transcript.segments:
        return transcript.segments
    if not transcript.text:
        return []
    end = transcript.duration_s or (transcript.words[-1].end if transcript.words else 0.0)
    return [Segment(start=0.0, end=end, text=transcript.text)]


def to_txt(transcript: Transcript) -> str:
    return transcript.text.strip() + "\n"


def to_srt(transcript: Transcript) -> str:
    blocks = [
        f"{n}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n"
        for n, s in enumerate(_segments(transcript), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    blocks = [
        f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n"
        for s in _segments(transcript)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


RENDERERS = {
    "txt": (to_txt, "text/plain"),
    "srt": (to_srt, "application/x-subrip"),
    "vtt": (to_vtt, "text/vtt"),
}
