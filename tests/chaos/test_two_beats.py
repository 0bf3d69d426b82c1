"""Two beat processes, and the one holding beat's lease is SIGKILLed mid-job.

The stack runs a second `speechbatch beat` beside the fixture's, with a 3 s beat lease. One
schedule is made due while both beats run (the holder fires it); the holder is then killed
just as a second schedule comes due, so the survivor must take the lease over and fire it.
Afterwards: the TTS job in flight holds every item exactly once (`assert_job_invariants`),
each schedule has exactly one run for its fire time and exactly one job under that fire
time's Idempotency-Key, and both scheduled jobs finished.
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.chaos.checks import assert_job_invariants
from tests.chaos.conftest import SWEEP_INTERVAL_S, ChaosStack
from tests.e2e.stack import Proc

pytestmark = [pytest.mark.chaos]

ITEMS = 300
BEAT_LEASE_S = 3
TAKEOVER_S = BEAT_LEASE_S + 3 * SWEEP_INTERVAL_S + 10  # lease runs out, a tick, slack for load
SCHEDULED_JOB = {
    "kind": "tts",
    "provider": "slng",
    "model": "slng/deepgram/aura:2-en",
    "voice": "aura-2-thalia-en",
    "items": [{"id": "n1", "text": "Scheduled at {fire_time}."}, {"id": "n2", "text": "Two."}],
    "output": {"prefix": "scheduled/{fire_date}"},
}


def sql(stack: ChaosStack, query: str, **params: Any) -> list[Any]:
    engine = create_engine(stack.database_url)
    try:
        with engine.begin() as connection:
            result = connection.execute(text(query), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


def add_schedule(stack: ChaosStack, name: str) -> str:
    body = {"name": name, "cron": "0 3 1 1 *", "timezone": "Europe/Berlin", "job": SCHEDULED_JOB}
    with stack.client() as client:
        response = client.post("/v1/schedules", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def make_due(stack: ChaosStack, schedule_id: str, at: datetime) -> None:
    sql(stack, "UPDATE schedules SET next_fire_at = :at WHERE id = :id", at=at, id=schedule_id)


def lease_holder(stack: ChaosStack, beats: list[Proc]) -> Proc:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = sql(stack, "SELECT holder, expires_at FROM beat_leases WHERE name = 'beat'")
        if rows and rows[0].expires_at > datetime.now(UTC):
            pid = int(rows[0].holder.split(":")[1])
            for beat in beats:
                if beat.popen is not None and beat.popen.pid == pid:
                    return beat
        time.sleep(0.2)
    raise AssertionError(f"no beat holds the lease:\n{stack.log_tails()}")


def wait_fired(stack: ChaosStack, schedule_id: str, timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fired = sql(
            stack,
            "SELECT fire_time, job_id FROM schedule_runs WHERE schedule_id = :id",
            id=schedule_id,
        )
        if fired and all(row.job_id for row in fired):
            return fired
        time.sleep(0.2)
    raise AssertionError(f"schedule {schedule_id} never fired:\n{stack.log_tails()}")


@pytest.mark.parametrize(
    "chaos_stack", [{"SPEECHBATCH_BEAT_LEASE_SECONDS": str(BEAT_LEASE_S)}], indirect=True
)
def test_sigkill_the_lease_holding_beat_of_two_mid_job(chaos_stack: ChaosStack) -> None:
    """With two beats, killing the lease holder mid-job loses no item, duplicates none, and
    each schedule due during the test fires exactly once (the survivor fires the second)."""
    stack = chaos_stack
    stack.spawn("beat-2", "beat", "--interval", str(SWEEP_INTERVAL_S))
    beats = [p for p in stack.procs if p.name in ("beat", "beat-2")]
    before, after = add_schedule(stack, "before-kill"), add_schedule(stack, "after-kill")
    first_due = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    make_due(stack, before, first_due)
    assert [row.fire_time for row in wait_fired(stack, before, 60)] == [first_due]

    job_id = stack.submit_tts(ITEMS)
    stack.wait_for_progress(job_id, 0.25)
    holder = lease_holder(stack, beats)
    second_due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    make_due(stack, after, second_due)
    holder.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    survivor = next(beat for beat in beats if beat is not holder)
    at_kill = stack.job(job_id)
    assert at_kill is not None and at_kill["status"] == "running", "the kill was not mid-job"

    fired = wait_fired(stack, after, TAKEOVER_S)
    print(f"\nsecond schedule fired {time.monotonic() - killed_at:.1f}s after the kill")
    assert [row.fire_time for row in fired] == [second_due]
    assert lease_holder(stack, beats) is survivor
    job = stack.wait_for_job(job_id, timeout=180)
    report = assert_job_invariants(stack, job_id, s3_client=stack.s3_client, bucket=stack.bucket)
    print(report)
    assert job["status"] == "succeeded", job["counts"]

    for schedule_id, due in ((before, first_due), (after, second_due)):
        runs = sql(stack, "SELECT fire_time, job_id FROM schedule_runs WHERE schedule_id = :id",
                   id=schedule_id)  # fmt: skip
        assert [row.fire_time for row in runs] == [due]
        key = f"schedule:{schedule_id}:{due.isoformat()}"
        jobs = sql(stack, "SELECT id FROM jobs WHERE idempotency_key = :key", key=key)
        assert [row.id for row in jobs] == [runs[0].job_id]
        scheduled = stack.wait_for_job(runs[0].job_id, timeout=60)
        assert scheduled["status"] == "succeeded", scheduled
        assert scheduled["counts"]["total"] == 2
