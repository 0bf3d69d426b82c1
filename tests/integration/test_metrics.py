"""Prometheus metrics over real services: the API's `GET /metrics` on SQLite and PostgreSQL,
the worker counters moved by the real pipeline, and beat's metrics port as a process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from emulator.config import EmulatorConfig
from jobs.catalog_limits import provider_limits
from jobs.metrics import SystemCollector
from jobs.migrate import upgrade_to_head
from jobs.pricing import price_table
from storage.localfs import LocalObjectStore
from storage.publisher import InMemoryPublisher
from tests.integration.helpers import published
from tests.integration.test_api import running_api
from tests.integration.test_failover import ByName, Speaker
from tests.integration.test_pipeline import (
    AlwaysDown,
    OneProvider,
    SaysSlowDown,
    runtime,
    submitted,
)
from tests.services import free_port
from tests.unit.ws_emulator import serving
from workers import metrics
from workers.circuit import RedisCircuit
from workers.pipeline import Outcome, run_item
from workers.providers.errors import QuotaExceeded
from workers.providers.slng import SlngProvider
from workers.throttle import ProviderThrottle, ThrottleBusy

pytestmark = pytest.mark.integration

# What an id, key or digest looks like: a long run of hex or base64url characters.
ID_LIKE = re.compile(r"[0-9a-fA-F]{12,}|[A-Za-z0-9_-]{20,}")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Sample (name, sorted labels) -> value of a Prometheus text exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(name: str, **labels: str) -> float:
    """A sample of this process's default registry (the worker's metrics), 0 if unseen."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_api_metrics_show_item_counts_of_the_jobs_created(
    database_url: str, redis_url: str
) -> None:
    """/metrics parses as Prometheus text, its item gauges are the created jobs' item counts by
    status and kind (a canceled job's items as canceled), and no label value is an id, a key
    or a tenant name."""
    with running_api(database_url, redis_url) as api:
        first = api.post_job({"kind": "tts", "provider": "local", "items": [{"text": "a"}] * 3})
        second = api.post_job({"kind": "tts", "provider": "local", "items": [{"text": "b"}] * 2})
        assert first.status_code == second.status_code == 202
        job_id = second.json()["id"]
        assert api.client.post(f"/v1/jobs/{job_id}/cancel", headers=api.auth()).status_code == 200
        answer = api.client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == CONTENT_TYPE_LATEST
    got = samples(answer.text)
    items = {k[1]: v for k, v in got.items() if k[0] == "speechbatch_items"}
    assert items[(("kind", "tts"), ("status", "queued"))] == 3
    assert items[(("kind", "tts"), ("status", "canceled"))] == 2
    assert items[(("kind", "tts"), ("status", "succeeded"))] == 0
    jobs = {k[1]: v for k, v in got.items() if k[0] == "speechbatch_jobs"}
    assert jobs[(("kind", "tts"), ("status", "queued"))] == 1
    assert jobs[(("kind", "tts"), ("status", "canceled"))] == 1
    assert got[("speechbatch_queue_depth", ())] >= 1  # the first job's message(s) wait
    assert ("speechbatch_usage_characters", (("provider", "local"),)) in got
    labels = {v for (_, pairs) in got for _, v in pairs}
    secrets = {first.json()["id"], job_id, api.key, api.other_key, "acme", "globex"}
    assert not labels & secrets
    assert [v for v in labels if ID_LIKE.search(v)] == []


def test_worker_counters_move_when_items_run_through_the_pipeline(
    sqlite_url: str, local_store: LocalObjectStore
) -> None:
    """Running items through the real pipeline counts their outcomes, provider call latency,
    429s and in-call retries under bounded provider/model/transport labels (no shared
    throttle here, so the 429s' and retries' credential is `none`)."""
    succeeded = value("speechbatch_items_finished_total", provider="local", outcome="succeeded")
    calls = value(
        "speechbatch_provider_call_seconds_count",
        provider="local", model="espeak-ng", transport="auto", requested="auto",
    )  # fmt: skip
    limited = value("speechbatch_provider_rate_limited_total", provider="local", credential="none")
    retries = value("speechbatch_provider_retries_total", provider="local", credential="none")

    api, _ = submitted(sqlite_url, ["One.", "Two."])
    rt = runtime(sqlite_url, local_store)
    assert [run_item(rt, i) for i in published(api).ids] == [Outcome.SUCCEEDED] * 2
    assert (
        value("speechbatch_items_finished_total", provider="local", outcome="succeeded")
        == succeeded + 2
    )
    assert (
        value(
            "speechbatch_provider_call_seconds_count",
            provider="local",
            model="espeak-ng",
            transport="auto",
            requested="auto",
        )
        == calls + 2
    )

    api, _ = submitted(sqlite_url, ["busy"])
    slow = runtime(sqlite_url, local_store, SaysSlowDown(), call_attempts=1)
    assert run_item(slow, published(api).ids[0]) == Outcome.DEFERRED
    assert (
        value("speechbatch_provider_rate_limited_total", provider="local", credential="none")
        == limited + 1
    )

    api, _ = submitted(sqlite_url, ["down"])
    down = runtime(sqlite_url, local_store, AlwaysDown(), call_attempts=2, call_base_s=0.0)
    run_item(down, published(api).ids[0])
    assert (
        value("speechbatch_provider_retries_total", provider="local", credential="none")
        == retries + 1
    )


def test_beat_serves_its_metrics_port(sqlite_url: str, redis_url: str, tmp_path: Path) -> None:
    """`speechbatch beat --metrics-port N` answers Prometheus text on N, with the sweeper's
    counters in it."""
    upgrade_to_head(sqlite_url)
    port = free_port()
    env = {
        **os.environ,
        "SPEECHBATCH_DATABASE_URL": sqlite_url,
        "SPEECHBATCH_BROKER_URL": redis_url,
        "SPEECHBATCH_STORAGE_URL": f"file://{tmp_path}/objects",
    }
    command = ["beat", "--interval", "0.2", "--metrics-port", str(port)]
    beat = subprocess.Popen(
        [sys.executable, "-m", "speechbatch", *command],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline, text = time.monotonic() + 20, ""
        while time.monotonic() < deadline and "speechbatch_sweeper_published_total" not in text:
            assert beat.poll() is None, beat.stderr.read().decode() if beat.stderr else ""
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.TransportError:
                time.sleep(0.1)
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {"speechbatch_sweeper_published", "speechbatch_schedule_fires"} <= names
    finally:
        beat.terminate()
        beat.wait(timeout=20)


def test_throttle_429s_and_circuit_are_labelled_by_credential(
    sqlite_url: str, local_store: LocalObjectStore, redis_url: str
) -> None:
    """Under the real Redis throttle and circuit, a granted permit's wait, a 429, an in-call
    retry and a refused permit count under the call's credential fingerprint, and an opened
    circuit's gauge is that credential's."""
    fp = uuid.uuid4().hex[:16]
    client = redis.Redis.from_url(redis_url)
    throttle = ProviderThrottle(client, provider_limits(), lease_s=30)
    labels = {"provider": "local", "credential": fp}
    waits = value("speechbatch_throttle_wait_seconds_count", **labels)

    api, _ = submitted(sqlite_url, ["busy"])
    slow = runtime(sqlite_url, local_store, call_attempts=1)
    slow = replace(slow, providers=OneProvider(SaysSlowDown(), fp), throttle=throttle)
    assert run_item(slow, published(api).ids[0]) == Outcome.DEFERRED
    assert value("speechbatch_throttle_wait_seconds_count", **labels) == waits + 1
    assert value("speechbatch_provider_rate_limited_total", **labels) == 1

    held = [throttle.acquire("local", fp, max_wait_s=1) for _ in range(2)]  # local's cap is 2
    with pytest.raises(ThrottleBusy), throttle.permit("local", fp, max_wait_s=0.05):
        pass
    assert value("speechbatch_throttle_busy_total", **labels) == 1
    for permit in held:
        assert permit is not None
        permit.release()

    api, _ = submitted(sqlite_url, ["down, then retried"])
    retrying = runtime(sqlite_url, local_store, call_attempts=2, call_base_s=0.0)
    retrying = replace(retrying, providers=OneProvider(AlwaysDown(), fp), throttle=throttle)
    run_item(retrying, published(api).ids[0])
    assert value("speechbatch_provider_retries_total", **labels) == 1

    api, _ = submitted(sqlite_url, ["down"])
    down = runtime(sqlite_url, local_store, call_attempts=1)
    circuit = RedisCircuit(client, failures=1, open_s=30)
    down = replace(down, providers=OneProvider(AlwaysDown(), fp), circuit=circuit)
    run_item(down, published(api).ids[0])
    assert value("speechbatch_circuit_state", **labels) == 1
    client.close()


def test_credential_labels_are_bounded_per_provider() -> None:
    """Past CREDENTIALS_PER_NAME fingerprints for one provider the label is `other`, and
    anything that is not a fingerprint is `none`."""
    name = "deepgram-stt"
    seen = [metrics.credential_label(name, uuid.uuid4().hex[:16]) for _ in range(10)]
    assert seen.count(metrics.OTHER) >= 10 - metrics.CREDENTIALS_PER_NAME
    assert len(set(seen) - {metrics.OTHER}) <= metrics.CREDENTIALS_PER_NAME
    assert metrics.credential_label(name, "sk-live-not-a-fingerprint") == metrics.NONE


def test_websocket_calls_observe_time_to_first_byte_under_the_transport_used() -> None:
    """A TTS line over a WebSocket session observes the TTFB histogram once, labelled
    websocket; an `auto` call says what the adapter chose beside the request."""
    key = "sk-metrics-ws-0123"
    model = "slng/deepgram/aura:2-en"
    ws = {"provider": "slng", "model": model, "transport": "websocket", "requested": "websocket"}
    before = value("speechbatch_provider_first_byte_seconds_count", **ws)
    calls = value("speechbatch_provider_call_seconds_count", **ws)
    with serving(EmulatorConfig(api_keys=frozenset({key}))) as (base, _):
        provider = SlngProvider(httpx.Client(), base_url=f"{base}/slng", api_key=key)
        options = {"transport": "websocket", "sample_rate": 8000}
        with metrics.timed_call("slng", model, "websocket"):
            provider.synthesize("A line over a session.", model=model, voice=None, options=options)
        provider.close()
    assert value("speechbatch_provider_first_byte_seconds_count", **ws) == before + 1
    assert value("speechbatch_provider_call_seconds_count", **ws) == calls + 1

    chosen = {**ws, "transport": "stream", "requested": "auto"}
    streamed = value("speechbatch_provider_first_byte_seconds_count", **chosen)
    with metrics.timed_call("slng", model, None):
        metrics.transport_chosen("stream")
        metrics.first_byte()
        metrics.first_byte()  # a later exchange of the same attempt is not its first byte
    assert value("speechbatch_provider_first_byte_seconds_count", **chosen) == streamed + 1


def test_usage_a_fallback_served_is_credited_to_the_fallbacks_provider(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """Items the primary refused for quota and the fallback spoke count their characters
    and cost under the fallback's provider in the API's gauges, not the job's own."""
    fallback = [{"provider": "smallest", "voice": "magnus"}]
    api, _ = submitted(database_url, ["One.", "Two!!"], provider="slng", fallback=fallback)
    primary = Speaker("slng", QuotaExceeded("You exceeded your current quota."))
    rt = replace(runtime(database_url, local_store), providers=ByName(primary, Speaker("smallest")))
    ids = published(api).ids
    assert [run_item(rt, i) for i in ids] == [Outcome.REROUTED] * 2
    assert [run_item(rt, i) for i in ids] == [Outcome.SUCCEEDED] * 2
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SystemCollector(api.db.sessions, InMemoryPublisher(), price_table("")))
    got = samples(generate_latest(registry).decode())
    assert got[("speechbatch_usage_characters", (("provider", "smallest"),))] == 9
    assert got[("speechbatch_usage_characters", (("provider", "slng"),))] == 0
    assert got[("speechbatch_estimated_cost_usd", (("provider", "smallest"),))] > 0
    assert got[("speechbatch_estimated_cost_usd", (("provider", "slng"),))] == 0
