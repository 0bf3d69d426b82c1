"""Pass one over a long recording: re-encode it as 16 kHz mono FLAC and measure where to cut.

Issue 11. The recording is decoded in blocks, downmixed, resampled (a soxr stream) and
written as one FLAC; on the way every 20 ms frame gets its RMS and, when webrtcvad is
installed, a voice decision, and the FLAC's size is noted every second. Those arrays, about
a 100th of the 16 kHz samples' size, are all that is kept, so memory stays at one block
whatever the duration, and cut points are then chosen with the whole recording's numbers
(its median speech level, the real compressed bytes of each stretch) rather than guesses.

`plan_cuts` turns them into piece boundaries: each piece ends in the pause nearest before
its limit (a frame is quiet when it is 20 dB under the speech level or webrtcvad hears no
speech in it), so no word is cut in two when the last 30 s before the limit hold a pause.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import soundfile as sf

from jobs.error_codes import ErrorCode

# Private helpers shared on purpose: these are workers/audio_decode.py's decode rules, not copies.
from workers.audio_decode import (
    STT_SAMPLE_RATE,
    AudioInfo,
    _int16,
    _reason,
    _resampler,
    check_decode_cost,
)
from workers.providers.errors import UnsupportedAudio

RATE = STT_SAMPLE_RATE
FRAME = RATE // 50  # 20 ms: webrtcvad's frame size, and the grain of every cut point
_BLOCK_FRAMES = 65_536
_CURVE_STEP = RATE  # note the FLAC's size after every second written
MIN_SILENCE_FRAMES = 15  # 0.3 s: shorter pauses are gaps inside words and phrases
LOOK_BACK_FRAMES = 30 * 50  # a cut lands in the last 30 s before a piece's limit
_NEIGHBOURS = 5  # frames each side: a cut without a pause goes in the quietest 0.22 s
# Energy path: a frame is quiet 20 dB below the median level of the louder frames.
_QUIET_RATIO = 0.1
_LOUD_PERCENTILE = 95.0

Int16s = npt.NDArray[np.int16]
Floats = npt.NDArray[np.float32]
Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Scan:
    """What pass one learnt: per-frame loudness and quietness, and FLAC bytes by sample."""

    samples: int  # 16 kHz samples in the re-encoded recording
    rms: Floats  # per 20 ms frame, full scale = 1
    quiet: Bools  # per frame: well below the speech level, or no speech to webrtcvad
    curve_samples: npt.NDArray[np.int64]
    curve_bytes: npt.NDArray[np.int64]
    vad: bool  # whether webrtcvad's decisions are in `quiet`

    def bytes_between(self, start: int, end: int) -> float:
        """About how many FLAC bytes samples [start, end) take (headers aside)."""
        at = np.interp([start, end], self.curve_samples, self.curve_bytes)
        return float(at[1] - at[0])

    def end_within(self, start: int, budget: float) -> int:
        """The furthest sample a piece starting at `start` may reach within `budget` bytes."""
        target = float(np.interp(start, self.curve_samples, self.curve_bytes)) + budget
        return int(np.interp(target, self.curve_bytes, self.curve_samples))


def probe_file(path: Path) -> AudioInfo:
    """A local recording's header facts, with `workers.audio_decode.probe`'s errors."""
    if path.stat().st_size == 0:
        raise UnsupportedAudio(
            "The audio is empty (0 bytes); upload the recording again.", code=ErrorCode.EMPTY_AUDIO
        )
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, ValueError) as exc:
        raise _undecodable(exc) from exc
    if info.frames <= 0 or info.samplerate <= 0 or info.channels <= 0:
        raise _no_samples()
    return AudioInfo(info.frames / info.samplerate, info.samplerate, info.channels, info.frames)


def scan(path: Path, dest: Path, *, max_samples: int, use_vad: bool = True) -> Scan:
    """Re-encode `path` into `dest` (16 kHz mono FLAC) block by block, measuring as it goes.

    The decode cost is checked from the header first (`check_decode_cost`, issue 9), and
    again against what really decodes, since a header's frame count can be an estimate.
    """
    info = probe_file(path)
    check_decode_cost(info, max_samples, work_rate=RATE)
    meter = _Meter(_webrtc_vad() if use_vad else None)
    resample = _resampler(info.sample_rate, RATE, 1)
    decoded = 0
    try:
        with (
            sf.SoundFile(str(path)) as source,
            dest.open("w+b") as raw,
            sf.SoundFile(raw, "w", RATE, 1, format="FLAC", subtype="PCM_16") as out,
        ):
            flac = _MeasuredFlac(out, raw, meter)
            for block in source.blocks(_BLOCK_FRAMES, dtype="float32", always_2d=True):
                decoded += block.size
                if decoded > info.frames * info.channels:  # more than the header said
                    seconds = decoded / info.channels / info.sample_rate
                    longer = AudioInfo(seconds, info.sample_rate, info.channels, decoded)
                    check_decode_cost(longer, max_samples, work_rate=RATE)
                flac.write(_int16(resample(block.mean(axis=1, dtype=np.float32), False)))
            flac.write(_int16(resample(np.zeros(0, dtype=np.float32), True)))
    except (sf.SoundFileError, RuntimeError, ValueError) as exc:
        raise _undecodable(exc) from exc
    curve_samples, curve_bytes = flac.curve_samples, flac.curve_bytes
    if curve_samples[-1] == 0:
        raise _no_samples()
    curve_bytes[-1] = max(curve_bytes[-1], dest.stat().st_size)  # the header, patched at close
    rms, voiced = meter.finish()
    return Scan(
        samples=curve_samples[-1],
        rms=rms,
        # Either detector may call a frame quiet: webrtcvad's hangover trims ~0.1 s off each
        # end of a pause (a sentence gap of 0.3 s looks like 0.2 s), while the energy test
        # misses pauses under steady noise, which webrtcvad still hears as no speech.
        quiet=_below_speech(rms) | ~voiced if voiced is not None else _below_speech(rms),
        # Never decreasing, which np.interp's inverse lookup in `end_within` relies on.
        curve_samples=np.asarray(curve_samples, dtype=np.int64),
        curve_bytes=np.maximum.accumulate(np.asarray(curve_bytes, dtype=np.int64)),
        vad=voiced is not None,
    )


def plan_cuts(
    found: Scan, start: int, end: int, *, budget: float, max_piece: int | None
) -> list[int]:
    """Piece boundaries from `start` to `end` (samples), each piece within `budget` bytes
    and `max_piece` samples: [start, cut, ..., end]."""
    bounds = [start]
    while True:
        begin = bounds[-1]
        limit = min(end, found.end_within(begin, budget))
        if max_piece is not None:
            limit = min(limit, begin + max_piece)
        if limit >= end:
            return [*bounds, end]
        if limit - begin < RATE:
            raise ValueError(
                f"pieces of {budget:.0f} bytes (after margins) or "
                f"{'any' if max_piece is None else max_piece / RATE} s hold "
                "less than a second of this recording"
            )
        bounds.append(cut_before(found, begin, limit))


def cut_before(found: Scan, begin: int, limit: int) -> int:
    """Where to end a piece that starts at `begin` and may not pass `limit` (samples).

    In the middle of the latest pause of 0.3 s or more within the last 30 s before the
    limit (and in the piece's second half); when there is none (music, crosstalk), at the
    20 ms frame there whose 0.22 s around it is quietest.
    """
    first = begin // FRAME + 1  # frames before this one belong to the piece's start
    hi = limit // FRAME  # frames [.., hi) end at or before the limit
    # Never in a piece's first half: a short piece that starts in (or just after) a pause
    # or a quiet stretch would otherwise be cut there again, a frame later.
    lo = max(first, hi - LOOK_BACK_FRAMES, (first + hi) // 2)
    # Look a little past both ends, so a pause that runs over an edge keeps its length.
    ext_lo, ext_hi = (
        max(first, lo - MIN_SILENCE_FRAMES),
        min(len(found.quiet), hi + MIN_SILENCE_FRAMES),
    )
    quiet = found.quiet[ext_lo:ext_hi].astype(np.int8)
    edges = np.diff(np.concatenate(([0], quiet, [0])))
    starts = np.flatnonzero(edges == 1) + ext_lo
    stops = np.flatnonzero(edges == -1) + ext_lo
    pauses = (stops - starts >= MIN_SILENCE_FRAMES) & (stops > lo) & (starts < hi)
    if pauses.any():
        pause_start, pause_stop = max(int(starts[pauses][-1]), lo), min(int(stops[pauses][-1]), hi)
        return (pause_start + pause_stop) // 2 * FRAME
    # Each frame is judged with its neighbours: a lone silent frame is often the closure of
    # a "t" or "p" inside a word, while the quietest 0.2 s is a breath between words.
    ext_lo, ext_hi = max(first, lo - _NEIGHBOURS), min(len(found.rms), hi + _NEIGHBOURS)
    power = np.square(found.rms[ext_lo:ext_hi], dtype=np.float64)
    kernel = np.ones(2 * _NEIGHBOURS + 1)
    mean = np.convolve(power, kernel, "same") / np.convolve(np.ones_like(power), kernel, "same")
    smooth = mean[lo - ext_lo : hi - ext_lo]
    quietest = lo + len(smooth) - 1 - int(np.argmin(smooth[::-1]))  # the latest, on a tie
    return quietest * FRAME + FRAME // 2


class _MeasuredFlac:
    """The FLAC being written, with its size noted every second of samples."""

    def __init__(self, out: sf.SoundFile, raw: BinaryIO, meter: _Meter) -> None:
        self._out, self._raw, self._meter = out, raw, meter
        self.curve_samples, self.curve_bytes = [0], [0]

    def write(self, samples: Int16s) -> None:
        self._meter.feed(samples)
        for at in range(0, len(samples), _CURVE_STEP):
            chunk = samples[at : at + _CURVE_STEP]
            self._out.write(chunk)
            self.curve_samples.append(self.curve_samples[-1] + len(chunk))
            # libFLAC hands each frame (4096 samples) to the file when it is full, so the
            # position lags by under a frame: the margin in plan_pieces covers it.
            self.curve_bytes.append(self._raw.tell())


class _Meter:
    """Per-frame RMS and webrtcvad decisions for samples fed in any chunk sizes."""

    def __init__(self, vad: Any) -> None:
        self._vad = vad
        self._carry: Int16s = np.zeros(0, dtype=np.int16)
        self._rms: list[Floats] = []
        self._voiced: list[Bools] = []

    def feed(self, samples: Int16s) -> None:
        data = np.concatenate((self._carry, samples)) if self._carry.size else samples
        whole = len(data) // FRAME * FRAME
        self._carry = data[whole:].copy()
        frames = data[:whole].reshape(-1, FRAME)
        if not len(frames):
            return
        power = np.mean(np.square(frames, dtype=np.float32), axis=1)
        self._rms.append((np.sqrt(power) / 32768.0).astype(np.float32))
        if self._vad is not None:
            pcm, size = frames.astype("<i2").tobytes(), 2 * FRAME
            decisions = (
                self._vad.is_speech(pcm[at : at + size], RATE) for at in range(0, len(pcm), size)
            )
            self._voiced.append(np.fromiter(decisions, dtype=np.bool_, count=len(frames)))

    def finish(self) -> tuple[Floats, Bools | None]:
        if self._carry.size:
            self.feed(np.zeros(FRAME - self._carry.size, dtype=np.int16))
        rms = np.concatenate(self._rms) if self._rms else np.zeros(0, dtype=np.float32)
        if self._vad is None:
            return rms, None
        return rms, np.concatenate(self._voiced) if self._voiced else np.zeros(0, dtype=np.bool_)


def _below_speech(rms: Floats) -> Bools:
    """Frames well below the recording's median speech level (the louder frames' median)."""
    if not rms.size:
        return np.zeros(0, dtype=np.bool_)
    loud = rms[rms >= _QUIET_RATIO * np.percentile(rms, _LOUD_PERCENTILE)]
    quiet: Bools = rms <= _QUIET_RATIO * float(np.median(loud))
    return quiet


def _webrtc_vad() -> Any:
    """webrtcvad's detector (aggressiveness 2 of 0-3) when installed, else None."""
    try:
        # Imported by name: it is optional and has no type stubs.
        module = importlib.import_module("webrtcvad")
    except ImportError:
        return None
    return module.Vad(2)


def _undecodable(exc: Exception) -> UnsupportedAudio:
    return UnsupportedAudio(
        f"The file could not be decoded as audio ({_reason(exc)}); "
        "convert it to WAV, FLAC, MP3 or Ogg and resubmit."
    )


def _no_samples() -> UnsupportedAudio:
    return UnsupportedAudio(
        "The audio file contains no samples; upload a recording with sound in it.",
        code=ErrorCode.EMPTY_AUDIO,
    )
