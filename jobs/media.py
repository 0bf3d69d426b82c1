"""Recognising audio by its first bytes, and the file extension for a media type.

`check_audio` is the one audio check: the API and the CLI run it on uploads before storing
them, and workers on every fetched or stored source before calling a provider, so a PDF, an
HTML error page or an empty file is refused with the same code everywhere. Only magic bytes
are trusted: browsers and curl label uploads with whatever the file name suggests.
Pure standard library on purpose: `jobs/` must import without the audio stack.
"""

from __future__ import annotations

from jobs.error_codes import ErrorCode

KNOWN_AUDIO = "wav, flac, ogg, mp3, m4a, webm"

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


class AudioRejected(ValueError):
    """Bytes that are not a recording we accept: `code` is EMPTY_AUDIO or UNSUPPORTED_AUDIO."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def check_audio(head: bytes, what: str) -> str:
    """The audio MIME type of a file whose first bytes (≥64, or all of it) are `head`.

    Raises AudioRejected naming `what` (e.g. "The uploaded file") when it is empty or not
    audio we recognise.
    """
    if not head:
        raise AudioRejected(ErrorCode.EMPTY_AUDIO, f"{what} is empty (0 bytes).")
    content_type = sniff_audio(head)
    if content_type is None:
        raise AudioRejected(
            ErrorCode.UNSUPPORTED_AUDIO, f"{what} is not audio we recognise ({KNOWN_AUDIO})."
        )
    return content_type


def extension_for(content_type: str) -> str:
    """The file extension (no dot) for a media type; `bin` when the type is unknown.

    Parameters such as `; codecs=opus` are ignored, and the match is case-insensitive.
    """
    base = content_type.split(";", 1)[0].strip().lower()
    return _EXTENSIONS.get(base, "bin")


# The first (canonical) media type listed for each extension above.
_MEDIA_TYPES = {ext: mime for mime, ext in reversed(_EXTENSIONS.items())}


def media_type_for(ext: str) -> str:
    """The canonical media type of a file extension; `application/octet-stream` if unknown."""
    return _MEDIA_TYPES.get(ext.lower(), "application/octet-stream")
