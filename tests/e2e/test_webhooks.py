"""A job submitted with `speechbatch tts --webhook-url` through the real API is processed by
the real worker, and the real beat POSTs one signed `job.finished` event to a receiver."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import Stack, running_stack
from tests.integration.test_webhook_delivery import Receiver

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(
    redis_url: str, s3_endpoint_url: str, s3_client: Any, sqlite_url: str, tmp_path: Path
) -> Iterator[Stack]:
    """The usual stack on SQLite, with loopback allowed so its receiver can be reached."""
    allow = {"SPEECHBATCH_ALLOW_PRIVATE_NETWORKS": "127.0.0.1/32"}
    with running_stack(
        sqlite_url, redis_url, s3_endpoint_url, s3_client, tmp_path, extra_env=allow
    ) as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


def test_a_finished_job_posts_one_verified_event(
    stack: Stack, receiver: Receiver, tmp_path: Path
) -> None:
    """The CLI passes --webhook-url, the job finishes, and beat delivers exactly one event
    that verifies with the tenant's secret and carries the finished job's view."""
    with stack.client() as client:
        receiver.secrets = [client.get("/v1/webhook-secret").json()["secret"]]
    script = tmp_path / "lines.txt"
    script.write_text("One line.\nAnother line.\n")
    env = {"SPEECHBATCH_API_URL": stack.api_url, "SPEECHBATCH_API_KEY": stack.api_key}
    args = ("tts", str(script), "--provider", "slng", "--webhook-url", receiver.url)
    submitted = stack.run_cli(*args, "--no-wait", extra_env=env)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    job = stack.wait_for_job(job_id)
    assert job["status"] == "succeeded" and job["webhook_url"] == receiver.url
    deadline = time.monotonic() + 30
    while not receiver.ids() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # a few more beat ticks: nothing else may arrive
    (seen,) = receiver.seen
    assert seen.verified_by == receiver.secrets
    assert seen.payload["type"] == "job.finished"
    assert seen.payload["data"]["id"] == job_id
    assert seen.payload["data"]["counts"]["succeeded"] == 2
    with stack.client() as client:
        (delivery,) = client.get(f"/v1/jobs/{job_id}/webhooks").json()["deliveries"]
    assert delivery["id"] == seen.headers["webhook-id"] and delivery["status"] == "delivered"
