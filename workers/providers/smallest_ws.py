"""Smallest AI's Lightning TTS over WebSocket (`options.transport: websocket`), pooled.

`wss://…/waves/v1/tts/live` (providers.md §2.3): each line goes as the HTTP body's fields
plus `continue: true, flush: true`, so the session stays open for the next line; the answer
is `{status: "chunk", data: {audio: base64 PCM}}` frames ended by `{status: "complete"}`.
Errors are `{status: "error", error: {message, code}}` (the idle-timeout one carries only a
`message`): a numeric code maps like the HTTP status it names (401 → AuthenticationFailed,
400 → InvalidInput, 429 → RateLimited: the extra-connection and one-at-a-time refusals),
anything else is ProviderUnavailable. A session that closes before `complete` is dropped:
retried, its audio never kept. Smallest closes sessions after 60 s of silence; pooled ones
idle longer than `IDLE_S` are closed on our side first.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from pybase64 import b64decode  # SIMD: a 24 kB frame in 3 µs, not 117 µs

from workers.deadline import Deadline
from workers.providers import http
from workers.providers.answers import bad_output
from workers.providers.errors import ProviderError, ProviderUnavailable
from workers.providers.exchange import Limit
from workers.providers.transcripts import json_object
from workers.providers.ws_link import Session, WsLink, ws_url

PATH = "/waves/v1/tts/live"
IDLE_S = 50.0  # under Smallest's 60 s idle timeout
_PROVIDER = "Smallest AI"
_KEY_NAME = "SMALLEST_API_KEY"


def ws_error(message: Mapping[str, Any], secret: str) -> ProviderError:
    """A Smallest `status: error` message as the error tree."""
    inner = message.get("error")
    detail: Mapping[str, Any] = inner if isinstance(inner, Mapping) else message
    said = http.redact(str(detail.get("message") or message.get("message") or "no reason"), secret)
    code = detail.get("code")
    status = int(code) if isinstance(code, int | str) and str(code).isdigit() else None
    if status is None or not 400 <= status <= 599:
        return ProviderUnavailable(
            f"{_PROVIDER} answered over its WebSocket: {said}. Retrying later may help."
        )
    return http.error_from_response(
        httpx.Response(status),
        vendor_message=f"(an error message over its WebSocket) {said.rstrip('.')}",
        provider=_PROVIDER,
        key_name=_KEY_NAME,
    )


class SmallestWebSocket:
    """Smallest's WebSocket TTS for one account; one pooled session per worker thread in use."""

    def __init__(self, link: WsLink, *, base_url: str) -> None:
        self.link, self._url = link, ws_url(base_url, PATH)

    def synthesize(
        self,
        body: Mapping[str, Any],
        limit: Limit,
        on_audio: Callable[[bytes], None] | None = None,
    ) -> tuple[bytes, str | None]:
        """The raw PCM Lightning speaks for `body` (the HTTP body's fields), and its request id;
        with `on_audio`, each chunk goes there as it arrives and the PCM returned is empty."""
        sent = {k: v for k, v in body.items() if k != "output_format"}
        request = json.dumps({**sent, "continue": True, "flush": True})

        def open_session(deadline: Deadline) -> Any:
            cap = limit.max_bytes
            return self.link.open(self._url, deadline=deadline, max_bytes=cap, headers={})

        def speak(session: Session) -> tuple[bytes, str | None]:
            while (waiting := session.recv_ready()) is not None:
                # Nothing is owed between lines, but a refusal may be waiting (the extra-
                # connection error comes as soon as the socket opens).
                message = json_object(waiting.encode() if isinstance(waiting, str) else waiting)
                if message is not None and message.get("status") == "error":
                    raise ws_error(message, self.link.secret)
            session.send(request)
            return self._collect(session, on_audio)

        result: tuple[bytes, str | None] = self.link.call((self._url,), open_session, speak, limit)
        return result

    def _collect(
        self, session: Session, on_audio: Callable[[bytes], None] | None
    ) -> tuple[bytes, str | None]:
        audio = bytearray()
        take = on_audio or audio.extend
        request_id = None
        while True:
            raw = session.recv()
            try:
                message = json.loads(raw)
            except ValueError:
                message = None
            if not isinstance(message, dict):
                raise bad_output(_PROVIDER, "a WebSocket message that is not a JSON object")
            request_id = request_id or message.get("request_id") or message.get("session_id")
            status = message.get("status")
            if status == "error":
                raise ws_error(message, self.link.secret)
            if status == "complete":
                return bytes(audio), str(request_id) if request_id else None
            if status == "chunk":
                data = message.get("data")
                encoded = data.get("audio") if isinstance(data, Mapping) else None
                try:
                    pcm = b64decode(str(encoded or ""), validate=True)
                except (binascii.Error, ValueError):
                    raise bad_output(_PROVIDER, "a chunk whose audio is not base64") from None
                take(pcm)
