"""The HTTP server's own limits (issue 9): request heads are capped in size and in time.

The size cap is checked on a real `speechbatch api` process, as a client meets it; the head
deadline on uvicorn serving the same protocol with a short deadline, so no test waits 10 s.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from jobs.api import BoundedHttpToolsProtocol
from tests.e2e.stack import api_process
from tests.services import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def api_url(sqlite_url: str, redis_url: str, tmp_path: Path) -> Iterator[str]:
    """`speechbatch api` on SQLite, the test Redis and a local folder (no key needed)."""
    with api_process(sqlite_url, redis_url, tmp_path) as url:
        yield url


def send_head(port: int, head: bytes, header_bytes: int) -> tuple[bytes, float]:
    """Send `head` then up to `header_bytes` of one header; the answer's first line and when."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"X-Big: ")
        with contextlib.suppress(OSError):  # the server may close while we still send
            for _ in range(header_bytes // 65536):
                sock.sendall(b"a" * 65536)
            sock.sendall(b"\r\n\r\n")
        answer = sock.recv(4096)
    return answer.split(b"\r\n", 1)[0], time.monotonic() - started


def test_a_huge_header_is_refused_at_once_while_other_requests_are_served(api_url: str) -> None:
    """1 MiB of headers to /healthz is a 431 within a second, and a request made meanwhile
    on another connection is answered (the head was read whole, and others waited, before)."""
    port = int(api_url.rsplit(":", 1)[1])
    other: list[float] = []

    def poll() -> None:
        started = time.monotonic()
        httpx.get(f"{api_url}/healthz", timeout=10).raise_for_status()
        other.append(time.monotonic() - started)

    poller = threading.Thread(target=poll)
    poller.start()
    status, took = send_head(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n", 1024 * 1024)
    poller.join()
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert took < 1.0
    assert other and other[0] < 1.0


class ShortDeadline(BoundedHttpToolsProtocol):
    head_timeout_s = 0.3


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def short_deadline_port() -> Iterator[int]:
    """uvicorn serving a one-line app through the bounded protocol, head deadline 0.3 s."""
    port = free_port()
    config = uvicorn.Config(hello, port=port, http=ShortDeadline, log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield port
    server.should_exit = True
    thread.join(5)


def test_a_head_that_never_completes_is_answered_408_and_closed(short_deadline_port: int) -> None:
    """A client that opens a connection and drips part of a head gets 408 at the deadline and
    the connection closed, instead of holding it for good; a full request still works after."""
    with socket.create_connection(("127.0.0.1", short_deadline_port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
        answer = sock.recv(4096)
        took = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout")
        assert b'"code":"request_timeout"' in answer
        assert 0.2 < took < 2.0
        assert sock.recv(4096) == b""  # closed
    response = httpx.get(f"http://127.0.0.1:{short_deadline_port}/", timeout=5)
    assert (response.status_code, response.text) == (200, "ok")


def test_a_kept_alive_connection_gets_a_fresh_deadline_per_request(
    short_deadline_port: int,
) -> None:
    """Requests on one connection each have their own head deadline, so a client that is
    quick each time is never cut off however long it keeps the connection."""
    with httpx.Client(base_url=f"http://127.0.0.1:{short_deadline_port}", timeout=5) as client:
        for _ in range(3):
            assert client.get("/").status_code == 200
            time.sleep(0.2)
