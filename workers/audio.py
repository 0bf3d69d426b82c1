"""Encoding audio for the pipeline's outputs: whole answers (`convert`) and streams (`PcmEncoder`).

Everything goes through libsndfile (via soundfile) and soxr, and outputs are one of
`SUPPORTED_FORMATS`. What is decoded on the way (any format libsndfile reads) goes through
`workers.audio_decode`, under its decode-cost limit (issue 9), and its failures raise
`UnsupportedAudio` with a sentence; a 16-bit PCM WAV that already is what was asked for is
passed through as is.
"""

from __future__ import annotations

import contextlib
import io
import wave
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import soundfile as sf

# Private helpers shared on purpose: these are workers/audio_decode.py's decode rules.
from workers.audio_decode import (
    DEFAULT_MAX_DECODE_SAMPLES,
    FloatFrames,
    _no_samples,
    _resampler,
    blocks,
    probe,
)

SUPPORTED_FORMATS = ("wav", "flac", "mp3", "ogg", "opus")


@dataclass(frozen=True)
class EncodedAudio:
    data: bytes
    content_type: str
    ext: str
    duration_s: float


@dataclass(frozen=True)
class _Encoding:
    sf_format: str
    subtype: str
    content_type: str
    ext: str
    # Rates the encoder accepts; other rates are resampled up to the next one (None: any).
    rates: tuple[int, ...] | None = None
    max_channels: int | None = None


_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_ENCODINGS = {
    "wav": _Encoding("WAV", "PCM_16", "audio/wav", "wav"),
    "flac": _Encoding("FLAC", "PCM_16", "audio/flac", "flac"),
    # LAME inside libsndfile only does mono/stereo at the MPEG rates.
    "mp3": _Encoding("MP3", "MPEG_LAYER_III", "audio/mpeg", "mp3", _MP3_RATES, 2),
    "ogg": _Encoding("OGG", "VORBIS", "audio/ogg", "ogg"),
    "opus": _Encoding("OGG", "OPUS", "audio/ogg", "opus", (8000, 12000, 16000, 24000, 48000)),
}


def _next_rate(rate: int, allowed: tuple[int, ...]) -> int:
    # Resample up, never down, so no bandwidth is lost; above the top rate, use the top rate.
    return next((r for r in allowed if r >= rate), allowed[-1])


def convert(
    data: bytes,
    *,
    fmt: str,
    sample_rate: int | None = None,
    max_samples: int = DEFAULT_MAX_DECODE_SAMPLES,
) -> EncodedAudio:
    """Decode `data` and encode it as `fmt`, resampled to `sample_rate` when given.

    Formats with a fixed set of rates (Opus, MP3) move up to the nearest rate they accept,
    so the returned audio may be at a higher rate than asked for. Decoding, resampling and
    encoding run block by block, so memory stays at a block plus the encoded output.
    """
    encoding = _encoding(fmt)
    if sample_rate is not None and sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    as_is = _pcm16_wav_as_is(data, sample_rate) if fmt == "wav" else None
    if as_is is not None:
        return as_is
    info = probe(data)
    target = sample_rate or info.sample_rate
    if encoding.rates is not None:
        target = _next_rate(target, encoding.rates)
    downmix = encoding.max_channels is not None and info.channels > encoding.max_channels
    channels = 1 if downmix else info.channels
    resample = _resampler(info.sample_rate, target, channels)
    buffer, written = io.BytesIO(), 0
    out = sf.SoundFile(
        buffer, "w", target, channels, format=encoding.sf_format, subtype=encoding.subtype
    )
    with out:
        for block in blocks(data, max_samples, work_rate=target):
            mixed = block.mean(axis=1, keepdims=True, dtype=np.float32) if downmix else block
            chunk = resample(np.ascontiguousarray(mixed, dtype=np.float32), False)
            out.write(chunk)
            written += len(chunk)
        tail = resample(np.zeros((0, channels), dtype=np.float32), True)
        out.write(tail)
        written += len(tail)
    if written == 0:
        raise _no_samples()
    return EncodedAudio(
        data=buffer.getvalue(),
        content_type=encoding.content_type,
        ext=encoding.ext,
        duration_s=written / target,
    )


def _encoding(fmt: str) -> _Encoding:
    encoding = _ENCODINGS.get(fmt)
    if encoding is None:
        raise ValueError(f"unknown audio format {fmt!r}; expected one of {SUPPORTED_FORMATS}")
    return encoding


def ext_of(fmt: str) -> str:
    """The file extension of an output format, known before anything is encoded."""
    return _encoding(fmt).ext


def content_type_of(fmt: str) -> str:
    """The media type of an output format."""
    return _encoding(fmt).content_type


class Seekable(Protocol):
    """What libsndfile needs of a file it writes into (a BytesIO, a store's ObjectWriter)."""

    def write(self, data: bytes, /) -> int: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def tell(self) -> int: ...

    def read(self, size: int = -1, /) -> bytes: ...


class PcmEncoder:
    """16-bit mono PCM pushed in as it arrives, encoded as `fmt` into `out` chunk by chunk.

    The streaming counterpart of `convert` for audio that comes in pieces (SSE frames,
    WebSocket chunks): each `write` is resampled (soxr keeps its state across chunks) and
    handed to libsndfile, which writes into `out` at once, so memory stays at one chunk
    whatever the length. libsndfile seeks back to patch its header at `finish`, within the
    first few KiB of `out`. At the input rate, 16-bit PCM goes to WAV or FLAC with no float step.
    """

    def __init__(self, out: Seekable, *, fmt: str, rate: int, sample_rate: int | None = None):
        encoding = _encoding(fmt)
        target = sample_rate or rate
        if encoding.rates is not None:
            target = _next_rate(target, encoding.rates)
        self.rate, self.target, self.content_type = rate, target, encoding.content_type
        self.frames = 0  # frames written out, at the target rate
        self._resample = None if target == rate else _resampler(rate, target, 1)
        self._carry = b""
        self._file = sf.SoundFile(
            out, "w", target, 1, format=encoding.sf_format, subtype=encoding.subtype
        )

    def write(self, pcm: bytes) -> None:
        data = self._carry + pcm if self._carry else pcm
        usable = len(data) - len(data) % 2
        self._carry = data[usable:]
        if usable:
            self.write_samples(np.frombuffer(data, dtype="<i2", count=usable // 2))

    def write_samples(self, samples: npt.NDArray[np.int16]) -> None:
        """Whole 16-bit samples, as an array (no bytes copy of a long one)."""
        if self._resample is None:
            self._file.write(samples)
            self.frames += len(samples)
            return
        self._emit(self._resample((samples / 32768.0).astype(np.float32).reshape(-1, 1), False))

    def finish(self) -> float:
        """Flush the resampler, close the encoder (libsndfile patches its header) and return
        the seconds of audio written."""
        if self._resample is not None:
            self._emit(self._resample(np.zeros((0, 1), dtype=np.float32), True))
        self._file.close()
        return self.frames / self.target

    def close(self) -> None:
        """Drop the encoder without finishing (the output is being thrown away)."""
        with contextlib.suppress(Exception):
            self._file.close()

    def _emit(self, frames: FloatFrames) -> None:
        self._file.write(frames)
        self.frames += len(frames)


def _pcm16_wav_as_is(data: bytes, sample_rate: int | None) -> EncodedAudio | None:
    """`data` itself when it already is what `convert(fmt="wav")` would write: a complete
    16-bit PCM WAV at the wanted rate. Most TTS answers are; decoding and re-encoding them
    cost a worker more CPU than its database writes. Anything else (another codec or rate,
    a header that promises more samples than the body holds) returns None and is decoded.
    """
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            rate, width, channels, frames = (
                wav.getframerate(),
                wav.getsampwidth(),
                wav.getnchannels(),
                wav.getnframes(),
            )
            complete = len(wav.readframes(frames)) == frames * width * channels
    except (wave.Error, EOFError, ValueError):
        return None
    if width != 2 or frames <= 0 or rate <= 0 or not complete or sample_rate not in (None, rate):
        return None
    return EncodedAudio(data=data, content_type="audio/wav", ext="wav", duration_s=frames / rate)


def pcm16_to_wav(pcm: bytes, sample_rate: int, channels: int = 1) -> bytes:
    """Wrap raw little-endian signed 16-bit PCM in a WAV header (a trailing odd byte is dropped)."""
    frame_bytes = 2 * channels
    usable = len(pcm) - len(pcm) % frame_bytes
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm[:usable])
    return buffer.getvalue()
