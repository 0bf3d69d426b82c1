"""Answers that are HTTP 200 but not what was asked for: the hostile provider of issue 9.

Each takes the answer the emulator would have given and spoils it one way; big ones are
streamed from generators, so the emulator never holds what it sends.

TTS (`tts_answer`): `html` (a gateway's error page), `random` (noise labelled as the route's
media type), `lying_wav` (a WAV whose header claims ten times the frames it holds),
`long_flac` (a ~1 MB FLAC that decodes to 2 h), `huge` (`huge_bytes` of audio, chunked, no
length), `drip` (the real audio, one byte every `drip_interval_s`), `cut` (the first half of
the real answer, then the connection is dropped: no terminating chunk, as when a proxy or the
vendor dies mid-body; streamed answers such as SSE are cut with `cut_stream`).
STT (`stt_answer`): `html`, `nan` and `negative` (the real transcript with NaN, or -1e300 and
negative, times), `unordered` (word times going backwards), `huge_transcript` (a streamed
transcript of a million words), `huge`, `drip` and `cut`.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import struct
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from functools import lru_cache
from typing import Any

import numpy as np
import soundfile as sf
from starlette.responses import Response, StreamingResponse

_HTML = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>"
    b"<body><h1>502 Bad Gateway</h1><p>The upstream server is taking a break.</p></body></html>\n"
)
_CHUNK = 64 * 1024
HUGE_TRANSCRIPT_WORDS = 1_000_000


class StreamCut(ConnectionAbortedError):
    """Raised inside a streamed body to make the server drop the connection mid-answer."""


def tts_answer(  # noqa: PLR0911 - one return per fault kind
    kind: str, audio: bytes, media_type: str, *, huge_bytes: int, drip_interval_s: float
) -> Response:
    """The TTS answer `audio` spoiled as `kind` (one of config.TTS_ANSWER_FAULTS)."""
    if kind == "html":
        return Response(_HTML, media_type="text/html")
    if kind == "random":
        noise = random.Random(len(audio)).randbytes(max(len(audio), 4800))
        return Response(noise, media_type=media_type)
    if kind == "lying_wav":
        return Response(lying_wav(audio), media_type="audio/wav")
    if kind == "long_flac":
        return Response(long_flac(), media_type="audio/flac")
    if kind == "huge":
        return StreamingResponse(_huge_wav(huge_bytes), media_type="audio/wav")
    if kind == "cut":
        return StreamingResponse(cut_stream([audio], len(audio) // 2), media_type=media_type)
    return StreamingResponse(drip(audio, drip_interval_s), media_type=media_type)


def stt_answer(
    kind: str, result: dict[str, Any], *, huge_bytes: int, drip_interval_s: float
) -> Response:
    """The STT answer `result` (a transcript body) spoiled as `kind` (STT_ANSWER_FAULTS)."""
    if kind == "html":
        return Response(_HTML, media_type="text/html")
    if kind in {"nan", "negative", "unordered"}:
        body = _spoiled_times(result, kind)
        # json.dumps writes NaN as a bare literal, as the misbehaving provider did.
        return Response(json.dumps(body, allow_nan=True), media_type="application/json")
    if kind == "huge_transcript":
        return StreamingResponse(_huge_transcript(), media_type="application/json")
    body_bytes = json.dumps(result).encode()
    if kind == "huge":
        return StreamingResponse(_huge_json(huge_bytes), media_type="application/json")
    if kind == "cut":
        cut = cut_stream([body_bytes], len(body_bytes) // 2)
        return StreamingResponse(cut, media_type="application/json")
    return StreamingResponse(drip(body_bytes, drip_interval_s), media_type="application/json")


def lying_wav(wav: bytes) -> bytes:
    """`wav` with its RIFF and data sizes claiming ten times the samples it holds."""
    spoiled = bytearray(wav)
    offset = 12
    while offset + 8 <= len(wav):
        chunk, size = wav[offset : offset + 4], struct.unpack_from("<I", wav, offset + 4)[0]
        if chunk == b"data":
            struct.pack_into("<I", spoiled, offset + 4, min(size * 10, 0x7FFE0000))
            struct.pack_into("<I", spoiled, 4, min(len(wav) - 8 + size * 9, 0x7FFE0000))
            break
        offset += 8 + size + (size & 1)
    return bytes(spoiled)


@lru_cache(maxsize=1)
def long_flac(seconds: int = 7200, rate: int = 8000) -> bytes:
    """A FLAC of `seconds` of near-silence: about a megabyte that decodes to two hours."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", rate, 1, format="FLAC", subtype="PCM_16") as out:
        block = np.zeros(rate * 60, dtype=np.int16)
        for _ in range(seconds // 60):
            out.write(block)
    return buffer.getvalue()


async def drip(body: bytes, interval_s: float) -> AsyncIterator[bytes]:
    """`body` one byte at a time, `interval_s` apart."""
    for n in range(len(body)):
        yield body[n : n + 1]
        await asyncio.sleep(interval_s)


async def cut_stream(
    chunks: Iterable[bytes] | AsyncIterable[bytes], keep: int
) -> AsyncIterator[bytes]:
    """The first `keep` bytes of `chunks`, then StreamCut: the server closes the connection
    without ending the chunked body, so the client sees a body that breaks off."""
    sent = 0

    async def each() -> AsyncIterator[bytes]:
        if isinstance(chunks, AsyncIterable):
            async for chunk in chunks:
                yield chunk
        else:
            for chunk in chunks:
                yield chunk

    async for chunk in each():
        piece = chunk[: max(keep - sent, 0)]
        if piece:
            yield piece
            sent += len(piece)
        if sent >= keep:
            break
    raise StreamCut(f"the emulator cut the answer off after {sent} bytes")


async def _huge_wav(total: int) -> AsyncIterator[bytes]:
    # A header claiming "unknown length" (streamed WAV), then silence until `total` bytes.
    header = bytearray(_wav_header(24000))
    yield bytes(header)
    for chunk in _zeros(total - len(header)):
        yield chunk


async def _huge_json(total: int) -> AsyncIterator[bytes]:
    yield b'{"text": "'
    for chunk in _zeros(total):
        yield chunk.replace(b"\x00", b"a")
    yield b'"}'


async def _huge_transcript() -> AsyncIterator[bytes]:
    yield b'{"text": "' + b"word " * 1000 + b'", "language": "en", "words": ['
    for start in range(0, HUGE_TRANSCRIPT_WORDS, 1000):
        words = (
            json.dumps({"word": "word", "start": n * 0.1, "end": n * 0.1 + 0.05})
            for n in range(start, start + 1000)
        )
        yield (b"," if start else b"") + ",".join(words).encode()
    yield b"]}"


def _zeros(total: int) -> Iterator[bytes]:
    chunk = bytes(_CHUNK)
    sent = 0
    while sent < total:
        piece = chunk[: min(_CHUNK, total - sent)]
        sent += len(piece)
        yield piece


def _wav_header(rate: int) -> bytes:
    unknown = 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", unknown)
    )


def _spoiled_times(result: dict[str, Any], kind: str) -> dict[str, Any]:
    """A copy of a Deepgram-, Whisper- or Pulse-shaped body with its times spoiled as `kind`."""
    body: dict[str, Any] = json.loads(json.dumps(result))
    bad = {"nan": float("nan"), "negative": -1e300}.get(kind)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and bad is not None:
        metadata["duration"] = bad
    if "metadata" not in body and bad is not None:
        body["duration"] = bad
    # Whisper's segments, Smallest Pulse's words and utterances, Deepgram's words (below).
    timed: list[dict[str, Any]] = [
        span for name in ("segments", "words", "utterances") for span in body.get(name) or []
    ]
    for channel in (body.get("results") or {}).get("channels") or []:
        for alternative in channel.get("alternatives") or []:
            timed.extend(alternative.get("words") or [])
    if kind == "unordered":
        for n, span in enumerate(reversed(timed)):
            span["start"], span["end"] = n * 0.5, n * 0.5 + 0.25
    else:
        for span in timed:
            span["start"] = bad if kind == "nan" else -1.0
    return body
