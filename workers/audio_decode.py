"""Decoding and resampling audio for the pipeline and the local STT engine.

Everything goes through libsndfile (via soundfile) and soxr, so any format libsndfile reads
(WAV, FLAC, MP3, Ogg Vorbis/Opus, AIFF, ...) is accepted. Decoding failures raise
`UnsupportedAudio` so they surface as a permanent item failure with a sentence, not as a
libsndfile traceback. Encoding the outputs is `workers.audio`'s.

Every decode first reads the header (`probe`) and refuses audio whose duration x channels x
rate is over the worker's limit (`check_decode_cost`, issue 9), then reads in blocks, so a
tiny file that claims hours of 8-channel audio costs neither memory nor minutes of CPU.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from jobs.error_codes import ErrorCode
from workers.providers.errors import UnsupportedAudio

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
