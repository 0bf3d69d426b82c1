"""TTS lines longer than one request allows: split, spoken piece by piece, stitched (issue 11).

`split_text` cuts a line under the model's character limit at sentence boundaries (pysbd, a
rule-based splitter that knows "Dr." and "5 p.m." are not ends), then at clause punctuation,
then between words; only a single word longer than the limit is cut inside.

Each piece is spoken and stored on its own under `piece_key` (a WAV at the provider's rate)
before the next is asked for, so a piece that fails is retried alone and, after a crash or a
retry later, the pieces already stored are not asked for (nor paid for) again. `stitch` then
streams the pieces, in order, into the item's one output: resampled to one rate, each join a
short pause with 10 ms fades either side (no clicks), encoded on the fly into the requested
format through the store's writer, so memory holds one piece at a time.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence

import numpy as np
import pysbd
import soundfile as sf
import soxr

from storage.objects import ObjectStore
from workers.audio import PcmEncoder, content_type_of
from workers.streamed import StoredAudio

PAUSE_S = 0.15  # between pieces: a sentence-sized breath, on top of the speech's own edges
FADE_S = 0.01
MAX_PIECES = 2000  # a line of about 2 million characters at the largest limits
_CLAUSE_END = re.compile(r"(?<=[,;:\u2014\u2013)])\s+")
_SPACE = re.compile(r"\s+")


def split_text(text: str, limit: int, language: str | None = None) -> list[str]:
    """`text` as pieces of at most `limit` characters, cut at the largest boundary that fits:
    sentences packed together, else clauses, else words; joined back with single spaces
    they read as `text` (whitespace aside)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    segmenter = pysbd.Segmenter(language=_pysbd_language(language), clean=False)
    sentences = [s.strip() for s in segmenter.segment(text) if s.strip()]
    return _pack(sentences, limit, [_CLAUSE_END, _SPACE])


def _pack(units: Sequence[str], limit: int, finer: Sequence[re.Pattern[str]]) -> list[str]:
    """Greedy packing of `units` into pieces under `limit`; a unit over it is split by the
    next finer boundary (and a word over it, cut)."""
    pieces: list[str] = []
    current = ""
    for unit in units:
        parts = [unit]
        if len(unit) > limit:
            if finer:
                parts = _pack([p for p in finer[0].split(unit) if p], limit, finer[1:])
            else:
                parts = [unit[i : i + limit] for i in range(0, len(unit), limit)]
        for part in parts:
            joined = f"{current} {part}" if current else part
            if len(joined) <= limit:
                current = joined
            else:
                if current:
                    pieces.append(current)
                current = part
    if current:
        pieces.append(current)
    return pieces


def _pysbd_language(language: str | None) -> str:
    code = (language or "en").replace("_", "-").split("-", 1)[0].lower()
    return code if code in pysbd.languages.LANGUAGE_CODES else "en"


def piece_key(output_key: str, index: int) -> str:
    """Where piece `index` of the item whose output goes to `output_key` is kept meanwhile."""
    return f"{output_key}.pieces/{index:05d}.wav"


class UnreadablePiece(Exception):
    """A stored piece that does not decode (a torn write): `key` names it."""

    def __init__(self, key: str) -> None:
        super().__init__(f"The stored audio at {key} could not be decoded.")
        self.key = key


def stitch(
    store: ObjectStore,
    pieces: Sequence[str],
    key: str,
    *,
    fmt: str,
    sample_rate: int | None,
    pause_s: float = PAUSE_S,
) -> tuple[StoredAudio, list[float]]:
    """The stored `pieces` (audio keys: WAV, or any format libsndfile reads), in order, as one
    output at `key`, and the second each piece starts at in it."""
    starts: list[float] = []
    with store.open_writer(key, content_type_of(fmt)) as writer:
        encoder: PcmEncoder | None = None
        rate, frames = 0, 0
        try:
            for n, (decoded, piece_rate) in enumerate(_decoded(store, pieces)):
                audio = decoded
                if encoder is None:
                    rate = piece_rate
                    encoder = PcmEncoder(writer, fmt=fmt, rate=rate, sample_rate=sample_rate)
                elif piece_rate != rate:
                    resampled = soxr.resample(
                        decoded.astype(np.float32) / 32768.0, piece_rate, rate
                    )
                    audio = (np.clip(resampled, -1.0, 1.0) * 32767.0).astype("<i2")
                if n:
                    gap = round(pause_s * rate)
                    encoder.write(bytes(2 * gap))
                    frames += gap
                starts.append(frames / rate)
                encoder.write_samples(_faded(audio, rate))
                frames += len(audio)
            if encoder is None:
                raise ValueError("nothing to stitch")
            duration = encoder.finish()
        except BaseException:
            if encoder is not None:
                encoder.close()
            raise
        size = writer.commit()
    return StoredAudio(size, encoder.content_type, duration), starts


def _decoded(store: ObjectStore, pieces: Sequence[str]) -> Iterator[tuple[np.ndarray, int]]:
    """Each piece as mono 16-bit samples and its rate, one at a time (a stereo piece mixed)."""
    for key in pieces:
        data = store.get_bytes(key)
        try:
            audio, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
        except (sf.SoundFileError, RuntimeError, ValueError):
            raise UnreadablePiece(key) from None
        del data  # one copy of the piece at a time
        mono = audio[:, 0] if audio.shape[1] == 1 else audio.mean(axis=1).astype("<i2")
        yield np.ascontiguousarray(mono), int(rate)


def _faded(mono: np.ndarray, rate: int) -> np.ndarray:
    """`mono` (int16, faded in place) with 10 ms linear fades at both ends, so joins do not
    click; only the edges are touched and nothing is copied (a piece may be minutes long)."""
    edge = min(round(FADE_S * rate), len(mono) // 2)
    if edge:
        ramp = np.linspace(0.0, 1.0, edge, dtype=np.float32)
        mono[:edge] = (mono[:edge] * ramp).astype("<i2")
        mono[-edge:] = (mono[-edge:] * ramp[::-1]).astype("<i2")
    return mono
