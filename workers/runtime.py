"""Per-process resources a worker needs, built once and closed on shutdown.

One engine, one object store client, one pooled `httpx.Client` and one adapter per provider,
shared by every thread of the process (boto3 clients and httpx clients are thread-safe).
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from jobs.catalog import provider_limits
from jobs.netpolicy import Allowlist, parse_allowlist
from jobs.service import Publish
from jobs.settings import Settings
from storage.db import make_autocommit_engine, make_engine, make_session_factory
from storage.objects import ObjectStore, open_object_store
from workers.leases import LeaseKeeper
from workers.providers import build_provider
from workers.providers.base import SpeechProvider
from workers.retry import RetryPolicy
from workers.retry_budget import RedisRetryBudget, RetryBudget
from workers.throttle import ProviderThrottle, credential_fingerprint, redis_for_throttle


@dataclass
class Runtime:
    sessions: sessionmaker[Session]
    store: ObjectStore
    provider_for: Callable[[str], SpeechProvider]
    publish: Publish
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    lease_s: float = 120.0
    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], None] = time.sleep
    close: Callable[[], None] = lambda: None
    leases: LeaseKeeper | None = None  # None: no heartbeats (tests that drive time by hand)
    throttle: ProviderThrottle | None = None  # None: in-process only (local mode, tests)
    fingerprint: Callable[[str], str] = lambda _provider: ""
    # How long one attempt waits for a provider slot before the item is handed back.
    throttle_wait_s: float = 5.0
    retry_budget_for: Callable[[str], RetryBudget | None] = lambda _provider: None
    source_allow: Allowlist = ()
    max_source_bytes: int = 100 * 1024 * 1024
    source_timeout_s: float = 300.0
    # PostgreSQL only: claims and successes run as single autocommit statements on it.
    autocommit: Engine | None = None


def provider_cache(settings: Settings, client: httpx.Client) -> Callable[[str], SpeechProvider]:
    """A thread-safe name → adapter lookup that builds each adapter once."""
    built: dict[str, SpeechProvider] = {}
    lock = threading.Lock()

    def provider_for(name: str) -> SpeechProvider:
        with lock:
            if name not in built:
                built[name] = build_provider(
                    name,
                    client=client,
                    base_url=settings.provider_base_url(name) if name != "local" else None,
                    api_key=settings.provider_api_key(name),
                )
            return built[name]

    return provider_for


def build_runtime(settings: Settings, publish: Publish, *, pool_size: int = 32) -> Runtime:
    """Everything a worker process (or the CLI's local mode) needs to run items."""
    engine = make_engine(settings.database_url)
    autocommit = make_autocommit_engine(settings.database_url, pool_size=pool_size)
    store = open_object_store(settings.storage_url, endpoint_url=settings.s3_endpoint_url)
    timeout = settings.provider_timeout_seconds
    client = httpx.Client(
        timeout=httpx.Timeout(timeout, connect=5.0),
        limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
    )

    sessions = make_session_factory(engine)
    leases = LeaseKeeper(sessions, float(settings.lease_seconds))
    throttle = None
    budgets: dict[str, RetryBudget] = {}
    if settings.broker_url:
        shared = redis_for_throttle(settings.broker_url)
        # One permit per HTTP attempt; its lease only has to outlive one provider call.
        throttle = ProviderThrottle(
            shared,
            provider_limits(settings.provider_limits),
            lease_s=settings.provider_timeout_seconds + 30,
        )

    def fingerprint(provider: str) -> str:
        # The local engines are limited per host (they use this machine's CPU), the hosted
        # ones per credential, shared by every worker that holds it.
        key = socket.gethostname() if provider == "local" else settings.provider_api_key(provider)
        return credential_fingerprint(key)

    def retry_budget_for(provider: str) -> RetryBudget | None:
        if throttle is None:
            return None
        if provider not in budgets:  # a benign race builds two equal objects at worst
            budgets[provider] = RedisRetryBudget(shared, provider, fingerprint(provider))
        return budgets[provider]

    def close() -> None:
        leases.stop()
        client.close()
        engine.dispose()
        if autocommit is not None:
            autocommit.dispose()

    return Runtime(
        sessions=sessions,
        autocommit=autocommit,
        leases=leases,
        throttle=throttle,
        fingerprint=fingerprint,
        retry_budget_for=retry_budget_for,
        source_allow=parse_allowlist(settings.allow_private_networks),
        max_source_bytes=settings.max_source_bytes,
        source_timeout_s=settings.source_timeout_seconds,
        store=store,
        provider_for=provider_cache(settings, client),
        publish=publish,
        policy=RetryPolicy(item_attempts=settings.max_item_attempts),
        lease_s=float(settings.lease_seconds),
        close=close,
    )
