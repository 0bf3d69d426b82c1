"""Long TTS lines: the split under a character limit, and the stitch of stored pieces into one
output (one rate, pauses at the joins, no clicks), on the in-memory store."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from emulator.audio import render_speech
from storage.memory import MemoryObjectStore
from workers.long_tts import PAUSE_S, UnreadablePiece, piece_key, split_text, stitch

STORY = (
    "Dr. Smith arrived at 5 p.m. on Monday. The meeting, which had been planned for weeks, "
    "started late; nobody minded. She spoke about rivers, towns and the people who live along "
    "them. Afterwards everyone went home."
)


def test_sentences_are_kept_whole_and_packed_under_the_limit() -> None:
    """Pieces never pass the limit, abbreviations like "Dr." and "p.m." do not end a sentence,
    and the pieces read back as the text."""
    pieces = split_text(STORY, 100)
    assert all(len(p) <= 100 for p in pieces)
    assert pieces[0].startswith("Dr. Smith arrived at 5 p.m. on Monday.")
    assert " ".join(pieces).split() == STORY.split()


def test_a_sentence_over_the_limit_is_cut_at_clauses_then_words() -> None:
    """A long sentence splits at its commas and semicolons first, and a clause still too long
    between words; no word is cut while one fits."""
    sentence = "The meeting, which had been planned for weeks, started late; nobody minded."
    assert split_text(sentence, 40) == [
        "The meeting,",
        "which had been planned for weeks,",
        "started late; nobody minded.",
    ]
    by_words = split_text(sentence, 20)
    assert by_words[:3] == ["The meeting,", "which had been", "planned for weeks,"]
    assert all(len(p) <= 20 for p in by_words)
    assert " ".join(by_words).split() == sentence.split()
    assert split_text("a" * 25, 10) == ["a" * 10, "a" * 10, "a" * 5]  # only a lone giant word


def test_a_line_under_the_limit_is_one_piece() -> None:
    """Nothing is split that fits."""
    assert split_text("Hello there.", 1000) == ["Hello there."]


def wav(seconds: float, rate: int) -> bytes:
    return render_speech(seconds, "linear16", rate, "wav")[0]


def test_pieces_are_stitched_at_one_rate_with_a_pause_at_each_join() -> None:
    """Three stored pieces, one at another rate, become one WAV at the first piece's rate as
    long as the pieces plus two pauses; the pieces stay for the caller to delete."""
    store = MemoryObjectStore()
    keys = [piece_key("job/000001-a.wav", n) for n in range(3)]
    for key, (seconds, rate) in zip(keys, [(1.0, 24000), (2.0, 16000), (0.5, 24000)], strict=True):
        store.put_bytes(key, wav(seconds, rate), "audio/wav")
    stored, starts = stitch(store, keys, "job/000001-a.wav", fmt="wav", sample_rate=None)
    assert starts == pytest.approx([0.0, 1.0 + PAUSE_S, 3.0 + 2 * PAUSE_S], abs=0.001)
    audio, rate = sf.read(io.BytesIO(store.get_bytes("job/000001-a.wav")), dtype="float32")
    assert rate == 24000
    assert len(audio) / rate == pytest.approx(3.5 + 2 * PAUSE_S, abs=0.01)
    assert stored.duration_s == pytest.approx(3.5 + 2 * PAUSE_S, abs=0.01)
    assert all(store.size(key) is not None for key in keys)


def test_joins_fade_to_silence_so_they_cannot_click() -> None:
    """Pieces that end and start at full level meet at zero: the samples around each join
    are silent, and level rises over the 10 ms fade."""
    store = MemoryObjectStore()
    loud = np.full(2400, 0.5, dtype=np.float32)  # 0.1 s of DC at half scale: a worst case
    keys = []
    for n in range(2):
        buffer = io.BytesIO()
        sf.write(buffer, loud, 24000, format="WAV", subtype="PCM_16")
        keys.append(piece_key("k.wav", n))
        store.put_bytes(keys[-1], buffer.getvalue(), "audio/wav")
    stitch(store, keys, "k.wav", fmt="wav", sample_rate=None)
    audio, _ = sf.read(io.BytesIO(store.get_bytes("k.wav")), dtype="float32")
    assert abs(audio[0]) < 0.01 and abs(audio[2399]) < 0.01  # faded in and out
    assert np.all(audio[2400 : 2400 + int(PAUSE_S * 24000)] == 0)  # the pause
    assert abs(audio[2400 + int(PAUSE_S * 24000)]) < 0.01  # the next fades in
    assert np.max(np.abs(np.diff(audio))) < 0.01  # no jump anywhere


def test_a_piece_that_does_not_decode_is_named_and_nothing_is_stored() -> None:
    """A torn stored piece stops the stitch naming its key (the caller decides what to do
    with it), and nothing is left at the output key."""
    store = MemoryObjectStore()
    store.put_bytes(piece_key("k.wav", 0), wav(0.5, 24000), "audio/wav")
    store.put_bytes(piece_key("k.wav", 1), b"RIFF torn", "audio/wav")
    keys = [piece_key("k.wav", n) for n in range(2)]
    with pytest.raises(UnreadablePiece) as caught:
        stitch(store, keys, "k.wav", fmt="mp3", sample_rate=None)
    assert caught.value.key == keys[1]
    assert store.size("k.wav") is None
