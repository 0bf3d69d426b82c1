"""The sweeper: the database, not Redis, decides what still has to run.

Each pass (1) re-queues running items whose lease expired (their worker died),
(2) publishes queued items that are due and were never published (backoff over), and
(3) when the broker queue is empty, re-publishes queued items whose message is older than
`stale_s` (Redis may have lost it on restart). Duplicates are harmless: a claim is a
conditional UPDATE. Waiting for an empty queue keeps a backlog that legitimately waits
(100k items, or a worker reconnecting) from being published twice.

Beside it, `UploadRetention` deletes uploads that no job names as a source once they are
older than SPEECHBATCH_UPLOAD_RETENTION_HOURS, one bounded batch per pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice

from sqlalchemy.orm import Session, sessionmaker

from jobs.clock import utc_now
from jobs.ledger import ItemLedger
from jobs.settings import Settings
from jobs.sweeper_queries import due_unpublished_items, referenced_uploads
from storage.objects import ObjectStore
from storage.stores import open_object_store
from workers import metrics

log = logging.getLogger(__name__)
UPLOADS_PREFIX = "uploads/"  # storage.keys.upload_key: uploads/{tenant}/{upload_id}/{name}


@dataclass(frozen=True)
class SweepReport:
    expired: int
    published: int


def sweep_once(ledger: ItemLedger, *, stale_s: float, batch: int = 1000) -> SweepReport:
    now = ledger.clock()
    expired = ledger.expire_leases(limit=batch)
    with ledger.db.sessions() as session:
        never = due_unpublished_items(session, now=now, published_before=None, limit=batch)
    try:
        low = ledger.publisher.depth() == 0
    except Exception:
        log.warning("cannot read the broker queue depth; skipping stale re-publish", exc_info=True)
        low = False
    stale: list[int] = []
    if low:
        with ledger.db.sessions() as session:
            stale = due_unpublished_items(
                session, now=now, published_before=now - timedelta(seconds=stale_s), limit=batch
            )
    ids = list(dict.fromkeys([*expired, *never, *stale]))
    if ids:
        ledger.republish(ids)
        log.info("sweeper: %d leases expired, %d items published", len(expired), len(ids))
    metrics.swept(len(expired), len(ids))
    return SweepReport(expired=len(expired), published=len(ids))


def _upload_ref(key: str) -> tuple[str, str] | None:
    """(tenant_id, the `upload://` source that names it) of an upload key; None if not one."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != UPLOADS_PREFIX.rstrip("/"):
        return None
    return parts[1], f"upload://{parts[2]}/{parts[3]}"


class UploadRetention:
    """Deletes uploads that no job names as a source once they are older than `max_age`.

    Each `expire()` takes the next `batch` old uploads of one walk over the store's listing
    and asks the database, in one query, which of them an item names; the others go. A walk
    goes on where the last pass stopped, so uploads that are kept (a job names them) never
    hold back the rest, and a new walk starts `rest` after one ends. An upload sent again is
    written again, which makes it young: a client that re-uploads before submitting is safe.
    """

    def __init__(
        self,
        store: ObjectStore,
        sessions: sessionmaker[Session],
        *,
        max_age: timedelta,
        batch: int = 500,
        rest: timedelta = timedelta(minutes=10),
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store, self.sessions, self.max_age = store, sessions, max_age
        self.batch, self.rest, self.clock = batch, rest, clock
        self._walk: Iterator[str] | None = None
        self._next_walk_at = datetime.min.replace(tzinfo=UTC)

    @classmethod
    def from_settings(cls, settings: Settings, sessions: sessionmaker[Session]) -> UploadRetention:
        """Beat's retention, on a store of its own (closed by `close`)."""
        store = open_object_store(settings.storage_url, endpoint_url=settings.s3_endpoint_url)
        return cls(store, sessions, max_age=timedelta(hours=settings.upload_retention_hours))

    def expire(self) -> int:
        """One bounded pass; returns how many uploads it deleted."""
        now = self.clock()
        if self._walk is None:
            if now < self._next_walk_at:
                return 0
            self._walk = self.store.list_keys_older_than(UPLOADS_PREFIX, now - self.max_age)
        try:
            keys = list(islice(self._walk, self.batch))
        except Exception:  # the store failed mid-listing: the next pass starts a new walk
            self._walk = None
            raise
        if len(keys) < self.batch:
            self._walk, self._next_walk_at = None, now + self.rest
        refs = {key: ref for key in keys if (ref := _upload_ref(key)) is not None}
        with self.sessions() as session:
            named = referenced_uploads(session, list(refs.values()))
        unused = [key for key, ref in refs.items() if ref not in named]
        for key in unused:
            self.store.delete(key)
        if unused:
            log.info("retention: deleted %d uploads no job uses", len(unused))
        return len(unused)

    def chore(self) -> Chore:
        return Chore("upload retention", self.expire)

    def close(self) -> None:
        self.store.close()


@dataclass(frozen=True)
class Chore:
    """Something beat does on every tick beside the sweep: upload retention, schedule fires,
    webhook deliveries. `run` does one bounded pass and returns how much it did; an error is
    logged and the next tick tries again."""

    name: str
    run: Callable[[], object]


def run_sweeper(
    ledger: ItemLedger,
    *,
    interval_s: float,
    stale_s: float,
    stop: threading.Event,
    chores: Sequence[Chore] = (),
    holds: Callable[[], bool] = lambda: True,
) -> None:
    """Sweep, then run each chore, every `interval_s` until `stop` is set; errors are logged
    and the loop goes on. The caller owns what the chores hold and closes it.

    `holds` is asked first on every tick (beat's lease, `jobs.beat_lease`): a tick whose
    answer is False (another beat works) or an error does nothing but wait."""
    while not stop.is_set():
        if not _holding(holds):
            stop.wait(interval_s)
            continue
        try:
            sweep_once(ledger, stale_s=stale_s)
        except Exception:  # DB or broker blip: try again next tick
            log.warning("sweep failed; retrying in %.0f s", interval_s, exc_info=True)
        for chore in chores:
            try:
                chore.run()
            except Exception:  # storage, DB or network blip: the next tick goes on
                log.warning("%s failed; retrying in %.0f s", chore.name, interval_s, exc_info=True)
        stop.wait(interval_s)


def _holding(holds: Callable[[], bool]) -> bool:
    try:
        return holds()
    except Exception:  # the database is away: nobody can do beat's work now anyway
        log.warning("cannot renew beat's lease; idle this tick", exc_info=True)
        return False
