"""Deadlines share one alarm thread and still expire on time, in any order of creation."""

from __future__ import annotations

import socket
import threading
import time

from workers.deadline import Deadline


def test_many_deadlines_start_no_thread_each() -> None:
    """Fifty live deadlines add at most one thread to the process (none per call)."""
    Deadline(0.01).cancel()  # the shared alarm thread exists from here on
    before = threading.active_count()
    deadlines = [Deadline(30.0) for _ in range(50)]
    assert threading.active_count() <= before
    for deadline in deadlines:
        deadline.cancel()


def test_a_short_deadline_made_after_a_long_one_expires_on_time() -> None:
    """A 0.2 s deadline created after a 30 s one shuts its socket at about 0.2 s: the alarm
    thread wakes for the new earliest end instead of sleeping until the old one."""
    long = Deadline(30.0)
    left, right = socket.socketpair()
    try:
        started = time.monotonic()
        short = Deadline(0.2)
        short.watch_socket(left)
        assert left.recv(1) == b""  # returns once the deadline shuts the socket down
        elapsed = time.monotonic() - started
        assert short.expired and not long.expired
        assert 0.15 <= elapsed < 2.0, elapsed
    finally:
        long.cancel()
        left.close()
        right.close()


def test_a_canceled_deadline_never_shuts_its_sockets() -> None:
    """After cancel (the exchange is over, its connection back in the pool) expiry is a no-op."""
    left, right = socket.socketpair()
    try:
        deadline = Deadline(0.05)
        deadline.watch_socket(left)
        deadline.cancel()
        time.sleep(0.2)
        right.sendall(b"x")
        assert left.recv(1) == b"x"
    finally:
        left.close()
        right.close()
