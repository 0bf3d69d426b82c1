"""Beat's webhook chore: record finished jobs' events, then POST the due ones, signed.

Each pass (`run_pass`) first records a delivery for every job finish that has none yet
(`jobs.webhooks.record_finished`), then leases due deliveries a few at a time and sends
them on a small thread pool, so one slow receiver holds up one thread, not the sweep.
A pass stops claiming after `batch` sends or `pass_budget_s`, whichever comes first, so
the longest a pass takes is about the budget plus one request's timeout.

A request is what Standard Webhooks describes: the frozen JSON payload, `webhook-id` (the
delivery's id, the same on every retry and redelivery, for receivers to dedupe on),
`webhook-timestamp` and `webhook-signature`, signed by the `standardwebhooks` library over
`id.timestamp.body` with the tenant's secret (and its previous one during a rotation's grace
period). The SSRF rules of source URLs hold at send: the URL is vetted again, the host is
resolved once, every answer is checked, and we connect to that address (`workers.fetch`'s
pinning); redirects are not followed. The whole exchange has one wall-clock deadline and
only the first `EXCERPT_BYTES` of the answer are read.

A 2xx is delivered; anything else (another status, a refusal, a timeout) is retried after
`BACKOFF` (with 10% jitter) until `RETRY_WINDOW` after the window began; the last try lands
at the window's end, then the delivery is failed. `redeliver` opens a new window.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from jobs.clock import utc_now
from jobs.netpolicy import (
    Allowlist,
    IPAddress,
    ParsedSource,
    UnsafeUrl,
    check_addresses,
    check_url,
    parse_allowlist,
)
from jobs.pricing import DEFAULT_TABLE, PriceTable
from jobs.settings import Settings
from jobs.webhook_secrets import tenant_secrets
from jobs.webhooks import AttemptRecord, ClaimedDelivery, claim_due, finish_attempt, record_finished
from workers import metrics
from workers.deadline import Deadline
from workers.fetch import Resolver, distinct_addresses, pinned_url
from workers.sweeper import Chore

log = logging.getLogger(__name__)

# The wait after the 1st, 2nd, ... failed try of a window; the last one repeats.
BACKOFF = tuple(timedelta(seconds=s) for s in (30, 120, 600, 1800, 3600, 7200, 4 * 3600, 6 * 3600))
RETRY_WINDOW = timedelta(hours=24)
JITTER = 0.1
EXCERPT_BYTES = 512
USER_AGENT = "speechbatch-webhooks/0.1"


def next_delay(failures: int, rng: random.Random) -> timedelta:
    """How long to wait after the `failures`-th failed try of a window (1-based)."""
    base = BACKOFF[min(max(failures, 1), len(BACKOFF)) - 1]
    return base * (1 + rng.uniform(-JITTER, JITTER))


def next_attempt_at(
    window_started_at: datetime, failures: int, now: datetime, rng: random.Random
) -> datetime | None:
    """When to try again after `failures` failed tries, or None: the window is over."""
    end = window_started_at + RETRY_WINDOW
    if now >= end:
        return None
    return min(now + next_delay(failures, rng), end)


class SendFailed(Exception):
    """No HTTP status came back: the sentence goes into the attempt log."""


def sign(secrets: list[str], msg_id: str, sent_at: datetime, body: str) -> str:
    """The `webhook-signature` value: one `v1,<base64>` per secret, space-separated."""
    return " ".join(Webhook(secret).sign(msg_id, sent_at, body) for secret in secrets)


class WebhookSender:
    """Sends due deliveries; one per beat process (it owns an HTTP client and a pool)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        allow: Allowlist = (),
        timeout_s: float = 10.0,
        batch: int = 32,
        threads: int = 4,
        pass_budget_s: float = 10.0,
        clock: Callable[[], datetime] = utc_now,
        wall_clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
        resolver: Resolver = socket.getaddrinfo,
        transport: httpx.BaseTransport | None = None,
        prices: PriceTable = DEFAULT_TABLE,
    ) -> None:
        self.sessions, self.allow, self.timeout_s = sessions, allow, timeout_s
        self.prices = prices  # for the cost in the event's job view
        self.batch, self.threads, self.pass_budget_s = batch, threads, pass_budget_s
        # `clock` drives the schedule (tests move it); `wall_clock` stamps requests, which
        # receivers check against their own clock (standardwebhooks allows 5 minutes).
        self.clock, self.wall_clock = clock, wall_clock
        self.rng, self.resolver = rng or random.Random(), resolver
        self.lease = timedelta(seconds=3 * timeout_s + 30)
        # No keep-alive: each request connects to its own vetted address, and a pooled TLS
        # connection must never carry one tenant's event to another's host.
        self.client = httpx.Client(
            transport=transport,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="webhooks")

    @classmethod
    def from_settings(cls, settings: Settings, sessions: sessionmaker[Session]) -> WebhookSender:
        return cls(
            sessions,
            allow=parse_allowlist(settings.allow_private_networks),
            timeout_s=settings.webhook_timeout_seconds,
            prices=settings.price_table(),
        )

    def chore(self) -> Chore:
        return Chore("webhook deliveries", self.run_pass)

    def run_pass(self) -> int:
        """Record new events, then send due deliveries within the batch and the budget;
        returns how many were sent."""
        recorded = record_finished(self.sessions, now=self.clock(), prices=self.prices)
        sent, started = 0, time.monotonic()
        while sent < self.batch and time.monotonic() - started < self.pass_budget_s:
            claims = claim_due(
                self.sessions,
                now=self.clock(),
                limit=min(self.threads, self.batch - sent),
                lease=self.lease,
            )
            if not claims:
                break
            list(self.pool.map(self.deliver, claims))
            sent += len(claims)
        if recorded or sent:
            log.info("webhooks: %d events recorded, %d requests sent", recorded, sent)
        return sent

    def deliver(self, claim: ClaimedDelivery) -> AttemptRecord:
        """One attempt of a claimed delivery, logged, and the delivery moved on."""
        attempt = self.attempt(claim)
        metrics.WEBHOOK_ATTEMPTS.labels(metrics.webhook_outcome(attempt.status_code)).inc()
        now = self.clock()
        due = None
        if not attempt.delivered:
            due = next_attempt_at(claim.window_started_at, claim.tries + 1, now, self.rng)
        finish_attempt(self.sessions, claim, attempt, now=now, next_attempt_at=due)
        return attempt

    def attempt(self, claim: ClaimedDelivery) -> AttemptRecord:
        """POST the delivery once; what came back, never an exception for the receiver's
        failures (those are the log's business)."""
        with self.sessions() as session:
            keys = tenant_secrets(session, claim.tenant_id).signing(self.clock())
            session.commit()
        body = json.dumps(claim.payload, separators=(",", ":"), ensure_ascii=False)
        sent_at = self.wall_clock()
        headers = {
            "webhook-id": claim.id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": sign(keys, claim.id, sent_at, body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        started_at, t0 = self.clock(), time.monotonic()
        status, excerpt, error = None, None, None
        try:
            status, excerpt = self._exchange(claim.url, body.encode(), headers)
        except SendFailed as exc:
            error = str(exc)
        latency_ms = round((time.monotonic() - t0) * 1000, 1)
        return AttemptRecord(started_at, latency_ms, status, error, excerpt)

    def _target(self, url: str) -> tuple[ParsedSource, IPAddress]:
        """The vetted URL and the one address to connect to (SendFailed if refused)."""
        try:
            source = check_url(url, self.allow)
            if source.ip is not None:
                return source, source.ip
            found = distinct_addresses(self.resolver(source.host, source.port))
            if not found:
                raise SendFailed(f"{source.host} has no IPv4 or IPv6 address")
            check_addresses(source.host, found, self.allow)
        except UnsafeUrl as exc:
            raise SendFailed(f"refused: {exc.message}") from None
        except OSError as exc:  # socket.gaierror and friends
            raise SendFailed(f"DNS lookup failed ({exc})") from None
        return source, found[0]

    def _exchange(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        source, ip = self._target(url)
        deadline = Deadline(self.timeout_s)
        extensions: dict[str, Any] = {
            "trace": deadline.trace,
            "timeout": httpx.Timeout(self.timeout_s).as_dict(),
        }
        if source.ip is None and source.scheme == "https":
            extensions["sni_hostname"] = source.host
        request = httpx.Request(
            "POST",
            pinned_url(source, ip),
            headers={**headers, "host": source.authority},
            content=body,
            extensions=extensions,
        )
        try:
            response = self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            deadline.cancel()
            if deadline.expired or isinstance(exc, httpx.TimeoutException):
                raise SendFailed(f"no answer within {self.timeout_s:g} s") from None
            raise SendFailed(f"could not connect ({type(exc).__name__})") from None
        try:
            return response.status_code, _excerpt(response, deadline)
        finally:
            deadline.cancel()
            response.close()

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()


def _excerpt(response: httpx.Response, deadline: Deadline) -> str:
    """The first `EXCERPT_BYTES` of the answer (raw: no decompression), read no further; a
    body cut off by the deadline or the connection keeps what arrived."""
    data = bytearray()
    try:
        for chunk in response.iter_raw():
            data += chunk
            if len(data) >= EXCERPT_BYTES or deadline.expired:
                break
    except httpx.HTTPError:
        pass  # the status came back, which is what decides the attempt
    return bytes(data[:EXCERPT_BYTES]).decode("utf-8", "replace")
