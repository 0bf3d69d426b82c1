"""The BlackHoleProxy behaves like a DROP rule: silence without errors, then intact resumption."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from tests.chaos.blackhole import BlackHoleProxy

pytestmark = [pytest.mark.chaos]


def ping(sock: socket.socket) -> None:
    sock.sendall(b"PING\r\n")


def reply(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    return sock.recv(64)


@pytest.fixture
def connect(redis_proxy: BlackHoleProxy) -> Iterator[Callable[[], socket.socket]]:
    """Open TCP connections to the proxy; all are closed after the test."""
    opened: list[socket.socket] = []

    def connect() -> socket.socket:
        sock = socket.create_connection((redis_proxy.host, redis_proxy.port), timeout=2)
        opened.append(sock)
        return sock

    yield connect
    for sock in opened:
        sock.close()


def test_blackhole_silences_held_and_new_connections_and_restore_resumes_them(
    redis_proxy: BlackHoleProxy, connect: Callable[[], socket.socket]
) -> None:
    """Black-holed, a held and a new connection get no reply and no error; restored, both do."""
    held = connect()
    ping(held)
    assert reply(held, 2) == b"+PONG\r\n"

    redis_proxy.blackhole()
    ping(held)
    with pytest.raises(TimeoutError):
        reply(held, 0.5)
    fresh = connect()  # the handshake completes: a silent peer, not a refused port
    ping(fresh)
    with pytest.raises(TimeoutError):
        reply(fresh, 0.5)
    assert redis_proxy.accepted_while_dark == 1

    redis_proxy.restore()
    assert reply(held, 2) == b"+PONG\r\n"  # held bytes are delivered, as after retransmission
    assert reply(fresh, 2) == b"+PONG\r\n"


def test_restore_without_resume_leaves_held_flows_dead_but_serves_new_ones(
    redis_proxy: BlackHoleProxy, connect: Callable[[], socket.socket]
) -> None:
    """After restore(resume_held=False) a connection from before stays silent; a new one works."""
    held = connect()
    redis_proxy.blackhole()
    ping(held)
    redis_proxy.restore(resume_held=False)
    with pytest.raises(TimeoutError):
        reply(held, 0.5)
    fresh = connect()
    ping(fresh)
    assert reply(fresh, 2) == b"+PONG\r\n"
