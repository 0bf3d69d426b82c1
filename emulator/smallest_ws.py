"""Smallest's WebSocket TTS `/waves/v1/tts/live` (providers.md §2.3, §2.5).

The upgrade needs a Bearer key (else HTTP 401 `{"error": "Unauthorized", "message"}`). Each
JSON request carries the HTTP body's fields (`voice_id`, `text`, `model`, `sample_rate`,
`speed`, ...) plus `continue` (more text coming) and `flush`; text is buffered until a
request says `flush: true` or `continue: false`, then answered with
`{session_id, request_id, status: "chunk", data: {audio: base64 PCM}}` frames and
`{status: "complete"}`, paced as the SSE stream is (`ttfb_ms`, `latency_ms`,
`realtime_factor`; emulator/pacing.py). After a `continue: false` request the server closes
the socket; a `continue: true, flush: true` one keeps it open for the next line (how the
docs' "complete, then close" and "up to 5 connections" fit together is UNCONFIRMED; this is
our reading).
Errors are `{status: "error", error: {message, code}}`: over `smallest_ws_connections` open
per key (5) the extra connection gets one and is closed; a request while another connection of
the key is being answered gets a 429 one (only 1 processing, §2.5: the account's TTS
concurrency, the `smallest_tts_concurrency` dial HTTP uses too). After
`smallest_ws_idle_s` (60, or `?timeout=`) of silence: `{"status": "error", "message":
"Connection timed out after 60 seconds of inactivity"}` and a close.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from contextlib import aclosing
from typing import Any
from uuid import uuid4

from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect

from emulator import audio, pacing
from emulator.dials import Call, Dials, fingerprint
from emulator.smallest import FORMATS, TtsRequest, parse_tts, spoken_seconds
from emulator.smallest_wire import Refused
from emulator.ws_gate import (
    INTERNAL,
    NORMAL,
    POLICY,
    IdleTimeout,
    bearer,
    deny,
    json_message,
    never_disconnects,
    receive_within,
)

VENDOR = "smallest"


class SmallestTtsSession:
    """The WebSocket handler; one per app, sharing the process's `Dials`."""

    def __init__(self, dials: Dials, speech_cache: audio.SpeechCache) -> None:
        self.dials, self.speech_cache = dials, speech_cache
        self._processing: Counter[str] = Counter()

    async def live(self, websocket: WebSocket) -> None:
        call = Call("WS", websocket.url.path, None, uuid4().hex)
        key = bearer(websocket, self.dials.config.api_keys, query_token=False)
        if key is None:
            body = {"error": "Unauthorized", "message": "Bearer token is missing or invalid."}
            await deny(websocket, 401, body)
            self.dials.record(call, 401)
            return
        call.key_fingerprint = fingerprint(key)
        await websocket.accept()
        cap = self.dials.config.smallest_ws_connections
        if cap and self.dials.ws.open_count(VENDOR, key) >= cap:
            call.fault = "cap"
            message = f"Too many connections: this plan allows {cap} WebSocket connections."
            await self._error(websocket, call, message, 429)
            await websocket.close(POLICY)
            self.dials.record(call, 101)
            return
        self.dials.ws.opened(VENDOR, key)
        idle_s = _timeout(websocket, self.dials.config.smallest_ws_idle_s)
        try:
            await self._talk(websocket, call, key, idle_s)
        except IdleTimeout:
            said = f"Connection timed out after {idle_s:g} seconds of inactivity"
            await websocket.send_text(json.dumps({"status": "error", "message": said}))
            await websocket.close(NORMAL)
        except WebSocketDisconnect:
            pass  # the client left mid-answer (a paced stream is long): not the emulator's error
        finally:
            self.dials.ws.closed(VENDOR, key)
            self.dials.record(call, 101)

    async def _talk(self, websocket: WebSocket, call: Call, key: str, idle_s: float) -> None:
        buffered: list[str] = []
        while True:
            raw = await receive_within(websocket, idle_s)
            if raw is None:
                return
            body = json_message(raw) if isinstance(raw, str) else None
            if body is None:
                await self._error(websocket, call, "Send JSON text messages.", 400)
                continue
            buffered.append(str(body.get("text") or ""))
            more = body.get("continue") is True
            if more and body.get("flush") is not True:
                continue
            parsed = parse_tts({**body, "text": "".join(buffered)}, accept="", path_model=None)
            buffered.clear()
            if isinstance(parsed, Refused):
                await self._error(websocket, call, parsed.message, parsed.status)
            elif 0 < (cap := self.dials.config.smallest_tts_concurrency) <= self._processing[key]:
                message = f"Another request is being processed: this plan allows {cap} at a time."
                await self._error(websocket, call, message, 429)
            else:
                self._processing[key] += 1
                try:
                    if not await self._speak(websocket, call, parsed):
                        return
                finally:
                    self._processing[key] -= 1
            if not more:
                await websocket.close(NORMAL)
                return

    async def _speak(self, websocket: WebSocket, call: Call, parsed: TtsRequest) -> bool:
        """One request's chunks and `complete`, paced like the SSE stream (emulator/pacing.py);
        False when the session was dropped."""
        started = time.perf_counter()
        call.model = parsed.model
        call.text_chars = (call.text_chars or 0) + len(parsed.text)
        fault = await self.dials.hold(call.path, parsed.text, never_disconnects, paced=True)
        if fault is not None:
            call.fault = fault.kind
            await self._error(websocket, call, f"Injected {fault.status} fault.", fault.status)
            return True
        seconds = spoken_seconds(parsed)
        # Frames carry raw PCM whatever output_format says, as the SSE stream does.
        encoding, container = FORMATS["pcm"]
        cache_key = (round(seconds, 3), encoding, parsed.sample_rate, container)
        rendered = self.speech_cache.get(cache_key)
        if rendered is None:
            rendered = await run_in_threadpool(audio.render_speech, *cache_key)
            self.speech_cache.put(cache_key, rendered)
        chunks = pacing.chunked(rendered[0], parsed.sample_rate)
        dropped = self.dials.ws.drop_due(self.dials.config.ws_drop_every)
        ids = {"session_id": call.request_id, "request_id": parsed.ids.get("request_id", "")}
        timing = self.dials.stream_timing(parsed.text)
        numbered = list(enumerate(chunks))
        async with aclosing(pacing.paced(numbered, seconds, timing, started=started)) as paced:
            async for n, chunk in paced:
                if dropped and n >= max(1, len(chunks) // 2):
                    call.fault = "dropped"
                    await websocket.close(INTERNAL, "connection lost")
                    return False
                data = {"audio": base64.b64encode(chunk).decode()}
                await websocket.send_text(json.dumps({**ids, "status": "chunk", "data": data}))
        await websocket.send_text(json.dumps({**ids, "status": "complete"}))
        return True

    async def _error(self, websocket: WebSocket, call: Call, message: str, code: int) -> None:
        body: dict[str, Any] = {"status": "error", "error": {"message": message, "code": code}}
        await websocket.send_text(json.dumps({"session_id": call.request_id, **body}))


def _timeout(websocket: WebSocket, default_s: float) -> float:
    """The idle timeout: `?timeout=<seconds>` when it is a positive number, else the dial."""
    try:
        asked = float(websocket.query_params.get("timeout", ""))
    except ValueError:
        return default_s
    return asked if asked > 0 else default_s
