"""A recording's duration read from its header alone (for dry-run estimates, issue 12).

Only formats whose header states the length: WAV (`fmt ` byte rate and the `data` chunk's
size) and FLAC (STREAMINFO's total samples and rate). MP3, Ogg and WebM state no length in
a header (it takes a scan of the stream), and a WAV or FLAC that leaves the length unset
(streamed writers write 0 or 0xFFFFFFFF) has none either: those are None, and the caller
says so instead of guessing.
"""

from __future__ import annotations

import struct

from storage.objects import ObjectNotFound, ObjectStore, StorageUnavailable

HEADER_BYTES = 64 * 1024  # enough for a WAV's LIST/fact chunks before `data`, or FLAC's blocks
_UNSET_SIZES = (0, 0xFFFFFFFF)


def _wav_seconds(head: bytes) -> float | None:
    byte_rate, at = None, 12
    while at + 8 <= len(head):
        chunk, size = head[at : at + 4], struct.unpack_from("<I", head, at + 4)[0]
        if chunk == b"fmt " and at + 16 <= len(head):
            byte_rate = struct.unpack_from("<I", head, at + 16)[0]
        elif chunk == b"data":
            if not byte_rate or size in _UNSET_SIZES:
                return None
            return float(size) / float(byte_rate)
        at += 8 + size + (size & 1)  # chunks are padded to an even length
    return None


def _flac_seconds(head: bytes) -> float | None:
    # "fLaC", then a 4-byte block header; STREAMINFO is always the first block.
    if len(head) < 8 + 18 or head[4] & 0x7F != 0:
        return None
    info = head[8 : 8 + 18]
    packed = int.from_bytes(info[10:18], "big")  # rate:20 channels:3 bits:5 samples:36
    rate, samples = packed >> 44, packed & ((1 << 36) - 1)
    if rate == 0 or samples == 0:
        return None
    return samples / rate


def header_seconds(head: bytes) -> float | None:
    """The duration `head` (the first bytes of a recording) states, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return _wav_seconds(head)
    if head[:4] == b"fLaC":
        return _flac_seconds(head)
    return None


def stored_seconds(store: ObjectStore, key: str) -> float | None:
    """The duration the header of a stored object states, reading only its first
    `HEADER_BYTES`; None when the object is gone, unreadable or states none."""
    try:
        chunks = store.iter_chunks(key, HEADER_BYTES)
    except (ObjectNotFound, StorageUnavailable, ValueError):
        return None
    try:
        head = next(chunks, b"")
    except StorageUnavailable:
        return None
    finally:
        close = getattr(chunks, "close", None)  # a generator frees its connection
        if close is not None:
            close()
    return header_seconds(head)
