"""One vendor's WebSocket link: the URL, the handshake, and bounded reads on a session.

The worker runs threads, so this is `websockets`' sync client. URLs derive from the vendor's
HTTP base URL (`http` → `ws`, `https` → `wss`, design §4), so one
SPEECHBATCH_<PROVIDER>_BASE_URL points every transport at the emulator. A refused upgrade
(an HTTP status with a body) maps through `http.error_from_response` like any HTTP answer; a
connection that cannot be opened is ProviderUnavailable and starts the reconnect backoff.
Every call runs under a `Deadline` that shuts the socket down when it passes, and every read
waits at most the time left, so a session that goes quiet cannot hold an item. A session that
closes before its answer is complete is a dropped session (retryable), never a short answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)
from websockets.sync.client import connect

from jobs.error_codes import ErrorCode
from workers import metrics
from workers.deadline import Deadline
from workers.providers import http
from workers.providers.errors import (
    PermanentProviderError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
)
from workers.providers.exchange import Limit
from workers.providers.transcripts import json_object
from workers.providers.ws_pool import ConnectBackoff, Pooled, StaleSession, WsPool

_OPEN_TIMEOUT_S = 10.0
_MESSAGE_TOO_BIG = 1009  # the close code our client sends for a message over max_size


def ws_url(base_url: str, path: str) -> str:
    """The WebSocket URL of `path` on the vendor whose HTTP base URL is `base_url`."""
    base = base_url.rstrip("/")
    for http_scheme, ws_scheme in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http_scheme):
            return ws_scheme + base.removeprefix(http_scheme) + path
    raise PermanentProviderError(
        "The configured base URL is not an http(s) URL, so no WebSocket URL derives from it; "
        "fix the configured base URL.",
        code=ErrorCode.INVALID_BASE_URL,
    )


@dataclass
class WsLink:
    """What one vendor's WebSocket calls share: its key, its pool and its backoff."""

    vendor: str  # as messages name it, e.g. "SLNG"
    key_name: str  # the setting that holds the key, e.g. "SLNG_API_KEY"
    secret: str
    # Close pooled sessions idle this long: under the vendor's idle timeout when it has no
    # keepalive; with one, a cap we choose, since an idle session holds one of the key's
    # concurrent connections at the vendor.
    idle_s: float
    keepalive: str | None = None  # the vendor's keepalive message: SLNG's {"type":"keepalive"}
    keepalive_s: float = 30.0  # sent this often on an idle pooled session
    backoff: ConnectBackoff = field(default_factory=ConnectBackoff)
    pool: WsPool = field(init=False)

    def __post_init__(self) -> None:
        self.pool = WsPool(
            idle_s=self.idle_s, keepalive=self.keepalive, keepalive_s=self.keepalive_s
        )
        self._credential = hashlib.sha256(self.secret.encode()).hexdigest()[:16]

    def open(self, url: str, *, deadline: Deadline, max_bytes: int, headers: dict[str, str]) -> Any:
        """A connected session (the upgrade accepted), after any backoff owed."""
        credential = (httpx.URL(url).host, self._credential)
        self.backoff.wait(credential, max_wait_s=deadline.remaining())
        try:
            connection = connect(
                url,
                additional_headers={"Authorization": f"Bearer {self.secret}", **headers},
                open_timeout=max(0.1, min(_OPEN_TIMEOUT_S, deadline.remaining())),
                ping_interval=None,  # vendors time out silence; WsPool sends their keepalive
                close_timeout=1.0,
                max_size=max_bytes,
                compression=None,  # audio does not deflate; it would only cost CPU
                proxy=None,
                legacy=True,  # the pool owns the connection's lifetime, not a with-block
            )
        except InvalidStatus as exc:
            self.backoff.failed(credential)
            raise self._refusal(exc.response.status_code, bytes(exc.response.body or b"")) from None
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self.backoff.failed(credential)
            raise ProviderUnavailable(
                f"Could not open a WebSocket to {self.vendor} at {_where(url)} "
                f"({type(exc).__name__}); retrying later may help.",
            ) from None
        self.backoff.succeeded(credential)
        return connection

    def _refusal(self, status: int, body: bytes) -> ProviderError:
        parsed = json_object(body) or {}
        said = [str(parsed[k]) for k in ("error", "title", "detail", "message") if parsed.get(k)]
        reason = " — ".join(said) or body.decode("utf-8", errors="replace")
        return http.error_from_response(
            httpx.Response(status),
            vendor_message="refused the WebSocket upgrade: " + http.redact(reason, self.secret),
            provider=self.vendor,
            key_name=self.key_name,
        )

    def call(
        self,
        key: tuple[Any, ...],
        open_session: Callable[[Deadline], Any],
        exchange: Callable[[Session], Any],
        limit: Limit,
    ) -> Any:
        """`exchange` on a pooled or new session, the whole call under `limit`'s deadline."""
        deadline = Deadline(limit.deadline_s)
        try:
            return self.pool.run(
                key,
                lambda: open_session(deadline),
                lambda pooled: exchange(Session(self, pooled, deadline, limit)),
            )
        finally:
            deadline.cancel()

    def close(self) -> None:
        self.pool.close()


class Session:
    """One call's use of a session: sends and bounded reads that map failures to errors."""

    def __init__(self, link: WsLink, pooled: Pooled, deadline: Deadline, limit: Limit) -> None:
        self.link, self.pooled, self.deadline, self.limit = link, pooled, deadline, limit
        self.connection = pooled.connection
        self.answered = False  # anything received for this call yet (a stale session is not)
        self.received = 0
        sock = getattr(self.connection, "socket", None)
        if sock is not None:
            deadline.watch_socket(sock)

    def send(self, message: str | bytes) -> None:
        """Send; a session the server has closed is reported by the next `recv`, after any
        message it sent first (its refusal: SLNG's rate_limit, Smallest's connection cap)."""
        with self._guard():
            try:
                self.connection.send(message)
            except ConnectionClosed:
                return

    def recv(self) -> str | bytes:
        """The next message, counted against the size cap."""
        remaining = self.deadline.remaining()
        with self._guard():
            if remaining <= 0:
                raise TimeoutError
            message: str | bytes = self.connection.recv(timeout=remaining)
        if not self.answered:
            metrics.first_byte("websocket")  # the session's time to first byte (issue 13)
        self.answered = True
        self.received += len(message)
        if self.received > self.limit.max_bytes:
            raise self._too_large()
        return message

    def _too_large(self) -> PermanentProviderError:
        return PermanentProviderError(
            f"{self.link.vendor} sent more than {self.limit.max_bytes} bytes for one item "
            f"({self.limit.setting}); split the text or audio into smaller items, "
            "or raise the setting.",
            code=ErrorCode.PROVIDER_RESPONSE_TOO_LARGE,
        )

    def recv_ready(self) -> str | bytes | None:
        """A message already waiting (trailing control messages), else None at once."""
        try:
            with self._guard():
                message: str | bytes = self.connection.recv(timeout=0)
        except (ProviderTimeout, ProviderUnavailable):
            return None
        return message

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except TimeoutError:
            raise ProviderTimeout(
                f"{self.link.vendor} did not finish answering in time over its WebSocket "
                f"({self.limit.deadline_s:g} s allowed for this request); retrying later may help."
            ) from None
        except (ConnectionClosed, OSError) as exc:
            if self.deadline.expired:
                raise ProviderTimeout(
                    f"{self.link.vendor} did not finish answering in time over its WebSocket "
                    f"({self.limit.deadline_s:g} s allowed); retrying later may help."
                ) from None
            if getattr(getattr(exc, "sent", None), "code", None) == _MESSAGE_TOO_BIG:
                raise self._too_large() from None
            code = getattr(getattr(exc, "rcvd", None), "code", None)
            how = f"close code {code}" if code is not None else type(exc).__name__
            error = StaleSession if not self.answered else ProviderUnavailable
            raise error(
                f"{self.link.vendor} dropped the WebSocket session before the answer was "
                f"complete ({how}); the item is retried, nothing partial is kept."
            ) from None


def _where(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}{':' + str(parsed.port) if parsed.port else ''}"
