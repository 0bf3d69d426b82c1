"""What every emulated vendor shares: rate limit, concurrency cap, faults, latency and the log.

A vendor route authenticates, then asks `Dials.try_rate` (the per-key rate limit) and
`Dials.try_admit` (the per-key cap), then
`Dials.hold`, which applies, in this order: magic text tokens, scripted failures queued via
the admin API, a random fault with probability `fault_rate`, and finally latency. `hold`
returns the `Fault` to answer with, or None to give the real answer. Every request ends in
`Dials.record`, which keeps a bounded log the admin endpoints expose.

Magic tokens inside TTS text:
    [[fail:N]]      the first N requests carrying exactly this text get 503, later ones succeed;
    [[status:CODE]] every request carrying it is answered with CODE (>= 400);
    [[latency:MS]]  MS of extra latency for that request;
    [[answer:KIND]] a 200 that misbehaves as KIND (config.ANSWER_FAULTS: html, random, ...),
                    as `EmulatorConfig.answer_fault` makes every answer misbehave.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import math
import random
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive

from emulator.config import EmulatorConfig
from emulator.pacing import StreamTiming
from emulator.ws_gate import WsSessions

MAX_RECORDS = 100_000
CLIENT_GONE = 499  # nginx's code for "client closed the request"; only ever logged

_TOKEN = re.compile(r"\[\[(fail|status|latency):(\d+)\]\]")
_ANSWER_TOKEN = re.compile(r"\[\[answer:([a-z_]+)\]\]")


@dataclass(frozen=True)
class Fault:
    """An answer the dials chose instead of the real one."""

    kind: str  # rate | cap | 500 | 503 | 429 | timeout | fail-token | status-token | script
    status: int
    retry_after: float | None = None


@dataclass
class Call:
    """One request as the log sees it; the vendor route fills it in as it learns more."""

    method: str
    path: str
    model: str | None
    request_id: str
    started_at: float = field(default_factory=time.time)
    started_clock: float = field(default_factory=time.perf_counter)
    key_fingerprint: str | None = None
    text_chars: int | None = None
    audio_bytes: int | None = None
    fault: str | None = None


@dataclass
class Script:
    """N forced failures for requests whose path contains `path_contains` (None: any)."""

    remaining: int
    status: int
    retry_after: float | None
    path_contains: str | None

    def view(self) -> dict[str, Any]:
        return {
            "fail_next": self.remaining,
            "status": self.status,
            "retry_after": self.retry_after,
            "path_contains": self.path_contains,
        }


def fingerprint(key: str) -> str:
    """First 8 hex digits of the key's SHA-256: enough to tell keys apart, useless to replay."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def strip_tokens(text: str) -> str:
    """The text without magic tokens, i.e. what would actually be spoken."""
    return _ANSWER_TOKEN.sub("", _TOKEN.sub("", text))


class Dials:
    """The mutable state behind one emulator process (one event loop, so no locks)."""

    def __init__(
        self, config: EmulatorConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self._clock = clock
        self._rng = random.Random(config.seed)
        # Per key: (tokens left, when they were counted); a bucket appears on first use, full.
        self._buckets: dict[str, tuple[float, float]] = {}
        self._in_flight: Counter[str] = Counter()
        self._scripts: list[Script] = []
        self._ids = itertools.count(1)
        self._records: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDS)
        self._fail_token_seen: Counter[str] = Counter()
        self.ws = WsSessions()  # WebSocket sessions, counted apart from requests
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._total = 0
        self._rate_limited = 0
        self._by_status: Counter[int] = Counter()
        self._max_in_flight = sum(self._in_flight.values())
        self._max_by_key: dict[str, int] = {fingerprint(k): n for k, n in self._in_flight.items()}

    # -- rate limit ------------------------------------------------------------------------

    def try_rate(self, key: str) -> Fault | None:
        """Take one of `key`'s tokens, or return the 429 saying when the next one arrives.

        A refused request takes no token, so a client that honours Retry-After gets in next.
        """
        rate = self.config.rate_limit_rps
        if not rate:
            return None
        capacity = max(1.0, rate)
        now = self._clock()
        tokens, counted_at = self._buckets.get(key, (capacity, now))
        tokens = min(capacity, tokens + (now - counted_at) * rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return None
        self._buckets[key] = (tokens, now)
        self._rate_limited += 1
        # Rounded first so float dust (0.1500000001 s) does not add a whole millisecond.
        wait_ms = math.ceil(round((1.0 - tokens) / rate * 1000, 6))
        return Fault("rate", 429, wait_ms / 1000)

    # -- concurrency cap -------------------------------------------------------------------

    def try_admit(self, key: str) -> bool:
        """Count the request in flight for `key`, or refuse it when the cap is reached."""
        cap = self.config.concurrency
        if cap and self._in_flight[key] >= cap:
            return False
        self._in_flight[key] += 1
        self._max_in_flight = max(self._max_in_flight, sum(self._in_flight.values()))
        fp = fingerprint(key)
        self._max_by_key[fp] = max(self._max_by_key.get(fp, 0), self._in_flight[key])
        return True

    def release(self, key: str) -> None:
        self._in_flight[key] -= 1
        if self._in_flight[key] <= 0:
            del self._in_flight[key]

    # -- faults and latency ----------------------------------------------------------------

    async def hold(
        self, path: str, text: str | None, receive: Receive, *, paced: bool = False
    ) -> Fault | None:
        """Pick this request's fault (tokens, then scripts, then chance) and wait its latency.

        `paced` (a streamed answer) skips the wait: the route paces its chunks by
        `stream_timing(text)` instead (emulator/pacing.py), so the stream ends when a whole
        answer would have arrived.
        """
        fault = self._token_fault(text) if text is not None else None
        fault = fault or self._scripted_fault(path) or self._random_fault()
        if fault is not None and fault.kind == "timeout":
            gone = await _sleep_unless_disconnected(self.config.timeout_s, receive)
            return Fault("timeout", CLIENT_GONE if gone else 504)
        if fault is not None:
            return fault
        delay_s = 0.0 if paced else self.latency_s(text)
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        return None

    async def generated(self, call: Call, audio_s: float) -> None:
        """Hold a whole (not streamed) TTS answer until the vendor could have made all of it:
        `audio_s / realtime_factor` after the request began (nothing when the dial is 0)."""
        rtf = self.config.realtime_factor
        if rtf > 0:
            left = call.started_clock + audio_s / rtf - time.perf_counter()
            if left > 0:
                await asyncio.sleep(left)

    def latency_s(self, text: str | None) -> float:
        """This answer's latency: the dial, jittered, plus the text's `[[latency:MS]]`."""
        return max(self._latency_ms(text) + self._jitter_ms(), 0.0) / 1000

    def stream_timing(self, text: str | None) -> StreamTiming:
        """A streamed answer's first-chunk and total times, jittered by one draw, so the
        answer shifts as a whole (ttfb past the total just sends everything at ttfb)."""
        jitter_ms = self._jitter_ms()
        return StreamTiming(
            ttfb_s=max(self.config.ttfb_ms + jitter_ms, 0.0) / 1000,
            total_s=max(self._latency_ms(text) + jitter_ms, 0.0) / 1000,
            realtime_factor=self.config.realtime_factor,
        )

    def _latency_ms(self, text: str | None) -> float:
        delay_ms = self.config.latency_ms
        if text is not None:
            delay_ms += sum(int(n) for name, n in _TOKEN.findall(text) if name == "latency")
        return delay_ms

    def _jitter_ms(self) -> float:
        jitter = self.config.latency_jitter_ms
        return self._rng.uniform(-jitter, jitter) if jitter else 0.0

    def answer_fault(self, text: str | None, kinds: tuple[str, ...]) -> str | None:
        """How this answer misbehaves: the text's `[[answer:KIND]]`, else the configured one;
        None when neither names one of `kinds` (the faults that apply to the route)."""
        found = _ANSWER_TOKEN.search(text) if text is not None else None
        kind = found.group(1) if found else self.config.answer_fault
        return kind if kind in kinds else None

    def _token_fault(self, text: str) -> Fault | None:
        fault: Fault | None = None
        for name, number in _TOKEN.findall(text):
            value = int(number)
            if name == "status" and value >= 400 and fault is None:
                fault = Fault("status-token", value, self._retry_after_for(value))
            elif name == "fail" and fault is None:
                self._fail_token_seen[text] += 1
                if self._fail_token_seen[text] <= value:
                    fault = Fault("fail-token", 503)
        return fault

    def _scripted_fault(self, path: str) -> Fault | None:
        for script in self._scripts:
            if script.path_contains is None or script.path_contains in path:
                script.remaining -= 1
                if script.remaining <= 0:
                    self._scripts.remove(script)
                return Fault("script", script.status, script.retry_after)
        return None

    def _random_fault(self) -> Fault | None:
        config = self.config
        if not config.fault_rate or self._rng.random() >= config.fault_rate:
            return None
        kind = self._rng.choice(config.fault_kinds)
        if kind == "timeout":
            return Fault("timeout", 504)
        status = int(kind)
        return Fault(kind, status, self._retry_after_for(status))

    def _retry_after_for(self, status: int) -> float | None:
        return self.config.retry_after_s if status == 429 else None

    # -- scripts ---------------------------------------------------------------------------

    def add_script(self, script: Script) -> None:
        if script.remaining > 0:
            self._scripts.append(script)

    def scripts(self) -> list[dict[str, Any]]:
        return [s.view() for s in self._scripts]

    def clear_scripts(self) -> None:
        self._scripts.clear()

    # -- the request log -------------------------------------------------------------------

    async def logged(self, call: Call, answer: Awaitable[Any]) -> Any:
        """Await `answer` (a route's response) and log `call` with its status; 500 when the
        answer raised, so a crash in the emulator shows in the log too."""
        status = 500
        try:
            response = await answer
            status = response.status_code
        finally:
            self.record(call, status)
        return response

    def record(self, call: Call, status: int) -> None:
        self._total += 1
        self._by_status[status] += 1
        self._records.append(
            {
                "id": next(self._ids),
                "method": call.method,
                "path": call.path,
                "model": call.model,
                "status": status,
                "started_at": call.started_at,
                "duration_ms": round((time.perf_counter() - call.started_clock) * 1000, 3),
                "request_id": call.request_id,
                "key_fingerprint": call.key_fingerprint,
                "text_chars": call.text_chars,
                "audio_bytes": call.audio_bytes,
                "fault": call.fault,
            }
        )

    def requests(self) -> list[dict[str, Any]]:
        return list(self._records)

    def stats(self) -> dict[str, Any]:
        return {
            "in_flight": sum(self._in_flight.values()),
            "max_in_flight": self._max_in_flight,
            "max_in_flight_by_key": dict(self._max_by_key),
            "total": self._total,
            "rate_limited": self._rate_limited,
            "by_status": {str(k): v for k, v in sorted(self._by_status.items())},
            "ws": self.ws.stats(),
        }

    def reset(self) -> None:
        """Forget the log, the counters and `[[fail:N]]` progress; keep queued scripts."""
        self._records.clear()
        self._fail_token_seen.clear()
        self.ws.reset()
        self._reset_counters()


async def _sleep_unless_disconnected(seconds: float, receive: Receive) -> bool:
    """Sleep, but stop early when the client hangs up; True if it did.

    A held request that the client has abandoned would otherwise keep its in-flight slot for
    the whole `timeout_s` and make the client's retry hit the concurrency cap.
    """

    async def wait_for_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    sleeper = asyncio.ensure_future(asyncio.sleep(seconds))
    watcher = asyncio.ensure_future(wait_for_disconnect())
    try:
        await asyncio.wait({sleeper, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, watcher):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return watcher.done() and not watcher.cancelled()
