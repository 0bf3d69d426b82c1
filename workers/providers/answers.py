"""Checking that a provider's 200 is what was asked for, before anything is recorded (issue 9).

A provider answered 200 with an HTML page, with random bytes, with a WAV whose header claims
more audio than it holds, and with transcripts holding NaN or -1e300 times; each was stored
and the item succeeded. Here TTS audio must be audio by its content type and its bytes, must
really decode (every block, counted against what the header claims), must not be white noise
and must last about as long as its text could take to say; transcript times must be finite,
non-negative and in order. Anything else is a transient `bad_provider_output`: retried, and
never written to storage.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from jobs.error_codes import ErrorCode
from workers.audio_decode import AudioInfo, blocks, probe
from workers.providers.base import Segment, Transcript, Word
from workers.providers.errors import ProviderUnavailable, UnsupportedAudio

# Speech runs 10-20 characters a second; espeak-ng's fastest is ~37. Slower than 2 a second
# plus a pause, or faster than 60, is not a reading of the text.
_MIN_CHARS_PER_S = 2.0
_MAX_CHARS_PER_S = 60.0
_PAUSE_S = 10.0
# White noise has no correlation between neighbouring samples; speech (and silence) does.
_NOISE_CORRELATION = 0.2
_NOISE_RMS = 0.2
_NOISE_WINDOW = 8_192  # frames: a third of a second at 24 kHz tells noise from speech
# A transcript may not outlast its audio by more than this (providers round and pad).
_TRANSCRIPT_SLACK = 1.25
_TRANSCRIPT_PAD_S = 5.0


def bad_output(provider: str, what: str, request_id: str | None = None) -> ProviderUnavailable:
    """The transient error for a 200 whose body is not what was asked for."""
    return ProviderUnavailable(
        f"{provider} answered 200 with {what}; retrying later may help, else report it.",
        code=ErrorCode.BAD_PROVIDER_OUTPUT,
        status_code=200,
        request_id=request_id,
    )


def longest_reading_s(chars: int) -> float:
    """The most seconds of speech `chars` characters of text could plausibly take."""
    return _PAUSE_S + max(chars, 0) / _MIN_CHARS_PER_S


def check_content_type(
    header: str, body: bytes, provider: str, request_id: str | None = None
) -> None:
    """Refuse a body labelled as something other than audio, or that is markup."""
    media = header.split(";", 1)[0].strip().lower()
    if media and not media.startswith("audio/") and media != "application/octet-stream":
        raise bad_output(provider, f"{media} instead of audio", request_id)
    if body.lstrip()[:1] == b"<":
        raise bad_output(provider, "markup (an HTML or XML page) instead of audio", request_id)


def check_speech(
    audio: bytes,
    *,
    text: str,
    max_samples: int,
    provider: str,
    request_id: str | None = None,
) -> AudioInfo:
    """Decode all of `audio` (in blocks) and check it is a plausible reading of `text`."""

    def bad(what: str) -> ProviderUnavailable:
        return bad_output(provider, what, request_id)

    pcm = _pcm16_wav(audio)
    try:
        info = pcm.info if pcm else probe(audio)
    except UnsupportedAudio:
        raise bad("bytes that do not decode as audio") from None
    chars = len(text.strip())
    longest = longest_reading_s(chars)
    if info.duration_s > longest:
        raise bad(f"{info.duration_s:.0f} s of audio for {chars} characters of text")
    if info.duration_s < chars / _MAX_CHARS_PER_S - 1.0:
        raise bad(f"{info.duration_s:.2f} s of audio for {chars} characters of text")
    if pcm:  # its samples are the bytes themselves: count and look at them, no decode
        if pcm.held < pcm.info.frames * 0.99 or pcm.info.frames == 0:
            raise bad(f"audio whose header claims {pcm.info.frames} frames but holds {pcm.held}")
        if _is_white_noise(pcm.first_window()):
            raise bad("random bytes (white noise) instead of speech")
        return pcm.info
    frames, noise = 0, None
    try:
        for block in blocks(audio, max_samples):
            if noise is None:
                noise = _is_white_noise(block.mean(axis=1)[:_NOISE_WINDOW])
            frames += len(block)
    except UnsupportedAudio:
        raise bad("audio that stops decoding part-way") from None
    claimed = max(info.frames, _wav_claimed_frames(audio) or 0)
    if frames == 0 or frames < claimed * 0.99:
        raise bad(f"audio whose header claims {claimed} frames but that holds {frames}")
    if noise:
        raise bad("random bytes (white noise) instead of speech")
    return info


class StreamedSpeech:
    """`check_speech` for 16-bit mono PCM that arrives in pieces, judged as it comes.

    A stream has no length up front, so its bound is the text's: audio past the longest
    plausible reading (`_PAUSE_S` plus 2 characters a second) is refused the moment it
    arrives, which is what caps a streamed answer's size. The first `_NOISE_WINDOW` frames
    are kept to tell speech from white noise; `finish` applies the shortest-reading check.
    """

    def __init__(self, *, text: str, rate: int, provider: str) -> None:
        self.chars, self.rate, self.provider = len(text.strip()), rate, provider
        self.longest_s = longest_reading_s(self.chars)
        self.max_frames = math.ceil(self.longest_s * rate)
        self.frames = 0
        self._window: list[np.ndarray] = []
        self._windowed = 0
        self._judged = False
        self._odd = b""

    def feed(self, pcm: bytes) -> None:
        """Count (and, at first, look at) one more piece; a piece may split a sample."""
        if self._odd:
            pcm = self._odd + pcm
        usable = len(pcm) - len(pcm) % 2
        self._odd = pcm[usable:]
        frames = usable // 2
        self.frames += frames
        if self.frames > self.max_frames:
            raise bad_output(
                self.provider,
                f"more than {self.longest_s:.0f} s of audio for {self.chars} characters of text",
            )
        if not self._judged:
            samples = np.frombuffer(pcm, dtype="<i2", count=frames)[
                : _NOISE_WINDOW - self._windowed
            ]
            self._window.append(samples)
            self._windowed += len(samples)
            if self._windowed >= _NOISE_WINDOW:
                self._judge()

    def finish(self, request_id: str | None = None) -> float:
        """The seconds received, once the whole stream passes; else the error it is."""
        seconds = self.frames / self.rate
        if self.frames == 0:
            raise ProviderUnavailable(
                f"{self.provider} streamed no audio; retrying later may help.",
                code=ErrorCode.EMPTY_RESPONSE,
                request_id=request_id,
            )
        if seconds < self.chars / _MAX_CHARS_PER_S - 1.0:
            what = f"{seconds:.2f} s of audio for {self.chars} characters of text"
            raise bad_output(self.provider, what, request_id)
        if not self._judged:
            self._judge(request_id)
        return seconds

    def _judge(self, request_id: str | None = None) -> None:
        self._judged = True
        window = np.concatenate(self._window) / 32768.0
        self._window = []
        if _is_white_noise(window):
            raise bad_output(
                self.provider, "random bytes (white noise) instead of speech", request_id
            )


@dataclass(frozen=True)
class _Pcm16Wav:
    """A plain 16-bit PCM WAV, read from its header: what most TTS answers are."""

    data: bytes
    offset: int  # where the samples start
    info: AudioInfo  # frames: what the header claims (or what the bytes hold, if it does not)
    held: int  # frames the bytes really hold

    def first_window(self) -> np.ndarray:
        end = self.offset + 2 * self.info.channels * min(self.held, _NOISE_WINDOW)
        samples = np.frombuffer(self.data[self.offset : end], dtype="<i2")
        frames: np.ndarray = samples.reshape(-1, self.info.channels).mean(axis=1) / 32768.0
        return frames


def _pcm16_wav(data: bytes) -> _Pcm16Wav | None:
    """The WAV's layout if it is 16-bit PCM with a fmt chunk before its data, else None
    (everything else is decoded by libsndfile)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset, fmt = 12, None
    while offset + 8 <= len(data):
        chunk, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        if chunk == b"fmt " and size >= 16 and offset + 24 <= len(data):
            fmt = struct.unpack_from("<HHIIHH", data, offset + 8)
        elif chunk == b"data":
            if fmt is None:
                return None
            tag, channels, rate, _byte_rate, block_align, bits = fmt
            if tag != 1 or bits != 16 or channels < 1 or rate < 1 or block_align != 2 * channels:
                return None
            start = offset + 8
            held = (len(data) - start) // block_align
            streamed = size == 0 or size >= 0x7FFF0000  # length unknown when it was sent
            claimed = held if streamed else size // block_align
            info = AudioInfo(claimed / rate, rate, channels, claimed)
            return _Pcm16Wav(data, start, info, held)
        offset += 8 + size + (size & 1)
    return None


def _is_white_noise(mono: np.ndarray) -> bool:
    # Element-wise products summed, not np.dot: OpenBLAS runs a long dot product on threads
    # of its own that spin while they wait, and with a worker's dozens of threads calling
    # this at once they ate ~50 ms of CPU per item (bench/overhead.py).
    centred = mono.astype(np.float64) - float(mono.mean())
    energy = float(np.square(centred).sum())
    if centred.size < 2 or energy == 0.0:
        return False
    correlation = float(np.multiply(centred[:-1], centred[1:]).sum()) / energy
    rms = math.sqrt(energy / centred.size)
    return abs(correlation) < _NOISE_CORRELATION and rms > _NOISE_RMS


def _wav_claimed_frames(data: bytes) -> int | None:
    """Frames a RIFF/WAVE header's data chunk claims (libsndfile trusts the file size)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset, block_align = 12, 0
    while offset + 8 <= len(data):
        chunk, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        if chunk == b"fmt " and offset + 22 <= len(data):
            block_align = struct.unpack_from("<H", data, offset + 20)[0]
        if chunk == b"data":
            # 0 and 0xFFFFFFFF-ish sizes mean "unknown" (streamed WAV), not a claim.
            if not block_align or size == 0 or size >= 0x7FFF0000:
                return None
            return int(size) // int(block_align)
        offset += 8 + size + (size & 1)
    return None


def audio_info(data: bytes) -> AudioInfo | None:
    """A recording's header facts (length, rate); None when libsndfile cannot read them."""
    try:
        return probe(data)
    except UnsupportedAudio:
        return None


def audio_seconds(data: bytes) -> float | None:
    """How long a recording lasts by its header; None when libsndfile cannot tell."""
    info = audio_info(data)
    return info.duration_s if info is not None else None


def check_transcript(
    transcript: Transcript, *, audio_s: float | None = None, request_id: str | None = None
) -> Transcript:
    """`transcript` if its numbers are finite, non-negative and in order (and fit the audio)."""
    provider = transcript.provider

    def bad(what: str) -> ProviderUnavailable:
        return bad_output(provider, f"a transcript with {what}", request_id)

    longest = math.inf if audio_s is None else audio_s * _TRANSCRIPT_SLACK + _TRANSCRIPT_PAD_S
    duration = transcript.duration_s
    if duration is not None and not (math.isfinite(duration) and 0.0 <= duration <= longest):
        raise bad(f"a duration of {duration!s} s")
    for name, timed in (("word", transcript.words), ("segment", transcript.segments)):
        problem = _timing_problem(timed, longest)
        if problem:
            raise bad(f"{name} {problem}")
    for word in transcript.words:
        if word.confidence is not None and not 0.0 <= word.confidence <= 1.0:
            raise bad(f"a word confidence of {word.confidence!s}")
    return transcript


def _timing_problem(timed: Iterable[Word | Segment], longest: float) -> str | None:
    previous = 0.0
    for n, span in enumerate(timed, start=1):
        if not (math.isfinite(span.end) and 0.0 <= span.start <= span.end <= longest):
            return f"{n} timed {span.start!s}-{span.end!s} s"
        if span.start < previous:
            return f"{n} starting at {span.start!s} s, before the one ahead of it"
        previous = span.start
    return None
