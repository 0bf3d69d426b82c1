"""Two beats at once: racing sweeps stay exact on PostgreSQL, and beat's lease lets one work.

The lease is economy, not correctness (jobs/beat_lease.py): the first test shows the sweep
is already safe with two beats; the others show who works while both run, and how fast the
other takes over when the holder dies or stops.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from jobs.beat_lease import Lease
from jobs.ledger import ItemLedger
from jobs.models import Item, Job
from jobs.status import ItemStatus
from tests.integration.helpers import migrated_ledger, migrated_sessions, published, tts_job
from workers.sweeper import Chore, run_sweeper, sweep_once

pytestmark = pytest.mark.integration

ITEMS = 200


def test_two_sweeps_racing_on_postgresql_recover_each_expired_lease_once(pg_url: str) -> None:
    """Two beats sweeping 200 dead leases at once re-queue each item exactly once, and the
    job's counters end exact (200 queued, 0 running)."""
    ledger = migrated_ledger(pg_url)
    job = tts_job(ledger, [f"line {n}" for n in range(ITEMS)]).job
    with ledger.db.sessions() as session:
        ids = list(session.scalars(select(Item.id).where(Item.job_id == job.id)))
    for item_id in ids:
        assert ledger.claim(item_id, lease_s=0.001) is not None  # its worker then "dies"
    beats = [migrated_ledger(pg_url) for _ in range(2)]
    start = threading.Barrier(2)
    expired: list[int] = []

    def sweep(beat: ItemLedger) -> None:
        start.wait()
        expired.append(sweep_once(beat, stale_s=3600, batch=ITEMS).expired)

    threads = [threading.Thread(target=sweep, args=(beat,)) for beat in beats]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(expired) == ITEMS, expired
    with ledger.db.sessions() as session:
        counts = session.execute(select(Job.queued, Job.running).where(Job.id == job.id)).one()
        statuses = set(session.scalars(select(Item.status).where(Item.job_id == job.id)))
    assert tuple(counts) == (ITEMS, 0)
    assert statuses == {ItemStatus.QUEUED}
    republished = [i for beat in beats for i in published(beat).ids]
    # Every item is published again; some twice (the other beat saw it queued and unpublished
    # a moment later): harmless, a claim takes each once, and what beat's lease saves.
    assert set(republished) == set(ids)
    print(f"{len(republished) - len(ids)} duplicate messages from two beats")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 4, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_one_beat_holds_the_lease_and_the_other_takes_over_after_it_dies(
    database_url: str,
) -> None:
    """A holds and renews; B is refused until A stops renewing for the TTL, then B holds."""
    sessions = migrated_sessions(database_url)
    clock = Clock()
    ttl = timedelta(seconds=15)
    a = Lease(sessions, ttl=ttl, holder="a", clock=clock)
    b = Lease(sessions, ttl=ttl, holder="b", clock=clock)
    assert a.hold() and not b.hold()
    clock.now += timedelta(seconds=10)
    assert a.hold() and not b.hold()  # renewed: 10 s later B still waits
    clock.now += timedelta(seconds=14)
    assert not b.hold()  # A renewed 14 s ago
    clock.now += timedelta(seconds=2)  # A is dead: 16 s without a renewal
    assert b.hold() and not a.hold()


def test_a_clean_shutdown_releases_the_lease_at_once(database_url: str) -> None:
    """A beat that stops cleanly lets go, so the other takes over on its next tick."""
    sessions = migrated_sessions(database_url)
    clock = Clock()
    a = Lease(sessions, ttl=timedelta(minutes=5), holder="a", clock=clock)
    b = Lease(sessions, ttl=timedelta(minutes=5), holder="b", clock=clock)
    assert a.hold() and not b.hold()
    a.release()
    assert b.hold() and not a.hold()


def test_only_the_lease_holder_runs_the_chores(database_url: str) -> None:
    """Two sweeper loops over one database for a few ticks: one beat does every chore run."""
    ledger = migrated_ledger(database_url)
    ran: dict[str, int] = {"a": 0, "b": 0}
    stop = threading.Event()
    loops = []
    for name in ran:
        lease = Lease(ledger.db.sessions, ttl=timedelta(seconds=30), holder=name)

        def count(name: str = name) -> int:
            ran[name] += 1
            if sum(ran.values()) >= 6:
                stop.set()
            return 0

        loops.append(
            threading.Thread(
                target=run_sweeper,
                args=(ledger,),
                kwargs={
                    "interval_s": 0.05,
                    "stale_s": 60,
                    "stop": stop,
                    "chores": [Chore("count", count)],
                    "holds": lease.hold,
                },
            )
        )
    for loop in loops:
        loop.start()
    for loop in loops:
        loop.join(30)
    assert stop.is_set()
    assert sorted(ran.values())[0] == 0, ran  # the other beat never ran a chore
