"""The archive ledger: every state change of an archive job's listing, and the items it adds.

    expanding ──claim──▶ held by one expander (token, lease)
        ▲                  │ commit_batch: items + cursor + counters, one transaction
        └──release/expiry──┤
                           └─finish──▶ done (the job's `expanding` flag drops)

A batch of items, the cursor that says the listing has passed them, and the job's counters
move in one transaction, guarded by the expander's token: a crash before the commit leaves
nothing (the batch is listed again from the old cursor), one after it leaves the cursor past
the batch, and a second expander whose lease was taken over matches no row. That is how an
interrupted expansion resumes without a duplicate item. Committed queued ids are published at
once, so the first items run while the rest is still being listed. What crosses the
ledger's boundary, and the item row each listed object becomes, is in `jobs.archive_records`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, insert, or_, select, update

from jobs import ledger_sql as sql
from jobs.archive_records import (
    BatchResult,
    ExpansionClaim,
    Listed,
    blank_item_row,
    listed_item_row,
)
from jobs.ledger_base import LedgerBase
from jobs.ledger_sql_bulk import CANCELED_AT, STOP_EXPANDING
from jobs.models import ArchiveExpansion, Item
from jobs.records import ItemError
from jobs.status import ItemStatus, JobStatus

EXPANSIONS = cast(Table, ArchiveExpansion.__table__)
ITEMS, JOBS = sql.ITEMS, sql.JOBS
# A fresh expansion is left to the task the API published for this long before beat takes it.
FIRST_TASK_GRACE_S = 15.0


class ArchiveLedger(LedgerBase):
    """Claims, batches and ends archive expansions, on one `Database` and `Publisher`."""

    def claim(self, job_id: str, *, lease_s: float) -> ExpansionClaim | None:
        """Take the expansion of `job_id` if nobody holds it; None when someone does or it ended."""
        token, now = secrets.token_hex(8), self.clock()
        free = or_(EXPANSIONS.c.lease_token.is_(None), EXPANSIONS.c.lease_until < now)
        take = (
            update(EXPANSIONS)
            .where(EXPANSIONS.c.job_id == job_id, EXPANSIONS.c.state == "expanding", free)
            .values(lease_token=token, lease_until=now + timedelta(seconds=lease_s))
        )

        def move(c: Connection) -> ExpansionClaim | None:
            if not c.execute(take).rowcount:
                return None
            row = c.execute(select(EXPANSIONS).where(EXPANSIONS.c.job_id == job_id)).one()
            job = c.execute(select(JOBS).where(JOBS.c.id == job_id)).one()
            return ExpansionClaim(
                job_id, token, job.tenant_id, dict(job._mapping), dict(row._mapping)
            )

        return self._transaction(move)

    def commit_batch(
        self,
        claim: ExpansionClaim,
        listed: Sequence[Listed],
        *,
        cursor: str,
        seen: int,
        lease_s: float,
    ) -> BatchResult:
        """Insert `listed` as items (skipped when an earlier transcript exists), move the
        cursor to `cursor` and the counters, in one transaction; publish the queued ones."""
        now = self.clock()
        row = claim.row

        def move(c: Connection) -> BatchResult:
            canceled = c.execute(CANCELED_AT, {"job_id": claim.job_id}).scalar()
            if canceled is not None:  # the cancel stopped the job's items; stop listing too
                c.execute(_end(claim, now))
                return BatchResult(None, [], 0)
            moved = c.execute(
                update(EXPANSIONS)
                .where(
                    EXPANSIONS.c.job_id == claim.job_id,
                    EXPANSIONS.c.lease_token == claim.token,
                    EXPANSIONS.c.state == "expanding",
                )
                .values(
                    cursor=cursor,
                    next_seq=EXPANSIONS.c.next_seq + len(listed),
                    listed=EXPANSIONS.c.listed + seen,
                    lease_until=now + timedelta(seconds=lease_s),
                    updated_at=now,
                )
            ).rowcount
            if not moved:
                return BatchResult(None, [], 0)
            earlier = self._earlier(c, claim, listed) if row["incremental"] else {}
            rows = [
                listed_item_row(claim, row["next_seq"] + n + 1, x, earlier, now)
                for n, x in enumerate(listed)
            ]
            if rows:
                c.execute(insert(Item), rows)
            # The job row (every worker of the job updates it) is locked last, for least time.
            first, last = row["next_seq"], row["next_seq"] + len(rows)
            ids = list(
                c.execute(
                    select(ITEMS.c.id)
                    .where(
                        ITEMS.c.job_id == claim.job_id,
                        ITEMS.c.seq > first,
                        ITEMS.c.seq <= last,
                        ITEMS.c.status == ItemStatus.QUEUED.value,
                    )
                    .order_by(ITEMS.c.seq)
                ).scalars()
            )
            counts = {s: sum(1 for r in rows if r["status"] == s) for s in ItemStatus}
            grown = c.execute(
                update(JOBS)
                .where(JOBS.c.id == claim.job_id, JOBS.c.canceled_at.is_(None))
                .values(total=JOBS.c.total + len(rows))
            ).rowcount
            if not grown:  # canceled since the check above: none of this batch stays
                raise _CanceledMeanwhile
            sql.shift(
                c,
                claim.job_id,
                now,
                queued=counts[ItemStatus.QUEUED],
                skipped=counts[ItemStatus.SKIPPED],
                failed=counts[ItemStatus.FAILED],
            )
            new_row = {**row, "cursor": cursor, "next_seq": last, "listed": row["listed"] + seen}
            return BatchResult(replace(claim, row=new_row), ids, counts[ItemStatus.SKIPPED])

        try:
            result = self._transaction(move)
        except _CanceledMeanwhile:
            self._transaction(lambda c: c.execute(_end(claim, self.clock())))
            return BatchResult(None, [], 0)
        self.publish(result.queued)
        return result

    def _earlier(
        self, c: Connection, claim: ExpansionClaim, listed: Sequence[Listed]
    ) -> dict[str, Any]:
        """digest → an earlier succeeded item of the same tenant with that digest."""
        digests = sorted({x.digest for x in listed if x.digest})
        if not digests:
            return {}
        found = c.execute(
            select(
                ITEMS.c.archive_digest,
                ITEMS.c.job_id,
                ITEMS.c.output_key,
                ITEMS.c.output_bytes,
                ITEMS.c.output_content_type,
                ITEMS.c.duration_s,
            )
            .join(JOBS, JOBS.c.id == ITEMS.c.job_id)
            .where(
                ITEMS.c.archive_digest.in_(digests),
                ITEMS.c.archive_digest.is_not(None),
                ITEMS.c.status == ItemStatus.SUCCEEDED.value,
                JOBS.c.tenant_id == claim.tenant_id,
                ITEMS.c.job_id != claim.job_id,
            )
            .order_by(ITEMS.c.id.desc())
        ).all()
        earlier: dict[str, Any] = {}
        for hit in found:
            earlier.setdefault(hit.archive_digest, hit)
        return earlier

    def release(
        self, claim: ExpansionClaim, *, error: str | None = None, delay_s: float = 0.0
    ) -> int:
        """Let go of the expansion (more to list, or the listing failed: `error`) so another
        pass takes it up in `delay_s`; returns how many failures in a row it has had."""
        now = self.clock()
        values: dict[str, Any] = {
            "lease_token": None,
            "lease_until": now + timedelta(seconds=delay_s),
            "updated_at": now,
        }
        if error is not None:
            values |= {"failures": EXPANSIONS.c.failures + 1, "error_message": error[:2000]}
        else:
            values |= {"failures": 0, "error_message": None}
        mine = and_(EXPANSIONS.c.job_id == claim.job_id, EXPANSIONS.c.lease_token == claim.token)

        def move(c: Connection) -> int:
            c.execute(update(EXPANSIONS).where(mine).values(**values))
            failures = c.execute(
                select(EXPANSIONS.c.failures).where(EXPANSIONS.c.job_id == claim.job_id)
            ).scalar()
            return int(failures or 0)

        return self._transaction(move)

    def finish(self, claim: ExpansionClaim, failure: ItemError | None = None) -> JobStatus | None:
        """End the expansion: the job's status follows from its items from now on. A
        `failure` (the prefix cannot be listed, too many objects) is recorded as one failed
        item named `expansion`, so the job says why in its items and manifest."""
        now = self.clock()
        row = claim.row

        def move(c: Connection) -> JobStatus | None:
            done = c.execute(_end(claim, now)).rowcount
            if not done:
                return None
            c.execute(STOP_EXPANDING, {"job_id": claim.job_id})
            if failure is None or c.execute(CANCELED_AT, {"job_id": claim.job_id}).scalar():
                return JobStatus(sql.shift(c, claim.job_id, now).status)
            seq = row["next_seq"] + 1
            c.execute(
                insert(Item),
                [
                    blank_item_row(claim.job_id, seq, now)
                    | {
                        "external_id": f"{seq}-expansion",
                        "source": row["location"],
                        "status": ItemStatus.FAILED.value,
                        "finished_at": now,
                        "error_code": failure.code.value,
                        "error_message": failure.message,
                    }
                ],
            )
            c.execute(update(JOBS).where(JOBS.c.id == claim.job_id).values(total=JOBS.c.total + 1))
            return JobStatus(sql.shift(c, claim.job_id, now, failed=1).status)

        return self._transaction(move)

    def resumable(self, *, limit: int) -> list[str]:
        """Jobs whose expansion nobody holds and is due: its expander died, its task message
        was lost, or it paused between passes."""
        now = self.clock()
        query = (
            select(EXPANSIONS.c.job_id)
            .where(EXPANSIONS.c.state == "expanding", EXPANSIONS.c.lease_until < now)
            .order_by(EXPANSIONS.c.lease_until)
            .limit(limit)
        )
        return self._transaction(lambda c: list(c.execute(query).scalars()))


class _CanceledMeanwhile(Exception):
    """The job was canceled while a batch was being inserted: roll the batch back."""


def _end(claim: ExpansionClaim, now: datetime) -> Any:
    """Mark the claim's expansion done (only its holder's token matches)."""
    return (
        update(EXPANSIONS)
        .where(EXPANSIONS.c.job_id == claim.job_id, EXPANSIONS.c.lease_token == claim.token)
        .values(state="done", lease_token=None, lease_until=None, finished_at=now, updated_at=now)
    )


def first_task_lease(now: datetime) -> datetime:
    """A fresh expansion's `lease_until`: beat leaves it to the API's task until then."""
    return now + timedelta(seconds=FIRST_TASK_GRACE_S)
