"""A wall-clock deadline for an HTTP exchange that per-read timeouts cannot give.

When the time is up the sockets of the exchange are shut down, so a blocked read returns at
once. It learns them one of two ways: inside `with watching(deadline):` on a client built on
`workers.interrupt.interruptible_transport` (every socket read or written, pooled keep-alive
connections included: the provider calls), and as httpcore's `trace` extension (sockets the
exchange opens itself, on any client: the source fetcher, which never reuses a connection).
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Mapping
from contextlib import suppress
from typing import Any


class Deadline:
    """One wall-clock budget for a whole exchange (all hops, headers and body).

    httpx timeouts are per read, so a server that trickles a byte now and then never trips
    them; at expiry a timer shuts down the sockets the fetch opened (found through httpcore's
    `trace` extension), which makes a blocked read return at once.
    """

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._fired = self._canceled = False
        _ALARMS.add(self._end, self)

    @property
    def expired(self) -> bool:
        return self._fired or time.monotonic() >= self._end

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpcore trace hook: remember every socket as soon as it is connected."""
        if not event.endswith((".connect_tcp.complete", ".start_tls.complete")):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            self.watch_socket(sock)

    def watch_socket(self, sock: socket.socket) -> None:
        """Shut `sock` down at expiry (at once if the deadline has already passed)."""
        with self._lock:
            if sock not in self._sockets:
                self._sockets.append(sock)
            fired = self._fired
        if fired:
            _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._canceled:
                return
            self._fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)

    def cancel(self) -> None:
        """The exchange is over: never shut its sockets (they may be back in the pool)."""
        with self._lock:
            self._canceled = True


class _Alarms:
    """One thread for every Deadline of the process, instead of a timer thread per call
    (a provider call is the worker's hot path): it sleeps until the earliest end and expires
    what is due. Canceled deadlines leave the heap when their time comes, so it holds at
    most (calls per second x the longest deadline) entries."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, end: float, deadline: Deadline) -> None:
        with self._ready:
            heapq.heappush(self._heap, (end, next(self._order), deadline))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline:  # a new earliest end: wake the sleeper
                self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._ready.wait(wait)
                _end, _n, due = heapq.heappop(self._heap)
            due._expire()


_ALARMS = _Alarms()


def _shutdown(sock: socket.socket) -> None:
    # The plain-socket method: SSLSocket.shutdown would also drop its SSL object under the
    # reading thread's feet. After TLS wraps a socket the original is detached (OSError).
    with suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
