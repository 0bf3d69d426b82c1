"""What beat decides for a due schedule (`workers.scheduler.plan`): fire, catch up, or skip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jobs.models_schedules import CatchUp, Overlap, RunStatus, Schedule
from workers.scheduler import MAX_RECORDED_MISSES, plan

GRACE = timedelta(seconds=60)


def schedule(next_fire_at: datetime, **fields: object) -> Schedule:
    values: dict[str, object] = {
        "id": "sch_1", "tenant_id": "t", "name": "n", "cron": "*/10 * * * *",
        "timezone": "UTC", "job": {}, "enabled": True, "overlap": Overlap.ALLOW,
        "catch_up": CatchUp.ONCE, "revision": 1, "next_fire_at": next_fire_at,
    }  # fmt: skip
    return Schedule(**(values | fields))


T = datetime(2026, 5, 4, 2, 0, tzinfo=UTC)


def test_an_on_time_fire_is_fired_and_the_next_time_follows_it() -> None:
    """Five seconds after its fire time, the schedule fires that time; the next is 10 min on."""
    decided = plan(schedule(T), T + timedelta(seconds=5), GRACE, active=None)
    assert (decided.run.fire_time, decided.run.status) == (T, RunStatus.PENDING)
    assert decided.skipped == []
    assert decided.next_fire_at == T + timedelta(minutes=10)


def test_catch_up_once_fires_only_the_latest_missed_time() -> None:
    """Down for an hour: one run for 02:50 (the latest due), the five before it skipped."""
    now = T + timedelta(minutes=55)
    decided = plan(schedule(T), now, GRACE, active=None)
    assert decided.run.fire_time == T + timedelta(minutes=50)
    assert decided.run.status == RunStatus.PENDING
    skipped = sorted(run.fire_time for run in decided.skipped)
    assert skipped == [T + timedelta(minutes=m) for m in (0, 10, 20, 30, 40)]
    assert all(r.status == RunStatus.SKIPPED and "caught up" in (r.reason or "")
               for r in decided.skipped)  # fmt: skip
    assert decided.next_fire_at == T + timedelta(minutes=60)


def test_catch_up_skip_records_every_late_time_as_skipped_and_fires_none() -> None:
    """The same hour down with catch_up=skip fires nothing: 02:50 is 5 min late, past grace."""
    now = T + timedelta(minutes=55)
    decided = plan(schedule(T, catch_up=CatchUp.SKIP), now, GRACE, active=None)
    assert decided.run.status == RunStatus.SKIPPED
    assert "catch_up=skip" in (decided.run.reason or "")
    assert len(decided.skipped) == 5
    assert all("catch_up=skip" in (r.reason or "") for r in decided.skipped)


def test_catch_up_skip_still_fires_a_time_within_grace() -> None:
    """After an hour down, a fire time that came 20 s ago is on time and fires."""
    now = T + timedelta(minutes=50, seconds=20)
    decided = plan(schedule(T, catch_up=CatchUp.SKIP), now, GRACE, active=None)
    assert (decided.run.fire_time, decided.run.status) == (
        T + timedelta(minutes=50),
        RunStatus.PENDING,
    )


def test_overlap_skip_skips_while_the_previous_job_runs_and_allow_does_not() -> None:
    """With a previous job running, `skip` records the time skipped; `allow` fires it."""
    now = T + timedelta(seconds=1)
    skipping = plan(schedule(T, overlap=Overlap.SKIP), now, GRACE, active="job job_1")
    assert skipping.run.status == RunStatus.SKIPPED
    assert "job job_1" in (skipping.run.reason or "")
    allowing = plan(schedule(T, overlap=Overlap.ALLOW), now, GRACE, active="job job_1")
    assert allowing.run.status == RunStatus.PENDING


def test_a_long_outage_records_a_bounded_number_of_misses() -> None:
    """A month down on a 10-minute cron records at most MAX_RECORDED_MISSES skipped runs."""
    decided = plan(schedule(T), T + timedelta(days=30), GRACE, active=None)
    assert len(decided.skipped) == MAX_RECORDED_MISSES
    assert decided.run.fire_time == T + timedelta(days=30)


def test_a_next_fire_at_off_the_cron_is_itself_a_fire_time() -> None:
    """A hand-set next_fire_at between cron times still fires (or is recorded), never lost."""
    odd = T + timedelta(minutes=3)
    decided = plan(schedule(odd), odd + timedelta(seconds=2), GRACE, active=None)
    assert decided.run.fire_time == odd
    assert decided.next_fire_at == T + timedelta(minutes=10)
