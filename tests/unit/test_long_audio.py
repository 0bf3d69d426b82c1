"""Long recordings (issue 11): pieces cut at pauses under the limits, transcripts merged back."""

from __future__ import annotations

import functools
import importlib.util
import itertools
import math
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jobs.error_codes import ErrorCode
from workers import long_audio
from workers.audio_decode import AudioTooLong
from workers.long_audio import Piece, merge_transcripts, plan_pieces
from workers.long_audio_scan import scan
from workers.providers.answers import check_transcript
from workers.providers.base import Segment, Transcript, Word
from workers.providers.errors import UnsupportedAudio
from workers.render import to_srt

HAS_VAD = importlib.util.find_spec("webrtcvad") is not None
BOTH_DETECTORS = [
    pytest.param(False, id="energy"),
    pytest.param(
        True, id="webrtcvad", marks=pytest.mark.skipif(not HAS_VAD, reason="webrtcvad absent")
    ),
]
MAX_SAMPLES = 200_000_000
FRAME_S = 0.02


def speech(t: np.ndarray) -> np.ndarray:
    """Word-like bursts at times `t`: 0.3 s of a gliding tone, then a 0.1 s gap."""
    phase = np.mod(t, 0.4) / 0.3
    envelope = np.where(phase < 1.0, np.sin(np.pi * np.minimum(phase, 1.0)), 0.0)
    glide = 200.0 * t - 40.0 / (2 * np.pi * 0.7) * np.cos(2 * np.pi * 0.7 * t)
    return 0.3 * envelope * np.sin(2 * np.pi * glide)


def write_recording(
    path: Path,
    seconds: float,
    *,
    rate: int = 16_000,
    channels: int = 1,
    pauses: Sequence[float] = (),
    signal: Callable[[np.ndarray], np.ndarray] = speech,
) -> Path:
    """A WAV of `signal`, with 1 s of near-silence (-80 dBFS noise) from each of `pauses`,
    written ten seconds at a time so even long ones cost little memory."""
    rng = np.random.default_rng(11)
    total, step = round(seconds * rate), 10 * rate
    with sf.SoundFile(path, "w", rate, channels, subtype="PCM_16") as out:
        for start in range(0, total, step):
            t = np.arange(start, min(start + step, total)) / rate
            mono = signal(t)
            for pause in (p for p in pauses if t[0] - 1.0 < p <= t[-1]):
                inside = (t >= pause) & (t < pause + 1.0)
                mono[inside] = rng.normal(0.0, 1e-4, int(inside.sum()))
            out.write(np.repeat(mono[:, None], channels, axis=1) * np.linspace(1, 0.5, channels))
    return path


def check_cover(pieces: list[Piece], seconds: float) -> None:
    """Pieces follow one another with no gap or overlap and end where the recording does."""
    assert pieces[0].offset_s == 0.0
    for before, after in itertools.pairwise(pieces):
        assert after.offset_s == pytest.approx(before.end_s, abs=1e-9)
    assert pieces[-1].end_s == pytest.approx(seconds, abs=FRAME_S)


def test_a_short_recording_is_one_16k_mono_flac_piece(tmp_path: Path) -> None:
    """A recording that fits once re-encoded becomes one 16 kHz mono FLAC, nothing else left."""
    source = write_recording(tmp_path / "short.wav", 5.0, rate=22_050)
    work = tmp_path / "work"
    pieces = plan_pieces(
        source, max_bytes=10_000_000, max_seconds=600, workdir=work, max_samples=MAX_SAMPLES
    )
    assert len(pieces) == 1
    (piece,) = pieces
    info = sf.info(str(piece.path))
    assert (info.format, info.samplerate, info.channels) == ("FLAC", 16_000, 1)
    assert piece.offset_s == 0.0
    assert piece.duration_s == pytest.approx(5.0, abs=0.003)
    assert piece.bytes == piece.path.stat().st_size
    assert list(work.iterdir()) == [piece.path]


def test_a_stereo_44k_recording_becomes_mono_16k_pieces_under_max_seconds(tmp_path: Path) -> None:
    """Stereo 44.1 kHz becomes mono 16 kHz pieces under max_seconds, cut mid-way through the
    latest pause before each limit."""
    source = write_recording(
        tmp_path / "stereo.wav", 60.0, rate=44_100, channels=2, pauses=(13.0, 17.0, 38.0)
    )
    pieces = plan_pieces(
        source,
        max_bytes=10_000_000,
        max_seconds=25.0,
        workdir=tmp_path / "work",
        max_samples=MAX_SAMPLES,
    )
    assert len(pieces) == 3
    for piece in pieces:
        info = sf.info(str(piece.path))
        assert (info.format, info.samplerate, info.channels) == ("FLAC", 16_000, 1)
        assert piece.duration_s < 25.0
    check_cover(pieces, 60.0)
    assert [p.offset_s for p in pieces[1:]] == pytest.approx([17.5, 38.5], abs=0.1)


@pytest.mark.parametrize("use_vad", BOTH_DETECTORS)
def test_a_long_recording_is_cut_inside_its_pauses_under_max_bytes(
    tmp_path: Path, use_vad: bool
) -> None:
    """Every piece fits max_bytes, every cut is inside a pause, and no sample is lost."""
    pauses = [8.0 + 10 * k for k in range(17)]
    source = write_recording(tmp_path / "long.wav", 180.0, rate=22_050, pauses=pauses)
    work = tmp_path / "work"
    pieces = plan_pieces(
        source,
        max_bytes=150_000,
        max_seconds=None,
        workdir=work,
        max_samples=MAX_SAMPLES,
        use_vad=use_vad,
    )
    assert len(pieces) >= 3
    for piece in pieces:
        assert piece.bytes == piece.path.stat().st_size <= 150_000
    for piece in pieces[1:]:
        assert any(p <= piece.offset_s <= p + 1.0 for p in pauses), piece.offset_s
    check_cover(pieces, 180.0)
    frames = sum(sf.info(str(p.path)).frames for p in pieces)
    assert frames == pytest.approx(180.0 * 16_000, abs=0.003 * 16_000)
    assert sorted(work.iterdir()) == [p.path for p in pieces]


def steady(t: np.ndarray) -> np.ndarray:
    """A tone with no pause at all, whose level dips to 30 % around 12 s and 31 s."""
    dips = 1.0 - 0.7 * (np.exp(-(((t - 12.0) / 0.05) ** 2)) + np.exp(-(((t - 31.0) / 0.05) ** 2)))
    return 0.3 * dips * np.sin(2 * np.pi * 200.0 * t)


def test_without_a_pause_the_cut_is_at_the_quietest_moment(tmp_path: Path) -> None:
    """With no pause before the limit, each piece ends at the quietest moment before it."""
    source = write_recording(tmp_path / "steady.wav", 50.0, signal=steady)
    pieces = plan_pieces(
        source,
        max_bytes=10_000_000,
        max_seconds=20.0,
        workdir=tmp_path / "work",
        max_samples=MAX_SAMPLES,
        use_vad=False,
    )
    assert [p.offset_s for p in pieces] == pytest.approx([0.0, 12.0, 31.0], abs=FRAME_S)
    check_cover(pieces, 50.0)


@pytest.mark.parametrize("use_vad", BOTH_DETECTORS)
def test_a_recording_with_no_pause_is_still_split_under_max_bytes(
    tmp_path: Path, use_vad: bool
) -> None:
    """Continuous sound is still cut into pieces that each fit max_bytes, none of them tiny."""
    noise = np.random.default_rng(3)
    source = write_recording(
        tmp_path / "hum.wav", 60.0, signal=lambda t: steady(t) + noise.normal(0, 0.02, t.size)
    )
    pieces = plan_pieces(
        source,
        max_bytes=400_000,
        max_seconds=None,
        workdir=tmp_path / "work",
        max_samples=MAX_SAMPLES,
        use_vad=use_vad,
    )
    assert 3 <= len(pieces) <= 8
    assert all(p.bytes <= 400_000 for p in pieces)
    assert all(p.bytes > 200_000 for p in pieces[:-1])  # each cut in its piece's second half
    check_cover(pieces, 60.0)


def test_a_piece_over_max_bytes_is_measured_and_cut_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the size estimate is too hopeful, the written piece is caught and re-cut."""
    monkeypatch.setattr(long_audio, "_BYTES_MARGIN", 1.4)
    source = write_recording(tmp_path / "long.wav", 90.0, pauses=[5.0 + 4 * k for k in range(21)])
    work = tmp_path / "work"
    pieces = plan_pieces(
        source, max_bytes=100_000, max_seconds=None, workdir=work, max_samples=MAX_SAMPLES
    )
    assert all(p.bytes <= 100_000 for p in pieces)
    check_cover(pieces, 90.0)
    assert sorted(work.iterdir()) == sorted(p.path for p in pieces)


@pytest.mark.skipif(not HAS_VAD, reason="webrtcvad absent")
def test_scan_uses_webrtcvad_unless_told_not_to(tmp_path: Path) -> None:
    """use_vad picks the detector: webrtcvad when installed, the energy threshold when off."""
    source = write_recording(tmp_path / "a.wav", 3.0)
    assert scan(source, tmp_path / "a.flac", max_samples=MAX_SAMPLES).vad
    assert not scan(source, tmp_path / "b.flac", max_samples=MAX_SAMPLES, use_vad=False).vad


def test_splitting_30_minutes_keeps_memory_flat(tmp_path: Path) -> None:
    """30 minutes (57 MB of 16 kHz int16) split with a traced peak under 8 MB, below its FLAC."""
    # speech() repeats every 30 s, so one 30 s stretch (with its pause) written 60 times is
    # the whole half hour, at a 60th of the cost of computing it.
    stretch = speech(np.arange(30 * 16_000) / 16_000)
    stretch[20 * 16_000 : 21 * 16_000] = 0.0
    source = tmp_path / "half-hour.wav"
    with sf.SoundFile(source, "w", 16_000, 1, subtype="PCM_16") as out:
        for _ in range(60):
            out.write(stretch)
    assert sf.info(str(source)).frames * 2 == 57_600_000
    tracemalloc.start()
    try:
        pieces = plan_pieces(
            source,
            max_bytes=2_000_000,
            max_seconds=None,
            workdir=tmp_path / "work",
            max_samples=MAX_SAMPLES,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(pieces) >= 4
    check_cover(pieces, 1800.0)
    assert sum(p.bytes for p in pieces) > 8_000_000  # so holding the pieces would fail too
    assert peak < 8_000_000, f"peak {peak / 1e6:.1f} MB"


def test_undecodable_empty_and_too_long_recordings_are_refused(tmp_path: Path) -> None:
    """Bad input fails as UnsupportedAudio (empty, garbage) or AudioTooLong, like
    workers/audio_decode."""
    empty, garbage = tmp_path / "empty.wav", tmp_path / "garbage.wav"
    empty.write_bytes(b"")
    garbage.write_bytes(b"not audio at all" * 100)
    split = functools.partial(
        plan_pieces, max_bytes=1_000_000, max_seconds=None, workdir=tmp_path / "w"
    )
    with pytest.raises(UnsupportedAudio) as caught:
        split(empty, max_samples=MAX_SAMPLES)
    assert caught.value.code == ErrorCode.EMPTY_AUDIO
    with pytest.raises(UnsupportedAudio, match="could not be decoded"):
        split(garbage, max_samples=MAX_SAMPLES)
    with pytest.raises(AudioTooLong):
        split(write_recording(tmp_path / "a.wav", 2.0), max_samples=16_000)


def test_limits_too_small_for_a_second_of_audio_are_refused(tmp_path: Path) -> None:
    """A max_bytes that cannot hold one second of the recording is a ValueError, not a loop."""
    source = write_recording(tmp_path / "a.wav", 20.0)
    with pytest.raises(ValueError, match="less than a second"):
        plan_pieces(
            source, max_bytes=6_000, max_seconds=None, workdir=tmp_path, max_samples=MAX_SAMPLES
        )


def transcript(
    text: str,
    words: list[Word],
    segments: list[Segment],
    *,
    language: str | None = None,
    request_id: str | None = None,
) -> Transcript:
    """A provider's answer for one piece."""
    return Transcript(
        text=text,
        language=language,
        duration_s=30.0,
        provider="p",
        model="m",
        words=words,
        segments=segments,
        request_id=request_id,
    )


def test_merge_shifts_times_and_clips_cues_at_the_join(tmp_path: Path) -> None:
    """Piece times move by their offset and a cue running past its piece ends at the join."""
    first = Piece(tmp_path / "0.flac", 0.0, 30.0, 1)
    second = Piece(tmp_path / "1.flac", 30.0, 25.0, 1)
    parts = [
        (
            first,
            transcript(
                " hello there ",
                [Word("hello", 1.0, 1.5), Word("there", 29.0, 30.4)],
                [Segment(1.0, 31.0, "hello there")],
                request_id="a",
            ),
        ),
        (
            second,
            transcript(
                "general kenobi",
                [Word("general", 0.2, 0.6), Word("kenobi", 0.7, 1.2)],
                [Segment(0.2, 1.2, "general kenobi")],
                language="en",
                request_id="b",
            ),
        ),
    ]
    merged = check_transcript(merge_transcripts(parts))
    assert merged.text == "hello there general kenobi"
    assert [t for w in merged.words for t in (w.start, w.end)] == pytest.approx(
        [1.0, 1.5, 29.0, 30.0, 30.2, 30.6, 30.7, 31.2]
    )
    assert [t for s in merged.segments for t in (s.start, s.end)] == pytest.approx(
        [1.0, 30.0, 30.2, 31.2]
    )
    assert (merged.language, merged.duration_s, merged.request_id) == ("en", 55.0, "a,b")
    assert (merged.provider, merged.model) == ("p", "m")


def test_merge_gives_a_piece_without_segments_its_own_cue(tmp_path: Path) -> None:
    """A piece with text but no segments gets one cue of its own, so no cue spans the join."""
    parts = [
        (Piece(tmp_path / "0.flac", 0.0, 30.0, 1), transcript("one", [Word("one", 2.0, 2.5)], [])),
        (Piece(tmp_path / "1.flac", 30.0, 30.0, 1), transcript("two", [], [])),
    ]
    srt = to_srt(merge_transcripts(parts))
    assert "00:00:02,000 --> 00:00:02,500\none" in srt
    assert "00:00:30,000 --> 00:01:00,000\ntwo" in srt


def test_merged_request_ids_fit_the_attempts_column(tmp_path: Path) -> None:
    """Request ids are comma-joined and clipped to 200 characters."""
    piece = Piece(tmp_path / "0.flac", 0.0, 1.0, 1)
    parts = [(piece, transcript("", [], [], request_id="x" * 150)) for _ in range(3)]
    merged = merge_transcripts(parts)
    assert merged.request_id is not None and len(merged.request_id) == 200
    assert math.isclose(merged.duration_s or 0.0, 3.0)


def test_merge_ends_a_cue_where_the_next_pieces_first_cue_starts(tmp_path: Path) -> None:
    """With pieces that overlap, a cue is clipped at the next piece's first cue start."""
    parts = [
        (
            Piece(tmp_path / "0.flac", 0.0, 30.0, 1),
            transcript("one", [], [Segment(20.0, 29.9, "one")]),
        ),
        (
            Piece(tmp_path / "1.flac", 29.5, 30.0, 1),
            transcript("two", [], [Segment(0.2, 5.0, "two")]),
        ),
    ]
    merged = merge_transcripts(parts)
    assert [t for s in merged.segments for t in (s.start, s.end)] == pytest.approx(
        [20.0, 29.7, 29.7, 34.5]
    )
