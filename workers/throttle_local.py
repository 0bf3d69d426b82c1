"""This process's side of one credential's shared limit: a gate as wide as the limit, whose
waiters are served in arrival order and may be handed the leaver's Redis slot.

Threads beyond the width wait here on an Event (no CPU, no Redis) instead of polling Redis.
A thread leaving with a slot it may pass on (`workers.throttle` decides) gives it to the
longest waiter, so the next call starts without a release and an acquire: two Redis round
trips, each of which also waits for the GIL on a busy worker (bench/throughput.py: ~6 ms of
a 220 ms cycle). With no waiter the slot may be parked instead: the next thread to enter
takes it, and `workers.throttle` sends back to Redis those nobody took within a moment.
Otherwise the slot goes back to Redis first, then the local place.

    gate = LocalGate(16)
    entered, permit = gate.enter(timeout_s=5)  # permit: one passed on or parked, or None
    ...  # (no permit: acquire one from Redis) the call
    if not (passable and gate.pass_on(permit, park_at=time.monotonic())):
        permit.release(outcome)  # back to Redis, then the place to a waiter
        gate.leave()
    ...
    for stale in gate.unpark(parked_before=time.monotonic() - 0.05):
        stale.release()  # nobody came for it
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
        self._parked: deque[tuple[P, float]] = deque()  # oldest first, with when parked

    def enter(self, timeout_s: float) -> tuple[bool, P | None]:
        """(True, a permit passed on or parked, or None) once in; (False, None) after
        `timeout_s`. Of the parked permits the newest is taken, so the others age out."""
        with self._lock:
            if self._free > 0:
                self._free -= 1
                return True, self._parked.pop()[0] if self._parked else None
            waiter: _Waiter[P] = _Waiter()
            self._waiters.append(waiter)
        if waiter.event.wait(max(timeout_s, 0.0)):
            return True, waiter.handed
        with self._lock:
            if not waiter.event.is_set():
                self._waiters.remove(waiter)
                return False, None
        return True, waiter.handed  # served just as the wait ran out

    def pass_on(self, permit: P, *, park_at: float | None = None) -> bool:
        """Hand `permit` and this holder's place to the longest waiter. With none waiting,
        park the permit (marked `park_at`) for the next caller to enter and free the place;
        without `park_at`, False (the caller keeps the permit and its place: release both)."""
        with self._lock:
            if not self._waiters:
                if park_at is None:
                    return False
                self._parked.append((permit, park_at))
                self._free += 1
                return True
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

    def unpark(self, *, parked_before: float) -> list[P]:
        """Take out the parked permits marked before `parked_before` (all: `math.inf`), for
        the caller to release."""
        with self._lock:
            stale: list[P] = []
            while self._parked and self._parked[0][1] < parked_before:
                stale.append(self._parked.popleft()[0])
            return stale

    def parked(self) -> int:
        with self._lock:
            return len(self._parked)

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiters)
