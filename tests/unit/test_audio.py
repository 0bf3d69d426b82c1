"""Decode, resample and encode round-trips in workers/audio_decode.py and workers/audio.py,
checked with soundfile."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from jobs.media import sniff_audio
from workers.audio import SUPPORTED_FORMATS, convert, pcm16_to_wav
from workers.audio_decode import AudioTooLong, probe, to_mono16k_int16
from workers.providers.errors import UnsupportedAudio


def tone_wav(seconds: float = 1.0, rate: int = 22050, channels: int = 1) -> bytes:
    """A 440 Hz sine as 16-bit WAV."""
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    frames = np.repeat(mono[:, None], channels, axis=1)
    buffer = io.BytesIO()
    sf.write(buffer, frames, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "rate", "expected_rate", "mime"),
    [
        ("wav", 16000, 16000, "audio/wav"),
        ("wav", None, 22050, "audio/wav"),
        ("flac", 44100, 44100, "audio/flac"),
        ("mp3", 24000, 24000, "audio/mpeg"),
        ("mp3", 22050, 22050, "audio/mpeg"),
        ("ogg", 32000, 32000, "audio/ogg"),
        ("opus", 48000, 48000, "audio/ogg"),
        ("opus", 16000, 16000, "audio/ogg"),
    ],
)
def test_convert_round_trip(fmt: str, rate: int | None, expected_rate: int, mime: str) -> None:
    """Each format decodes with soundfile at the requested rate and the source's duration."""
    encoded = convert(tone_wav(1.0), fmt=fmt, sample_rate=rate)
    assert encoded.content_type == mime
    assert sniff_audio(encoded.data[:16]) == mime
    assert encoded.ext == fmt
    info = sf.info(io.BytesIO(encoded.data))
    assert info.samplerate == expected_rate
    assert info.duration == pytest.approx(1.0, abs=0.06)
    assert encoded.duration_s == pytest.approx(1.0, abs=0.01)


def test_opus_moves_an_unsupported_rate_up() -> None:
    """Opus cannot encode 22.05 kHz, so the output is resampled to 24 kHz rather than failing."""
    encoded = convert(tone_wav(0.5), fmt="opus", sample_rate=22050)
    assert sf.info(io.BytesIO(encoded.data)).samplerate == 24000


def test_convert_keeps_stereo_and_downmixes_many_channels_for_mp3() -> None:
    """Stereo stays stereo in FLAC; MP3 (mono/stereo only) gets a mono downmix of 4 channels."""
    assert sf.info(io.BytesIO(convert(tone_wav(channels=2), fmt="flac").data)).channels == 2
    four = convert(tone_wav(channels=4), fmt="mp3")
    assert sf.info(io.BytesIO(four.data)).channels == 1


def test_supported_formats_all_convert() -> None:
    """Every advertised format actually encodes (no entry in SUPPORTED_FORMATS is aspirational)."""
    source = tone_wav(0.3)
    for fmt in SUPPORTED_FORMATS:
        assert convert(source, fmt=fmt).data


def test_convert_rejects_unknown_format() -> None:
    """An unknown target format is a programming error, raised as ValueError."""
    with pytest.raises(ValueError, match="aiff"):
        convert(tone_wav(0.1), fmt="aiff")


def test_probe_reports_duration_rate_channels() -> None:
    """probe reads the header: duration, sample rate and channel count."""
    info = probe(tone_wav(1.5, rate=16000, channels=2))
    assert info.sample_rate == 16000
    assert info.channels == 2
    assert info.duration_s == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_audio"),
        (b"this is definitely not audio" * 20, "unsupported_audio"),
        (b"%PDF-1.7\n" + bytes(range(256)) * 4, "unsupported_audio"),
    ],
)
def test_probe_and_convert_reject_non_audio(data: bytes, code: str) -> None:
    """Empty and garbage bytes raise UnsupportedAudio with a stable code from probe and convert."""
    with pytest.raises(UnsupportedAudio) as probed:
        probe(data)
    assert probed.value.code == code
    with pytest.raises(UnsupportedAudio) as converted:
        convert(data, fmt="wav")
    assert converted.value.code == code


def test_header_only_wav_is_empty_audio() -> None:
    """A WAV with a header and no samples is reported as empty, not as a 0-second success."""
    with pytest.raises(UnsupportedAudio) as excinfo:
        probe(pcm16_to_wav(b"", 16000))
    assert excinfo.value.code == "empty_audio"


def test_pcm16_to_wav_wraps_raw_samples() -> None:
    """Raw 16-bit PCM becomes a WAV with the given rate and channels, dropping a stray odd byte."""
    samples = (np.arange(4800, dtype=np.int16) % 1000).astype("<i2")
    wav = pcm16_to_wav(samples.tobytes() + b"\x01", 24000, channels=2)
    decoded, rate = sf.read(io.BytesIO(wav), dtype="int16", always_2d=True)
    assert rate == 24000
    assert decoded.shape == (2400, 2)
    assert np.array_equal(decoded.reshape(-1), samples)


def test_to_mono16k_int16_downmixes_and_resamples() -> None:
    """STT input is 16 kHz mono int16 with the same duration and audible signal."""
    samples = to_mono16k_int16(tone_wav(2.0, rate=44100, channels=2))
    assert samples.dtype == np.int16
    assert samples.ndim == 1
    assert len(samples) == pytest.approx(32000, abs=2)
    assert int(np.abs(samples).max()) > 0.25 * 32767


def test_a_pcm16_wav_at_the_wanted_rate_is_kept_byte_for_byte() -> None:
    """convert(wav) returns a complete 16-bit WAV unchanged (no decode/encode), but still
    re-encodes one at another rate and decodes one whose header promises missing samples."""
    original = pcm16_to_wav(b"\x01\x00" * 16000, 16000)
    kept = convert(original, fmt="wav")
    assert kept.data == original and kept.duration_s == 1.0
    assert convert(original, fmt="wav", sample_rate=16000).data == original
    resampled = convert(original, fmt="wav", sample_rate=24000)
    assert resampled.data != original and resampled.duration_s == pytest.approx(1.0)
    truncated = original[:-2000]  # the header still says 16000 frames
    assert convert(truncated, fmt="wav").data != truncated


@pytest.fixture(scope="module")
def flac_bomb() -> bytes:
    """The issue-9 probe: ~190 KB of FLAC holding 2 min of 8-channel audio at 192 kHz."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", 192_000, 8, format="FLAC", subtype="PCM_16") as out:
        block = np.zeros((192_000 * 10, 8), dtype=np.int16)
        for _ in range(12):
            out.write(block)
    return buffer.getvalue()


def test_a_tiny_flac_claiming_184m_samples_is_refused_before_decoding(flac_bomb: bytes) -> None:
    """The 8-channel 192 kHz FLAC fails as audio_too_long from its header, allocating ~nothing."""
    tracemalloc.start()
    try:
        for decode in (to_mono16k_int16, lambda data: convert(data, fmt="flac")):
            with pytest.raises(AudioTooLong) as excinfo:
                decode(flac_bomb)
            assert excinfo.value.code == "audio_too_long"
            assert "SPEECHBATCH_MAX_DECODE_SAMPLES" in excinfo.value.message
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024


def test_audio_under_the_limit_is_decoded_in_blocks(flac_bomb: bytes) -> None:
    """Allowed, the same file is read block by block: peak memory is the 16 kHz result plus a
    block (~15 MiB), not the 737 MiB of float32 frames decoding it whole took."""
    tracemalloc.start()
    try:
        samples = to_mono16k_int16(flac_bomb, max_samples=200_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(samples) == pytest.approx(120 * 16_000, abs=16)
    assert peak < 40 * 1024 * 1024


def test_decode_errors_never_quote_a_python_repr() -> None:
    """libsndfile's "Error opening <_io.BytesIO object at 0x…>" is reduced to its reason."""
    with pytest.raises(UnsupportedAudio) as excinfo:
        probe(b"not audio at all" * 40)
    assert "object at 0x" not in excinfo.value.message
    assert "<" not in excinfo.value.message
