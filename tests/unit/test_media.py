"""Magic-byte sniffing and extensions in jobs/media.py."""

from __future__ import annotations

import pytest

from jobs.media import extension_for, sniff_audio


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"RIFF\x24\x08\x00\x00WAVEfmt ", "audio/wav"),
        (b"fLaC\x00\x00\x00\x22", "audio/flac"),
        (b"OggS\x00\x02\x00\x00", "audio/ogg"),
        (b"ID3\x04\x00\x00\x00\x00", "audio/mpeg"),
        (b"\xff\xfb\x94\xc4\x00", "audio/mpeg"),  # MPEG-1 layer III, 128 kbit/s
        (b"\xff\xf3\x84\xc4\x00", "audio/mpeg"),  # MPEG-2 layer III
        (b"\x00\x00\x00\x20ftypM4A \x00", "audio/mp4"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", "audio/webm"),
        (b"RIFF\x24\x08\x00\x00AVI LIST", None),  # RIFF but not WAVE
        (b"\xff\xf1\x50\x80\x00", None),  # AAC/ADTS sync: layer bits 00, not MPEG audio
        (b"\xff\xff\xff\xff\xff", None),  # reserved bitrate index
        (b"%PDF-1.7\n", None),
        (b"<!DOCTYPE html>", None),
        (b'{"error":1}', None),
        (b"", None),
        (b"\xff", None),
    ],
)
def test_sniff_audio_table(head: bytes, expected: str | None) -> None:
    """Each container is recognised by its magic bytes and non-audio gives None."""
    assert sniff_audio(head) == expected


@pytest.mark.parametrize(
    ("content_type", "ext"),
    [
        ("audio/wav", "wav"),
        ("audio/x-wav", "wav"),
        ("audio/flac", "flac"),
        ("audio/mpeg", "mp3"),
        ("audio/ogg; codecs=opus", "ogg"),
        ("AUDIO/MP4", "m4a"),
        ("audio/webm", "webm"),
        ("application/octet-stream", "bin"),
    ],
)
def test_extension_for(content_type: str, ext: str) -> None:
    """Media types map to extensions, ignoring case and parameters, with `bin` as fallback."""
    assert extension_for(content_type) == ext


def test_every_sniffed_type_has_an_extension() -> None:
    """Whatever sniff_audio returns can be stored under a real extension, never `bin`."""
    heads = [b"RIFF\0\0\0\0WAVE", b"fLaC", b"OggS", b"ID3", b"\0\0\0\0ftyp", b"\x1a\x45\xdf\xa3"]
    for head in heads:
        mime = sniff_audio(head)
        assert mime is not None
        assert extension_for(mime) != "bin"
