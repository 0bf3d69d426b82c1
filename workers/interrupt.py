"""Stopping one item's work from another thread: the lease keeper's answer to a cancel.

Each item runs with an `ItemStop`. When the item's claim is lost (its job was canceled, or
its lease was taken over), the heartbeat sets it (`workers.leases`), and the item's thread
stops at its next check or read: `stop.check()` raises `ItemStopped`, and a provider call
running inside `with stop.interruptible():` is cut off at once, because setting the stop
shuts down every socket that thread read or wrote during the block.

Why sockets: httpx timeouts are per read, so a hung provider holds a blocked `recv` for the
whole read timeout, and a pooled keep-alive connection is never seen by httpcore's `trace`
hook (it reports new connections only, which is what `workers.deadline` relies on). So the
provider client's transport (`interruptible_transport`) wraps httpcore's network backend:
every read and write on the calling thread registers its socket with that thread's stop.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, Protocol

import httpcore
import httpx

__all__ = [
    "ItemStop",
    "ItemStopped",
    "SocketWatcher",
    "interruptible_transport",
    "provider_call",
    "watching",
]

# .stop: the ItemStop whose provider call this thread is making; .watchers: everything that
# wants to hear of the sockets this thread reads or writes (the item's stop, a call deadline).
_current = threading.local()


class SocketWatcher(Protocol):
    def watch_socket(self, sock: socket.socket) -> None:
        """Remember `sock` (used by this thread now) so it can be shut down later."""


def _watchers() -> list[SocketWatcher]:
    found: list[SocketWatcher] | None = getattr(_current, "watchers", None)
    if found is None:
        found = _current.watchers = []
    return found


@contextmanager
def watching(watcher: SocketWatcher) -> Iterator[None]:
    """Within the block, every socket this thread reads or writes through the interruptible
    transport is handed to `watcher` (pooled keep-alive connections included)."""
    watchers = _watchers()
    watchers.append(watcher)
    try:
        yield
    finally:
        watchers.remove(watcher)


class ItemStopped(Exception):
    """The item's claim was lost mid-work (job canceled or lease taken over): stop now."""


class ItemStop:
    """Set once, from any thread; the item's own thread checks it and may be interrupted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._sockets: set[socket.socket] = set()

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Stop the item: later checks raise, and its in-flight call's sockets shut down."""
        with self._lock:
            self._set = True
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            _shutdown(sock)

    def check(self) -> None:
        if self._set:
            raise ItemStopped("the item's claim was lost (its job was canceled?)")

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Run a provider call that `set()` may cut off; any error it raises once stopped
        becomes ItemStopped (it was our doing, not the provider's)."""
        self.check()
        _current.stop = self
        try:
            with watching(self):
                yield
        except Exception as error:
            if self._set:
                raise ItemStopped("the item was stopped during its provider call") from error
            raise
        finally:
            _current.stop = None
            # The connection goes back to the pool for other threads: never shut it later.
            with self._lock:
                self._sockets.clear()

    def watch_socket(self, sock: socket.socket) -> None:
        with self._lock:
            if not self._set:
                self._sockets.add(sock)
                return
        _shutdown(sock)


@contextmanager
def provider_call() -> Iterator[None]:
    """One provider attempt of the item this thread runs: refused once its stop is set, and
    an error it raises after the stop becomes ItemStopped, so no retry loop backs off and
    tries again (outside an `interruptible` block it changes nothing)."""
    stop: ItemStop | None = getattr(_current, "stop", None)
    if stop is not None:
        stop.check()
    try:
        yield
    except Exception as error:
        if stop is not None and stop.is_set():
            raise ItemStopped("the item was stopped during its provider call") from error
        raise


def _shutdown(sock: socket.socket) -> None:
    # The plain-socket method, as in workers.deadline: it also works under a TLS wrapper.
    with suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Stream(httpcore.NetworkStream):
    """A network stream that tells the calling thread's ItemStop which socket it uses."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def _touch(self) -> None:
        watchers = _watchers()
        if watchers:
            sock = self._inner.get_extra_info("socket")
            if isinstance(sock, socket.socket):
                for watcher in watchers:
                    watcher.watch_socket(sock)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._touch()
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._touch()
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_tcp(*args, **kwargs))

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(*args, **kwargs))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def interruptible_transport(*, limits: httpx.Limits) -> httpx.HTTPTransport:
    """httpx's own transport, its connections made through the registering backend.

    httpx 0.28 takes no network backend, so the pool's is wrapped in place before any
    connection exists (tests/integration/test_cancel.py fails if that attribute moves).
    """
    transport = httpx.HTTPTransport(limits=limits)
    pool = transport._pool
    if not isinstance(pool, httpcore.ConnectionPool):  # pragma: no cover - httpx changed
        raise TypeError(f"unexpected httpx pool {type(pool).__name__}")
    pool._network_backend = _Backend(pool._network_backend)
    return transport
