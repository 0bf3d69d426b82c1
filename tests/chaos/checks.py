"""The invariants every chaos scenario must leave intact, checked against the real services.

`assert_job_invariants` reads the job and its items through the API, the bucket through
boto3, the `attempts` table through SQL and every worker log, and asserts:

- the job is terminal and its counts add up (total = succeeded + failed + canceled, none
  queued or running), and every item is terminal; a failed item says why;
- the job's folder holds exactly one object per succeeded item, at that item's key, plus
  `manifest.jsonl`, and nothing else; each object decodes with the recorded duration;
- no item logged `outcome succeeded` twice, and none that the database does not call succeeded;
- every item was claimed at least once, and every succeeded item has its 200 attempt recorded.
"""

from __future__ import annotations

import io
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import soundfile as sf
from sqlalchemy import create_engine, text

from tests.e2e.stack import Stack

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

TERMINAL_JOB = {"succeeded", "completed_with_errors", "failed", "canceled"}
TERMINAL_ITEM = {"succeeded", "failed", "canceled"}
OUTCOME_LINE = re.compile(r"\bitem (\d+) outcome (\w+)")
MANIFEST_WAIT_S = 15.0


@dataclass
class JobReport:
    """What a scenario cost: printed by each test, asserted on where it proves something."""

    duration_s: float
    items: int
    succeeded: int
    failed: int
    extra_claims: int  # claims beyond one per item: retries and recovered leases
    http_attempts: int
    http_errors: int
    deliveries: Counter[str] = field(default_factory=Counter)

    def __str__(self) -> str:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.deliveries.items()))
        return (
            f"{self.items} items in {self.duration_s:.1f}s: {self.succeeded} succeeded, "
            f"{self.failed} failed; {self.extra_claims} extra claims; {self.http_attempts} "
            f"provider calls ({self.http_errors} errors); deliveries: {outcomes}"
        )


def assert_job_invariants(
    stack: Stack, job_id: str, *, s3_client: S3Client, bucket: str
) -> JobReport:
    """Assert every invariant in the module docstring for `job_id`; return its JobReport."""
    with stack.client() as client:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
    counts = job["counts"]
    assert job["status"] in TERMINAL_JOB, job
    assert (counts["queued"], counts["running"]) == (0, 0), counts
    assert counts["total"] == counts["succeeded"] + counts["failed"] + counts["canceled"], counts

    items = stack.items(job_id)
    assert len(items) == counts["total"]
    by_status = Counter(item["status"] for item in items)
    assert set(by_status) <= TERMINAL_ITEM, by_status
    assert by_status["succeeded"] == counts["succeeded"], (by_status, counts)
    assert by_status["failed"] == counts["failed"], (by_status, counts)
    unclaimed = [item["id"] for item in items if item["attempts"] < 1]
    assert not unclaimed, f"items never claimed: {unclaimed[:10]}"
    for item in items:
        if item["status"] == "failed":
            assert item["error"] and item["error"]["code"] and item["error"]["message"], item

    succeeded = [item for item in items if item["status"] == "succeeded"]
    _assert_objects(s3_client, bucket, store_root(stack, bucket), job_id, succeeded)
    db_ids = _assert_attempts_recorded(stack, job_id)
    deliveries = _assert_single_success(stack, db_ids)

    http_attempts, http_errors = _attempt_totals(stack, job_id)
    started = datetime.fromisoformat(job["created_at"])
    finished = datetime.fromisoformat(job["finished_at"])
    return JobReport(
        duration_s=(finished - started).total_seconds(),
        items=len(items),
        succeeded=len(succeeded),
        failed=by_status["failed"],
        extra_claims=sum(item["attempts"] for item in items) - len(items),
        http_attempts=http_attempts,
        http_errors=http_errors,
        deliveries=deliveries,
    )


def store_root(stack: Stack, bucket: str) -> str:
    """The key prefix the stack's object store adds (`s3://bucket/out` → `out/`)."""
    parsed = urlsplit(stack.env["SPEECHBATCH_STORAGE_URL"])
    assert (parsed.scheme, parsed.netloc) == ("s3", bucket), parsed
    prefix = parsed.path.strip("/")
    return f"{prefix}/" if prefix else ""


def _job_keys(s3_client: S3Client, bucket: str, job_id: str) -> list[str]:
    """Every key in the bucket under any folder named `job_id` (the bucket is the test's own)."""
    keys: list[str] = []
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [o["Key"] for o in page.get("Contents", []) if f"/{job_id}/" in o["Key"]]
    return keys


def _assert_objects(
    s3_client: S3Client, bucket: str, root: str, job_id: str, succeeded: list[dict[str, Any]]
) -> None:
    expected = [root + item["output"]["key"] for item in succeeded]
    assert len(set(expected)) == len(expected), "two succeeded items share an output key"
    for item in succeeded:
        assert item["output"]["key"].endswith(f"/{job_id}/{item['seq']:06d}-{item['id']}.wav")
    # The finisher writes the manifest just after its final commit, so give it a moment.
    deadline = time.monotonic() + MANIFEST_WAIT_S
    keys = _job_keys(s3_client, bucket, job_id)
    while not any(k.endswith("/manifest.jsonl") for k in keys) and time.monotonic() < deadline:
        time.sleep(0.5)
        keys = _job_keys(s3_client, bucket, job_id)
    manifests = [k for k in keys if k.endswith("/manifest.jsonl")]
    assert len(manifests) == 1, f"manifest keys: {manifests}"
    stray = sorted(set(keys) - set(expected) - set(manifests))
    missing = sorted(set(expected) - set(keys))
    assert not missing, f"{len(missing)} succeeded items have no object, e.g. {missing[:5]}"
    assert not stray, f"{len(stray)} objects belong to no succeeded item, e.g. {stray[:5]}"
    for item in succeeded:
        body = s3_client.get_object(Bucket=bucket, Key=root + item["output"]["key"])["Body"].read()
        assert len(body) == item["output"]["bytes"], item
        audio, rate = sf.read(io.BytesIO(body))
        assert len(audio) / rate == pytest.approx(item["output"]["duration_s"], rel=0.01), item


def _assert_attempts_recorded(stack: Stack, job_id: str) -> dict[int, str]:
    """Every succeeded item has a recorded 200 attempt; returns {db item id: status}."""
    engine = create_engine(stack.env["SPEECHBATCH_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT i.id, i.status, count(a.id) FILTER (WHERE a.status_code = 200)"
                    " FROM items i LEFT JOIN attempts a ON a.item_id = i.id"
                    " WHERE i.job_id = :job GROUP BY i.id, i.status"
                ),
                {"job": job_id},
            ).all()
    finally:
        engine.dispose()
    unrecorded = [row.id for row in rows if row.status == "succeeded" and row[2] < 1]
    assert not unrecorded, f"succeeded items without a recorded 200 attempt: {unrecorded[:10]}"
    return {int(row.id): str(row.status) for row in rows}


def _attempt_totals(stack: Stack, job_id: str) -> tuple[int, int]:
    engine = create_engine(stack.env["SPEECHBATCH_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            total, errors = conn.execute(
                text(
                    "SELECT count(*), count(*) FILTER (WHERE a.status_code IS DISTINCT FROM 200)"
                    " FROM attempts a JOIN items i ON i.id = a.item_id WHERE i.job_id = :job"
                ),
                {"job": job_id},
            ).one()
    finally:
        engine.dispose()
    return int(total), int(errors)


def worker_log_paths(stack: Stack) -> list[Path]:
    return [p.log_path for p in stack.procs if p.name.startswith("worker")]


def _assert_single_success(stack: Stack, db_ids: dict[int, str]) -> Counter[str]:
    """No item of the job logged `outcome succeeded` twice (or without being succeeded)."""
    outcomes: Counter[str] = Counter()
    successes: Counter[int] = Counter()
    for path in worker_log_paths(stack):
        for match in OUTCOME_LINE.finditer(path.read_text(errors="replace")):
            item_id, outcome = int(match.group(1)), match.group(2)
            if item_id not in db_ids:
                continue  # another job's item
            outcomes[outcome] += 1
            if outcome == "succeeded":
                successes[item_id] += 1
    twice = {item_id: n for item_id, n in successes.items() if n > 1}
    assert not twice, f"items that succeeded more than once (db id: count): {twice}"
    phantom = [item_id for item_id in successes if db_ids[item_id] != "succeeded"]
    assert not phantom, f"items logged as succeeded but not succeeded in the DB: {phantom}"
    assert outcomes, "no worker logged an outcome for this job: the log check proves nothing"
    return outcomes
