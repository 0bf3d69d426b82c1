"""Expanding an archive job: its prefix listed page by page into items, while they run.

Where it runs, and why: the API publishes a `speechbatch.expand_archive` task right after
the job commits, so a worker starts listing at once (the first items are published within a
page's listing and one insert, well under the 2 s goal) and the API answers 202 without
listing anything. A task works for at most `budget_s`, then lets go and publishes itself
again, so one huge archive never holds a worker thread for minutes and a warm shutdown
loses nothing. Beat's `ArchiveResumer` chore takes up any expansion nobody holds once its
lease has run out (its worker died, its message was lost, the broker was down at submit):
the listing resumes after the cursor, the last key committed with its items.

Memory is one page (`batch` objects, 1,000 by default) whatever the archive's size: each
page is filtered, turned into items and committed with the cursor (`jobs.archive_ledger`),
and the queued ones published, before the next page is asked for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from jobs.archive_keys import Filters, archive_digest, item_id_for, readable_key
from jobs.archive_ledger import ArchiveLedger
from jobs.archive_records import ExpansionClaim, Listed
from jobs.archives import MAX_SOURCE_CHARS, Location, parse_location
from jobs.error_codes import ErrorCode
from jobs.ledger import ItemLedger
from jobs.manifest import write_manifest_if_finished
from jobs.records import ItemError
from jobs.settings import Settings
from jobs.status import JOB_TERMINAL
from storage.objects import ObjectPage, ObjectStore
from storage.stores import open_object_store
from workers.archive import ArchiveStores
from workers.runtime import Runtime
from workers.sweeper import Chore

log = logging.getLogger(__name__)
MAX_FAILURES = 5  # listing failures in a row before the job is told the prefix is unusable


class Progress(StrEnum):
    DONE = "done"  # listed to the end (or canceled): nothing more to do
    MORE = "more"  # stopped at its budget; the next pass goes on after the cursor
    RETRY = "retry"  # the listing failed; released with a backoff
    BUSY = "busy"  # someone else holds it, or it has ended


@dataclass
class Expander:
    """What an expansion needs: its ledger, the archive stores, the configured store (for
    the manifest of a job that ends with its listing) and how big a page is."""

    ledger: ArchiveLedger
    sources: ArchiveStores
    store: ObjectStore
    batch: int = 1000
    lease_s: float = 60.0
    clock: Callable[[], float] = time.monotonic

    def expand(self, job_id: str, *, budget_s: float = 30.0) -> Progress:
        """List `job_id`'s prefix onward from its cursor for up to `budget_s`."""
        claim = self.ledger.claim(job_id, lease_s=self.lease_s)
        if claim is None:
            return Progress.BUSY
        location = parse_location(claim.row["location"])
        started = self.clock()
        while True:
            try:
                lister = self.sources.lister(location)
                page = lister.list_page(
                    location.prefix, start_after=claim.row["cursor"], limit=self.batch
                )
            except Exception as exc:  # any refusal of the listing: retried, then reported
                return self._failed(claim, location, exc)
            step = self._commit_page(claim, location, page)
            if step is None:  # canceled, or the claim was taken over
                return Progress.DONE
            claim, capped = step
            if capped or not page.truncated or not page.objects:  # an empty page ends it too
                self._finish(claim, capped)
                return Progress.DONE
            if self.clock() - started >= budget_s:
                self.ledger.release(claim)
                return Progress.MORE

    def _commit_page(
        self, claim: ExpansionClaim, location: Location, page: ObjectPage
    ) -> tuple[ExpansionClaim, bool] | None:
        """Filter one page and commit it as items; (new claim, whether the cap was hit)."""
        row = claim.row
        room = row["max_items"] - row["next_seq"]
        listed: list[Listed] = []
        filters = Filters.of(row)
        cursor, seen, capped = row["cursor"], 0, False
        for obj in page.objects:
            if len(listed) == room:
                capped = True
                break
            cursor, seen = obj.key, seen + 1
            relative = obj.key[len(location.prefix) :]
            if obj.key.endswith("/") or not filters.matches(relative, obj.size, obj.last_modified):
                continue
            source = location.object_url(obj.key)
            digest = None
            if readable_key(obj.key) and len(source) <= MAX_SOURCE_CHARS:
                digest = archive_digest(source, obj.etag, claim.job)
            seq = row["next_seq"] + len(listed) + 1
            listed.append(Listed(relative, source, digest, item_id_for(seq, relative)))
        if cursor is None:  # an empty first page: nothing listed, nothing to move
            return claim, capped
        result = self.ledger.commit_batch(
            claim, listed, cursor=cursor, seen=seen, lease_s=self.lease_s
        )
        if result.claim is None:
            return None
        return result.claim, capped or (len(listed) == room and page.truncated)

    def _finish(self, claim: ExpansionClaim, capped: bool) -> None:
        failure = None
        if capped:
            failure = ItemError(
                ErrorCode.TOO_MANY_ITEMS,
                f"The listing stopped at {claim.row['max_items']} items "
                "(SPEECHBATCH_ARCHIVE_MAX_ITEMS); objects after the last of them were not "
                "listed. Narrow the prefix or pattern, or split the archive into several jobs.",
            )
        status = self.ledger.finish(claim, failure)
        log.info(
            "archive %s expanded: %s objects listed, %s items, job %s",
            claim.job_id,
            claim.row["listed"],
            claim.row["next_seq"],
            status,
            extra={"job_id": claim.job_id},
        )
        if status in JOB_TERMINAL:
            write_manifest_if_finished(self.ledger.db.sessions, self.store, claim.job_id)

    def _failed(self, claim: ExpansionClaim, location: Location, exc: Exception) -> Progress:
        failures = claim.row["failures"] + 1
        message = f"Listing {location.url} failed: {exc}"
        if failures < MAX_FAILURES:
            delay = min(5.0 * 2**failures, 300.0)
            log.warning("%s; retrying in %.0f s", message, delay, extra={"job_id": claim.job_id})
            self.ledger.release(claim, error=message, delay_s=delay)
            return Progress.RETRY
        log.error("%s; giving up", message, extra={"job_id": claim.job_id})
        failure = ItemError(
            ErrorCode.ARCHIVE_UNAVAILABLE,
            f"{message} ({failures} times); check that the bucket or folder exists and this "
            "deployment's credentials may list it, then submit the job again.",
        )
        status = self.ledger.finish(claim, failure)
        if status in JOB_TERMINAL:
            write_manifest_if_finished(self.ledger.db.sessions, self.store, claim.job_id)
        return Progress.DONE


class ArchiveResumer:
    """Beat's chore: take up expansions nobody holds and are due, a bounded pass each."""

    def __init__(self, expander: Expander, *, jobs_per_pass: int = 4, budget_s: float = 2.0):
        self.expander, self.jobs_per_pass, self.budget_s = expander, jobs_per_pass, budget_s

    def resume(self) -> int:
        """One pass; returns how many expansions it worked on."""
        worked = 0
        for job_id in self.expander.ledger.resumable(limit=self.jobs_per_pass):
            if self.expander.expand(job_id, budget_s=self.budget_s) is not Progress.BUSY:
                worked += 1
        return worked

    def chore(self) -> Chore:
        return Chore("archive expansion", self.resume)

    @classmethod
    def from_settings(cls, settings: Settings, ledger: ItemLedger) -> ArchiveResumer:
        """Beat's resumer, on its own stores (closed by `close`) and beat's database."""
        store = open_object_store(settings.storage_url, endpoint_url=settings.s3_endpoint_url)
        sources = ArchiveStores(store, settings.s3_endpoint_url)
        archive_ledger = ArchiveLedger(ledger.db, ledger.publisher)
        return cls(Expander(archive_ledger, sources, store, lease_s=settings.lease_seconds))

    def close(self) -> None:
        self.expander.sources.close()
        self.expander.store.close()


def expander_for(rt: Runtime) -> Expander:
    """An expander on a worker's (or local mode's) runtime: its database, publisher, stores."""
    ledger = ArchiveLedger(rt.ledger.db, rt.ledger.publisher)
    return Expander(ledger, rt.archives, rt.store, lease_s=rt.config.lease_s)


def run_expansion(rt: Runtime, job_id: str, *, budget_s: float = 30.0) -> Progress:
    """The `speechbatch.expand_archive` task's body: one bounded pass, then, if the listing
    goes on, the task again (a later message, so items published meanwhile run first)."""
    progress = expander_for(rt).expand(job_id, budget_s=budget_s)
    if progress is Progress.MORE:
        rt.ledger.publisher.start_expansion(job_id)
    return progress


def expand_to_end(expander: Expander, job_id: str) -> Progress:
    """Local mode: pass after pass until the listing ends (or fails: the chore retries)."""
    while (progress := expander.expand(job_id)) is Progress.MORE:
        pass
    return progress
