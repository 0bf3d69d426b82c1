"""What the emulator's WebSocket routes share: auth on the upgrade, session counts, idle waits.

A refused upgrade is an HTTP answer with a body (providers.md §1.8: 401 without a key, 400
with a sentence), sent through ASGI's websocket denial response. `WsSessions` counts the
sessions open per vendor and key (for each vendor's own cap) and every session ever opened
(`GET /_emulator/stats` → `ws`), so tests can assert that pooled sessions are reused.
`receive_within` is a receive with the vendor's idle timeout; `drop_due` decides, from the
`ws_drop_every` dial, which utterance is cut off mid-way.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

# Close codes (RFC 6455): a normal end, a policy violation, an internal error, try later.
NORMAL, POLICY, INTERNAL, TRY_LATER = 1000, 1008, 1011, 1013


class IdleTimeout(Exception):
    """The client sent nothing for the vendor's idle time."""


class WsSessions:
    """Open sessions per (vendor, key), sessions ever opened per vendor, utterances seen."""

    def __init__(self) -> None:
        self._open: Counter[tuple[str, str]] = Counter()
        self._opened: Counter[str] = Counter()
        self._max_open = 0
        self._utterances = 0

    def open_count(self, vendor: str, key: str) -> int:
        return self._open[(vendor, key)]

    def opened(self, vendor: str, key: str) -> None:
        self._open[(vendor, key)] += 1
        self._opened[vendor] += 1
        self._max_open = max(self._max_open, sum(self._open.values()))

    def closed(self, vendor: str, key: str) -> None:
        self._open[(vendor, key)] -= 1
        if self._open[(vendor, key)] <= 0:
            del self._open[(vendor, key)]

    def drop_due(self, every: int) -> bool:
        """True for every `every`-th utterance of the process (never when `every` is 0)."""
        self._utterances += 1
        return bool(every) and self._utterances % every == 0

    def stats(self) -> dict[str, Any]:
        return {
            "open": sum(self._open.values()),
            "max_open": self._max_open,
            "opened": sum(self._opened.values()),
            "opened_by_vendor": dict(self._opened),
        }

    def reset(self) -> None:
        self._opened.clear()
        self._max_open = sum(self._open.values())
        self._utterances = 0


def bearer(websocket: WebSocket, allowed: frozenset[str], *, query_token: bool) -> str | None:
    """The upgrade's Bearer key (or SLNG's `?token=`) when accepted, else None."""
    scheme, _, key = websocket.headers.get("authorization", "").partition(" ")
    key = key.strip() if scheme.lower() == "bearer" else ""
    if not key and query_token:
        key = websocket.query_params.get("token", "").strip()
    if key and (not allowed or key in allowed):
        return key
    return None


async def deny(websocket: WebSocket, status: int, body: dict[str, Any]) -> None:
    """Refuse the upgrade with an HTTP `status` and a JSON `body`."""
    await websocket.send_denial_response(JSONResponse(body, status_code=status))


async def receive_within(websocket: WebSocket, idle_s: float) -> str | bytes | None:
    """The next text or binary message; None when the client has gone; IdleTimeout after
    `idle_s` of silence."""
    try:
        message = await asyncio.wait_for(websocket.receive(), timeout=idle_s or None)
    except TimeoutError:
        raise IdleTimeout from None
    if message["type"] == "websocket.disconnect":
        return None
    if message.get("bytes") is not None:
        return bytes(message["bytes"])
    return str(message.get("text") or "")


def json_message(raw: str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


async def never_disconnects() -> dict[str, Any]:
    """A `receive` for `Dials.hold`: a session's messages are the route's to read, not its."""
    await asyncio.Event().wait()
    return {"type": "http.disconnect"}  # pragma: no cover - the wait never ends
