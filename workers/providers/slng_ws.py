"""SLNG over WebSocket (`options.transport: websocket`): TTS and STT sessions, pooled.

Protocols per providers.md §1.8-§1.9, on the HTTP routes' paths. A session starts with `init`
(TTS: voice and config sample_rate/encoding/speed/language; STT: language, 16 kHz linear16)
and SLNG's `ready`; it is then reused by later calls with the same init (`ws_link.WsLink`).
TTS sends one `text` with `flush: true` and collects audio until `flushed` or `audio_end`:
base64 `audio_chunk`s put in `sequence` order (a gap is a truncated answer) or raw binary
frames, both seen in the wild; the linear16 PCM is wrapped in a WAV. STT streams the
recording as 16-bit PCM frames, sends `finalize` and assembles the `final_transcript`s up to
`utterance_end` into one transcript; times count from the session's first audio, so the audio
already sent on a reused session is subtracted. SLNG's error codes map onto the error tree
(`ws_error`); a close before the answer is complete is a dropped session, retried.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any

from pybase64 import b64decode  # SIMD: a 24 kB frame in 3 µs, not 117 µs

from jobs.error_codes import ErrorCode
from workers.audio_decode import STT_SAMPLE_RATE, to_mono16k_int16
from workers.deadline import Deadline
from workers.providers import http
from workers.providers.answers import bad_output
from workers.providers.base import Segment, Transcript, Word
from workers.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from workers.providers.exchange import Limit
from workers.providers.slng_models import TtsCall, tts_sample_rate
from workers.providers.transcripts import as_float, as_str, deepgram_word
from workers.providers.ws_link import Session, WsLink, ws_url

# SLNG closes silent sessions (pipecat keeps alive every 30 s against a 120 s timeout,
# providers.md §1.9): pooled sessions get KEEPALIVE every 30 s while idle. An idle session
# still holds one of the key's concurrent sessions (SLNG refuses more with `rate_limit`), so
# one unused for IDLE_S is closed and the next call pays one handshake.
IDLE_S = 300.0
KEEPALIVE = json.dumps({"type": "keepalive"})
WS_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)  # what init's config takes
_FRAME_BYTES = STT_SAMPLE_RATE // 4 * 2  # a quarter second of 16-bit mono PCM
_AUDIO_TYPES = frozenset({"audio_chunk", "chunk", "audio"})
_END_TYPES = frozenset({"flushed", "audio_end"})


def ws_sample_rate(options: Mapping[str, Any]) -> int:
    """options.sample_rate moved up to a rate init's config takes (24 kHz when absent)."""
    return tts_sample_rate(options, WS_RATES)


def ws_error(message: Mapping[str, Any], secret: str) -> ProviderError:
    """SLNG's `error{code, message}` as the error tree: auth_error → AuthenticationFailed,
    config_error → InvalidInput, rate_limit → RateLimited, anything else → ProviderUnavailable."""
    code = str(message.get("code") or "provider_error")
    said = http.redact(str(message.get("message") or "no reason given"), secret)
    head = f"SLNG answered over its WebSocket: {code}: {said}."
    if code == "auth_error":
        return AuthenticationFailed(
            f"{head} Check that SLNG_API_KEY is set, valid and allowed to use this model."
        )
    if code == "config_error":
        return InvalidInput(
            f"{head} Fix the voice or options; retrying will not help.",
            code=ErrorCode.INVALID_OPTION,
        )
    if code == "rate_limit":
        return RateLimited(f"{head} Too many concurrent sessions; retry with backoff.")
    return ProviderUnavailable(f"{head} Retrying later (or another model) may help.")


class SlngWebSocket:
    """SLNG's WebSocket calls for one account, sessions pooled by route and init."""

    def __init__(self, link: WsLink, *, base_url: str, headers: dict[str, str]) -> None:
        self.link, self._base, self._headers = link, base_url, headers

    def synthesize(
        self,
        path: str,
        variant: str,
        call: TtsCall,
        options: Mapping[str, Any],
        limit: Limit,
        on_audio: Callable[[bytes], None] | None = None,
    ) -> tuple[bytes, str | None]:
        """Raw linear16 PCM for `call` (or each chunk handed to `on_audio` as it arrives, the
        bytes returned then empty), and the session id."""
        config: dict[str, Any] = {"sample_rate": call.sample_rate, "encoding": "linear16"}
        if call.speed is not None:
            config["speed"] = call.speed
        if options.get("language"):
            config["language"] = str(options["language"])
        init = {"type": "init", "model": variant, "voice": call.voice, "config": config}
        text = json.dumps({"type": "text", "text": call.text, "flush": True})

        def speak(session: Session) -> tuple[bytes, str | None]:
            session_id = self._ready(session, init)
            session.send(text)
            return self._collect_audio(session, on_audio), session_id

        return self._run(path, init, speak, limit)  # type: ignore[no-any-return]

    def transcribe(
        self,
        path: str,
        model: str,
        data: bytes,
        options: Mapping[str, Any],
        limit: Limit,
        max_samples: int,
    ) -> Transcript:
        """The recording streamed as 16 kHz PCM; its finals as one transcript."""
        pcm = to_mono16k_int16(data, max_samples=max_samples).tobytes()
        seconds = len(pcm) / 2 / STT_SAMPLE_RATE
        config: dict[str, Any] = {
            "sample_rate": STT_SAMPLE_RATE,
            "encoding": "linear16",
            "enable_vad": False,
            "enable_partials": False,  # a batch wants finals only
        }
        if options.get("language"):
            config["language"] = str(options["language"])
        init = {"type": "init", "config": config}

        def listen(session: Session) -> tuple[list[dict[str, Any]], float, str | None]:
            session_id = self._ready(session, init)
            offset = float(session.pooled.state.get("audio_s", 0.0))
            for start in range(0, len(pcm), _FRAME_BYTES):
                session.send(pcm[start : start + _FRAME_BYTES])
            session.send(json.dumps({"type": "finalize"}))
            finals = self._collect_finals(session)
            session.pooled.state["audio_s"] = offset + seconds
            return finals, offset, session_id

        finals, offset, session_id = self._run(path, init, listen, limit)
        return assemble(finals, offset, seconds, model, options, session_id)

    def _run(self, path: str, init: dict[str, Any], exchange: Any, limit: Limit) -> Any:
        url = ws_url(self._base, path)
        key = (url, json.dumps(init, sort_keys=True))

        def open_session(deadline: Deadline) -> Any:
            return self.link.open(
                url, deadline=deadline, max_bytes=limit.max_bytes, headers=self._headers
            )

        return self.link.call(key, open_session, exchange, limit)

    def _ready(self, session: Session, init: dict[str, Any]) -> str | None:
        """Send `init` on a new session and wait for `ready`; the session id."""
        state = session.pooled.state
        if "session_id" not in state:
            session.send(json.dumps(init))
            while True:
                message = self._json(session.recv())
                kind = str(message.get("type", "")).lower()
                if kind == "error":
                    raise ws_error(message, self.link.secret)
                if kind == "ready":
                    state["session_id"] = as_str(message.get("session_id"))
                    break
            session.answered = False  # from here, a close before any answer is a stale session
        else:
            while session.recv_ready() is not None:
                pass  # trailing audio_end/segment_end of the previous call
        return state.get("session_id")

    def _collect_audio(
        self, session: Session, on_audio: Callable[[bytes], None] | None = None
    ) -> bytes:
        """The utterance's audio up to `flushed`/`audio_end`: returned whole, or handed on
        chunk by chunk, in order, to `on_audio` (then the bytes returned are empty)."""
        kept = bytearray()
        audio = _InOrder(on_audio or kept.extend)
        while True:
            raw = session.recv()
            if isinstance(raw, bytes):
                audio.frame(raw)
                continue
            message = self._json(raw)
            kind = str(message.get("type", "")).lower()
            if kind == "error":
                raise ws_error(message, self.link.secret)
            if kind in _AUDIO_TYPES:
                chunk = _base64(message.get("data") or message.get("audio"))
                sequence = message.get("sequence")
                if isinstance(sequence, int) and not isinstance(sequence, bool):
                    audio.numbered(sequence, chunk)
                else:
                    audio.frame(chunk)
            elif kind in _END_TYPES and audio.received:
                # (An end before any audio is the previous utterance's trailing `audio_end`:
                # it follows `flushed` and may land after that call has gone.)
                break
        while session.recv_ready() is not None:
            pass  # audio_end after flushed, or the close some upstreams send (Rime)
        audio.end()
        return bytes(kept)

    def _collect_finals(self, session: Session) -> list[dict[str, Any]]:
        finals: list[dict[str, Any]] = []
        while True:
            raw = session.recv()
            if isinstance(raw, bytes):
                continue
            message = self._json(raw)
            kind = str(message.get("type", "")).lower()
            if kind == "error":
                raise ws_error(message, self.link.secret)
            if kind == "final_transcript":
                finals.append(message)
            elif kind == "utterance_end":
                return finals

    def _json(self, raw: str | bytes) -> dict[str, Any]:
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            raise bad_output("SLNG", "a WebSocket message that is not a JSON object")
        return message


class _InOrder:
    """Audio chunks handed on in order as they arrive: raw frames as they come, numbered
    `audio_chunk`s by `sequence` from the first one seen (a later one waits for the gap
    before it to fill; a gap left at the end, or mixed framings, is a truncated answer)."""

    def __init__(self, take: Callable[[bytes], None]) -> None:
        self._take = take
        self._next: int | None = None
        self._waiting: dict[int, bytes] = {}
        self._plain = False

    @property
    def received(self) -> bool:
        """Whether any audio of this utterance has come in yet."""
        return self._plain or self._next is not None

    def frame(self, chunk: bytes) -> None:
        self._plain = True
        self._mixed()
        self._take(chunk)

    def numbered(self, sequence: int, chunk: bytes) -> None:
        if self._next is None:
            self._next = sequence
        self._mixed()
        if sequence < self._next or sequence in self._waiting:
            raise bad_output("SLNG", f"audio chunk {sequence} twice or after later ones")
        self._waiting[sequence] = chunk
        while self._next in self._waiting:
            self._take(self._waiting.pop(self._next))
            self._next += 1

    def end(self) -> None:
        if self._waiting:
            raise bad_output("SLNG", "audio chunks with gaps in their sequence numbers")

    def _mixed(self) -> None:
        if self._plain and self._next is not None:
            raise bad_output("SLNG", "audio both as numbered chunks and as plain frames")


def _base64(value: object) -> bytes:
    try:
        return b64decode(str(value or ""), validate=True)
    except (binascii.Error, ValueError):
        raise bad_output("SLNG", "an audio chunk that is not base64") from None


def assemble(
    finals: list[dict[str, Any]],
    offset: float,
    seconds: float,
    model: str,
    options: Mapping[str, Any],
    session_id: str | None,
) -> Transcript:
    """SLNG's finals (times on the session's clock) as one transcript of this recording."""
    words: list[Word] = []
    segments: list[Segment] = []
    cursor = 0.0
    language = str(options["language"]) if options.get("language") else None
    for final in finals:
        text = str(final.get("transcript") or "").strip()
        start = as_float(final.get("start"))
        start = cursor if start is None else max(0.0, start - offset)
        span = as_float(final.get("duration")) or 0.0
        language = as_str(final.get("language")) or language
        for raw in final.get("words") or []:
            word = deepgram_word(raw)
            if word is not None:
                start_s, end_s = (max(0.0, round(t - offset, 3)) for t in (word.start, word.end))
                words.append(Word(word.text, start_s, end_s, word.confidence, word.speaker))
        if text:
            end = round(min(start + span, seconds) if seconds else start + span, 3)
            segments.append(Segment(round(start, 3), max(end, round(start, 3)), text))
        cursor = start + span
    return Transcript(
        text=" ".join(s.text for s in segments),
        language=language,
        duration_s=round(seconds, 3),
        provider="slng",
        model=model,
        words=words,
        segments=segments,
        request_id=session_id,
    )
