"""Long recordings (issue 11): split into pieces a provider accepts, transcripts merged back.

A recording over a provider's size or duration limit goes through `plan_pieces`: re-encoded
as 16 kHz mono FLAC (often enough on its own: one piece), else cut at pauses into FLAC
pieces each under the limits. Each piece is transcribed alone, and `merge_transcripts`
puts the answers back on the recording's timeline.

Nothing here holds the recording: pass one (`workers.long_audio_scan.scan`) streams it
through the decoder into one FLAC and keeps only per-20 ms measurements; pass two copies
stretches of that FLAC into pieces, a block at a time. A 2-hour recording is 230 MB of
16 kHz samples and a worker's budget is 300 MB (issue 11's benchmark), so memory must not
grow with duration.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import soundfile as sf

from workers.long_audio_scan import FRAME, RATE, Scan, plan_cuts, scan
from workers.providers.base import Segment, Transcript, Word

# Estimates leave this much room; every piece is then measured, and re-cut if still over.
_BYTES_MARGIN = 0.96
_BYTES_SLACK = 4096  # FLAC headers and the size curve's lag of one FLAC frame
_MAX_RECUTS = 4
_RECUT_MARGIN = 0.9  # a re-cut stretch aims this far under what the failed piece proved
_COPY_FRAMES = 65_536
_MAX_REQUEST_IDS = 200  # attempts.provider_request_id is String(200)


@dataclass(frozen=True)
class Piece:
    """One FLAC piece (16 kHz mono) of a recording, and where it sits in the original."""

    path: Path
    offset_s: float  # start in the original recording's timeline
    duration_s: float
    bytes: int

    @property
    def end_s(self) -> float:
        return self.offset_s + self.duration_s


def plan_pieces(
    path: Path,
    *,
    max_bytes: int,
    max_seconds: float | None,
    workdir: Path,
    max_samples: int,
    use_vad: bool = True,
) -> list[Piece]:
    """The recording at `path` as 16 kHz mono FLAC pieces in `workdir`, in time order.

    Each piece is at most `max_bytes` long (its real file size) and `max_seconds` (when
    given). A recording that fits once re-encoded is one piece. Cuts fall in a pause of
    0.3 s or more (frames 20 dB below the speech level, or no speech to webrtcvad when it is
    installed and `use_vad`) within the last 30 s before a piece's limit, else at the
    quietest 0.22 s there. `max_samples` bounds the decode as `check_decode_cost` does.
    Raises `UnsupportedAudio` (or `AudioTooLong`) for audio that cannot be decoded, and
    ValueError for limits that hold under a second. `workdir` keeps only the pieces.
    """
    if max_bytes <= 0 or (max_seconds is not None and max_seconds <= 0):
        raise ValueError(f"limits must be positive, got {max_bytes} bytes, {max_seconds} s")
    workdir.mkdir(parents=True, exist_ok=True)
    whole = workdir / "recording.flac"
    found = scan(path, whole, max_samples=max_samples, use_vad=use_vad)
    size = whole.stat().st_size
    if size <= max_bytes and (max_seconds is None or found.samples <= max_seconds * RATE):
        single = whole.replace(workdir / "piece-000.flac")
        return [Piece(single, 0.0, found.samples / RATE, size)]
    # A frame short of the limit, so a piece never lasts exactly max_seconds plus rounding.
    max_piece = None if max_seconds is None else math.floor(max_seconds * RATE) - FRAME
    try:
        return _Cutter(whole, found, workdir, max_bytes, max_piece).cut(
            0, found.samples, max_bytes * _BYTES_MARGIN - _BYTES_SLACK
        )
    finally:
        whole.unlink(missing_ok=True)


class _Cutter:
    """Pass two: copies planned stretches of the re-encoded FLAC into piece files."""

    def __init__(
        self, whole: Path, found: Scan, workdir: Path, max_bytes: int, max_piece: int | None
    ) -> None:
        self.whole, self.found, self.workdir = whole, found, workdir
        self.max_bytes, self.max_piece = max_bytes, max_piece
        self.written = 0

    def cut(self, start: int, end: int, budget: float, depth: int = 0) -> list[Piece]:
        """Pieces covering samples [start, end), each planned within `budget` bytes."""
        pieces: list[Piece] = []
        for begin, stop in pairwise(
            plan_cuts(self.found, start, end, budget=budget, max_piece=self.max_piece)
        ):
            piece = self._copy(begin, stop)
            if piece.bytes <= self.max_bytes:
                pieces.append(piece)
                continue
            # Denser than the whole file's curve said: plan this stretch again, smaller.
            piece.path.unlink()
            if depth >= _MAX_RECUTS:
                raise RuntimeError(f"could not cut {self.whole} into pieces of {self.max_bytes} B")
            estimate = min(budget, self.found.bytes_between(begin, stop))
            pieces += self.cut(
                begin, stop, estimate * self.max_bytes / piece.bytes * _RECUT_MARGIN, depth + 1
            )
        return pieces

    def _copy(self, begin: int, stop: int) -> Piece:
        dest = self.workdir / f"piece-{self.written:03d}.flac"
        self.written += 1
        with sf.SoundFile(str(self.whole)) as source:
            source.seek(begin)
            with sf.SoundFile(str(dest), "w", RATE, 1, format="FLAC", subtype="PCM_16") as out:
                left = stop - begin
                while left > 0:
                    block = source.read(min(left, _COPY_FRAMES), dtype="int16")
                    if not len(block):
                        break
                    out.write(block)
                    left -= len(block)
        return Piece(dest, begin / RATE, (stop - begin) / RATE, dest.stat().st_size)


def merge_transcripts(parts: Sequence[tuple[Piece, Transcript]]) -> Transcript:
    """One transcript on the original timeline from each piece's own (in time order).

    Times move by their piece's offset and stay within the piece, and a segment ends no
    later than the next piece's first one starts, so SRT/VTT cues never straddle a join or
    overlap across one. A piece with text but no segments gets one segment of its own, or
    the renderers' single whole-recording cue would span every join. The duration is the
    pieces' (exact, never None); provider, model and status come from the first part.
    """
    if not parts:
        raise ValueError("merge_transcripts needs at least one transcribed piece")
    words: list[Word] = []
    segments: list[Segment] = []
    for n, (piece, transcript) in enumerate(parts):
        following = parts[n + 1] if n + 1 < len(parts) else None
        stop = piece.end_s if following is None else min(piece.end_s, _first_start(*following))
        words += [_shift_word(word, piece) for word in transcript.words]
        for segment in _segments_of(transcript, piece):
            start = min(_place(segment.start, piece), stop)
            end = min(max(_place(segment.end, piece), start), stop)
            segments.append(dataclasses.replace(segment, start=start, end=end))
    first = parts[0][1]
    ids = ",".join(t.request_id for _, t in parts if t.request_id)
    return Transcript(
        text=" ".join(t.text.strip() for _, t in parts if t.text.strip()),
        language=next((t.language for _, t in parts if t.language is not None), None),
        duration_s=sum(piece.duration_s for piece, _ in parts),
        provider=first.provider,
        model=first.model,
        words=words,
        segments=segments,
        request_id=ids[:_MAX_REQUEST_IDS] or None,
        status_code=first.status_code,
    )


def _place(seconds: float, piece: Piece) -> float:
    """A time inside `piece`, on the original timeline (clamped to the piece)."""
    return piece.offset_s + min(max(seconds, 0.0), piece.duration_s)


def _shift_word(word: Word, piece: Piece) -> Word:
    start = _place(word.start, piece)
    return dataclasses.replace(word, start=start, end=max(_place(word.end, piece), start))


def _segments_of(transcript: Transcript, piece: Piece) -> list[Segment]:
    if transcript.segments or not transcript.text.strip():
        return transcript.segments
    words = transcript.words
    start, end = (words[0].start, words[-1].end) if words else (0.0, piece.duration_s)
    return [Segment(start=start, end=end, text=transcript.text.strip())]


def _first_start(piece: Piece, transcript: Transcript) -> float:
    segments = _segments_of(transcript, piece)
    return _place(segments[0].start, piece) if segments else piece.offset_s
