"""SLNG's WebSocket TTS from our client: one pooled session per thread shared by many lines
versus a fresh session per line, and what one connection carries.

The adapter alone (`SlngProvider` over `WsLink`, no queue, database or storage), against the
emulator, so the figures are the transport's:

1. Per connection: one thread, one pooled session, lines back to back with no latency:
   utterances/s and WebSocket messages/s (both directions) on that one connection, to set
   against SLNG's "100+ messages/s per connection".
2. Sharing: C threads, N lines, TTFB 100 ms and latency L: items/s as a ratio to C/L and
   sessions opened, with the pool (one `init`/`ready` per session, then one `text`+`flush`
   per line, the audio ended by `flushed`) and with a fresh session per line (idle_s=0: the
   pool closes every session it meets again, so each line pays a handshake and an `init`).

    python -m bench.ws_sessions
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.throughput import CLI, KEY, start, stop, wait_http
from tests.services import free_port
from workers.providers import ws_link
from workers.providers.slng import SlngProvider
from workers.providers.slng_ws import IDLE_S, KEEPALIVE
from workers.providers.ws_link import WsLink

OPTIONS = {"transport": "websocket", "sample_rate": 8000}


class Messages:
    """Counts the WebSocket messages our client sends and receives (bench-only wrapping)."""

    def __init__(self) -> None:
        self.count = 0
        for name in ("send", "recv"):
            setattr(ws_link.Session, name, self._counting(getattr(ws_link.Session, name)))

    def _counting(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(session: Any, *args: Any) -> Any:
            self.count += 1
            return method(session, *args)

        return counted


def provider(base: str, *, pooled: bool) -> SlngProvider:
    if pooled:  # what the worker builds
        link = WsLink("SLNG", "SLNG_API_KEY", KEY, idle_s=IDLE_S, keepalive=KEEPALIVE)
    else:
        link = WsLink("SLNG", "SLNG_API_KEY", KEY, idle_s=0.0)
    return SlngProvider(httpx.Client(), base_url=f"{base}/slng", api_key=KEY, ws_link=link)


def speak(adapter: SlngProvider, lines: list[str], threads: int) -> float:
    """Seconds to speak `lines` over `threads` threads."""
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(
            pool.map(
                lambda text: adapter.synthesize(
                    text, model="slng/deepgram/aura:2-en", voice=None, options=OPTIONS
                ),
                lines,
            )
        )
    return time.perf_counter() - started


def opened(base: str) -> int:
    stats = httpx.get(f"{base}/_emulator/stats").json()
    count: int = stats["ws"]["opened"]
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--ttfb-ms", type=float, default=100.0)
    parser.add_argument("--cap", type=int, default=16)
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = Path(tempfile.mkdtemp(prefix="sb-ws-sessions-"))
    emulator = start(
        [CLI, "emulator", "--port", str(port)], {"EMULATOR_API_KEYS": KEY}, logs / "e.log"
    )
    try:
        wait_http(f"{base}/_emulator/health")
        messages = Messages()
        lines = [f"Line {n} of the voiceover." for n in range(args.items)]
        adapter = provider(base, pooled=True)
        speak(adapter, lines[:20], 1)  # warm: the session and the emulator's speech cache
        messages.count = 0
        took = speak(adapter, lines[:1000], 1)
        print(f"ws_sessions: one connection, no latency, 1,000 lines of {len(lines[0])} chars")
        print(
            f"  {1000 / took:.0f} utterances/s, {messages.count / took:.0f} messages/s "
            f"({messages.count / 1000:.1f} per line) on one connection"
        )
        adapter.close()
        timing = {"latency_ms": args.latency_ms, "ttfb_ms": args.ttfb_ms}
        httpx.patch(f"{base}/_emulator/config", json=timing).raise_for_status()
        ceiling = args.cap / (args.latency_ms / 1000)
        print(
            f"  sharing: N={args.items} TTFB={args.ttfb_ms:.0f}ms L={args.latency_ms:.0f}ms "
            f"C={args.cap} threads, ceiling C/L {ceiling:.1f} items/s"
        )
        for pooled in (True, False):
            adapter = provider(base, pooled=pooled)
            before = opened(base)
            took = speak(adapter, lines, args.cap)
            rate = args.items / took
            how = "pooled sessions      " if pooled else "fresh session a line"
            print(
                f"  {how} {rate:6.1f} items/s = {rate / ceiling:.2f} x C/L, "
                f"sessions opened {opened(base) - before}"
            )
            adapter.close()
    finally:
        stop(emulator)


if __name__ == "__main__":
    main()
