"""This process's side of one credential's shared limit: a gate as wide as the limit, whose
waiters are served in arrival order and may be handed the leaver's Redis slot.

Threads beyond the width wait here on an Event (no CPU, no Redis) instead of polling Redis.
A thread leaving with a slot it may pass on (`workers.throttle` decides) gives it to the
longest waiter, so the next call starts without a release and an acquire: two Redis round
trips, each of which also waits for the GIL on a busy worker (bench/throughput.py: ~6 ms of
a 220 ms cycle). Without a waiter the slot goes back to Redis first, then the local place.

    gate = LocalGate(16)
    entered, permit = gate.enter(timeout_s=5)  # permit: one passed on by a leaver, or None
    ...  # (no permit: acquire one from Redis) the call
    if not (passable and gate.pass_on(permit)):
        permit.release(outcome)  # back to Redis, then the place to a waiter
        gate.leave()
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

__all__ = ["LocalGate"]

P = TypeVar("P")


class _Waiter(Generic[P]):
    __slots__ = ("event", "handed")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.handed: P | None = None


class LocalGate(Generic[P]):
    """At most `width` holders in this process; waiters are served first come, first served."""

    def __init__(self, width: int) -> None:
        self._lock = threading.Lock()
        self._free = width
        self._waiters: deque[_Waiter[P]] = deque()

    def enter(self, timeout_s: float) -> tuple[bool, P | None]:
        """(True, a permit passed on or None) once in; (False, None) after `timeout_s`."""
        with self._lock:
            if self._free > 0:
                self._free -= 1
                return True, None
            waiter: _Waiter[P] = _Waiter()
            self._waiters.append(waiter)
        if waiter.event.wait(max(timeout_s, 0.0)):
            return True, waiter.handed
        with self._lock:
            if not waiter.event.is_set():
                self._waiters.remove(waiter)
                return False, None
        return True, waiter.handed  # served just as the wait ran out

    def pass_on(self, permit: P) -> bool:
        """Hand `permit` and this holder's place to the longest waiter: False if none waits
        (the caller keeps the permit and still holds its place: release both)."""
        with self._lock:
            if not self._waiters:
                return False
            waiter = self._waiters.popleft()
            waiter.handed = permit
            waiter.event.set()  # under the lock: a waiter timing out now sees it served
        return True

    def leave(self) -> None:
        """Give this holder's place (without a permit) to the longest waiter, or free it."""
        with self._lock:
            if not self._waiters:
                self._free += 1
                return
            waiter = self._waiters.popleft()
            waiter.event.set()

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiters)
