"""WebSocket sessions kept per worker process and credential, and the reconnect backoff.

A vendor session costs a handshake (and SLNG's `init`/`ready`), so a call borrows a live
session from `WsPool` and gives it back when its utterance is complete; a call that fails in
any way closes its session instead, so a half-read answer never leaks into the next call.
Sessions idle longer than the vendor's idle timeout (less a margin) are closed when next met
rather than kept alive with keepalives: a batch worker either uses a session again within
seconds or not for a long while. `ConnectBackoff` is SLNG's reconnect rule (providers.md
§1.10: 1, 2, 4 … 30 s) kept per credential: after a failed connect the next one waits, and a
wait longer than the call can afford is a retryable failure at once. Time and sleep are
parameters, so tests never sleep. `close()` (from `ProviderRegistry.close`) ends them all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jobs.error_codes import ErrorCode
from workers.providers.errors import ProviderUnavailable

T = TypeVar("T")


class StaleSession(ProviderUnavailable):
    """A pooled session turned out closed before it answered anything: open a fresh one."""


@dataclass
class Pooled:
    """One open session as the pool sees it: the connection and what the caller keeps on it."""

    connection: Any  # a websockets ClientConnection (or a test double with close())
    last_used: float
    state: dict[str, Any] = field(default_factory=dict)  # e.g. seconds of audio sent so far

    def close(self) -> None:
        try:
            self.connection.close()
        except Exception:  # closing a broken session must never fail the call
            return

    @property
    def alive(self) -> bool:
        state = getattr(self.connection, "state", None)
        return getattr(state, "name", "OPEN") == "OPEN"


class ConnectBackoff:
    """Per-credential reconnect delays: 1, 2, 4 … `cap_s` seconds after consecutive failures."""

    def __init__(
        self,
        *,
        base_s: float = 1.0,
        cap_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_s, self.cap_s, self._clock, self._sleep = base_s, cap_s, clock, sleep
        self._lock = threading.Lock()
        self._failures: dict[Hashable, int] = {}
        self._not_before: dict[Hashable, float] = {}

    def wait(self, credential: Hashable, *, max_wait_s: float) -> None:
        """Sleep until `credential` may connect again; ProviderUnavailable if that is later
        than `max_wait_s` from now (the call's remaining time)."""
        with self._lock:
            due = self._not_before.get(credential, 0.0) - self._clock()
        if due <= 0:
            return
        if due > max_wait_s:
            raise ProviderUnavailable(
                f"The last connection attempt failed; the next may start in {due:.1f} s "
                "(reconnect backoff), later than this call can wait; retrying later may help.",
                code=ErrorCode.PROVIDER_UNAVAILABLE,
            )
        self._sleep(due)

    def failed(self, credential: Hashable) -> float:
        """Record a failed connect; the delay before the next one (seconds)."""
        with self._lock:
            failures = self._failures.get(credential, 0) + 1
            self._failures[credential] = failures
            delay = float(min(self.cap_s, self.base_s * 2.0 ** (failures - 1)))
            self._not_before[credential] = self._clock() + delay
            return delay

    def succeeded(self, credential: Hashable) -> None:
        with self._lock:
            self._failures.pop(credential, None)
            self._not_before.pop(credential, None)


class WsPool:
    """Idle sessions by key (URL, credential, session config); thread-safe."""

    def __init__(self, *, idle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s, self._clock = idle_s, clock
        self._lock = threading.Lock()
        self._idle: dict[Hashable, list[Pooled]] = {}
        self.opened = 0  # sessions opened by this pool, for tests and the benchmark

    def run(
        self,
        key: Hashable,
        open_session: Callable[[], Any],
        exchange: Callable[[Pooled], T],
    ) -> T:
        """`exchange` on a pooled session (or a new one from `open_session`), which goes back
        to the pool if it is still open afterwards and is closed if `exchange` raised. A
        pooled session found closed (StaleSession) is replaced by a fresh one, once."""
        session = self._take(key)
        if session is not None:
            try:
                return self._use(key, session, exchange)
            except StaleSession:
                pass
        connection = open_session()
        with self._lock:
            self.opened += 1
        return self._use(key, Pooled(connection, self._clock()), exchange)

    def _use(self, key: Hashable, session: Pooled, exchange: Callable[[Pooled], T]) -> T:
        try:
            result = exchange(session)
        except BaseException:
            session.close()
            raise
        session.last_used = self._clock()
        if session.alive:
            with self._lock:
                self._idle.setdefault(key, []).append(session)
        else:
            session.close()
        return result

    def _take(self, key: Hashable) -> Pooled | None:
        stale: list[Pooled] = []
        found = None
        with self._lock:
            idle = self._idle.get(key, [])
            while idle and found is None:
                session = idle.pop()  # the most recently used: the likeliest to be alive
                fresh = self._clock() - session.last_used < self.idle_s
                if fresh and session.alive:
                    found = session
                else:
                    stale.append(session)
        for session in stale:
            session.close()
        return found

    def idle_count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._idle.values())

    def close(self) -> None:
        """Close every idle session (worker shutdown); sessions in use close after their call."""
        with self._lock:
            sessions = [s for idle in self._idle.values() for s in idle]
            self._idle.clear()
        for session in sessions:
            session.close()
