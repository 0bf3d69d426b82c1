"""What each provider credential's shared throttle and circuit look like right now.

The dashboard's provider page, `GET /v1/providers` and `speechbatch top` read provider state
through `read_provider_states`. It reads the keys the workers keep in Redis (named once, in
`storage.provider_keys`) for the credentials this deployment is configured with: the API gets
the same provider keys as the workers (one `.env`), so it can name their fingerprints without
scanning Redis. One row per throttle: a provider, plus one per kind with limits of its own
(`smallest-stt`, `deepgram-stt`, ...), in the catalog's order. The local engines are left out:
they are throttled per worker host, not per credential.

Reading never writes and never raises for Redis: an outage (or local mode, which has no
shared state) gives every row its configured limits and `error` set, so a page still renders.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from jobs.catalog import PROVIDERS, limits_name
from jobs.catalog_limits import ProviderLimits, provider_limits
from jobs.settings import Settings
from storage.provider_keys import (
    SharedState,
    credential_fingerprint,
    read_shared_states,
    shared_redis,
)

KINDS = ("tts", "stt")
CIRCUIT_STATES = ("closed", "open", "half-open", "unknown")


@dataclass(frozen=True)
class ProviderState:
    provider: str
    credential: str  # the credential's fingerprint (16 hex digits), never the key
    configured: bool  # a key for this provider is set in the deployment
    max_concurrency: int  # the configured cap (catalog or SPEECHBATCH_PROVIDER_LIMITS)
    max_rps: float | None
    effective_concurrency: int  # after the adaptive throttle's cuts
    effective_rps: float | None
    in_flight: int  # calls holding a slot now (all workers)
    # "closed" | "open" | "half-open" (its time is up: the next call is a probe) | "unknown"
    # (Redis did not answer; `error` says why)
    circuit: str
    circuit_open_until: datetime | None
    error: str | None = None  # e.g. "redis unavailable": the rest of the page still renders
    limits_name: str = ""  # the throttle's name: `provider`, or `provider-kind` (smallest-stt)
    kinds: tuple[str, ...] = ()  # the job kinds whose calls count against this throttle
    probing: bool = False  # a worker is probing the half-open circuit right now


@dataclass(frozen=True)
class _Row:
    provider: str
    name: str
    kinds: tuple[str, ...]
    limits: ProviderLimits
    credential: str
    configured: bool


def _rows(settings: Settings) -> list[_Row]:
    limits = provider_limits(settings.provider_limits)
    rows = []
    for provider, spec in PROVIDERS.items():
        if not spec.needs_api_key:
            continue  # the local engines: per host, not per credential
        key = settings.provider_api_key(provider)
        configured, fingerprint = bool(key and key.strip()), credential_fingerprint(key)
        names: dict[str, list[str]] = {}
        for kind in KINDS:
            names.setdefault(limits_name(provider, kind), []).append(kind)
        for name, kinds in names.items():
            rows.append(_Row(provider, name, tuple(kinds), limits[name], fingerprint, configured))
    return rows


_clients: dict[str, redis.Redis[Any]] = {}
_clients_lock = threading.Lock()


def _client(url: str) -> redis.Redis[Any]:
    """One pooled client per broker URL for the process (the dashboard polls this)."""
    with _clients_lock:
        if url not in _clients:
            _clients[url] = shared_redis(url, retries=0)
        return _clients[url]


def read_provider_states(
    settings: Settings,
    *,
    client: redis.Redis[Any] | None = None,
    clock: Callable[[], float] = time.time,
) -> list[ProviderState]:
    """One row per hosted provider's throttle (configured or not), in the catalog's order.

    `client` defaults to a shared one for `settings.broker_url`; `clock` is wall time, which
    the workers' circuits also use.
    """
    rows = _rows(settings)
    if client is None and not settings.broker_url:
        return [_unread(r, "no broker configured: local mode keeps no shared state") for r in rows]
    try:
        shared = read_shared_states(
            client or _client(settings.broker_url or ""), [(r.name, r.credential) for r in rows]
        )
    except redis.RedisError as exc:
        return [_unread(r, f"redis unavailable ({type(exc).__name__})") for r in rows]
    now = clock()
    return [_state(r, s, now) for r, s in zip(rows, shared, strict=True)]


def _state(row: _Row, shared: SharedState, now: float) -> ProviderState:
    cap, rps = row.limits.max_concurrency, row.limits.max_rps
    until = shared.open_until
    circuit = "closed" if not until else "open" if now < until else "half-open"
    return ProviderState(
        provider=row.provider,
        credential=row.credential,
        configured=row.configured,
        max_concurrency=cap,
        max_rps=rps,
        effective_concurrency=min(shared.limit, cap) if shared.limit is not None else cap,
        effective_rps=None if rps is None else min(shared.rate or rps, rps),
        in_flight=shared.in_flight,
        circuit=circuit,
        circuit_open_until=datetime.fromtimestamp(until, UTC) if until else None,
        limits_name=row.name,
        kinds=row.kinds,
        probing=shared.probing,
    )


def _unread(row: _Row, error: str) -> ProviderState:
    return ProviderState(
        provider=row.provider,
        credential=row.credential,
        configured=row.configured,
        max_concurrency=row.limits.max_concurrency,
        max_rps=row.limits.max_rps,
        effective_concurrency=row.limits.max_concurrency,
        effective_rps=row.limits.max_rps,
        in_flight=0,
        circuit="unknown",
        circuit_open_until=None,
        error=error,
        limits_name=row.name,
        kinds=row.kinds,
    )
