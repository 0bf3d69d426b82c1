"""Limits the HTTP server enforces before the app sees a request: head size and head time.

uvicorn runs httptools here (the fast parser; see pyproject), which has no cap on the request
line and headers and no deadline for receiving them: a 256 MiB header to /healthz was read
whole (73 s, +500 MiB) and every other request stalled meanwhile, and a client that sends
nothing, or drips a byte now and then, holds its connection for good (issue 9). uvicorn's
h11 parser caps the head (`h11_max_incomplete_event_size`) but costs about a third more CPU
per poll, and has no head deadline either; so this subclass adds both to httptools:

- a request head (request line and headers) over `MAX_HEAD_BYTES` is answered 431
  `headers_too_large`, counted as the bytes arrive, before the parser joins them;
- a head not complete `HEAD_TIMEOUT_S` after its connection opened (or after its first byte,
  on a kept-alive connection) is answered 408 `request_timeout`.

Either way the connection is closed. Bodies are capped by `jobs.api.limits.BodySizeLimit`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from jobs.error_codes import ErrorCode
from jobs.schemas import ErrorBody, ErrorEnvelope

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 32 * 1024  # nginx's default buffers hold 4 x 8 KiB; our heads are < 2 KiB
HEAD_TIMEOUT_S = 10.0


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a size cap and a deadline on each request head."""

    max_head_bytes = MAX_HEAD_BYTES
    head_timeout_s = HEAD_TIMEOUT_S

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_bytes = 0
        self._in_head = True
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if not self._in_head:
            # A pipelined head that starts in this chunk is not counted: one read at most.
            super().data_received(data)
            return
        room = self.max_head_bytes - self._head_bytes
        head = data[:room]
        self._head_bytes += len(head)
        if head:
            super().data_received(head)
        if len(data) > len(head) and not self.transport.is_closing():
            if self._in_head:
                self._refuse(
                    431,
                    "Request Header Fields Too Large",
                    ErrorCode.HEADERS_TOO_LARGE,
                    f"The request line and headers are over {self.max_head_bytes} bytes; "
                    "send shorter ones.",
                )
                return
            super().data_received(data[len(head) :])

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:
            self._start_head()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def _start_head(self) -> None:
        self._in_head, self._head_bytes = True, 0
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(
                408,
                "Request Timeout",
                ErrorCode.REQUEST_TIMEOUT,
                f"The request line and headers did not arrive within {self.head_timeout_s:g} s.",
            )

    def _refuse(self, status: int, reason: str, code: ErrorCode, message: str) -> None:
        log.info("refused a request head: %s (%s)", code, self.client)
        payload = ErrorEnvelope(error=ErrorBody(code=code, message=message)).model_dump_json()
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
        )
        self._stop_head_timer()
        self.transport.write(head.encode() + payload.encode())
        self.transport.close()
