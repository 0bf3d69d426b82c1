"""`fetch_source` refuses our own network and survives hostile servers (workers/fetch.py).

The DNS answers are plain functions returning chosen addresses; the policy tests use
httpx.MockTransport to prove no request goes out; the protocol tests use a real HTTP server
on loopback (allowlisted as 127.0.0.1/32), as a hostile or broken source host would behave.
"""

from __future__ import annotations

import io
import socket
import threading
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from jobs.netpolicy import parse_allowlist
from workers.fetch import fetch_source
from workers.providers.errors import (
    InvalidInput,
    PermanentProviderError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    UnsupportedAudio,
)

pytestmark = pytest.mark.integration

LOOPBACK = parse_allowlist("127.0.0.1/32")
MiB = 1024 * 1024
HUGE = 64 * MiB  # far beyond what loopback socket buffers can absorb


def make_wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x01" * 800)
    return buffer.getvalue()


WAV = make_wav()


def answers(*ips: str) -> Callable[[str, int], list[tuple[Any, ...]]]:
    """A resolver that answers every name with `ips`, shaped like socket.getaddrinfo."""

    def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0))
            if ":" in ip
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
            for ip in ips
        ]

    return resolve


def fetch(url: str, **overrides: Any) -> Any:
    kwargs: dict[str, Any] = {
        "allow": LOOPBACK,
        "max_bytes": MiB,
        "timeout_s": 5.0,
        "resolver": answers("127.0.0.1"),
    }
    kwargs.update(overrides)
    return fetch_source(url, **kwargs)


# --- policy: nothing leaves the process --------------------------------------------------------


class Recorder:
    """A MockTransport handler that records requests and answers with `reply`."""

    def __init__(self, reply: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.reply = reply

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.reply is None:
            pytest.fail(f"a request went out to {request.url}")
        return self.reply(request)


def test_name_resolving_to_loopback_is_blocked_before_any_request() -> None:
    """A host whose DNS answer is 127.0.0.1 is refused without a single request."""
    recorder = Recorder()
    with pytest.raises(InvalidInput) as caught:
        fetch(
            "https://audio.example/a.wav?X-Amz-Signature=topsecret",
            allow=(),
            transport=httpx.MockTransport(recorder),
        )
    assert caught.value.code == "forbidden_source"
    assert "SPEECHBATCH_ALLOW_PRIVATE_NETWORKS" in caught.value.message
    assert "topsecret" not in caught.value.message
    assert recorder.requests == []


def test_dns_rebinding_mixed_answers_are_blocked() -> None:
    """One public and one private answer for the same name refuse the name outright."""
    recorder = Recorder()
    with pytest.raises(InvalidInput) as caught:
        fetch(
            "https://audio.example/a.wav",
            allow=(),
            resolver=answers("93.184.216.34", "10.0.0.7"),
            transport=httpx.MockTransport(recorder),
        )
    assert caught.value.code == "forbidden_source"
    assert "10.0.0.7" in caught.value.message
    assert recorder.requests == []


def test_request_is_pinned_to_the_vetted_ip_with_host_and_sni() -> None:
    """We connect to the resolved IP while Host and TLS SNI carry the name."""
    recorder = Recorder(lambda _: httpx.Response(200, content=WAV))
    audio = fetch(
        "https://Audio.Example/calls/intro.wav?sig=1",
        allow=(),
        resolver=answers("93.184.216.34"),
        transport=httpx.MockTransport(recorder),
    )
    (request,) = recorder.requests
    assert str(request.url) == "https://93.184.216.34/calls/intro.wav?sig=1"
    assert request.headers["host"] == "audio.example"
    assert request.extensions["sni_hostname"] == "audio.example"
    assert (audio.data, audio.filename, audio.content_type) == (WAV, "intro.wav", "audio/wav")


def test_redirect_to_metadata_is_blocked() -> None:
    """A public host redirecting to 169.254.169.254 gets no second request."""
    recorder = Recorder(
        lambda _: httpx.Response(302, headers={"Location": "http://169.254.169.254/latest/"})
    )
    with pytest.raises(InvalidInput) as caught:
        fetch(
            "https://audio.example/a.wav",
            allow=(),
            resolver=answers("93.184.216.34"),
            transport=httpx.MockTransport(recorder),
        )
    assert caught.value.code == "forbidden_source"
    assert "metadata" in caught.value.message
    assert len(recorder.requests) == 1


def test_redirect_to_a_name_resolving_privately_is_blocked() -> None:
    """Each hop is resolved anew, so a redirect to an internal name is refused."""
    recorder = Recorder(
        lambda _: httpx.Response(302, headers={"Location": "http://internal.example/x"})
    )

    def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
        ip = "192.168.1.20" if host == "internal.example" else "93.184.216.34"
        return answers(ip)(host, port)

    with pytest.raises(InvalidInput) as caught:
        fetch(
            "https://audio.example/a.wav",
            allow=(),
            resolver=resolve,
            transport=httpx.MockTransport(recorder),
        )
    assert caught.value.code == "forbidden_source"
    assert len(recorder.requests) == 1


# --- protocol: a real server on loopback -------------------------------------------------------


@dataclass
class Served:
    """What the server saw for one path."""

    host: str = ""
    written: int = 0
    broken: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class SourceHandler(BaseHTTPRequestHandler):
    """Plays a different source host per path: good, huge, slow, redirecting, broken."""

    server: SourceServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        seen = self.server.seen.setdefault(path, Served())
        seen.host = self.headers.get("Host", "")
        try:
            self.route(path, seen)
        except OSError:
            seen.broken = True  # the client hung up on us
        finally:
            seen.done.set()

    def head(self, status: int, length: int | None = None, **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def pour(self, seen: Served, total: int) -> None:
        chunk = b"\xff\xfb\x90\x00" * 16384
        while seen.written < total:
            self.wfile.write(chunk)
            seen.written += len(chunk)

    def trickle(self, data: bytes, every_s: float) -> None:
        for byte in data:
            if self.server.stopping.wait(every_s):
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()

    def route(self, path: str, seen: Served) -> None:
        stop = self.server.stopping
        if path.endswith(".wav"):
            self.head(200, len(WAV), Content_Type="audio/wav")
            self.wfile.write(WAV)
        elif path == "/huge-declared":
            self.head(200, HUGE, Content_Type="audio/mpeg")
            self.pour(seen, HUGE)
        elif path == "/huge-streamed":
            self.head(200, Content_Type="audio/mpeg")
            self.pour(seen, HUGE)
        elif path == "/trickle-body":
            self.head(200, len(WAV), Content_Type="audio/wav")
            self.trickle(WAV, 0.05)
        elif path == "/stall-body":
            self.head(200, len(WAV), Content_Type="audio/wav")
            self.trickle(WAV[:6], 0.1)  # then silence: each read had the full budget
            stop.wait(30)
        elif path == "/trickle-headers":
            self.wfile.write(b"HTTP/1.0 200 OK\r\n")
            self.trickle(b"X-Padding: " + b"a" * 1000, 0.05)
        elif path.startswith("/r/"):
            hops = int(path.removeprefix("/r/"))
            self.head(302, 0, Location=f"/r/{hops - 1}" if hops > 1 else "/final.wav")
        elif path == "/to-metadata":
            self.head(302, 0, Location="http://169.254.169.254/latest/meta-data/")
        elif path == "/empty":
            self.head(200, 0, Content_Type="audio/wav")
        elif path == "/page":
            body = b"<html><body>Sign in to continue</body></html>"
            self.head(200, len(body), Content_Type="audio/wav")
            self.wfile.write(body)
        else:
            status = {"/missing": 404, "/broken": 500}.get(path, 404)
            self.head(status, 0)


class SourceServer(ThreadingHTTPServer):
    daemon_threads = True
    seen: dict[str, Served]
    stopping: threading.Event

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # hung-up clients are the point of several tests


@pytest.fixture(scope="module")
def server() -> Iterator[SourceServer]:
    httpd = SourceServer(("127.0.0.1", 0), SourceHandler)
    httpd.seen = {}
    httpd.stopping = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.stopping.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def url(server: SourceServer, path: str) -> str:
    return f"http://audio.test:{server.server_address[1]}{path}"


def test_wav_is_fetched_through_the_vetted_ip(server: SourceServer) -> None:
    """An allowlisted host returns the exact bytes, sniffed as WAV, and sees its own name."""
    audio = fetch(url(server, "/calls/intro.wav?X-Amz-Signature=abc"))
    assert (audio.data, audio.filename, audio.content_type) == (WAV, "intro.wav", "audio/wav")
    assert server.seen["/calls/intro.wav"].host == f"audio.test:{server.server_address[1]}"


@pytest.mark.parametrize("path", ["/huge-declared", "/huge-streamed"])
def test_huge_body_is_cut_off(server: SourceServer, path: str) -> None:
    """Past max_bytes (declared or streamed) we stop and hang up long before the server is done."""
    with pytest.raises(InvalidInput) as caught:
        fetch(url(server, path))
    assert caught.value.code == "source_too_large"
    seen = server.seen[path]
    assert seen.done.wait(5)
    assert seen.broken
    assert seen.written < HUGE


@pytest.mark.parametrize("path", ["/trickle-body", "/stall-body", "/trickle-headers"])
def test_slow_source_times_out_on_wall_time(server: SourceServer, path: str) -> None:
    """A trickling or stalling server is cut at timeout_s of wall time, not per read."""
    timeout_s = 0.8
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as caught:
        fetch(url(server, path), timeout_s=timeout_s)
    elapsed = time.monotonic() - started
    assert caught.value.code == "source_timeout"
    # Per-read timeouts alone would allow ~2x here: every read restarts the clock.
    assert timeout_s - 0.05 < elapsed < timeout_s + 0.5


def test_redirects_are_followed_up_to_three(server: SourceServer) -> None:
    """Three redirects reach the audio; a fourth is refused."""
    assert fetch(url(server, "/r/3")).data == WAV
    with pytest.raises(InvalidInput) as caught:
        fetch(url(server, "/r/4"))
    assert caught.value.code == "too_many_redirects"


def test_redirect_hops_are_rechecked(server: SourceServer) -> None:
    """An allowlisted server redirecting to the metadata address is refused at that hop."""
    with pytest.raises(InvalidInput) as caught:
        fetch(url(server, "/to-metadata"))
    assert caught.value.code == "forbidden_source"
    assert "169.254.169.254" in caught.value.message


@pytest.mark.parametrize(
    ("path", "kind", "code"),
    [
        ("/missing", PermanentProviderError, "source_unavailable"),
        ("/broken", ProviderUnavailable, "source_unavailable"),
        ("/page", UnsupportedAudio, "unsupported_audio"),
        ("/empty", UnsupportedAudio, "empty_audio"),
    ],
)
def test_failures_map_onto_the_error_tree(
    server: SourceServer, path: str, kind: type[ProviderError], code: str
) -> None:
    """4xx fails the item, 5xx retries it, a non-audio or empty body is unsupported audio."""
    with pytest.raises(kind) as caught:
        fetch(url(server, f"{path}?token=hunter2"))
    assert caught.value.code == code
    assert "hunter2" not in caught.value.message


def test_connection_refused_is_transient() -> None:
    """A host that refuses the connection is worth another attempt later."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ProviderUnavailable) as caught:
        fetch(f"http://audio.test:{port}/a.wav")
    assert caught.value.code == "source_unavailable"
