"""Per-process resources a worker needs, built once and closed on shutdown.

One engine, one object store client, one pooled `httpx.Client` and one adapter per provider,
shared by every thread of the process (boto3 clients and httpx clients are thread-safe).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from sqlalchemy.orm import Session, sessionmaker

from jobs.service import Publish
from jobs.settings import Settings
from storage.db import make_engine, make_session_factory
from storage.objects import ObjectStore, open_object_store
from workers.leases import LeaseKeeper
from workers.providers import build_provider
from workers.providers.base import SpeechProvider
from workers.retry import RetryPolicy


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
    store = open_object_store(settings.storage_url, endpoint_url=settings.s3_endpoint_url)
    timeout = settings.provider_timeout_seconds
    client = httpx.Client(
        timeout=httpx.Timeout(timeout, connect=5.0),
        limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
    )

    sessions = make_session_factory(engine)
    leases = LeaseKeeper(sessions, float(settings.lease_seconds))

    def close() -> None:
        leases.stop()
        client.close()
        engine.dispose()

    return Runtime(
        sessions=sessions,
        leases=leases,
        store=store,
        provider_for=provider_cache(settings, client),
        publish=publish,
        policy=RetryPolicy(item_attempts=settings.max_item_attempts),
        lease_s=float(settings.lease_seconds),
        close=close,
    )
