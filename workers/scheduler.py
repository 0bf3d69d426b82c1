"""Beat's schedule pass: fire the schedules whose next fire time has come, exactly once each.

One `Scheduler.run_once()` is one bounded pass (a beat `Chore`):

1. **due**: one indexed query for enabled schedules with `next_fire_at <= now`, oldest first.
2. For each, the fire times from `next_fire_at` up to now are worked out. The latest is the
   one to fire; those before it were missed (beat was down or late). A fire time is *on
   time* within `grace` of now (SPEECHBATCH_SCHEDULE_MISFIRE_GRACE_SECONDS).
   - `catch_up: once` fires the latest, late or not; the earlier ones are recorded skipped
     ("caught up by the run at ...").
   - `catch_up: skip` fires the latest only when on time; late ones are recorded skipped.
   - `overlap: skip` records the fire time skipped while the previous run's job runs.
3. **claim**, in one transaction: advance `next_fire_at` with a compare-and-set on
   (next_fire_at, revision), then insert the run rows (`jobs.schedule_runs`). A second beat
   that read the same schedule finds the compare-and-set already done and does nothing; the
   unique (schedule_id, fire_time) guards the fire time even against a manual run.
4. **submit** and **record** (`jobs.schedule_fire.complete_run`), outside that transaction.

Then it **repairs** runs claimed over `repair_after` ago that never got their job (a beat
killed between claim and submit): the same Idempotency-Key returns the job if it was made.
Only the latest `MAX_RECORDED_MISSES` missed times are written down: a beat down for a
month on `* * * * *` records 100 skips, not 43,200, and each schedule keeps its newest
`KEEP_RUNS` runs (older ones are deleted as it fires). One bad schedule is logged and skipped;
the pass goes on with the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim
from sqlalchemy import select, update

from jobs import schedule_runs as runs
from jobs.archives import archive_policy
from jobs.clock import utc_now
from jobs.ledger import ItemLedger
from jobs.models_schedules import CatchUp, Overlap, RunStatus, RunTrigger, Schedule, ScheduleRun
from jobs.netpolicy import parse_allowlist
from jobs.schedule_cron import fire_times_after, latest_fire_at_or_before
from jobs.schedule_fire import Firing, complete_run
from jobs.settings import Settings
from workers import metrics
from workers.sweeper import Chore

log = logging.getLogger(__name__)
MAX_RECORDED_MISSES = 100
KEEP_RUNS = 1000  # run history kept per schedule; older runs are deleted as new ones come


@dataclass(frozen=True)
class Plan:
    """What one due schedule gets this pass: the run to claim, the skips, the next time."""

    run: runs.NewRun
    skipped: list[runs.NewRun]
    next_fire_at: datetime | None


def _earlier(schedule: Schedule, first: datetime, latest: datetime) -> list[datetime]:
    """The fire times from `first` (inclusive) to `latest` (exclusive), the newest
    MAX_RECORDED_MISSES of them, walked backwards so a long outage costs no long walk."""
    tz = ZoneInfo(schedule.timezone)
    found: list[datetime] = []
    start = latest.astimezone(tz).replace(microsecond=0)
    for local in CronSim(schedule.cron, start, reverse=True):
        when = local.astimezone(UTC)
        if when < first or len(found) >= MAX_RECORDED_MISSES:
            break
        if when < latest:
            found.append(when)
    if first < latest and first not in found and len(found) < MAX_RECORDED_MISSES:
        found.append(first)  # next_fire_at is a fire time even when set by hand
    return found


def plan(schedule: Schedule, now: datetime, grace: timedelta, active: str | None) -> Plan:
    """Decide the fate of every fire time of `schedule` due by `now` (see the module doc)."""
    first = schedule.next_fire_at
    assert first is not None and first <= now
    tz = ZoneInfo(schedule.timezone)
    latest = max(latest_fire_at_or_before(schedule.cron, tz, now) or first, first)
    upcoming = next(fire_times_after(schedule.cron, tz, now), None)
    on_time = now - latest <= grace
    reason = None
    if schedule.catch_up == CatchUp.SKIP and not on_time:
        reason = "missed: beat was not running at this fire time (catch_up=skip)"
    elif schedule.overlap == Overlap.SKIP and active is not None:
        reason = f"overlap=skip: the previous run ({active}) has not finished"
    status = RunStatus.SKIPPED if reason else RunStatus.PENDING
    fired = runs.NewRun(latest, RunTrigger.CRON, status, reason)
    skipped = []
    for when in _earlier(schedule, first, latest):
        if schedule.catch_up == CatchUp.SKIP and now - when > grace:
            why = "missed: beat was not running at this fire time (catch_up=skip)"
        else:
            why = f"caught up by the run at {latest.isoformat()}"
        skipped.append(runs.NewRun(when, RunTrigger.CRON, RunStatus.SKIPPED, why))
    return Plan(fired, skipped, upcoming)


class Scheduler:
    """Fires due schedules through `firing`; `clock` and `grace` are parameters for tests."""

    def __init__(
        self,
        firing: Firing,
        *,
        grace: timedelta = timedelta(seconds=60),
        batch: int = 100,
        repair_after: timedelta = timedelta(seconds=30),
        keep_runs: int = KEEP_RUNS,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.firing, self.grace, self.batch = firing, grace, batch
        self.repair_after, self.keep_runs, self.clock = repair_after, keep_runs, clock

    def run_once(self) -> int:
        """One bounded pass; returns how many jobs it submitted (fires and repairs)."""
        now = self.clock()
        with self.firing.sessions() as session:
            due = list(
                session.scalars(
                    select(Schedule)
                    .where(Schedule.next_fire_at <= now)
                    .order_by(Schedule.next_fire_at)
                    .limit(self.batch)
                )
            )
        fired = 0
        for schedule in due:
            try:
                fired += self.fire_due(schedule, now)
            except Exception:  # one schedule's trouble never stops the others
                log.exception("schedule %s: fire failed; the next pass tries again", schedule.id)
        metrics.SCHEDULE_FIRES.inc(fired)
        return fired + self.repair(now)

    def fire_due(self, schedule: Schedule, now: datetime) -> int:
        """Claim and fire one due schedule; 1 if this call submitted its job, else 0."""
        with self.firing.sessions() as session:
            active = runs.active_job(session, schedule.id)
        decided = plan(schedule, now, self.grace, active)
        with self.firing.sessions() as session:
            advanced = session.execute(
                update(Schedule)
                .where(
                    Schedule.id == schedule.id,
                    Schedule.revision == schedule.revision,
                    Schedule.next_fire_at == schedule.next_fire_at,
                )
                .values(next_fire_at=decided.next_fire_at)
            ).rowcount  # type: ignore[attr-defined]
            if not advanced:  # another beat did it, or the user changed the schedule
                session.rollback()
                return 0
            claimed = runs.claim(session, schedule.id, decided.run, now)
            runs.record_skipped(session, schedule.id, decided.skipped, now)
            runs.prune(session, schedule.id, keep=self.keep_runs)
            session.commit()
            run = runs.find(session, schedule.id, decided.run.fire_time) if claimed else None
        if run is None or run.status != RunStatus.PENDING:
            return 0
        return 1 if complete_run(self.firing, schedule, run) else 0

    def repair(self, now: datetime) -> int:
        """Finish runs whose beat died between claiming them and recording their job."""
        with self.firing.sessions() as session:
            stranded = runs.stranded(session, claimed_before=now - self.repair_after, limit=50)
        done = 0
        for run_id, schedule_id in stranded:
            with self.firing.sessions() as session:
                schedule = session.get(Schedule, schedule_id)
                run = session.get(ScheduleRun, run_id)
            if schedule is None or run is None or run.status != RunStatus.PENDING:
                continue
            log.warning("schedule %s: finishing the run at %s", schedule_id, run.fire_time)
            try:
                done += 1 if complete_run(self.firing, schedule, run) else 0
            except Exception:
                log.exception("schedule %s: repair failed; the next pass tries again", schedule_id)
        return done

    @classmethod
    def from_settings(cls, settings: Settings, ledger: ItemLedger) -> Scheduler:
        """Beat's scheduler: the API's job limits and the configured misfire grace."""
        firing = Firing(
            ledger,
            max_items=settings.max_items_per_job,
            allow=parse_allowlist(settings.allow_private_networks),
            prices=settings.price_table(),
            archives=archive_policy(
                settings.archive_buckets, settings.storage_url, settings.archive_max_items
            ),
        )
        return cls(firing, grace=timedelta(seconds=settings.schedule_misfire_grace_seconds))

    def chore(self) -> Chore:
        return Chore("schedules", self.run_once)
