"""Transcript renderings have the shapes players and editors expect."""

from workers.providers.base import Segment, Transcript
from workers.render import to_srt, to_txt, to_vtt

TRANSCRIPT = Transcript(
    text="Hello there. General Kenobi.",
    language="en",
    duration_s=3725.5,
    provider="slng",
    model="m",
    segments=[Segment(0.0, 1.25, "Hello there."), Segment(3723.0, 3725.5, "General Kenobi.")],
)


def test_srt_numbers_blocks_and_uses_commas() -> None:
    """SRT blocks are numbered from 1 with HH:MM:SS,mmm times."""
    assert to_srt(TRANSCRIPT).splitlines()[:3] == [
        "1",
        "00:00:00,000 --> 00:00:01,250",
        "Hello there.",
    ]
    assert "01:02:03,000 --> 01:02:05,500" in to_srt(TRANSCRIPT)


def test_vtt_has_header_and_dots() -> None:
    """WebVTT starts with its header and uses HH:MM:SS.mmm times."""
    text = to_vtt(TRANSCRIPT)
    assert text.startswith("WEBVTT\n\n")
    assert "00:00:00.000 --> 00:00:01.250" in text


def test_txt_is_the_plain_text() -> None:
    """The text rendering is the transcript text with a final newline."""
    assert to_txt(TRANSCRIPT) == "Hello there. General Kenobi.\n"
