"""This process's side of one credential's shared limit: a gate as wide as the limit, whose
waiters are served in arrival order and may be handed the leaver's Redis slot.

Threads beyond the width wait here on an Event (no CPU, no Redis) instead of polling Redis.
A thread leaving with a slot it may pass on (`workers.throttle` decides) gives it first to
the longest *seeker* (a thread already inside that Redis refused, because other processes
hold the rest of the limit: it waits between polls in `seek`), else to the longest waiter
outside, so the next call starts without a release and an acquire: two Redis round trips,
each of which also waits for the GIL on a busy worker (bench/throughput.py: ~6 ms of a
220 ms cycle). Seekers first, or with several worker processes on one limit they would
starve while the slots they poll for go round the threads outside. With nobody waiting the
slot may be parked instead: the next thread to enter (or seek) takes it, and
`workers.throttle` sends back to Redis those nobody took within a moment. Otherwise the
slot goes back to Redis first, then the local place.

    gate = LocalGate(16)
    entered, permit = gate.enter(timeout_s=5)  # permit: one passed on or parked, or None
    while permit is None and not redis_admits():
        permit = gate.seek(0.02)  # between polls: one passed on by a leaver, or None
    ...  # the call
    if not (passable and gate.pass_on(permit, park_at=time.monotonic())):
        permit.release(outcome)  # back to Redis, then the place to a waiter
        gate.leave()
    ...
    for stale in gate.unpark(parked_before=time.monotonic() - 0.05):
        stale.release()  # nobody came for it
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["LocalGate", "ParkTimer"]

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
        self._waiters: deque[_Waiter[P]] = deque()  # outside, for a place (maybe a permit)
        self._seekers: deque[_Waiter[P]] = deque()  # inside, for a permit between Redis polls
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
        served = self._wait(waiter, self._waiters, timeout_s)
        return served, waiter.handed

    def seek(self, timeout_s: float) -> P | None:
        """For a holder of a place without a permit (Redis refused it): a parked permit, or
        one passed on within `timeout_s` (seekers are served before the waiters outside);
        None when none came, to ask Redis again."""
        with self._lock:
            if self._parked:
                return self._parked.pop()[0]
            waiter: _Waiter[P] = _Waiter()
            self._seekers.append(waiter)
        self._wait(waiter, self._seekers, timeout_s)
        return waiter.handed

    def _wait(self, waiter: _Waiter[P], queue: deque[_Waiter[P]], timeout_s: float) -> bool:
        """Whether `waiter` (queued in `queue`) was served within `timeout_s`."""
        if waiter.event.wait(max(timeout_s, 0.0)):
            return True
        with self._lock:
            if not waiter.event.is_set():
                queue.remove(waiter)
                return False
        return True  # served just as the wait ran out

    def pass_on(self, permit: P, *, park_at: float | None = None) -> bool:
        """Hand `permit` to the longest seeker (this holder's place then goes as `leave`
        gives it), else `permit` and the place to the longest waiter. With neither, park the
        permit (marked `park_at`) for the next caller to enter and free the place; without
        `park_at`, False (the caller keeps the permit and its place: release both)."""
        with self._lock:
            if self._seekers:
                seeker = self._seekers.popleft()
                seeker.handed = permit
                seeker.event.set()  # under the lock: a seeker timing out now sees it served
                self._leave_locked()
                return True
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
            self._leave_locked()

    def _leave_locked(self) -> None:
        if not self._waiters:
            self._free += 1
            return
        self._waiters.popleft().event.set()

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

    def seeking(self) -> int:
        with self._lock:
            return len(self._seekers)


class ParkTimer(Generic[P]):
    """Sends back (`release`) the permits parked in `gates()` that nobody took within
    `park_s`: armed by each park, it fires `park_s` later and rearms while any stay parked,
    so a permit goes back `park_s` to 2 x `park_s` after it was parked."""

    def __init__(
        self,
        park_s: float,
        gates: Callable[[], list[LocalGate[P]]],
        release: Callable[[P], None],
    ) -> None:
        self.park_s, self._gates, self._release = park_s, gates, release
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if self._timer is not None:  # the usual case on a busy worker: no lock taken
            return
        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(self.park_s, self._fire)
                self._timer.daemon = True
                self._timer.start()

    def close(self) -> None:
        """Send back every parked permit now (the process's shutdown)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self._fire(parked_before=math.inf)

    def _fire(self, parked_before: float | None = None) -> None:
        with self._lock:
            self._timer = None
        gates = self._gates()
        before = time.monotonic() - self.park_s if parked_before is None else parked_before
        for gate in gates:
            for permit in gate.unpark(parked_before=before):
                self._release(permit)
        if any(gate.parked() for gate in gates):
            self.arm()
