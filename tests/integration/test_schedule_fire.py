"""Beat's schedule pass on real PostgreSQL and SQLite: each fire time fires exactly once.

The scheduler's clock is a parameter, so "beat restarts past the fire time" and "beat was
down for an hour" are a new `Scheduler` with a later clock, not a wait.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from jobs import schedule_runs as runs
from jobs import schedules
from jobs.ledger import ItemLedger
from jobs.models import Job
from jobs.models_schedules import RunStatus, RunTrigger, Schedule, ScheduleRun
from jobs.schedule_fire import Firing, idempotency_key, render_job
from jobs.schedule_schemas import ScheduleCreate, ScheduleUpdate
from jobs.service import submit_job
from jobs.tenants import ensure_tenant
from tests.integration.helpers import migrated_ledger, published
from workers.scheduler import Scheduler

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 4, 1, 55, tzinfo=UTC)  # when the schedules are created
T1 = datetime(2026, 5, 4, 2, 0, tzinfo=UTC)  # their first fire time (every 10 minutes)
TEMPLATE = {
    "kind": "tts",
    "provider": "local",
    "items": [{"id": "a", "text": "fired at {fire_time}"}, {"id": "b", "text": "second line"}],
    "output": {"prefix": "nightly/{fire_date}"},
}
LIMITS = schedules.Limits(max_items=1000, max_schedules=100)


def make(ledger: ItemLedger, name: str = "nightly", **fields: Any) -> Schedule:
    tenant = ensure_tenant(ledger.db.sessions, "acme").id
    body = ScheduleCreate.model_validate(
        {"name": name, "cron": "*/10 * * * *", "job": TEMPLATE, **fields}
    )
    return schedules.create(ledger.db.sessions, tenant, body, now=T0, limits=LIMITS)


def scheduler(ledger: ItemLedger, now: datetime) -> Scheduler:
    return Scheduler(Firing(ledger, max_items=1000), clock=lambda: now)


def runs_of(ledger: ItemLedger, schedule_id: str) -> list[ScheduleRun]:
    with ledger.db.sessions() as session:
        query = select(ScheduleRun).where(ScheduleRun.schedule_id == schedule_id)
        return list(session.scalars(query.order_by(ScheduleRun.fire_time)))


def jobs_count(ledger: ItemLedger) -> int:
    with ledger.db.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def test_a_fire_across_a_beat_restart_fires_once(database_url: str) -> None:
    """Before T1 nothing fires; a new scheduler past T1 fires it once; a third one does not."""
    ledger = migrated_ledger(database_url)
    schedule = make(ledger)
    assert schedule.next_fire_at == T1
    assert scheduler(ledger, T1 - timedelta(seconds=1)).run_once() == 0
    assert scheduler(ledger, T1 + timedelta(seconds=5)).run_once() == 1  # the restarted beat
    assert scheduler(ledger, T1 + timedelta(seconds=6)).run_once() == 0
    (run,) = runs_of(ledger, schedule.id)
    assert (run.fire_time, run.status, run.trigger) == (T1, RunStatus.SUBMITTED, RunTrigger.CRON)
    with ledger.db.sessions() as session:
        job = session.get(Job, run.job_id)
        assert job is not None and job.idempotency_key == idempotency_key(schedule.id, T1)
        assert job.output_prefix == "nightly/2026-05-04"
        fresh = session.get(Schedule, schedule.id)
        assert fresh is not None and fresh.next_fire_at == T1 + timedelta(minutes=10)
    assert jobs_count(ledger) == 1
    assert len(published(ledger).ids) == 2  # the job's two items, published once


def test_two_schedulers_racing_in_threads_fire_each_time_once(pg_url: str) -> None:
    """Six beat passes racing on PostgreSQL over five due schedules make exactly five jobs."""
    ledgers = [migrated_ledger(pg_url) for _ in range(6)]
    made = [make(ledgers[0], f"s{n}") for n in range(5)]
    start = threading.Barrier(len(ledgers))
    fired: list[int] = []

    def beat(ledger: ItemLedger) -> None:
        start.wait()
        fired.append(scheduler(ledger, T1 + timedelta(seconds=1)).run_once())

    threads = [threading.Thread(target=beat, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(fired) == 5, fired
    for schedule in made:
        (run,) = runs_of(ledgers[0], schedule.id)
        assert run.status == RunStatus.SUBMITTED and run.job_id
    assert jobs_count(ledgers[0]) == 5
    all_ids = [i for ledger in ledgers for i in published(ledger).ids]
    assert len(all_ids) == len(set(all_ids)) == 10


def test_catch_up_once_fires_one_run_and_skip_fires_none_after_an_hour_down(
    database_url: str,
) -> None:
    """Beat back after an hour: `once` makes one job for 02:50, `skip` records skips only."""
    ledger = migrated_ledger(database_url)
    once = make(ledger, "once", catch_up="once")
    skip = make(ledger, "skip", catch_up="skip")
    back = T1 + timedelta(minutes=55)
    assert scheduler(ledger, back).run_once() == 1
    once_runs = runs_of(ledger, once.id)
    assert [r.fire_time for r in once_runs] == [T1 + timedelta(minutes=m) for m in range(0, 60, 10)]
    fired = [r for r in once_runs if r.status == RunStatus.SUBMITTED]
    assert [r.fire_time for r in fired] == [T1 + timedelta(minutes=50)]
    skip_runs = runs_of(ledger, skip.id)
    assert len(skip_runs) == 6 and all(r.status == RunStatus.SKIPPED for r in skip_runs)
    assert all("catch_up=skip" in (r.reason or "") for r in skip_runs)
    assert jobs_count(ledger) == 1
    assert scheduler(ledger, back + timedelta(seconds=1)).run_once() == 0  # nothing twice


def test_overlap_skip_waits_for_the_previous_job_to_finish(database_url: str) -> None:
    """While the 02:00 job is unfinished 02:10 is skipped; once it is canceled 02:20 fires."""
    ledger = migrated_ledger(database_url)
    schedule = make(ledger, overlap="skip")
    assert scheduler(ledger, T1).run_once() == 1
    assert scheduler(ledger, T1 + timedelta(minutes=10)).run_once() == 0
    first, second = runs_of(ledger, schedule.id)
    assert second.status == RunStatus.SKIPPED and first.job_id
    assert f"job {first.job_id}" in (second.reason or "")
    ledger.cancel_job(first.job_id)
    assert scheduler(ledger, T1 + timedelta(minutes=20)).run_once() == 1
    assert runs_of(ledger, schedule.id)[-1].status == RunStatus.SUBMITTED


def test_a_run_stranded_before_its_submit_is_submitted_by_the_repair(database_url: str) -> None:
    """A beat killed after claiming 02:00 leaves a pending run; a later pass makes its job."""
    ledger = migrated_ledger(database_url)
    schedule = make(ledger)
    with ledger.db.sessions() as session:
        runs.claim(session, schedule.id, runs.NewRun(T1, RunTrigger.CRON), T1)
        session.execute(update(Schedule).values(next_fire_at=T1 + timedelta(minutes=10)))
        session.commit()
    assert scheduler(ledger, T1 + timedelta(seconds=10)).run_once() == 0  # still in grace
    assert scheduler(ledger, T1 + timedelta(seconds=40)).run_once() == 1
    (run,) = runs_of(ledger, schedule.id)
    assert run.status == RunStatus.SUBMITTED and jobs_count(ledger) == 1


def test_a_run_stranded_after_its_submit_gets_the_same_job(database_url: str) -> None:
    """Killed between submit and record: the repair finds the job by its key, makes no second."""
    ledger = migrated_ledger(database_url)
    schedule = make(ledger)
    with ledger.db.sessions() as session:
        runs.claim(session, schedule.id, runs.NewRun(T1, RunTrigger.CRON), T1)
        session.execute(update(Schedule).values(next_fire_at=T1 + timedelta(minutes=10)))
        session.commit()
    made = submit_job(
        ledger, schedule.tenant_id, render_job(schedule, T1),
        idempotency_key=idempotency_key(schedule.id, T1), max_items=1000,
    ).job  # fmt: skip
    assert scheduler(ledger, T1 + timedelta(seconds=40)).run_once() == 1
    (run,) = runs_of(ledger, schedule.id)
    assert run.job_id == made.id and jobs_count(ledger) == 1


def test_a_template_the_catalog_no_longer_accepts_fails_its_run_not_the_pass(
    database_url: str,
) -> None:
    """A run whose job is refused records why; the schedule advances and the others fire."""
    ledger = migrated_ledger(database_url)
    broken = make(ledger, "broken")
    healthy = make(ledger, "healthy")
    with ledger.db.sessions() as session:
        gone = {**TEMPLATE, "provider": "retired-vendor"}
        session.execute(update(Schedule).where(Schedule.id == broken.id).values(job=gone))
        session.commit()
    assert scheduler(ledger, T1).run_once() == 1
    (failed,) = runs_of(ledger, broken.id)
    assert failed.status == RunStatus.FAILED and "unknown_provider" in (failed.reason or "")
    assert runs_of(ledger, healthy.id)[0].status == RunStatus.SUBMITTED
    with ledger.db.sessions() as session:
        fresh = session.get(Schedule, broken.id)
        assert fresh is not None and fresh.next_fire_at == T1 + timedelta(minutes=10)


def test_a_disabled_schedule_never_fires(database_url: str) -> None:
    """`enabled: false` leaves next_fire_at empty, so no pass finds it due."""
    ledger = migrated_ledger(database_url)
    schedule = make(ledger, enabled=False)
    assert schedule.next_fire_at is None
    assert scheduler(ledger, T1 + timedelta(days=1)).run_once() == 0
    assert runs_of(ledger, schedule.id) == []


def test_run_history_is_pruned_to_the_newest_runs(database_url: str) -> None:
    """With keep_runs=3, five fires leave the three newest runs; the jobs themselves stay."""
    ledger = migrated_ledger(database_url)
    schedule = make(ledger, overlap="allow")
    for n in range(5):
        keeping = scheduler(ledger, T1 + timedelta(minutes=10 * n))
        keeping.keep_runs = 3
        assert keeping.run_once() == 1
    kept = [r.fire_time for r in runs_of(ledger, schedule.id)]
    assert kept == [T1 + timedelta(minutes=m) for m in (20, 30, 40)]
    assert jobs_count(ledger) == 5


def test_a_schedule_changed_after_beat_read_it_is_not_fired_from_the_old_copy(
    database_url: str,
) -> None:
    """Beat read the schedule, then the user disabled it: the compare-and-set on its revision
    stops that fire, so no run and no job come from the stale copy."""
    ledger = migrated_ledger(database_url)
    stale = make(ledger)
    schedules.update(
        ledger.db.sessions, stale.tenant_id, stale.id,
        ScheduleUpdate.model_validate({"enabled": False}), now=T0, limits=LIMITS,
    )  # fmt: skip
    assert scheduler(ledger, T1).fire_due(stale, T1) == 0
    assert runs_of(ledger, stale.id) == [] and jobs_count(ledger) == 0
