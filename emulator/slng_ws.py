"""SLNG's WebSocket TTS (providers.md §1.8) on the same paths as the HTTP routes.

`/v1/tts/{model}` and `/v1/bridges/unmute/tts/{variant}` upgrade with a Bearer key (or
`?token=`); a refused upgrade is HTTP 404 `{"error": "Model not found"}` or 401. The session:
`init` first (`voice`, `config{sample_rate, encoding, language, speed}`) → `ready{session_id}`;
`text` (buffered; `flush: true` speaks it), `flush`, `clear` → `cleared`, `keepalive`,
`close`. Each utterance answers `segment_start`, its audio, `segment_end`, `flushed` and
`audio_end{duration}`, paced as Smallest's streams are (the first chunk at `ttfb_ms`, the last
with `flushed` and `audio_end` at the latency, no faster than `realtime_factor`;
emulator/pacing.py); audio comes as base64 `audio_chunk{data, sequence}` or as raw binary
frames (`ws_audio`: by default binary on the bridges, base64 on per-model routes). Rime models
close with 1000 right after `audio_end`, as upstream Rime does. Anything before `init` is
answered `error{code: config_error}` and ignored. Over `slng_ws_sessions` open sessions per
key the session gets `error{code: rate_limit}` and a 1013 close; injected faults become
`error` messages with SLNG's codes; `ws_drop_every` cuts an utterance off mid-audio (1011).
STT sessions are `emulator/slng_ws_stt.py`.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any
from uuid import uuid4

from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect

from emulator import audio, pacing
from emulator.dials import Call, Dials, fingerprint, strip_tokens
from emulator.slng_tts import BRIDGE_TTS_MODELS, TTS_MODELS
from emulator.ws_gate import (
    INTERNAL,
    NORMAL,
    TRY_LATER,
    IdleTimeout,
    bearer,
    deny,
    json_message,
    never_disconnects,
    receive_within,
)

VENDOR = "slng"
WS_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
# init's encodings (§1.8) → (encoding, container) as `audio.render_speech` names them.
WS_ENCODINGS = {
    "linear16": ("linear16", "none"),
    "mp3": ("mp3", "none"),
    "opus": ("opus", "ogg"),
    "mulaw": ("mulaw", "none"),
    "alaw": ("alaw", "none"),
}


def error_code(status: int) -> str:
    """SLNG's WS error code for an HTTP-style fault status."""
    if status in (401, 403):
        return "auth_error"
    if status == 429:
        return "rate_limit"
    if 400 <= status < 500:
        return "config_error"
    return "backend_connection_failed" if status in (502, 503) else "provider_error"


async def send_error(websocket: WebSocket, code: str, message: str) -> None:
    await websocket.send_text(json.dumps({"type": "error", "code": code, "message": message}))


async def run_session(
    dials: Dials,
    websocket: WebSocket,
    models: Mapping[str, Any],
    kind: str,
    talk: Callable[[Call], Awaitable[None]],
) -> None:
    """One session of `kind` ("tts"/"stt") from upgrade to close: the model and key checked
    (a refused upgrade), SLNG's session cap (`rate_limit`), `talk`, the idle close, the log."""
    model = websocket.path_params["model"]
    call = Call("WS", websocket.url.path, model, f"sess_{kind}_{uuid4().hex[:12]}")
    key = await _admit(dials, websocket, models, call)
    if key is None:
        dials.record(call, {"model": 404, "auth": 401}.get(call.fault or "", 101))
        return
    dials.ws.opened(VENDOR, key)
    try:
        await talk(call)
    except IdleTimeout:
        await websocket.close(NORMAL, "idle timeout")
    except WebSocketDisconnect:
        pass  # the client left mid-answer (a paced stream is long): not the emulator's error
    finally:
        dials.ws.closed(VENDOR, key)
        dials.record(call, 101)


async def _admit(
    dials: Dials, websocket: WebSocket, models: Mapping[str, Any], call: Call
) -> str | None:
    """Accept the upgrade and return the key, or refuse it (HTTP, or SLNG's `rate_limit`)."""
    if call.model not in models:
        await deny(websocket, 404, {"error": "Model not found"})
        call.fault = "model"
        return None
    key = bearer(websocket, dials.config.api_keys, query_token=True)
    if key is None:
        await deny(websocket, 401, {"error": "Unauthorized", "message": "Missing or invalid key"})
        call.fault = "auth"
        return None
    call.key_fingerprint = fingerprint(key)
    await websocket.accept()
    cap = dials.config.slng_ws_sessions
    if cap and dials.ws.open_count(VENDOR, key) >= cap:
        call.fault = "cap"
        message = f"Too many concurrent connections ({cap} per key); back off exponentially."
        await send_error(websocket, "rate_limit", message)
        await websocket.close(TRY_LATER)
        return None
    return key


class SlngTtsSession:
    """The TTS session handlers; one instance per app, sharing the process's `Dials`."""

    def __init__(self, dials: Dials) -> None:
        self.dials = dials
        self.speech_cache = audio.SpeechCache()

    async def per_model(self, websocket: WebSocket) -> None:
        await self._run(websocket, TTS_MODELS, bridge=False)

    async def bridge(self, websocket: WebSocket) -> None:
        await self._run(websocket, BRIDGE_TTS_MODELS, bridge=True)

    async def _run(self, websocket: WebSocket, models: Mapping[str, Any], *, bridge: bool) -> None:
        model = websocket.path_params["model"]

        async def talk(call: Call) -> None:
            await self._talk(websocket, call, model, bridge)

        await run_session(self.dials, websocket, models, "tts", talk)

    async def _talk(self, websocket: WebSocket, call: Call, model: str, bridge: bool) -> None:
        init: dict[str, Any] | None = None
        buffered: list[str] = []
        sequence = [0]
        while True:
            raw = await receive_within(websocket, self.dials.config.slng_ws_idle_s)
            if raw is None:
                return
            message = json_message(raw) if isinstance(raw, str) else None
            kind = message.get("type") if message is not None else None
            if message is None or kind == "keepalive":
                if message is None:
                    await send_error(websocket, "config_error", "Send JSON text messages.")
                continue
            if kind == "close":
                await websocket.close(NORMAL)
                return
            if kind == "init":
                init = await _on_init(websocket, message, call.request_id)
                continue
            if init is None:
                await send_error(websocket, "config_error", "Send init first; message ignored.")
                continue
            if kind == "clear":
                buffered.clear()
                await websocket.send_text(json.dumps({"type": "cleared"}))
            elif kind in ("text", "flush"):
                buffered.append(str(message.get("text") or ""))
                if kind == "flush" or message.get("flush") is True:
                    text, framing = "".join(buffered), self._framing(bridge)
                    buffered.clear()
                    if not await self._speak(websocket, call, model, init, text, framing, sequence):
                        return
            else:
                await send_error(websocket, "config_error", f"Unknown message type {kind!r}.")

    def _framing(self, bridge: bool) -> str:
        chosen = self.dials.config.ws_audio
        return ("binary" if bridge else "base64") if chosen == "route" else chosen

    async def _speak(
        self,
        websocket: WebSocket,
        call: Call,
        model: str,
        init: dict[str, Any],
        text: str,
        framing: str,
        sequence: list[int],
    ) -> bool:
        """One utterance; False when the session is over afterwards (dropped, or Rime's close)."""
        send, started = websocket.send_text, time.perf_counter()
        if not text.strip():
            await send(json.dumps({"type": "flushed"}))
            return True
        call.text_chars = (call.text_chars or 0) + len(text)
        fault = await self.dials.hold(call.path, text, never_disconnects, paced=True)
        if fault is not None:
            call.fault = fault.kind
            await send_error(websocket, error_code(fault.status), f"Injected {fault.status} fault.")
            return True
        seconds = audio.speech_duration(strip_tokens(text)) / init["speed"]
        encoding, container = WS_ENCODINGS[init["encoding"]]
        cache_key = (round(seconds, 3), encoding, init["sample_rate"], container)
        rendered = self.speech_cache.get(cache_key)
        if rendered is None:
            rendered = await run_in_threadpool(audio.render_speech, *cache_key)
            self.speech_cache.put(cache_key, rendered)
        chunks = pacing.chunked(rendered[0], init["sample_rate"])
        dropped = self.dials.ws.drop_due(self.dials.config.ws_drop_every)
        segment = f"seg_{sequence[0] + 1:03d}"
        await send(json.dumps({"type": "segment_start", "segment_id": segment}))
        timing = self.dials.stream_timing(text)
        numbered = list(enumerate(chunks))
        async with aclosing(pacing.paced(numbered, seconds, timing, started=started)) as paced:
            async for n, chunk in paced:
                if dropped and n >= max(1, len(chunks) // 2):
                    call.fault = "dropped"
                    await websocket.close(INTERNAL, "upstream connection lost")
                    return False
                sequence[0] += 1
                if framing == "binary":
                    await websocket.send_bytes(bytes(chunk))
                else:
                    data = base64.b64encode(chunk).decode()
                    sent = {"type": "audio_chunk", "data": data, "sequence": sequence[0]}
                    await send(json.dumps(sent))
        await send(json.dumps({"type": "segment_end", "segment_id": segment}))
        await send(json.dumps({"type": "flushed"}))
        await send(json.dumps({"type": "audio_end", "duration": round(seconds, 3)}))
        if "rime/" in model:  # upstream Rime ends the socket after each utterance (§1.8)
            await websocket.close(NORMAL)
            return False
        return True


async def _on_init(
    websocket: WebSocket, message: dict[str, Any], session_id: str
) -> dict[str, Any] | None:
    """The session's config after `init` (answered `ready`), or None (answered an error)."""
    init = _parse_init(message)
    if isinstance(init, str):
        await send_error(websocket, "config_error", init)
        return None
    await websocket.send_text(json.dumps({"type": "ready", "session_id": session_id}))
    return init


def _parse_init(message: dict[str, Any]) -> dict[str, Any] | str:
    """init's config with its defaults, or the sentence saying which field is wrong."""
    config = message.get("config") or {}
    if not isinstance(config, dict):
        return "init.config must be an object."
    rate = config.get("sample_rate", 24000)
    if isinstance(rate, bool) or rate not in WS_RATES:
        return f"config.sample_rate must be one of {', '.join(map(str, WS_RATES))}."
    encoding = config.get("encoding", "linear16")
    if encoding not in WS_ENCODINGS:
        return f"config.encoding must be one of {', '.join(WS_ENCODINGS)}."
    speed = config.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.5 <= speed <= 2:
        return "config.speed must be a number from 0.5 to 2."
    return {"sample_rate": int(rate), "encoding": encoding, "speed": float(speed)}
