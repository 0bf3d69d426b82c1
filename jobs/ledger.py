"""The item ledger: the one owner of every item state change and of its job's counters.

    queued ──claim──▶ running ──succeed──▶ succeeded
      ▲  │              │ ├──fail─────────▶ failed ──retry_failed──▶ queued
      │  └─cancel_job─▶ │ ├──retry_later / hand_back / await_provider / expire_leases──▶ queued
      │   (canceled)    │ └──cancel_job──▶ canceled (the holder's claim dies with it)
      └─────────────────┘

Each method is one transaction (or, on PostgreSQL, one autocommit statement for the hot
moves), retried for up to `outage_s` across a lost database connection, so a PostgreSQL
restart does not throw away a provider call that already succeeded. A retry after an
ambiguous failure is safe because every move is a compare-and-set: a move that did commit
makes its repeat a no-op (the claim then reads as lost). Attempts are written in the same
statement or transaction as the move they belong to, so a repeat never duplicates them.

Item ids are handed to the publisher only after the commit that made them visible; when the
broker refuses them they are marked unpublished and the sweeper sends them later.
Callers never pick SQL or a dialect: they call a method and get a typed answer. How a move
runs and how ids are published lives in `jobs.ledger_base`; the moves live here.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection

from jobs import ledger_sql as sql
from jobs import ledger_sql_budget as budget_sql
from jobs import ledger_sql_bulk as bulk_sql
from jobs.ledger_base import LedgerBase
from jobs.records import AttemptRecord, ClaimedItem, ItemError, ItemResult, ProviderJob
from jobs.status import ItemStatus, JobStatus, check_item_transition
from storage.prepared import Prepared
from storage.publisher import MAX_COUNTDOWN_S

Q, R = ItemStatus.QUEUED, ItemStatus.RUNNING
Attempts = Sequence[AttemptRecord]
# The two moves every item makes, run without SQLAlchemy's per-execution work (PostgreSQL).
_CLAIM_AT_ONCE, _SUCCEED_AT_ONCE = Prepared(sql.CLAIM_AT_ONCE), Prepared(sql.SUCCEED_AT_ONCE)


class ItemLedger(LedgerBase):
    """Every state change of an item and its job's counters, on one `Database`."""

    # --- a worker's moves -----------------------------------------------------------------

    def claim(self, item_id: int, *, lease_s: float) -> ClaimedItem | None:
        """queued → running under a fresh token and lease, if the item is queued and due;
        None when it is not (someone else has it, it is finished, or not due yet)."""
        check_item_transition(Q, R)
        token, now = secrets.token_hex(8), self.clock()
        params = {"item_id": item_id, "token": token, "now": now}
        params["lease_until"] = now + timedelta(seconds=lease_s)
        if self.db.autocommit is not None:
            params |= sql.counter_params(now, queued=-1, running=1)
            row = self._prepared(_CLAIM_AT_ONCE, params)
            return None if row is None else ClaimedItem.from_rows(item_id, token, row, row)

        def move(c: Connection) -> ClaimedItem | None:
            row = c.execute(sql.CLAIM, params).one_or_none()
            if row is None:
                return None
            job = sql.shift(c, row.job_id, now, queued=-1, running=1)
            ask = {"item_id": item_id, "content_hash": row.content_hash}
            twin = row.content_hash is not None and c.execute(sql.HAS_TWIN, ask).scalar_one()
            return replace(ClaimedItem.from_rows(item_id, token, row, job), twin=bool(twin))

        return self._transaction(move)

    def succeed(
        self, item: ClaimedItem, result: ItemResult, attempts: Attempts
    ) -> JobStatus | None:
        """running → succeeded: record the output, the attempts and the usage, move the
        counters; returns the job's new status, or None if the claim was lost meanwhile."""
        check_item_transition(R, ItemStatus.SUCCEEDED)
        now = self.clock()
        params = sql.held(item.id, item.token, now) | result.columns() | {"finished_at": now}
        moves: dict[str, Any] = {"running": -1, "succeeded": 1, "chars": result.characters}
        # A reused output cost no provider call: its line's audio is shown, not counted.
        moves["audio"] = 0.0 if result.reused_from is not None else result.duration_s or 0.0
        if self.db.autocommit is not None:
            params |= sql.counter_params(now, **moves)
            params["attempt_log"] = [
                {**a.row(), "started_at": a.started_at.isoformat()} for a in attempts
            ]
            row = self._prepared(_SUCCEED_AT_ONCE, params)
            return None if row is None else JobStatus(row.status)

        def move(c: Connection) -> JobStatus | None:
            if not c.execute(sql.SUCCEED, params).rowcount:
                return None
            sql.record(c, item.id, attempts)
            job = sql.shift(c, item.job_id, now, **moves)
            return JobStatus(job.status)

        return self._transaction(move)

    def fail(
        self, item: ClaimedItem, error: ItemError, attempts: Attempts, *, whole_job: bool = False
    ) -> JobStatus | None:
        """running → failed; with `whole_job`, every queued item of the job fails too (its
        credential was refused: further calls are futile). The job's new status, or None."""
        check_item_transition(R, ItemStatus.FAILED)
        now = self.clock()
        params = sql.held(item.id, item.token, now) | {"finished_at": now}
        params |= {"error_code": error.code, "error_message": error.message}

        def move(c: Connection) -> JobStatus | None:
            if not c.execute(sql.FAIL, params).rowcount:
                return None
            sql.record(c, item.id, attempts)
            job = sql.shift(c, item.job_id, now, running=-1, failed=1)
            if whole_job:
                check_item_transition(Q, ItemStatus.FAILED)
                message = f"Not attempted: another item of this job was refused ({error.message})"
                rest = {"b_job_id": item.job_id, "now": now, "error_code": error.code}
                moved = c.execute(bulk_sql.FAIL_QUEUED, rest | {"error_message": message}).rowcount
                if moved:
                    job = sql.shift(c, item.job_id, now, queued=-moved, failed=moved)
            return JobStatus(job.status)

        return self._transaction(move)

    def retry_later(
        self, item: ClaimedItem, error: ItemError, attempts: Attempts, *, delay_s: float
    ) -> bool:
        """running → queued, due in `delay_s` (a spent attempt); a canceled job's item is
        canceled instead. Short delays go out as a countdown message, long ones wait for
        the sweeper. False if the claim was lost."""
        countdown = delay_s <= MAX_COUNTDOWN_S
        return self._back_to_queue(item, attempts, delay_s, error, countdown=countdown)

    def hand_back(self, item: ClaimedItem, attempts: Attempts, *, delay_s: float) -> bool:
        """running → queued without spending an attempt (no provider slot, our storage down,
        a 429): the hold-up was not the item's. Published again for `delay_s` from now."""
        delay_s = min(delay_s, MAX_COUNTDOWN_S)
        return self._back_to_queue(item, attempts, delay_s, None, countdown=True)

    def reroute(self, item: ClaimedItem, error: ItemError, attempts: Attempts) -> bool:
        """running → queued on the item's next route (its job's next fallback provider), due
        now and with a fresh attempt budget; `error` (why it moved) stays on the item until
        the fallback's outcome replaces it. False if the claim was lost."""
        if not item.can_fail_over:
            raise ValueError(f"item {item.id} has no fallback left")
        return self._back_to_queue(item, attempts, 0.0, error, countdown=True, reroute=True)

    def await_provider(
        self, item: ClaimedItem, job: ProviderJob, attempts: Attempts, *, delay_s: float
    ) -> bool:
        """running → queued while the provider works on `job`, recorded on the item; no
        attempt spent. Due in `delay_s`: published at once for 0, else by the sweeper once
        due (no countdown message, no worker thread held). False if the claim was lost."""
        return self._back_to_queue(item, attempts, delay_s, None, countdown=delay_s <= 0, job=job)

    def _back_to_queue(
        self,
        item: ClaimedItem,
        attempts: Attempts,
        delay_s: float,
        error: ItemError | None,
        *,
        countdown: bool,
        job: ProviderJob | None = None,
        reroute: bool = False,
    ) -> bool:
        check_item_transition(R, Q)
        now = self.clock()
        due = now + timedelta(seconds=delay_s)
        params = sql.held(item.id, item.token, now)
        # A countdown message is "published" for when it becomes due; otherwise the sweeper
        # publishes the item once it is due.
        params |= {"next_attempt_at": due, "published_at": due if countdown else None}
        if error is not None:
            params |= {"error_code": error.code, "error_message": error.message}

        def move(c: Connection) -> ItemStatus | None:
            if c.execute(bulk_sql.CANCELED_AT, {"job_id": item.job_id}).scalar() is not None:
                check_item_transition(R, ItemStatus.CANCELED)
                if not c.execute(sql.CANCEL_RUNNING, params | {"finished_at": now}).rowcount:
                    return None
                sql.shift(c, item.job_id, now, running=-1, canceled=1)
                return ItemStatus.CANCELED
            if job is not None:
                statement, params["provider_job"] = sql.AWAIT_PROVIDER, job.to_json()
            elif reroute:
                statement = sql.REROUTE
            else:
                statement = sql.HAND_BACK if error is None else sql.REQUEUE
            if not c.execute(statement, params).rowcount:
                return None
            sql.record(c, item.id, attempts)
            sql.shift(c, item.job_id, now, running=-1, queued=1)
            return Q

        moved = self._transaction(move)
        if moved is Q and countdown:
            self.publish([item.id], delay_s)
        return moved is not None

    def pass_budget(self, item: ClaimedItem) -> bool:
        """Whether `item` may start within its job's caps, marking it as started if so: its
        characters, added to what the job used and what its other started running items
        hold, fit the character cap, and the audio cap is not reached yet (STT durations are
        known only after a call, so audio may overshoot by what is in flight). False once a
        cap stopped the job, or if the claim was lost."""
        params = {"b_job_id": item.job_id, "item_id": item.id, "token": item.token}
        params["b_characters"] = len(item.text or "")
        lock_first = self.db.autocommit is not None  # PostgreSQL: checks of a job in turn

        def move(c: Connection) -> bool:
            if lock_first:
                c.execute(budget_sql.LOCK_JOB_ROW, {"job_id": item.job_id})
            return bool(c.execute(budget_sql.PASS_BUDGET, params).rowcount)

        return self._transaction(move)

    def stop_for_budget(self, item: ClaimedItem, error: ItemError) -> JobStatus | None:
        """A cap was reached: `item` (running, not started) and every queued item of its job
        become canceled with `error` (budget_exceeded); running items finish. The job is
        marked stopped, so it ends completed_with_errors (failed if nothing succeeded), not
        canceled. The job's new status, or None if the claim was lost."""
        check_item_transition(R, ItemStatus.CANCELED)
        check_item_transition(Q, ItemStatus.CANCELED)
        now = self.clock()
        why = {"error_code": error.code, "error_message": error.message}
        params = sql.held(item.id, item.token, now) | {"finished_at": now} | why

        def move(c: Connection) -> JobStatus | None:
            c.execute(budget_sql.MARK_BUDGET_STOPPED, {"job_id": item.job_id, "now": now})
            if not c.execute(budget_sql.CANCEL_HELD_FOR_BUDGET, params).rowcount:
                return None
            rest = {"b_job_id": item.job_id, "now": now} | why
            moved = c.execute(budget_sql.CANCEL_QUEUED_FOR_BUDGET, rest).rowcount
            job = sql.shift(c, item.job_id, now, running=-1, queued=-moved, canceled=moved + 1)
            return JobStatus(job.status)

        return self._transaction(move)

    def renew(self, tokens: Sequence[str], *, lease_s: float) -> set[str]:
        """Extend the leases of running items held under `tokens` (a worker's heartbeat);
        a lease already taken over is never stolen back. Returns the tokens renewed: one
        missing lost its claim (job canceled, or lease taken over), and its worker stops."""
        if not tokens:
            return set()
        until = self.clock() + timedelta(seconds=lease_s)
        params = {"tokens": list(tokens), "until": until}
        return self._transaction(lambda c: set(c.execute(bulk_sql.RENEW, params).scalars()))

    def is_canceled(self, item_id: int) -> bool:
        """Whether the item ended canceled (its worker then removes what it wrote)."""
        row = {"item_id": item_id}
        return (
            self._transaction(lambda c: c.execute(bulk_sql.ITEM_STATUS, row).scalar()) == "canceled"
        )

    # --- the sweeper's and the job's moves ------------------------------------------------

    def expire_leases(self, *, limit: int) -> list[int]:
        """running items whose lease ran out (their worker died) go back to queued."""
        check_item_transition(R, Q)
        now = self.clock()

        def move(c: Connection) -> list[int]:
            recovered = []
            for item_id, job_id in c.execute(bulk_sql.EXPIRED, {"now": now, "limit": limit}).all():
                if c.execute(bulk_sql.EXPIRE, {"item_id": item_id, "now": now}).rowcount:
                    sql.shift(c, job_id, now, running=-1, queued=1)
                    recovered.append(item_id)
            return recovered

        return self._transaction(move)

    def cancel_job(self, job_id: str) -> int:
        """Cancel every queued and running item (a holder's claim dies: it stops at its next
        heartbeat). Marks the job canceled; returns how many items were canceled."""
        check_item_transition(Q, ItemStatus.CANCELED)
        check_item_transition(R, ItemStatus.CANCELED)
        now = self.clock()

        def move(c: Connection) -> int:
            params = {"b_job_id": job_id, "now": now}
            # First, so the job row is locked before items are read: an archive batch
            # committing meanwhile is either seen (and canceled) or refused (workers.expand).
            c.execute(bulk_sql.STOP_EXPANDING, {"job_id": job_id})
            q, r = (
                c.execute(s, params).rowcount
                for s in (bulk_sql.CANCEL_QUEUED, bulk_sql.CANCEL_RUNNING_ITEMS)
            )
            sql.shift(c, job_id, now, cancel=True, queued=-q, running=-r, canceled=q + r)
            return int(q + r)

        return self._transaction(move)

    def retry_failed(self, job_id: str) -> list[int]:
        """failed → queued (attempts reset) for every failed item of the job, then publish."""
        check_item_transition(ItemStatus.FAILED, Q)
        now = self.clock()

        def move(c: Connection) -> list[int]:
            ids = list(c.execute(bulk_sql.FAILED_IDS, {"job_id": job_id}).scalars())
            if ids:
                c.execute(bulk_sql.RETRY_FAILED, {"b_job_id": job_id, "now": now})
                sql.shift(c, job_id, now, failed=-len(ids), queued=len(ids))
            return ids

        ids = self._transaction(move)
        self.publish(ids)
        return ids
