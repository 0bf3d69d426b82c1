"""What every ledger move stands on: the database, the publisher, and riding out outages.

`ItemLedger` (jobs.ledger) owns the moves; this base owns how they run: each in one
transaction (or, on PostgreSQL, one autocommit statement), retried across a lost connection
for up to `outage_s`, and the publishing of committed ids, which never raises (a broker
failure marks the ids unpublished for the sweeper).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection

from jobs.clock import utc_now
from jobs.ledger_sql_bulk import PUBLISH_BATCH
from jobs.outages import ride_out
from jobs.sweeper_queries import mark_published
from storage.db import Database
from storage.prepared import Prepared
from storage.publisher import Publisher

T = TypeVar("T")
log = logging.getLogger("jobs.ledger")


class LedgerBase:
    """A `Database` and a `Publisher`, with the ledger's patience for outages and its clock."""

    def __init__(
        self,
        db: Database,
        publisher: Publisher,
        *,
        outage_s: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.db, self.publisher = db, publisher
        self.clock = clock
        self._patience: dict[str, Any] = {"outage_s": outage_s, "sleep": sleep}

    # --- publishing -----------------------------------------------------------------------

    def publish(self, ids: Sequence[int], countdown: float = 0.0) -> None:
        """Hand committed ids to the publisher in batches. A broker failure is logged, not
        raised: the ids not yet sent are marked unpublished for the sweeper's next pass."""
        start = 0
        try:
            for start in range(0, len(ids), PUBLISH_BATCH):
                self.publisher.publish(ids[start : start + PUBLISH_BATCH], countdown)
        except Exception:  # the broker may be down; the rows are safe and will be swept
            log.warning("publishing %d item ids failed; the sweeper will", len(ids) - start)
            self._transaction(lambda c: mark_published(c, ids[start:], at=None))

    def republish(self, ids: Sequence[int]) -> None:
        """The sweeper's send: publish now and stamp when, so the next pass skips them."""
        if ids:
            self.publisher.publish(ids, 0.0)
            now = self.clock()
            self._transaction(lambda c: mark_published(c, ids, at=now))

    # --- riding out a lost connection -----------------------------------------------------

    def _transaction(self, work: Callable[[Connection], T]) -> T:
        return ride_out(lambda: _run(self.db.engine.begin(), work), **self._patience)

    def _prepared(self, statement: Prepared, params: dict[str, Any]) -> Any:
        """One autocommit statement's first row (or None), run on the driver connection."""
        engine = self.db.autocommit
        assert engine is not None  # callers check first: PostgreSQL only
        return ride_out(lambda: statement.one_or_none(engine, params), **self._patience)

    def _statement(self, work: Callable[[Connection], T]) -> T:
        engine = self.db.autocommit
        assert engine is not None  # callers check first: PostgreSQL only
        return ride_out(lambda: _run(engine.connect(), work), **self._patience)


def _run(connection: AbstractContextManager[Connection], work: Callable[[Connection], T]) -> T:
    with connection as c:
        return work(c)
