"""Cancelling a job reaches its running items: a slow provider call is cut off, nothing stays.

Real PostgreSQL, a real S3 bucket (SeaweedFS), the emulator as its own process (its
`[[latency:MS]]` text token makes one call slow) and the worker's own provider client, so
the cut-off goes through the same sockets and connection pool a worker uses.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from jobs import service
from jobs.ledger import ItemLedger
from jobs.models import Item
from jobs.status import ItemStatus, JobStatus
from storage.objects import ObjectStore
from storage.s3 import S3ObjectStore
from tests.e2e.stack import CLI, EMULATOR_KEY, Proc, answers
from tests.integration.helpers import migrated_ledger, published, tts_job
from tests.integration.test_ledger import assert_counters_match_items
from tests.services import free_port
from workers.config import WorkerConfig
from workers.interrupt import interruptible_transport
from workers.leases import HeartbeatLeases, Leases, NullLeases
from workers.pipeline import Outcome, run_item
from workers.providers.registry import build_provider
from workers.runtime import Runtime

pytestmark = pytest.mark.integration

LEASE_S = 1.5  # the heartbeat renews (and so notices a cancel) every 0.5 s
SLOW_MS = 8000  # well inside any per-call deadline, far beyond the heartbeat
SLNG = {"provider": "slng", "model": "slng/deepgram/aura:2-en", "voice": "aura-2-thalia-en"}


@pytest.fixture(scope="module")
def emulator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`speechbatch emulator` on a free port, answering every call correctly (no faults)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "EMULATOR_API_KEYS": EMULATOR_KEY}
    proc = Proc(
        "emulator", [CLI, "emulator", "--port", str(port)], env, tmp_path_factory.mktemp("emu")
    )
    proc.start(ready=answers(f"{url}/_emulator/health"))
    yield url
    proc.stop(grace=1.0)  # it would otherwise finish the slow call it is still sleeping on


class OneProvider:
    def __init__(self, provider: Any) -> None:
        self.provider = provider

    def get(self, name: str) -> Any:
        return self.provider

    def fingerprint(self, name: str) -> str:
        return "0" * 16

    def close(self) -> None:
        """The test closes the client."""


def worker_runtime(
    ledger: ItemLedger, store: ObjectStore, emulator_url: str, leases: Leases
) -> tuple[Runtime, httpx.Client]:
    """A runtime wired as `build_runtime` wires a worker's: the interruptible transport."""
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    client = httpx.Client(timeout=30.0, transport=interruptible_transport(limits=limits))
    slng = build_provider(
        "slng", client=client, base_url=f"{emulator_url}/slng", api_key=EMULATOR_KEY
    )
    runtime = Runtime(
        config=WorkerConfig(lease_s=LEASE_S),
        ledger=ledger,
        store=store,
        providers=OneProvider(slng),
        leases=leases,
        rng=random.Random(1),
        sleep=lambda _s: None,
    )
    return runtime, client


def in_flight(emulator_url: str) -> int:
    count: int = httpx.get(f"{emulator_url}/_emulator/stats").json()["in_flight"]
    return count


def run_and_cancel_mid_call(
    pg_url: str, store: ObjectStore, emulator_url: str, leases_for: Any, latency_ms: int
) -> tuple[ItemLedger, str, int, Outcome, float]:
    """Start one slow item on a thread, cancel its job once the call is in flight; returns
    the ledger, job id, item id, the outcome and how long the run took after the cancel."""
    ledger = migrated_ledger(pg_url)
    job = tts_job(ledger, [f"[[latency:{latency_ms}]] Cancel me mid-sentence."], **SLNG).job
    item_id = published(ledger).ids[0]
    rt, client = worker_runtime(ledger, store, emulator_url, leases_for(ledger))
    result: list[Outcome] = []
    worker = threading.Thread(target=lambda: result.append(run_item(rt, item_id)))
    worker.start()
    deadline = time.monotonic() + 10
    while in_flight(emulator_url) < 1:
        assert time.monotonic() < deadline, "the provider call never started"
        time.sleep(0.05)
    canceled = time.monotonic()
    service.cancel_job(ledger, store, job.tenant_id, job.id)
    worker.join(timeout=30)
    took = time.monotonic() - canceled
    rt.leases.close()
    client.close()
    assert result, "run_item did not return"
    return ledger, job.id, item_id, result[0], took


def test_cancel_cuts_a_running_items_slow_call_off_at_the_next_heartbeat(
    pg_url: str, s3_store: S3ObjectStore, emulator_url: str
) -> None:
    """A canceled job's item in an 8 s provider call stops within a few heartbeats, ends
    canceled with exact counters, and leaves no object at its keys."""
    ledger, job_id, item_id, outcome, took = run_and_cancel_mid_call(
        pg_url, s3_store, emulator_url, lambda lg: HeartbeatLeases(lg, LEASE_S), SLOW_MS
    )
    assert outcome is Outcome.LOST
    print(f"stopped {took:.2f}s after the cancel")
    assert took < 4.0, f"stopped {took:.1f}s after the cancel; the call alone takes 8 s"
    job = assert_counters_match_items(ledger, job_id)
    assert (job.status, job.canceled, job.running) == (JobStatus.CANCELED, 1, 0)
    with ledger.db.sessions() as session:
        assert session.get(Item, item_id).status == ItemStatus.CANCELED
    keys = list(s3_store.list_keys(""))
    assert [k for k in keys if not k.endswith("manifest.jsonl")] == [], keys


def test_an_output_written_after_the_cancel_is_removed(
    pg_url: str, s3_store: S3ObjectStore, emulator_url: str
) -> None:
    """Without a heartbeat to stop it, a canceled item's call finishes and its object is
    written, but its success is refused and the object is removed again."""
    ledger, job_id, _, outcome, _ = run_and_cancel_mid_call(
        pg_url, s3_store, emulator_url, lambda _lg: NullLeases(), 1500
    )
    assert outcome is Outcome.LOST
    job = assert_counters_match_items(ledger, job_id)
    assert (job.status, job.succeeded, job.canceled) == (JobStatus.CANCELED, 0, 1)
    keys = list(s3_store.list_keys(""))
    assert [k for k in keys if not k.endswith("manifest.jsonl")] == [], keys
