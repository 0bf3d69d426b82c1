"""The item ledger's budget statements (issue 12): the cap check before an item starts, and
the cancels once a cap is reached.

Only `jobs.ledger` runs these (`ItemLedger.pass_budget`, `ItemLedger.stop_for_budget`); they
stand on the tables and moves of `jobs.ledger_sql` and `jobs.ledger_sql_bulk`. Items a cap
canceled are not a user's cancel: the job row's `budget_stopped_at` makes the counter update
end the job completed_with_errors or failed, with what it made, not canceled.
"""

from __future__ import annotations

from sqlalchemy import Integer, bindparam, func, or_, select, true, update

from jobs.ledger_sql import ITEMS, JOBS, NOW, leave_running
from jobs.ledger_sql_bulk import stopping_queued

# An item may start if its characters, with what its job used and what its other running
# items that passed this check hold, fit the character cap, and the audio cap is not reached
# (STT durations are known only after a call). The check marks the item as passed in the same
# statement; on PostgreSQL the job row is locked first (`LOCK_JOB_ROW`), so checks of one job
# run one after another and each sees the items passed before it: two concurrent items can
# never both slip under the cap. SQLite has one writer, and the check is its first statement.
_ITEMS_IN_FLIGHT = ITEMS.alias("in_flight")
_IN_FLIGHT = (
    select(func.coalesce(func.sum(_ITEMS_IN_FLIGHT.c.characters), 0))
    .where(
        _ITEMS_IN_FLIGHT.c.job_id == bindparam("b_job_id"),
        _ITEMS_IN_FLIGHT.c.status == "running",
        _ITEMS_IN_FLIGHT.c.budget_passed.is_(true()),
        _ITEMS_IN_FLIGHT.c.id != bindparam("item_id"),
    )
    .scalar_subquery()
)
_ROOM = (
    select(JOBS.c.id)
    .where(
        JOBS.c.id == bindparam("b_job_id"),
        JOBS.c.budget_stopped_at.is_(None),
        or_(
            JOBS.c.cap_characters.is_(None),
            JOBS.c.usage_characters + _IN_FLIGHT + bindparam("b_characters", type_=Integer())
            <= JOBS.c.cap_characters,
        ),
        or_(
            JOBS.c.cap_audio_seconds.is_(None),
            JOBS.c.usage_audio_seconds < JOBS.c.cap_audio_seconds,
        ),
    )
    .exists()
)
LOCK_JOB_ROW = select(JOBS.c.id).where(JOBS.c.id == bindparam("job_id")).with_for_update()
PASS_BUDGET = (
    update(ITEMS)
    .where(
        ITEMS.c.id == bindparam("item_id"),
        ITEMS.c.status == "running",
        ITEMS.c.claim_token == bindparam("token"),
        _ROOM,
    )
    .values(budget_passed=True)
)
MARK_BUDGET_STOPPED = (
    update(JOBS)
    .where(JOBS.c.id == bindparam("job_id"))
    .values(budget_stopped_at=func.coalesce(JOBS.c.budget_stopped_at, NOW))
)
CANCEL_HELD_FOR_BUDGET = leave_running("canceled", "finished_at", "error_code", "error_message")
CANCEL_QUEUED_FOR_BUDGET = stopping_queued("canceled")
