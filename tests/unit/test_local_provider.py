"""The offline provider with the real espeak-ng and pocketsphinx (no mocks).

espeak-ng is a required dev tool: when it is missing these tests fail (they do not skip),
so a CI image without it cannot pass silently.
"""

from __future__ import annotations

import io
import shutil
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf
import soxr

from workers.providers.base import AudioInput, Synthesis, Transcript
from workers.providers.errors import InvalidInput, PermanentProviderError, UnsupportedAudio
from workers.providers.exchange import Bounds
from workers.providers.local import LocalProvider, words_per_minute


@pytest.fixture(scope="module")
def local() -> LocalProvider:
    if shutil.which("espeak-ng") is None:
        pytest.fail(
            "espeak-ng is not installed; install it (apt-get install espeak-ng / make demo)"
        )
    return LocalProvider()


def speak(local: LocalProvider, text: str, **options: float) -> Synthesis:
    return local.synthesize(text, model="espeak-ng", voice=None, options=options)


def hear(local: LocalProvider, wav: bytes) -> Transcript:
    audio = AudioInput(data=wav, filename="x.wav", content_type="audio/wav")
    return local.transcribe(audio, model="pocketsphinx", options={})


def test_synthesize_gives_wav_of_plausible_duration(local: LocalProvider) -> None:
    """ "hello world" becomes a valid WAV of about a second, with correct RIFF/data sizes."""
    result = speak(local, "hello world")
    assert result.content_type == "audio/wav"
    info = sf.info(io.BytesIO(result.audio))
    assert 0.5 < info.duration < 3.0
    # espeak-ng writes 0x7FFFFxxx sizes to a pipe; the provider must have patched them.
    assert struct.unpack_from("<I", result.audio, 4)[0] == len(result.audio) - 8
    assert result.audio[36:40] == b"data"
    assert struct.unpack_from("<I", result.audio, 40)[0] == len(result.audio) - 44


def test_speed_changes_duration(local: LocalProvider) -> None:
    """options.speed maps to words per minute, so speed 2.0 is clearly shorter than 0.75."""
    text = "the quick brown fox jumps over the lazy dog"
    slow = sf.info(io.BytesIO(speak(local, text, speed=0.75).audio)).duration
    fast = sf.info(io.BytesIO(speak(local, text, speed=2.0).audio)).duration
    assert fast < 0.6 * slow
    assert words_per_minute({}) == 175
    assert words_per_minute({"speed": 10}) == 450


def test_text_starting_with_dash_is_spoken_not_parsed(local: LocalProvider) -> None:
    """Text like "-v xx" goes through stdin, so it is spoken instead of read as an option."""
    result = speak(local, "-v nosuchvoice --help")
    assert sf.info(io.BytesIO(result.audio)).duration > 0.5


def test_transcribe_espeak_audio(local: LocalProvider) -> None:
    """Transcribing espeak's "hello world" yields words inside the audio's duration."""
    result = hear(local, speak(local, "hello world").audio)
    assert (result.provider, result.model, result.language) == ("local", "pocketsphinx", "en")
    assert result.text
    assert result.duration_s is not None
    assert 0.5 < result.duration_s < 3.0
    assert result.words
    for word in result.words:
        assert 0.0 <= word.start < word.end <= result.duration_s
        assert word.text
        assert not word.text.startswith(("<", "["))
        assert "(" not in word.text
    assert result.text == " ".join(w.text for w in result.words)
    assert result.segments
    assert result.segments[0].start == result.words[0].start


def test_transcribe_recognises_counting(local: LocalProvider) -> None:
    """pocketsphinx reliably hears espeak counting (measured: "well two three four five")."""
    result = hear(local, speak(local, "one two three four five").audio)
    heard = {w.text for w in result.words}
    assert len(heard & {"one", "two", "three", "four", "five"}) >= 2, result.text


def test_transcripts_do_not_depend_on_earlier_calls(local: LocalProvider) -> None:
    """The reused decoder is reset per call, so the same audio gives the same words every time."""
    fresh = LocalProvider()
    sentence = speak(local, "this is a test of the speech recognition system").audio
    other = speak(local, "good morning everyone").audio
    first = hear(fresh, sentence).text
    hear(fresh, other)
    assert hear(fresh, sentence).text == first


def test_concurrent_transcribes_share_one_decoder_safely(local: LocalProvider) -> None:
    """Threads transcribing at once (a threads-pool worker) get the same words as one at a time."""
    wav = speak(local, "one two three four five").audio
    expected = hear(local, wav).text
    with ThreadPoolExecutor(max_workers=3) as pool:
        texts = list(pool.map(lambda _: hear(local, wav).text, range(3)))
    assert texts == [expected] * 3


def test_unknown_voice(local: LocalProvider) -> None:
    """A voice espeak-ng does not have (or a malformed name) is InvalidInput(unknown_voice)."""
    for voice in ("xx-nosuchvoice", "en us; rm"):
        with pytest.raises(InvalidInput) as excinfo:
            local.synthesize("hello", model="espeak-ng", voice=voice, options={})
        assert excinfo.value.code == "unknown_voice"


def test_undecodable_audio_is_unsupported(local: LocalProvider) -> None:
    """Bytes that are not audio raise UnsupportedAudio before pocketsphinx sees them."""
    with pytest.raises(UnsupportedAudio):
        hear(local, b"definitely not audio" * 50)
    with pytest.raises(UnsupportedAudio) as empty:
        hear(local, b"")
    assert empty.value.code == "empty_audio"


def test_missing_binary_is_engine_missing() -> None:
    """A missing espeak-ng is a permanent engine_missing error that says how to install it."""
    broken = LocalProvider(espeak_binary="/nonexistent/espeak-ng")
    with pytest.raises(PermanentProviderError) as excinfo:
        speak(broken, "hello")
    assert excinfo.value.code == "engine_missing"
    assert "install" in excinfo.value.message


def test_checks_before_running_anything() -> None:
    """Model, text and language checks fail fast, without needing the engines at all."""
    broken = LocalProvider(espeak_binary="/nonexistent/espeak-ng")
    cases = [
        (
            lambda: broken.synthesize("x" * 5001, model="espeak-ng", voice=None, options={}),
            "text_too_long",
        ),
        (lambda: broken.synthesize(" ", model="espeak-ng", voice=None, options={}), "empty_text"),
        (
            lambda: broken.synthesize("hi", model="espeak-ng", voice=None, options={"speed": 0}),
            "invalid_option",
        ),
        (lambda: broken.synthesize("hi", model="piper", voice=None, options={}), "unknown_model"),
    ]
    clip = AudioInput(data=b"RIFF", filename="x.wav", content_type="audio/wav")
    cases += [
        (lambda: broken.transcribe(clip, model="whisper", options={}), "unknown_model"),
        (
            lambda: broken.transcribe(clip, model="pocketsphinx", options={"language": "fr"}),
            "unsupported_language",
        ),
    ]
    for call, code in cases:
        with pytest.raises(InvalidInput) as excinfo:
            call()
        assert excinfo.value.code == code


def test_a_recording_over_the_decode_limit_is_refused_before_decoding() -> None:
    """The local engine checks duration x channels x rate first: over the limit is
    audio_too_long, a permanent failure naming the setting, and pocketsphinx never runs."""
    wav = io.BytesIO()
    sf.write(wav, np.zeros((16_000, 2), dtype=np.int16), 16_000, format="WAV")
    tight = LocalProvider(bounds=Bounds(max_decode_samples=20_000))
    with pytest.raises(UnsupportedAudio) as excinfo:
        hear(tight, wav.getvalue())
    assert excinfo.value.code == "audio_too_long"
    assert "SPEECHBATCH_MAX_DECODE_SAMPLES" in excinfo.value.message
    assert tight._decoder is None


def test_a_stereo_96_khz_recording_is_heard_like_its_16_khz_mono_self(
    local: LocalProvider,
) -> None:
    """A stereo 96 kHz file (two copies of espeak's counting) is downmixed and resampled
    before decoding, so pocketsphinx hears the same words as in the original."""
    original, rate = sf.read(io.BytesIO(speak(local, "one two three four five").audio))
    high = soxr.resample(original, rate, 96000)
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([high, high], axis=1), 96000, format="WAV", subtype="PCM_16")
    heard = hear(local, buffer.getvalue())
    assert heard.duration_s == pytest.approx(len(original) / rate, abs=0.05)
    assert {w.text for w in heard.words} == {
        w.text for w in hear(local, speak(local, "one two three four five").audio).words
    }


def test_a_recording_with_no_speech_is_an_empty_transcript_not_an_error(
    local: LocalProvider,
) -> None:
    """Two seconds of near-silence transcribe to no words and empty text: a result, not a
    failure, so an archive's silent calls do not fail their jobs."""
    buffer = io.BytesIO()
    quiet = np.random.default_rng(1).normal(0, 1e-4, 32000).astype(np.float32)
    sf.write(buffer, quiet, 16000, format="WAV", subtype="PCM_16")
    heard = hear(local, buffer.getvalue())
    assert heard.text == "" and heard.words == []
    assert heard.duration_s == pytest.approx(2.0, abs=0.01)


def test_a_truncated_recording_is_heard_as_far_as_it_goes(local: LocalProvider) -> None:
    """A WAV cut short (its header still claims the whole length) is decoded up to its end,
    not refused and not read past it."""
    whole = speak(local, "one two three four five").audio
    cut = whole[: len(whole) // 2]
    heard = hear(local, cut)
    assert heard.duration_s is not None
    assert heard.duration_s < sf.info(io.BytesIO(whole)).duration * 0.6
