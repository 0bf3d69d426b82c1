"""Offline provider: espeak-ng for TTS, pocketsphinx for STT, no network and no API key.

It exists so the whole pipeline runs on a laptop and in CI. The quality is honestly low:
espeak-ng sounds robotic, and pocketsphinx's generic US-English model mishears much of what
it hears (espeak's own voice included), so use it to exercise the system, not to judge output.
"""

from __future__ import annotations

import re
import struct
import subprocess
import threading
from collections.abc import Mapping
from typing import Any

from jobs.catalog import PROVIDERS
from jobs.error_codes import ErrorCode
from workers.audio_decode import STT_SAMPLE_RATE, to_mono16k_int16
from workers.providers import http
from workers.providers.base import AudioInput, AudioSink, Synthesis, Transcript, Word
from workers.providers.errors import InvalidInput, PermanentProviderError, ProviderTimeout
from workers.providers.exchange import Bounds

ESPEAK_TIMEOUT_S = 60
BASE_WORDS_PER_MINUTE = 175  # espeak-ng's own default rate, i.e. speed 1.0
_MIN_WPM, _MAX_WPM = 80, 450  # espeak-ng clamps outside this range anyway
# Voice names like en-us, en-gb-x-rp, mb-en1, en-us+f3; anything else is not worth a process.
_VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+\-/]{0,63}")
_ALTERNATE_PRONUNCIATION = re.compile(r"\(\d+\)$")
_NON_WORDS = ("<s>", "</s>", "<sil>")


class LocalProvider:
    """espeak-ng and pocketsphinx behind the `SpeechProvider` protocol."""

    name = "local"

    def __init__(self, *, espeak_binary: str = "espeak-ng", bounds: Bounds | None = None) -> None:
        self._espeak = espeak_binary
        # Only max_decode_samples applies here: a recording is decoded, nothing is fetched.
        self._bounds = bounds or Bounds()
        self._spec = PROVIDERS["local"]
        # Building a Decoder loads the acoustic model (~0.5 s) while decoding runs at roughly
        # about 0.25x real time, so one decoder is reused; decoders are not thread-safe.
        self._lock = threading.Lock()
        self._decoder: Any = None
        self._voices: frozenset[str] | None = None

    def synthesize(
        self,
        text: str,
        *,
        model: str,
        voice: str | None,
        options: Mapping[str, Any],
        sink: AudioSink | None = None,  # espeak-ng's WAV comes whole: nothing to stream
    ) -> Synthesis:
        if model not in self._spec.tts_models:
            raise http.unknown_model("The local provider", model, self._spec.tts_models)
        http.check_tts_text(text, limit=self._spec.text_limit(model), model=model)
        chosen = voice or self._spec.default_voice or "en-us"
        if not _VOICE_NAME.fullmatch(chosen) or not self._voice_exists(chosen):
            raise _unknown_voice(chosen)
        command = [self._espeak, "-v", chosen, "-s", str(words_per_minute(options)), "--stdout"]
        try:
            # Text goes on stdin, never argv: a line starting with "-" would read as an option.
            result = subprocess.run(
                command,
                input=text.encode("utf-8"),
                capture_output=True,
                timeout=ESPEAK_TIMEOUT_S,
                check=False,
            )
        except FileNotFoundError:
            raise PermanentProviderError(
                f"espeak-ng is not installed ({self._espeak!r} was not found); install it "
                "(e.g. `make demo`, or `apt-get install espeak-ng`) to use the local provider.",
                code=ErrorCode.ENGINE_MISSING,
            ) from None
        except subprocess.TimeoutExpired:
            raise ProviderTimeout(
                f"espeak-ng took longer than {ESPEAK_TIMEOUT_S} s; "
                "split the text into shorter items."
            ) from None
        stderr = result.stderr.decode("utf-8", "replace").strip()
        if "voice" in stderr.lower():
            raise _unknown_voice(chosen)
        if result.returncode != 0 or not result.stdout:
            raise PermanentProviderError(
                f"espeak-ng failed (exit {result.returncode}): {stderr or 'no output'}.",
                code=ErrorCode.ENGINE_FAILED,
            )
        return Synthesis(audio=_fix_wav_sizes(result.stdout), content_type="audio/wav")

    def _voice_exists(self, voice: str) -> bool:
        # espeak-ng falls back to its default voice, exit 0 and no message, when `-s` is
        # given with an unknown `-v`; so check against its own voice list (read once).
        with self._lock:
            if self._voices is None:
                self._voices = _list_voices(self._espeak)
        base = voice.split("+", 1)[0].lower()  # "en-us+f3" is voice en-us, variant f3
        return not self._voices or base in self._voices

    def transcribe(
        self, audio: AudioInput, *, model: str, options: Mapping[str, Any]
    ) -> Transcript:
        if model not in self._spec.stt_models:
            raise http.unknown_model("The local provider", model, self._spec.stt_models)
        language = str(options.get("language") or "en")
        if not language.lower().startswith("en"):
            raise InvalidInput(
                f"The local pocketsphinx model only understands English, not {language!r}; "
                "use a hosted provider for other languages.",
                code=ErrorCode.UNSUPPORTED_LANGUAGE,
            )
        # Header checked before decoding, then read in blocks (issue 9: a 189 KB FLAC of 8
        # channels at 192 kHz decoded whole took 800 MiB).
        samples = to_mono16k_int16(audio.data, max_samples=self._bounds.max_decode_samples)
        with self._lock:
            decoder = self._get_decoder()
            # Feature state (the cepstral mean among it) carries over between utterances and
            # changed words on replays; resetting it (~40 µs) makes each file decode as if
            # the decoder were fresh, whatever this worker transcribed before.
            decoder.reinit_feat()
            decoder.start_utt()
            decoder.process_raw(samples.tobytes(), full_utt=True)
            decoder.end_utt()
            frame_rate = float(decoder.config["frate"])
            raw = [(s.word, s.start_frame, s.end_frame, s.prob) for s in decoder.seg()]
        duration = len(samples) / STT_SAMPLE_RATE
        words = [
            Word(
                text=_ALTERNATE_PRONUNCIATION.sub("", word),
                start=round(start / frame_rate, 3),
                end=round(min((end + 1) / frame_rate, duration), 3),
                confidence=round(min(max(float(prob), 0.0), 1.0), 3),
            )
            for word, start, end, prob in raw
            if word not in _NON_WORDS and not word.startswith(("[", "<", "++"))
        ]
        return Transcript(
            text=" ".join(w.text for w in words),
            language="en",
            duration_s=round(duration, 3),
            provider="local",
            model=model,
            words=words,
            segments=http.segments_from_words(words),
        )

    def _get_decoder(self) -> Any:
        if self._decoder is None:
            try:
                # Loaded on first use, so TTS-only workers never pay for the STT engine's
                # import (and a broken install fails only STT items).
                from pocketsphinx import Decoder  # noqa: PLC0415
            except ImportError:
                raise PermanentProviderError(
                    "pocketsphinx is not installed; `pip install pocketsphinx` to use local STT.",
                    code=ErrorCode.ENGINE_MISSING,
                ) from None
            # Batch CMN: whole files are decoded at once, so normalise by each file's own mean.
            # FATAL: pocketsphinx's INFO logs would flood worker stderr.
            self._decoder = Decoder(cmn="batch", loglevel="FATAL")
        return self._decoder


def words_per_minute(options: Mapping[str, Any]) -> int:
    """espeak-ng's -s value for options.speed (1.0 → 175 wpm), kept inside espeak's range."""
    raw = options.get("speed", 1.0)
    try:
        speed = float(raw)
    except (TypeError, ValueError):
        speed = -1.0
    if not speed > 0:  # also rejects NaN
        raise InvalidInput(
            f"speed must be a positive number (1.0 is normal), got {raw!r}.",
            code=ErrorCode.INVALID_OPTION,
        )
    return min(max(round(BASE_WORDS_PER_MINUTE * speed), _MIN_WPM), _MAX_WPM)


def _list_voices(espeak: str) -> frozenset[str]:
    """Names `-v` accepts: language codes, voice names and file names from `--voices`.

    Empty when espeak-ng cannot be run; synthesis then reports the missing engine itself.
    """
    try:
        listing = subprocess.run(
            [espeak, "--voices"], capture_output=True, timeout=10, check=False
        ).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    names: set[str] = set()
    for line in listing.splitlines()[1:]:
        columns = line.split()
        if len(columns) >= 5:
            names.update(
                {
                    columns[1].lower(),
                    columns[3].lower(),
                    columns[4].lower(),
                    columns[4].rsplit("/", 1)[-1].lower(),
                }
            )
    return frozenset(names)


def _unknown_voice(voice: str) -> InvalidInput:
    return InvalidInput(
        f"espeak-ng has no voice {voice!r}; list voices with `espeak-ng --voices` "
        "(e.g. en-us, en-gb).",
        code=ErrorCode.UNKNOWN_VOICE,
    )


def _fix_wav_sizes(wav: bytes) -> bytes:
    """Patch the RIFF and data sizes espeak-ng leaves at 0x7FFFFxxx when writing to a pipe.

    libsndfile tolerates them but stricter readers (browsers, some players) do not.
    """
    if len(wav) < 12 or wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        return wav
    fixed = bytearray(wav)
    struct.pack_into("<I", fixed, 4, len(wav) - 8)
    offset = 12
    while offset + 8 <= len(wav):
        chunk_id = wav[offset : offset + 4]
        (size,) = struct.unpack_from("<I", wav, offset + 4)
        if chunk_id == b"data":
            struct.pack_into("<I", fixed, offset + 4, len(wav) - offset - 8)
            break
        offset += 8 + size + (size & 1)
    return bytes(fixed)
