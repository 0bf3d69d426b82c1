"""WebSocket sessions kept per worker process and credential, their keepalives, and the
reconnect backoff.

A vendor session costs a handshake (and SLNG's `init`/`ready`), so a call borrows a live
session from `WsPool` and gives it back when its utterance is complete; a call that fails in
any way closes its session instead, so a half-read answer never leaks into the next call.

A vendor with a keepalive message (SLNG's `{"type":"keepalive"}`, providers.md §1.8) has it
sent on each idle session every `keepalive_s` (30 s, pipecat's cadence against SLNG's idle
close) by one daemon thread per pool, started when the first session is pooled. The thread
takes a session out of the pool while it sends, so no call borrows one mid-send, and closes a
session whose keepalive cannot be sent within a couple of seconds. `idle_s` stays a cap even
then (five minutes for SLNG): an idle session holds one of the key's concurrent connections
at the vendor, which refuses more with `rate_limit`, so one unused that long is closed and a
later call pays one handshake. A vendor without a keepalive (Smallest closes after 60 s of
silence) has its sessions closed when met idle past `idle_s`, under its timeout.

`ConnectBackoff` is SLNG's reconnect rule (providers.md §1.10: 1, 2, 4 … 30 s) kept per
credential: after a failed connect the next one waits, and a wait longer than the call can
afford is a retryable failure at once. Time and the thread's wait are parameters, so tests
never sleep. `close()` (from `ProviderRegistry.close`, at worker shutdown) stops the thread
and closes every session with a normal close frame.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jobs.error_codes import ErrorCode
from workers.deadline import Deadline
from workers.providers.errors import ProviderUnavailable

T = TypeVar("T")
log = logging.getLogger(__name__)

_KEEPALIVE_SEND_S = 2.0  # a few bytes on an idle socket: slower means the link is gone
_SWEEP_EVERY_S = 5.0  # the thread's wake-up; keepalives go out 0 to 5 s after they are due
_JOIN_S = 5.0  # close() waits this long for a sweep in progress (sends are bounded)


class StaleSession(ProviderUnavailable):
    """A pooled session turned out closed before it answered anything: open a fresh one."""


@dataclass
class Pooled:
    """One open session as the pool sees it: the connection and what the caller keeps on it."""

    connection: Any  # a websockets ClientConnection (or a test double with close())
    last_used: float
    state: dict[str, Any] = field(default_factory=dict)  # e.g. seconds of audio sent so far
    last_keepalive: float = -math.inf  # a keepalive does not count as use: idle_s still caps

    def close(self) -> None:
        try:
            self.connection.close()
        except Exception:  # closing a broken session must never fail the call
            return

    @property
    def alive(self) -> bool:
        state = getattr(self.connection, "state", None)
        return getattr(state, "name", "OPEN") == "OPEN"

    def send_keepalive(self, message: str, *, timeout_s: float = _KEEPALIVE_SEND_S) -> bool:
        """Send `message`; False if the session is closed or the send did not finish within
        `timeout_s` (the socket is shut down then, so a stuck send cannot hold the thread)."""
        deadline = Deadline(timeout_s)
        sock = getattr(self.connection, "socket", None)
        if sock is not None:
            deadline.watch_socket(sock)
        try:
            self.connection.send(message)
        except Exception:  # ConnectionClosed, OSError: either way the session is gone
            return False
        finally:
            deadline.cancel()
        return self.alive and not deadline.expired


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
    """Idle sessions by key (URL, credential, session config), kept alive with the vendor's
    `keepalive` message when it has one; thread-safe."""

    def __init__(
        self,
        *,
        idle_s: float,
        keepalive: str | None = None,
        keepalive_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        """`wait(seconds)` is the keepalive thread's pause between sweeps, True when the
        thread should stop; by default it waits for `close()`."""
        if keepalive is not None and keepalive_s <= 0:
            raise ValueError("keepalive_s must be positive")
        self.idle_s, self.keepalive, self.keepalive_s = idle_s, keepalive, keepalive_s
        self.sweep_every_s = min(_SWEEP_EVERY_S, keepalive_s / 3)
        self._clock = clock
        self._lock = threading.Lock()
        self._idle: dict[Hashable, list[Pooled]] = {}
        self._closing = threading.Event()
        self._wait = wait or self._closing.wait
        self._closed = False  # after close(), returned sessions are closed, not pooled
        self.keeper: threading.Thread | None = None  # the keepalive thread, once started
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
        self._give_back(key, session)
        return result

    def _give_back(self, key: Hashable, session: Pooled) -> None:
        """Pool `session` if it is still open (and the pool is not closed); else close it."""
        with self._lock:
            pooled = session.alive and not self._closed
            if pooled:
                idle = self._idle.setdefault(key, [])
                idle.append(session)
                # One back from its keepalive may be older than those returned meanwhile, and
                # _take pops the most recently used.
                idle.sort(key=lambda s: s.last_used)
                self._start_keeper()
        if not pooled:
            session.close()

    def _start_keeper(self) -> None:
        # Under self._lock. Lazily: a vendor without keepalives, or a pool that never holds a
        # session, costs no thread.
        if self.keepalive is None or self.keeper is not None:
            return
        self.keeper = threading.Thread(target=self._keep_alive, name="ws-keepalive", daemon=True)
        self.keeper.start()

    def _keep_alive(self) -> None:
        while not self._wait(self.sweep_every_s):
            try:
                self.sweep_idle()
            except Exception:  # a bug here must not end keepalives for the process's life
                log.exception("WebSocket keepalive sweep failed")

    def sweep_idle(self) -> None:
        """One pass of the keepalive thread (tests call it directly): close idle sessions past
        `idle_s` or closed by the vendor, and send the keepalive on those quiet for
        `keepalive_s`, out of the pool while it is sent; a failed send closes the session."""
        now, keepalive = self._clock(), self.keepalive
        expired: list[Pooled] = []
        due: list[tuple[Hashable, Pooled]] = []
        with self._lock:
            for key, idle in list(self._idle.items()):
                kept = []
                for session in idle:
                    quiet_s = now - max(session.last_used, session.last_keepalive)
                    if now - session.last_used >= self.idle_s or not session.alive:
                        expired.append(session)
                    elif keepalive is not None and quiet_s >= self.keepalive_s:
                        due.append((key, session))
                    else:
                        kept.append(session)
                if kept:
                    self._idle[key] = kept
                else:
                    del self._idle[key]
        for session in expired:
            session.close()
        for key, session in due:
            if keepalive is not None and session.send_keepalive(keepalive):
                session.last_keepalive = now
                self._give_back(key, session)
            else:
                session.close()

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
        """Stop the keepalive thread and close every idle session (worker shutdown); sessions
        in use, or being sent a keepalive, are closed when they come back."""
        self._closing.set()
        with self._lock:
            keeper = self.keeper
        if keeper is not None:
            keeper.join(timeout=_JOIN_S)
        with self._lock:
            self._closed = True
            sessions = [s for idle in self._idle.values() for s in idle]
            self._idle.clear()
        for session in sessions:
            session.close()
