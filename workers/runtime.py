"""What one worker process runs items with: its configuration and its seams, built once.

Each seam is a small interface with a real implementation and one for local mode and tests:

    ledger     jobs.ledger.ItemLedger              (one class; PostgreSQL or SQLite inside)
    store      storage ObjectStore                 S3 / local directory / in memory
    providers  workers.providers.registry          adapters built on first use
    throttle   workers.throttle.Throttle           ProviderThrottle (Redis) / UnlimitedThrottle
    budget     workers.retry_budget.RetryBudget    RedisRetryBudget / UnlimitedRetryBudget
    circuit    workers.circuit.Circuit             RedisCircuit / NoCircuit
    leases     workers.leases.Leases               HeartbeatLeases / NullLeases
    batch      workers.batch_stt.BatchApi          SlngBatch / NoBatchApi (no SLNG key)

Nothing is None as a mode switch and no behaviour is passed as a lambda. `build_runtime`
wires the real ones from `Settings`; tests build a `Runtime` from whichever they need.
"""

from __future__ import annotations

import gc
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from jobs.ledger import ItemLedger
from jobs.settings import Settings
from storage.db import open_database
from storage.objects import ObjectStore
from storage.publisher import Publisher
from storage.stores import open_object_store
from workers.archive import ArchiveStores
from workers.batch_stt import BatchApi, NoBatchApi
from workers.circuit import Circuit, NoCircuit, RedisCircuit
from workers.config import WorkerConfig
from workers.interrupt import interruptible_transport
from workers.leases import HeartbeatLeases, Leases, NullLeases
from workers.providers.registry import ProviderRegistry, Providers
from workers.providers.slng_batch import SlngBatch
from workers.retry_budget import RedisRetryBudget, RetryBudget, UnlimitedRetryBudget
from workers.throttle import ProviderThrottle, Throttle, UnlimitedThrottle, redis_for_throttle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    config: WorkerConfig
    ledger: ItemLedger
    store: ObjectStore
    providers: Providers
    throttle: Throttle = field(default_factory=UnlimitedThrottle)
    budget: RetryBudget = field(default_factory=UnlimitedRetryBudget)
    circuit: Circuit = field(default_factory=NoCircuit)
    leases: Leases = field(default_factory=NullLeases)
    batch: BatchApi = field(default_factory=NoBatchApi)
    # Where archive items' recordings are read (workers.archive); tests pass one on `store`.
    archives: ArchiveStores = field(default_factory=ArchiveStores)
    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], None] = time.sleep

    def close(self) -> None:
        self.throttle.close()
        self.leases.close()
        self.providers.close()
        self.store.close()
        self.archives.close()
        self.ledger.db.dispose()


def build_runtime(settings: Settings, publisher: Publisher, *, threads: int) -> Runtime:
    """Everything a worker process (or local mode) needs to run items on `threads` threads.

    With a broker, calls share the Redis throttle and retry budget of every worker; without
    one (local mode) they are limited only by this process's threads.
    """
    config = WorkerConfig.from_settings(settings)
    pool = max(threads, 4)
    db = open_database(settings.database_url, pool_size=pool)
    ledger = ItemLedger(db, publisher)
    # The transport lets a canceled item's heartbeat cut its provider call off (issue 9).
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    client = httpx.Client(
        timeout=httpx.Timeout(config.provider_timeout_s, connect=5.0),
        transport=interruptible_transport(limits=limits),
    )
    throttle: Throttle = UnlimitedThrottle()
    budget: RetryBudget = UnlimitedRetryBudget()
    circuit: Circuit = NoCircuit()
    if settings.broker_url:
        shared = redis_for_throttle(settings.broker_url)
        # One permit per HTTP attempt; its lease only has to outlive one provider call.
        throttle = ProviderThrottle(shared, config.limits, lease_s=config.provider_timeout_s + 30)
        budget = RedisRetryBudget(shared)
        circuit = RedisCircuit(shared)
    providers = ProviderRegistry.from_settings(settings, client)
    slng_key = settings.provider_api_key("slng")
    batch: BatchApi = NoBatchApi()
    if slng_key and slng_key.strip():
        base_url = settings.provider_base_url("slng_batch")
        batch = SlngBatch(
            client, base_url=base_url, api_key=slng_key.strip(), bounds=providers.bounds
        )
    store = open_object_store(
        settings.storage_url,
        endpoint_url=settings.s3_endpoint_url,
        public_endpoint_url=settings.s3_public_endpoint_url,
    )
    return Runtime(
        config=config,
        ledger=ledger,
        store=store,
        archives=ArchiveStores(store, settings.s3_endpoint_url),
        providers=providers,
        throttle=throttle,
        budget=budget,
        circuit=circuit,
        leases=HeartbeatLeases(ledger, config.lease_s),
        batch=batch,
    )


def warm_up(rt: Runtime, threads: int) -> None:
    """Open now, at worker start, what the first items would otherwise each open inside the
    first job's time: a database connection per thread and the object store's connection
    (bench/throughput.py: the first claim came 0.35 s after the job's ids were published).
    A failure is only logged; the items meet it and handle it as they always do."""
    try:
        rt.ledger.db.warm(threads)
        rt.store.check()
    except Exception as exc:  # a down database or store is the items' business, not start-up's
        log.warning("worker warm-up skipped: %s: %s", type(exc).__name__, exc)


def freeze_start_up_heap() -> int:
    """Move every object alive now (imports, the Celery app, the runtime: ~250,000 in a
    default worker) out of the cyclic collector's sight; returns how many were moved.

    Run once after warm-up. Without it each full collection walked them all and held the
    GIL for ~160 ms, stalling every in-flight call of the worker (bench/overhead.py, gc
    callbacks: one such pause per 2,000 items; 5 ms after). Garbage is collected first, so
    nothing unreachable is frozen; an object frozen here is never freed by the collector
    later, which costs at most what start-up built.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
