"""Prometheus metrics over real services: the API's `GET /metrics` on SQLite and PostgreSQL,
the worker counters moved by the real pipeline, and beat's metrics port as a process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from jobs.migrate import upgrade_to_head
from storage.localfs import LocalObjectStore
from tests.integration.helpers import published
from tests.integration.test_api import running_api
from tests.integration.test_pipeline import AlwaysDown, SaysSlowDown, runtime, submitted
from tests.services import free_port
from workers.pipeline import Outcome, run_item

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
    429s and in-call retries under bounded provider/model/transport labels."""
    succeeded = value("speechbatch_items_finished_total", provider="local", outcome="succeeded")
    calls = value(
        "speechbatch_provider_call_seconds_count",
        provider="local", model="espeak-ng", transport="auto",
    )  # fmt: skip
    limited = value("speechbatch_provider_rate_limited_total", provider="local")
    retries = value("speechbatch_provider_retries_total", provider="local")

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
        )
        == calls + 2
    )

    api, _ = submitted(sqlite_url, ["busy"])
    slow = runtime(sqlite_url, local_store, SaysSlowDown(), call_attempts=1)
    assert run_item(slow, published(api).ids[0]) == Outcome.DEFERRED
    assert value("speechbatch_provider_rate_limited_total", provider="local") == limited + 1

    api, _ = submitted(sqlite_url, ["down"])
    down = runtime(sqlite_url, local_store, AlwaysDown(), call_attempts=2, call_base_s=0.0)
    run_item(down, published(api).ids[0])
    assert value("speechbatch_provider_retries_total", provider="local") == retries + 1


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
