"""SLNG's WebSocket STT (providers.md §1.9) on the same paths as the HTTP routes.

`init{config{language, sample_rate, encoding: linear16, enable_partials}}` → `ready`; then
audio as binary frames of raw 16-bit PCM or `{"type": "audio", "data": base64}`. Audio before
`ready` closes the session with 1008 (policy violation), as SLNG does. `finalize` transcribes
what came since the last one: `partial_transcript` (when partials are on), one
`final_transcript{transcript, confidence, language, start, duration, words, from_finalize}`
per few words, then `utterance_end{last_word_end}`; the session stays open and its timeline
runs on (times count from the session's first audio). `close` does the same, then closes
with 1000. Upgrade, caps, faults and drops are as for TTS (`emulator/slng_ws.py`).
"""

from __future__ import annotations

import binascii
import json
from base64 import b64decode
from collections.abc import Mapping
from typing import Any

from starlette.websockets import WebSocket

from emulator import audio
from emulator.dials import Call, Dials
from emulator.slng_stt import BRIDGE_STT_MODELS, BRIDGE_STT_RATES, STT_MODELS, variant_language
from emulator.slng_ws import error_code, run_session, send_error
from emulator.ws_gate import (
    INTERNAL,
    NORMAL,
    POLICY,
    json_message,
    never_disconnects,
    receive_within,
)

_WORDS_PER_FINAL = 6


class SlngSttSession:
    """The STT session handlers; one instance per app, sharing the process's `Dials`."""

    def __init__(self, dials: Dials) -> None:
        self.dials = dials

    async def per_model(self, websocket: WebSocket) -> None:
        await self._run(websocket, STT_MODELS)

    async def bridge(self, websocket: WebSocket) -> None:
        await self._run(websocket, BRIDGE_STT_MODELS)

    async def _run(self, websocket: WebSocket, models: Mapping[str, Any]) -> None:
        async def talk(call: Call) -> None:
            await _Listener(self.dials, websocket, call).listen()

        await run_session(self.dials, websocket, models, "stt", talk)


class _Listener:
    """One STT session's state: its config, the audio since the last finalize, its clock."""

    def __init__(self, dials: Dials, websocket: WebSocket, call: Call) -> None:
        self.dials, self.websocket, self.call = dials, websocket, call
        self.config: dict[str, Any] | None = None
        self.pcm = bytearray()
        self.offset_s = 0.0

    async def listen(self) -> None:
        while True:
            raw = await receive_within(self.websocket, self.dials.config.slng_ws_idle_s)
            if raw is None:
                return
            message = json_message(raw) if isinstance(raw, str) else None
            kind = message.get("type") if message is not None else "audio"
            if kind == "keepalive":
                continue
            if kind == "init" and message is not None:
                await self._init(message)
            elif kind == "audio":
                if self.config is None:
                    await self.websocket.close(POLICY, "audio sent before ready")
                    return
                if not await self._take(raw, message):
                    return
            elif self.config is None:
                await send_error(self.websocket, "config_error", "Send init first; ignored.")
            elif kind in ("finalize", "close"):
                if not await self._finalize() or kind == "close":
                    if kind == "close":
                        await self.websocket.close(NORMAL)
                    return
            else:
                await send_error(self.websocket, "config_error", f"Unknown type {kind!r}.")

    async def _init(self, message: dict[str, Any]) -> None:
        config = message.get("config") or {}
        rate = str(config.get("sample_rate", 16000)) if isinstance(config, dict) else ""
        if rate not in BRIDGE_STT_RATES or config.get("encoding", "linear16") != "linear16":
            await send_error(
                self.websocket,
                "config_error",
                f"config needs encoding linear16 and sample_rate one of {BRIDGE_STT_RATES}.",
            )
            return
        language = config.get("language") or variant_language(self.call.model or "") or "en"
        partials = config.get("enable_partials", True) is not False
        self.config = {"rate": int(rate), "language": str(language), "partials": partials}
        ready = {"type": "ready", "session_id": self.call.request_id}
        await self.websocket.send_text(json.dumps(ready))

    async def _take(self, raw: str | bytes, message: dict[str, Any] | None) -> bool:
        """Add audio to the utterance; False when the session had to end (bad or too much)."""
        if isinstance(raw, bytes):
            chunk = raw
        else:
            try:
                chunk = b64decode(str((message or {}).get("data", "")), validate=True)
            except (binascii.Error, ValueError):
                await send_error(self.websocket, "config_error", "audio.data is not base64.")
                return True
        self.pcm += chunk
        self.call.audio_bytes = (self.call.audio_bytes or 0) + len(chunk)
        if len(self.pcm) > self.dials.config.max_audio_bytes:
            await send_error(self.websocket, "config_error", "Audio exceeds the size limit.")
            await self.websocket.close(POLICY)
            return False
        return True

    async def _finalize(self) -> bool:
        """Send the finals for the audio so far; False when the session was dropped."""
        assert self.config is not None
        send, rate = self.websocket.send_text, self.config["rate"]
        duration = len(self.pcm) / 2 / rate
        fault = await self.dials.hold(self.call.path, None, never_disconnects)
        if fault is not None:
            self.call.fault = fault.kind
            await send_error(self.websocket, error_code(fault.status), f"Injected {fault.status}.")
            self.pcm.clear()
            return True
        if duration > 0 and self.dials.ws.drop_due(self.dials.config.ws_drop_every):
            self.call.fault = "dropped"
            await self.websocket.close(INTERNAL, "upstream connection lost")
            return False
        language = self.config["language"]
        words = audio.canned_words(audio.audio_digest(bytes(self.pcm)), duration, language)
        groups = [words[i : i + _WORDS_PER_FINAL] for i in range(0, len(words), _WORDS_PER_FINAL)]
        offset = self.offset_s
        if groups and self.config["partials"]:
            partial = " ".join(w.word for w in groups[0][:2])
            await send(json.dumps({"type": "partial_transcript", "transcript": partial}))
        for n, group in enumerate(groups):
            final = {
                "type": "final_transcript",
                "transcript": " ".join(w.word for w in group),
                "confidence": 0.95,
                "language": language,
                "start": round(offset + group[0].start, 3),
                "duration": round(group[-1].end - group[0].start, 3),
                "words": [
                    {
                        "word": w.word,
                        "start": round(offset + w.start, 3),
                        "end": round(offset + w.end, 3),
                        "confidence": 0.95,
                    }
                    for w in group
                ],
                "from_finalize": n == len(groups) - 1,
            }
            await send(json.dumps(final))
        last = offset + words[-1].end if words else offset
        await send(json.dumps({"type": "utterance_end", "last_word_end": round(last, 3)}))
        self.offset_s += duration
        self.pcm.clear()
        return True
