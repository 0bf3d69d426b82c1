"""The sweeper: the database, not Redis, decides what still has to run.

Each pass (1) re-queues running items whose lease expired (their worker died),
(2) publishes queued items that are due and were never published (backoff over), and
(3) when the broker queue is empty, re-publishes queued items whose message is older than
`stale_s` (Redis may have lost it on restart). Duplicates are harmless: a claim is a
conditional UPDATE. Waiting for an empty queue keeps a backlog that legitimately waits
(100k items, or a worker reconnecting) from being published twice.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from jobs import repository as repo
from jobs.ledger import ItemLedger

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepReport:
    expired: int
    published: int


def sweep_once(ledger: ItemLedger, *, stale_s: float, batch: int = 1000) -> SweepReport:
    now = ledger.clock()
    expired = ledger.expire_leases(limit=batch)
    with ledger.db.sessions() as session:
        never = repo.due_unpublished_items(session, now=now, published_before=None, limit=batch)
    try:
        low = ledger.publisher.depth() == 0
    except Exception:
        log.warning("cannot read the broker queue depth; skipping stale re-publish", exc_info=True)
        low = False
    stale: list[int] = []
    if low:
        with ledger.db.sessions() as session:
            stale = repo.due_unpublished_items(
                session, now=now, published_before=now - timedelta(seconds=stale_s), limit=batch
            )
    ids = list(dict.fromkeys([*expired, *never, *stale]))
    if ids:
        ledger.republish(ids)
        log.info("sweeper: %d leases expired, %d items published", len(expired), len(ids))
    return SweepReport(expired=len(expired), published=len(ids))


def run_sweeper(
    ledger: ItemLedger, *, interval_s: float, stale_s: float, stop: threading.Event
) -> None:
    """Sweep every `interval_s` until `stop` is set; errors are logged and the loop goes on."""
    while not stop.is_set():
        try:
            sweep_once(ledger, stale_s=stale_s)
        except Exception:  # DB or broker blip: try again next tick
            log.warning("sweep failed; retrying in %.0f s", interval_s, exc_info=True)
        stop.wait(interval_s)
