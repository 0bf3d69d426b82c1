"""The worker's and beat's Prometheus metrics: module-level prometheus_client objects.

Each Celery worker is one process with a thread pool, and beat one process, so one registry
per process (prometheus_client's default) is right: every process serves its own on its own
port (`speechbatch worker --metrics-port`, `speechbatch beat --metrics-port`,
`speechbatch.processes.serve_metrics`) and Prometheus adds them up. Several workers on a host
take a port each; no multiprocess directory is needed because no process forks workers that
share a registry (the pool is threads).

The hooks are one line at the point where the fact is known (outcomes, retry, throttle,
circuit, sweeper, scheduler, webhook sender, the provider exchange), each an increment or an
observation of ~1 us, so the hot path stays as it was. Label values are bounded: providers
and models from the catalog (anything else is `other`), transports from their vocabulary,
outcomes from `workers.outcomes.Outcome`; never a job id, item id, key, URL or tenant name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from prometheus_client import Counter, Gauge, Histogram

from jobs.catalog import PROVIDERS

OTHER = "other"
TRANSPORTS = frozenset({"auto", "http", "stream", "websocket"})
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
CALL_SECONDS = Histogram(
    "speechbatch_provider_call_seconds",
    "One provider attempt, from its permit to its answer.",
    ["provider", "model", "transport"],
    buckets=_LATENCY_BUCKETS,
)
FIRST_BYTE_SECONDS = Histogram(
    "speechbatch_provider_first_byte_seconds",
    "From a provider attempt's start to the first HTTP answer's headers (HTTP and SSE).",
    ["provider", "model", "transport"],
    buckets=_LATENCY_BUCKETS,
)
RATE_LIMITED = Counter(
    "speechbatch_provider_rate_limited", "Provider answers 429, by provider.", ["provider"]
)
RETRIES = Counter(
    "speechbatch_provider_retries", "In-call retries after a transient error.", ["provider"]
)
THROTTLE_WAIT_SECONDS = Histogram(
    "speechbatch_throttle_wait_seconds",
    "Seconds a call waited for a permit of the shared throttle (granted permits).",
    ["provider"],
    buckets=_WAIT_BUCKETS,
)
THROTTLE_BUSY = Counter(
    "speechbatch_throttle_busy", "Calls that got no permit in time (item handed back).",
    ["provider"],
)  # fmt: skip
CIRCUIT_STATE = Gauge(
    "speechbatch_circuit_state",
    "The provider's circuit as this process last saw it: 0 closed, 1 open, 2 half-open probe.",
    ["provider"],
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


def transport_label(transport: object) -> str:
    """The requested transport (`auto` when none was asked for), or `other`."""
    if transport is None:
        return "auto"
    return transport if isinstance(transport, str) and transport in TRANSPORTS else OTHER


def webhook_outcome(status_code: int | None) -> str:
    if status_code is None:
        return "unreachable"
    return "delivered" if 200 <= status_code < 300 else "rejected"


_current = threading.local()  # the labels and start of this thread's provider attempt


@contextmanager
def timed_call(provider: str, model: str | None, transport: object) -> Iterator[None]:
    """Observe one provider attempt's latency; `first_byte` inside it observes its TTFB."""
    labels = (provider_label(provider), model_label(provider, model), transport_label(transport))
    started = time.perf_counter()
    _current.call = (labels, started)
    try:
        yield
    finally:
        _current.call = None
        CALL_SECONDS.labels(*labels).observe(time.perf_counter() - started)


def first_byte() -> None:
    """The attempt this thread runs got its first answer (only the first one counts)."""
    call = getattr(_current, "call", None)
    if call is not None:
        _current.call = None  # later exchanges of the attempt (polls, pieces) are not TTFB
        FIRST_BYTE_SECONDS.labels(*call[0]).observe(time.perf_counter() - call[1])


def provider_error(provider: str, status_code: int | None) -> None:
    """Count a provider's 429 (other errors show in the outcomes and the circuit)."""
    if status_code == 429:
        RATE_LIMITED.labels(provider_label(provider)).inc()


def throttle_waited(provider: str, seconds: float) -> None:
    THROTTLE_WAIT_SECONDS.labels(provider_label(provider)).observe(max(seconds, 0.0))


def swept(expired: int, published: int) -> None:
    """One sweeper pass: the leases it expired and the items it (re-)published."""
    SWEEPER_EXPIRED.inc(expired)
    SWEEPER_PUBLISHED.inc(published)
