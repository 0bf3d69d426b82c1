"""The worker's log lines about an item name its job, item and provider, and on failure the code.

Runs items through the real pipeline (SQLite ledger, local store, espeak-ng) and reads the
records it logs: the fields are structured (`extra=`), so JSON logs carry them as keys, and
the text says the same.
"""

from __future__ import annotations

import logging

import pytest

from storage.localfs import LocalObjectStore
from tests.integration.helpers import published
from tests.integration.test_pipeline import AlwaysDown, runtime, submitted
from workers.pipeline import Outcome, run_item

pytestmark = pytest.mark.integration


def outcome_records(caplog: pytest.LogCaptureFixture, item_id: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(f"item {item_id} outcome ")]


def fields(record: logging.LogRecord, *names: str) -> dict[str, object]:
    """The record's structured fields (what JSON logs show as keys); None when absent."""
    return {name: record.__dict__.get(name) for name in names}


def test_a_failed_item_logs_job_item_provider_and_error_code(
    sqlite_url: str, local_store: LocalObjectStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A permanent failure logs one WARNING outcome line carrying all four fields."""
    api, job = submitted(sqlite_url, ["Hi."], voice="no-such-voice")
    rt = runtime(sqlite_url, local_store)
    item_id = published(api).ids[0]
    with caplog.at_level(logging.INFO):
        assert run_item(rt, item_id) == Outcome.FAILED
    [record] = outcome_records(caplog, item_id)
    assert record.levelno == logging.WARNING
    assert fields(record, "job_id", "item_id", "provider", "error_code") == {
        "job_id": job.id,
        "item_id": item_id,
        "provider": "local",
        "error_code": "unknown_voice",
    }
    assert record.getMessage() == (
        f"item {item_id} outcome failed (job {job.id}, provider local, error unknown_voice)"
    )


def test_retries_and_successes_name_the_job_and_provider(
    sqlite_url: str, local_store: LocalObjectStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A re-queued item's line carries the transient error's code; a success carries none."""
    api, job = submitted(sqlite_url, ["Hi.", "There."])
    first, second = published(api).ids
    down = runtime(sqlite_url, local_store, AlwaysDown(), call_attempts=1, item_base_s=0.0)
    working = runtime(sqlite_url, local_store)
    with caplog.at_level(logging.INFO):
        assert run_item(down, first) == Outcome.RETRYING
        assert run_item(working, second) == Outcome.SUCCEEDED
    [retried] = outcome_records(caplog, first)
    [succeeded] = outcome_records(caplog, second)
    assert fields(retried, "job_id", "item_id", "provider", "outcome", "error_code") == {
        "job_id": job.id,
        "item_id": first,
        "provider": "local",
        "outcome": "retrying",
        "error_code": "provider_unavailable",
    }
    assert fields(succeeded, "job_id", "item_id", "provider", "outcome", "error_code") == {
        "job_id": job.id,
        "item_id": second,
        "provider": "local",
        "outcome": "succeeded",
        "error_code": None,
    }
