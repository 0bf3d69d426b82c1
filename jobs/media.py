"""Recognising audio by its first bytes, and the file extension for a media type.

The API sniffs uploads with `sniff_audio` before storing them, so a PDF or an HTML error page
is rejected at the door instead of failing later inside a provider. Only magic bytes are
trusted: browsers and curl label uploads with whatever the file name suggests.
Pure standard library on purpose: `jobs/` must import without the audio stack.
"""

from __future__ import annotations

# MPEG audio frame header fields (ISO 11172-3): 2-bit version and layer, 4-bit bitrate index.
_MPEG_VERSION_RESERVED = 0b01
_MPEG_LAYER_RESERVED = 0b00
_MPEG_BITRATE_BAD = 0b1111

_EXTENSIONS = {
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/vnd.wave": "wav",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/ogg": "ogg",
    "audio/opus": "opus",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mp4": "m4a",
    "audio/x-m4a": "m4a",
    "audio/m4a": "m4a",
    "audio/aac": "aac",
    "audio/webm": "webm",
    "audio/l16": "pcm",
    "audio/pcm": "pcm",
    "application/json": "json",
    "text/plain": "txt",
    "application/x-subrip": "srt",
    "text/vtt": "vtt",
}


def _is_mpeg_frame(head: bytes) -> bool:
    """True when `head` starts with a plausible MPEG-1/2/2.5 audio frame header.

    An 11-bit sync alone also matches AAC/ADTS and random binary, so the reserved version,
    layer and bitrate values are rejected too.
    """
    if len(head) < 3 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version = (head[1] >> 3) & 0b11
    layer = (head[1] >> 1) & 0b11
    bitrate = head[2] >> 4
    return (
        version != _MPEG_VERSION_RESERVED
        and layer != _MPEG_LAYER_RESERVED
        and bitrate != _MPEG_BITRATE_BAD
    )


# (offset, magic bytes, MIME type); MPEG frames have no fixed magic and are checked apart.
_SIGNATURES = (
    (0, b"fLaC", "audio/flac"),
    (0, b"OggS", "audio/ogg"),
    (0, b"ID3", "audio/mpeg"),
    (4, b"ftyp", "audio/mp4"),
    (0, b"\x1a\x45\xdf\xa3", "audio/webm"),
)


def sniff_audio(head: bytes) -> str | None:
    """The audio MIME type that `head` (the first ≥12 bytes of a file) starts with, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    for offset, magic, mime in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return mime
    return "audio/mpeg" if _is_mpeg_frame(head) else None


def extension_for(content_type: str) -> str:
    """The file extension (no dot) for a media type; `bin` when the type is unknown.

    Parameters such as `; codecs=opus` are ignored, and the match is case-insensitive.
    """
    base = content_type.split(";", 1)[0].strip().lower()
    return _EXTENSIONS.get(base, "bin")
