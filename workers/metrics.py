"""The worker's and beat's Prometheus metrics: module-level prometheus_client objects.

Each Celery worker is one process with a thread pool, and beat one process, so one registry
per process (prometheus_client's default) is right: every process serves its own on its own
port (`speechbatch worker --metrics-port`, `speechbatch beat --metrics-port`,
`speechbatch.processes.serve_metrics`) and Prometheus adds them up. Several workers on a host
take a port each; no multiprocess directory is needed because no process forks workers that
share a registry (the pool is threads).

The hooks are one line at the point where the fact is known (outcomes, retry, throttle,
circuit, sweeper, scheduler, webhook sender, the provider exchange, the WebSocket session),
each an increment or an observation of ~1 us, so the hot path stays as it was. Label values
are bounded: providers and models from the catalog (anything else is `other`), transports
from their vocabulary, outcomes from `workers.outcomes.Outcome`, credentials by fingerprint
(`storage.provider_keys`, 16 hex digits of the key's SHA-256) and at most
`CREDENTIALS_PER_NAME` of them per provider (a process only sees its configured keys, one per
provider, or its host name for the local engines); never a job id, item id, key, URL or tenant.

One provider attempt is tracked per thread (`timed_call`): its first answer observes the
time to first byte (`first_byte`, from the HTTP exchange or the WebSocket session), the
adapter's choice of transport labels it beside the requested one (`transport_chosen`), and
the credential of the permit it ran under labels its 429s (`permit_granted`), because the
retry loop that counts them sees the error after the permit's block has ended.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from prometheus_client import Counter, Gauge, Histogram

from jobs.catalog import PROVIDERS

OTHER = "other"
NONE = "none"  # no credential: a call outside the shared throttle (local mode, tests)
TRANSPORTS = frozenset({"auto", "http", "stream", "websocket"})
CREDENTIALS_PER_NAME = 4
_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
# Throttle and circuit names: a provider, or `provider-kind` when a kind has its own limits.
_LIMIT_NAMES = frozenset(
    {*PROVIDERS, *(f"{p}-{kind}" for p, spec in PROVIDERS.items() for kind in spec.kind_limits)}
)
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

ITEMS_FINISHED = Counter(
    "speechbatch_items_finished",
    "Item deliveries that ended, by provider and outcome (workers.outcomes.Outcome).",
    ["provider", "outcome"],
)
# `transport` is the one the call used (`auto` when the adapter did not say), `requested`
# the job's options.transport (`auto` when none).
CALL_SECONDS = Histogram(
    "speechbatch_provider_call_seconds",
    "One provider attempt, from its permit to its answer.",
    ["provider", "model", "transport", "requested"],
    buckets=_LATENCY_BUCKETS,
)
FIRST_BYTE_SECONDS = Histogram(
    "speechbatch_provider_first_byte_seconds",
    "From a provider attempt's start to its first answer: an HTTP or SSE answer's headers, "
    "a WebSocket session's first message.",
    ["provider", "model", "transport", "requested"],
    buckets=_LATENCY_BUCKETS,
)
RATE_LIMITED = Counter(
    "speechbatch_provider_rate_limited",
    "Provider answers 429, by provider and credential.",
    ["provider", "credential"],
)
RETRIES = Counter(
    "speechbatch_provider_retries",
    "In-call retries after a transient error.",
    ["provider", "credential"],
)
THROTTLE_WAIT_SECONDS = Histogram(
    "speechbatch_throttle_wait_seconds",
    "Seconds a call waited for a permit of the shared throttle (granted permits).",
    ["provider", "credential"],
    buckets=_WAIT_BUCKETS,
)
THROTTLE_BUSY = Counter(
    "speechbatch_throttle_busy", "Calls that got no permit in time (item handed back).",
    ["provider", "credential"],
)  # fmt: skip
CIRCUIT_STATE = Gauge(
    "speechbatch_circuit_state",
    "A credential's circuit as this process last saw it: 0 closed, 1 open, 2 half-open probe.",
    ["provider", "credential"],
)
SWEEPER_EXPIRED = Counter("speechbatch_sweeper_expired_leases", "Leases the sweeper expired.")
SWEEPER_PUBLISHED = Counter("speechbatch_sweeper_published", "Items the sweeper re-published.")
SCHEDULE_FIRES = Counter("speechbatch_schedule_fires", "Schedule fires that submitted a job.")
WEBHOOK_ATTEMPTS = Counter(
    "speechbatch_webhook_attempts",
    "Webhook POSTs by outcome: delivered (2xx), rejected (another status), unreachable.",
    ["outcome"],
)


@lru_cache(maxsize=256)
def provider_label(name: str) -> str:
    """`name` if the catalog knows it as a provider or limits name, else `other`."""
    return name if name in _LIMIT_NAMES else OTHER


@lru_cache(maxsize=1024)
def model_label(provider: str, model: str | None) -> str:
    """`model` if it is one of the catalog's model ids for `provider`, else `other`."""
    spec = PROVIDERS.get(provider)
    if spec is None or not model:
        return OTHER
    return model if model in spec.tts_models or model in spec.stt_models else OTHER


_credentials: dict[str, frozenset[str]] = {}
_credentials_lock = threading.Lock()


def credential_label(name: str, fingerprint: str | None) -> str:
    """`fingerprint` for the first `CREDENTIALS_PER_NAME` seen per limits name, else `other`;
    `none` without one."""
    if not fingerprint or not _FINGERPRINT.match(fingerprint):
        return NONE
    seen = _credentials.get(name, frozenset())
    if fingerprint in seen:
        return fingerprint
    with _credentials_lock:
        seen = _credentials.get(name, frozenset())
        if len(seen) >= CREDENTIALS_PER_NAME:
            return OTHER
        _credentials[name] = seen | {fingerprint}
    return fingerprint


def transport_label(transport: object) -> str:
    """The requested transport (`auto` when none was asked for), or `other`."""
    if transport is None:
        return "auto"
    return transport if isinstance(transport, str) and transport in TRANSPORTS else OTHER


def webhook_outcome(status_code: int | None) -> str:
    if status_code is None:
        return "unreachable"
    return "delivered" if 200 <= status_code < 300 else "rejected"


@dataclass
class _Attempt:
    provider: str
    model: str
    requested: str
    started: float
    used: str | None = None  # what the adapter said it picked
    answered: bool = False  # the first byte was observed (later exchanges are not TTFB)

    def labels(self) -> tuple[str, str, str, str]:
        used = self.used or (self.requested if self.requested != "auto" else "auto")
        return (self.provider, self.model, used, self.requested)


_current = threading.local()  # this thread's provider attempt and its last permit


@contextmanager
def timed_call(provider: str, model: str | None, transport: object) -> Iterator[None]:
    """Observe one provider attempt's latency; `first_byte` inside it observes its TTFB.
    `transport` is the requested one; `transport_chosen` says which the adapter used."""
    attempt = _Attempt(
        provider_label(provider),
        model_label(provider, model),
        transport_label(transport),
        time.perf_counter(),
    )
    _current.attempt = attempt
    try:
        yield
    finally:
        _current.attempt = None
        CALL_SECONDS.labels(*attempt.labels()).observe(time.perf_counter() - attempt.started)


def transport_chosen(transport: str) -> None:
    """The adapter running this thread's attempt picked `transport` (http, stream, websocket)."""
    attempt: _Attempt | None = getattr(_current, "attempt", None)
    if attempt is not None:
        attempt.used = transport_label(transport)


def first_byte(transport: str | None = None) -> None:
    """The attempt this thread runs got its first answer (only the first one counts); a
    WebSocket session says `transport="websocket"`, which is then the transport used."""
    attempt: _Attempt | None = getattr(_current, "attempt", None)
    if attempt is None or attempt.answered:
        return
    attempt.answered = True
    if transport is not None:
        attempt.used = transport_label(transport)
    FIRST_BYTE_SECONDS.labels(*attempt.labels()).observe(time.perf_counter() - attempt.started)


def permit_granted(name: str, fingerprint: str, waited_s: float) -> None:
    """This thread got a permit of throttle `name` for `fingerprint` after `waited_s`."""
    _current.permit = (name, fingerprint)
    THROTTLE_WAIT_SECONDS.labels(provider_label(name), credential_label(name, fingerprint)).observe(
        max(waited_s, 0.0)
    )


def throttle_busy(name: str, fingerprint: str) -> None:
    THROTTLE_BUSY.labels(provider_label(name), credential_label(name, fingerprint)).inc()


def circuit_state(name: str, fingerprint: str, state: int) -> None:
    """0 closed, 1 open, 2 this process holds the half-open probe."""
    CIRCUIT_STATE.labels(provider_label(name), credential_label(name, fingerprint)).set(state)


def forget_permit() -> None:
    """A new provider call begins on this thread: an earlier call's permit is not its own."""
    _current.permit = None


def _permit_credential(provider: str) -> str | None:
    """The credential of the last permit for `provider` that this thread's current call held
    (None: no shared throttle, or none yet; `forget_permit` starts each call afresh)."""
    permit = getattr(_current, "permit", None)
    return permit[1] if permit is not None and permit[0] == provider else None


def provider_error(provider: str, status_code: int | None, credential: str | None = None) -> None:
    """Count a provider's 429 (other errors show in the outcomes and the circuit), under
    `credential`, or else the one of this thread's last permit for that provider."""
    if status_code != 429:
        return
    credential = credential or _permit_credential(provider)
    RATE_LIMITED.labels(provider_label(provider), credential_label(provider, credential)).inc()


def retried(provider: str) -> None:
    """An in-call retry, under the credential of this thread's last permit for `provider`."""
    credential = _permit_credential(provider)
    RETRIES.labels(provider_label(provider), credential_label(provider, credential)).inc()


def swept(expired: int, published: int) -> None:
    """One sweeper pass: the leases it expired and the items it (re-)published."""
    SWEEPER_EXPIRED.inc(expired)
    SWEEPER_PUBLISHED.inc(published)
