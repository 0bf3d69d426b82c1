"""Decoding, resampling and encoding audio for the pipeline and the local STT engine.

Everything goes through libsndfile (via soundfile) and soxr, so any format libsndfile reads
(WAV, FLAC, MP3, Ogg Vorbis/Opus, AIFF, ...) is accepted, and outputs are one of
`SUPPORTED_FORMATS`. Decoding failures raise `UnsupportedAudio` so they surface as a
permanent item failure with a sentence, not as a libsndfile traceback.

Every decode first reads the header (`probe`) and refuses audio whose duration x channels x
rate is over the worker's limit (`check_decode_cost`, issue 9), then reads in blocks, so a
tiny file that claims hours of 8-channel audio costs neither memory nor minutes of CPU.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from jobs.error_codes import ErrorCode
from workers.providers.errors import UnsupportedAudio

SUPPORTED_FORMATS = ("wav", "flac", "mp3", "ogg", "opus")
STT_SAMPLE_RATE = 16_000
# SPEECHBATCH_MAX_DECODE_SAMPLES' default: 2 h of 16 kHz mono, 20 min of 48 kHz stereo.
DEFAULT_MAX_DECODE_SAMPLES = 115_200_000
_BLOCK_FRAMES = 65_536
_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")

FloatFrames = npt.NDArray[np.float32]


class AudioTooLong(UnsupportedAudio):
    """More samples than a worker may decode (permanent: the same file is always too long)."""

    code = ErrorCode.AUDIO_TOO_LONG


@dataclass(frozen=True)
class AudioInfo:
    duration_s: float
    sample_rate: int
    channels: int
    frames: int = 0


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


def _reason(exc: Exception) -> str:
    # libsndfile's own sentence; str(exc) would carry "<_io.BytesIO object at 0x...>".
    text = getattr(exc, "error_string", None) or str(exc)
    return _REPR.sub("the audio", str(text)).strip()


def _open_error(data: bytes, exc: Exception | None = None) -> UnsupportedAudio:
    if not data:
        return UnsupportedAudio(
            "The audio is empty (0 bytes); upload the recording again.", code=ErrorCode.EMPTY_AUDIO
        )
    reason = f" ({_reason(exc)})" if exc is not None else ""
    return UnsupportedAudio(
        f"The file could not be decoded as audio{reason}; "
        "convert it to WAV, FLAC, MP3 or Ogg and resubmit."
    )


def _no_samples() -> UnsupportedAudio:
    return UnsupportedAudio(
        "The audio file contains no samples; upload a recording with sound in it.",
        code=ErrorCode.EMPTY_AUDIO,
    )


def probe(data: bytes) -> AudioInfo:
    """Duration, sample rate and channel count of encoded audio, from its header only."""
    if not data:
        raise _open_error(data)
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.SoundFileError, RuntimeError, ValueError) as exc:
        raise _open_error(data, exc) from exc
    if info.frames <= 0 or info.samplerate <= 0 or info.channels <= 0:
        raise _no_samples()
    return AudioInfo(
        duration_s=info.frames / info.samplerate,
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
    )


def check_decode_cost(info: AudioInfo, max_samples: int, *, work_rate: int = 0) -> None:
    """Refuse audio whose decoding would touch more than `max_samples` samples.

    Checked from the header, before any decoding: a 189 KB FLAC of 8 channels at 192 kHz
    holds 184 million samples (issue 9). `work_rate` is the rate the caller resamples to,
    whose samples count too (16 kHz STT input of a long 8 kHz file is larger than it).
    """
    cost = max(info.frames * info.channels, math.ceil(info.duration_s * work_rate))
    if cost > max_samples:
        raise AudioTooLong(
            f"The audio is {info.duration_s:.0f} s of {info.channels} channel(s) at "
            f"{info.sample_rate} Hz, {cost:,} samples, over the {max_samples:,} a worker decodes "
            "(SPEECHBATCH_MAX_DECODE_SAMPLES); send it as mono at 16 kHz or split it."
        )


def blocks(data: bytes, max_samples: int, *, work_rate: int = 0) -> Iterator[FloatFrames]:
    """The audio as float32 blocks of shape (frames, channels), after `check_decode_cost`.

    Reading in blocks keeps memory at one block whatever the file holds.
    """
    check_decode_cost(probe(data), max_samples, work_rate=work_rate)
    try:
        with sf.SoundFile(io.BytesIO(data)) as source:
            yield from source.blocks(_BLOCK_FRAMES, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError) as exc:
        raise _open_error(data, exc) from exc


def _resampler(rate: int, target: int, channels: int) -> Callable[[FloatFrames, bool], Any]:
    """A streaming soxr resampler (high quality) fed block by block; identity at equal rates."""
    if rate == target:
        return lambda block, _last: block
    stream = soxr.ResampleStream(rate, target, channels, dtype="float32")
    return lambda block, last: stream.resample_chunk(block, last=last)


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


def to_mono16k_int16(
    data: bytes, *, max_samples: int = DEFAULT_MAX_DECODE_SAMPLES
) -> npt.NDArray[np.int16]:
    """Decoded audio as 16 kHz mono int16 samples, the input STT engines like pocketsphinx want.

    Read, downmixed and resampled block by block: only the 16 kHz result is held whole.
    """
    resample = _resampler(probe(data).sample_rate, STT_SAMPLE_RATE, 1)
    parts = [
        _int16(resample(block.mean(axis=1, dtype=np.float32), False))
        for block in blocks(data, max_samples, work_rate=STT_SAMPLE_RATE)
    ]
    parts.append(_int16(resample(np.zeros(0, dtype=np.float32), True)))
    samples = np.concatenate(parts)
    if samples.size == 0:
        raise _no_samples()
    return samples


def _int16(mono: FloatFrames) -> npt.NDArray[np.int16]:
    return (np.clip(mono, -1.0, 1.0) * 32767.0).astype(np.int16)
