"""Decoding, resampling and encoding audio for the pipeline and the local STT engine.

Everything goes through libsndfile (via soundfile) and soxr, so any format libsndfile reads
(WAV, FLAC, MP3, Ogg Vorbis/Opus, AIFF, ...) is accepted, and outputs are one of
`SUPPORTED_FORMATS`. Decoding failures raise `UnsupportedAudio` so they surface as a
permanent item failure with a sentence, not as a libsndfile traceback.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from jobs.error_codes import ErrorCode
from workers.providers.errors import UnsupportedAudio

SUPPORTED_FORMATS = ("wav", "flac", "mp3", "ogg", "opus")
STT_SAMPLE_RATE = 16_000

FloatFrames = npt.NDArray[np.float32]


@dataclass(frozen=True)
class AudioInfo:
    duration_s: float
    sample_rate: int
    channels: int


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


def _open_error(data: bytes, exc: Exception | None = None) -> UnsupportedAudio:
    if not data:
        return UnsupportedAudio(
            "The audio is empty (0 bytes); upload the recording again.", code=ErrorCode.EMPTY_AUDIO
        )
    reason = f" ({exc})" if exc is not None else ""
    return UnsupportedAudio(
        f"The file could not be decoded as audio{reason}; "
        "convert it to WAV, FLAC, MP3 or Ogg and resubmit."
    )


def probe(data: bytes) -> AudioInfo:
    """Duration, sample rate and channel count of encoded audio, without decoding it all."""
    if not data:
        raise _open_error(data)
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.SoundFileError, RuntimeError, ValueError) as exc:
        raise _open_error(data, exc) from exc
    if info.frames <= 0 or info.samplerate <= 0:
        raise UnsupportedAudio(
            "The audio file contains no samples; upload a recording with sound in it.",
            code=ErrorCode.EMPTY_AUDIO,
        )
    return AudioInfo(
        duration_s=info.frames / info.samplerate,
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
    )


def decode(data: bytes) -> tuple[FloatFrames, int]:
    """Samples as float32 of shape (frames, channels), plus the sample rate."""
    if not data:
        raise _open_error(data)
    try:
        frames, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError) as exc:
        raise _open_error(data, exc) from exc
    if frames.shape[0] == 0:
        raise UnsupportedAudio(
            "The audio file contains no samples; upload a recording with sound in it.",
            code=ErrorCode.EMPTY_AUDIO,
        )
    return np.ascontiguousarray(frames, dtype=np.float32), int(rate)


def resample(frames: FloatFrames, rate: int, target: int) -> FloatFrames:
    """`frames` at `target` Hz (soxr high quality); the same array when the rates match."""
    if rate == target:
        return frames
    out = soxr.resample(frames, rate, target)
    return np.ascontiguousarray(out, dtype=np.float32)


def _next_rate(rate: int, allowed: tuple[int, ...]) -> int:
    # Resample up, never down, so no bandwidth is lost; above the top rate, use the top rate.
    return next((r for r in allowed if r >= rate), allowed[-1])


def convert(data: bytes, *, fmt: str, sample_rate: int | None = None) -> EncodedAudio:
    """Decode `data` and encode it as `fmt`, resampled to `sample_rate` when given.

    Formats with a fixed set of rates (Opus, MP3) move up to the nearest rate they accept,
    so the returned audio may be at a higher rate than asked for.
    """
    encoding = _ENCODINGS.get(fmt)
    if encoding is None:
        raise ValueError(f"unknown audio format {fmt!r}; expected one of {SUPPORTED_FORMATS}")
    if sample_rate is not None and sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    as_is = _pcm16_wav_as_is(data, sample_rate) if fmt == "wav" else None
    if as_is is not None:
        return as_is
    frames, rate = decode(data)
    target = sample_rate or rate
    if encoding.rates is not None:
        target = _next_rate(target, encoding.rates)
    frames = resample(frames, rate, target)
    if encoding.max_channels is not None and frames.shape[1] > encoding.max_channels:
        frames = frames.mean(axis=1, keepdims=True, dtype=np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, frames, target, format=encoding.sf_format, subtype=encoding.subtype)
    return EncodedAudio(
        data=buffer.getvalue(),
        content_type=encoding.content_type,
        ext=encoding.ext,
        duration_s=frames.shape[0] / target,
    )


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


def to_mono16k_int16(data: bytes) -> npt.NDArray[np.int16]:
    """Decoded audio as 16 kHz mono int16 samples, the input STT engines like pocketsphinx want."""
    frames, rate = decode(data)
    mono = frames.mean(axis=1, dtype=np.float32)
    mono = resample(mono, rate, STT_SAMPLE_RATE)
    scaled = np.clip(mono, -1.0, 1.0) * 32767.0
    return scaled.astype(np.int16)
