"""The item ledger's statements that move many items at once: leases and job-wide moves.

Only the ledgers (`jobs.ledger`, `jobs.ledger_base`, `jobs.archive_ledger`) run these; they
stand on the tables and `NOW` of `jobs.ledger_sql`. A heartbeat renews all of a worker's
leases in one UPDATE, the sweeper re-queues expired ones item by item, and a job-wide move
(cancel, fail the rest, retry the failed) is one UPDATE of every item of a job in one
status, whose rowcount then moves the job's counters in the same transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, null, select, update

from jobs.error_codes import ErrorCode
from jobs.ledger_sql import ITEMS, JOBS, NOW
from jobs.model_types import UTCDateTime

# Returns the tokens still held: a held token it does not return lost its claim (its job was
# canceled, or its lease expired and someone else has the item), so its worker stops.
RENEW = (
    update(ITEMS)
    .where(ITEMS.c.claim_token.in_(bindparam("tokens", expanding=True)))
    .where(ITEMS.c.status == "running")
    .values(lease_expires_at=bindparam("until", type_=UTCDateTime()))
    .returning(ITEMS.c.claim_token)
)
EXPIRED = (
    select(ITEMS.c.id, ITEMS.c.job_id)
    .where(ITEMS.c.status == "running", ITEMS.c.lease_expires_at < NOW)
    .limit(bindparam("limit"))
)
EXPIRE = (
    update(ITEMS)
    .where(
        ITEMS.c.id == bindparam("item_id"),
        ITEMS.c.status == "running",
        ITEMS.c.lease_expires_at < NOW,
    )
    .values(
        status="queued",
        claim_token=None,
        lease_expires_at=None,
        next_attempt_at=None,
        published_at=None,
        error_code=ErrorCode.LEASE_EXPIRED.value,
        error_message="The worker running this item stopped answering; it was re-queued.",
        updated_at=NOW,
    )
)


def job_items_moving(source: str, target: str, **values: Any) -> Any:
    """UPDATE every item of job `b_job_id` in status `source` to `target` (plus `values`);
    the parameter is not `job_id`, which names the column in an UPDATE of items."""
    return (
        update(ITEMS)
        .where(ITEMS.c.job_id == bindparam("b_job_id"), ITEMS.c.status == source)
        .values(status=target, updated_at=NOW, **values)
    )


def stopping_queued(target: str) -> Any:
    """Every queued item of the job to the final `target`, with the error that stopped it."""
    return job_items_moving(
        "queued",
        target,
        error_code=bindparam("error_code"),
        error_message=bindparam("error_message"),
        finished_at=NOW,
    )


FAIL_QUEUED = stopping_queued("failed")
CANCEL_QUEUED = job_items_moving("queued", "canceled", finished_at=NOW)
# A running item's claim dies with the cancel: its holder's succeed/fail/re-queue no longer
# match (status is not running), and its next heartbeat tells the worker to stop (issue 9).
CANCEL_RUNNING_ITEMS = job_items_moving(
    "running", "canceled", finished_at=NOW, lease_expires_at=None
)
RETRY_FAILED = job_items_moving(
    "failed",
    "queued",
    attempts=0,
    next_attempt_at=None,
    published_at=NOW,
    finished_at=None,
    provider_job=null(),  # a retried item submits afresh (under a new claim's job id)
)
FAILED_IDS = (
    select(ITEMS.c.id)
    .where(ITEMS.c.job_id == bindparam("job_id"), ITEMS.c.status == "failed")
    .order_by(ITEMS.c.seq)
)
CANCELED_AT = select(JOBS.c.canceled_at).where(JOBS.c.id == bindparam("job_id"))
# A cancel ends an archive's listing too (workers.expand sees `canceled_at` and stops).
STOP_EXPANDING = update(JOBS).where(JOBS.c.id == bindparam("job_id")).values(expanding=False)
ITEM_STATUS = select(ITEMS.c.status).where(ITEMS.c.id == bindparam("item_id"))


PUBLISH_BATCH = 4096  # ids per publish call (its last 256 go one per message)
