"""The item ledger's statements, built once on the Core tables with bind parameters.

Only `jobs.ledger` runs these. Building ORM-enabled UPDATEs per call cost more CPU than the
database work itself, and a worker's throughput is bound by its CPU (one GIL) long before
the provider's limit, so every per-item statement is prebuilt here.

Every item move is a compare-and-set (on status, and on the claim token once running) and
moves the job row's counters by one UPDATE that also derives the job's status (`COUNTERS`).
On PostgreSQL the hot moves are ONE statement each (`CLAIM_AT_ONCE`, `SUCCEED_AT_ONCE`):
data-modifying CTEs move the item, insert the attempts and update the job row, so the job
row's lock — the hottest in the system, every item of a job updates it — is held for
microseconds inside the server instead of across a worker's wait for the GIL before COMMIT
(pg_stat_activity showed five of sixteen backends in `Lock:transactionid`). SQLite cannot put
an UPDATE in a CTE, and has one writer anyway, so it runs the same moves as a transaction.

This module holds the job row's counters and one item's moves (claim, leaving running); the
moves of many items at once are in `jobs.ledger_sql_bulk`, the budget checks (issue 12) in
`jobs.ledger_sql_budget`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    Float,
    Integer,
    Table,
    Text,
    and_,
    bindparam,
    case,
    column,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB

from jobs.model_types import UTCDateTime
from jobs.models import Attempt, Item, Job
from jobs.records import AttemptRecord
from jobs.status import JobStatus

JOBS, ITEMS, ATTEMPTS = (cast(Table, m.__table__) for m in (Job, Item, Attempt))
NOW = bindparam("now", type_=UTCDateTime())
COUNTERS = ("queued", "running", "succeeded", "failed", "canceled", "skipped")


def counter_update(job_id: Any = None) -> Any:
    """UPDATE jobs: move every counter by its delta, derive status, return what workers need.

    The CASE mirrors `jobs.status.job_status_from_counts` (a test keeps the two in step), so
    concurrent workers never read-modify-write the job row. `job_id` picks the row: a bind
    parameter by default, or a column of a CTE that moved an item, which makes the
    statement `UPDATE jobs ... FROM <cte>`.
    """
    target = bindparam("job_id") if job_id is None else job_id
    user_canceled = or_(JOBS.c.canceled_at.is_not(None), bindparam("cancel", type_=Boolean()))
    new = {name: JOBS.c[name] + bindparam(f"d_{name}", type_=Integer()) for name in COUNTERS}
    pending = new["queued"] + new["running"]
    status = case(
        # An archive still listing into items is not finished, whatever its items did.
        (JOBS.c.expanding, JobStatus.EXPANDING.value),
        (
            pending > 0,
            case(
                (new["succeeded"] + new["failed"] + new["running"] > 0, JobStatus.RUNNING.value),
                else_=JobStatus.QUEUED.value,
            ),
        ),
        # `cancel`: a job canceled while expanding may have no item to cancel yet.
        # Items a budget cap canceled (`budget_stopped_at`) are not a user's cancel: the job
        # ends with what it made, completed_with_errors or failed (issue 12).
        (
            or_(
                and_(new["canceled"] > 0, or_(JOBS.c.budget_stopped_at.is_(None), user_canceled)),
                bindparam("cancel", type_=Boolean()),
            ),
            JobStatus.CANCELED.value,
        ),
        (new["failed"] + new["canceled"] == 0, JobStatus.SUCCEEDED.value),
        (new["succeeded"] + new["skipped"] == 0, JobStatus.FAILED.value),
        else_=JobStatus.COMPLETED_WITH_ERRORS.value,
    )
    claimed = bindparam("d_running", type_=Integer()) > 0
    cancel = bindparam("cancel", type_=Boolean())
    return (
        update(JOBS)
        .where(JOBS.c.id == target)
        .values(
            **new,
            status=status,
            finished_at=case(
                (or_(pending > 0, JOBS.c.expanding), None),
                else_=func.coalesce(JOBS.c.finished_at, NOW),
            ),
            started_at=case(
                (claimed, func.coalesce(JOBS.c.started_at, NOW)), else_=JOBS.c.started_at
            ),
            canceled_at=case(
                (cancel, func.coalesce(JOBS.c.canceled_at, NOW)), else_=JOBS.c.canceled_at
            ),
            usage_characters=JOBS.c.usage_characters + bindparam("d_chars", type_=Integer()),
            usage_audio_seconds=JOBS.c.usage_audio_seconds + bindparam("d_audio", type_=Float()),
        )
        .returning(
            JOBS.c.status,
            JOBS.c.tenant_id,
            JOBS.c.kind,
            JOBS.c.provider,
            JOBS.c.model,
            JOBS.c.voice,
            JOBS.c.options,
            JOBS.c.output_prefix,
            JOBS.c.fallback,
            JOBS.c.cap_characters,
            JOBS.c.cap_audio_seconds,
        )
    )


COUNTER_UPDATE = counter_update()


def counter_params(now: datetime, *, cancel: bool = False, **moves: float) -> dict[str, Any]:
    """The bind parameters of a counter update: `moves` names counters (`queued`, ...) and
    usage (`chars`, `audio` seconds) by their deltas; whatever is not named moves by 0."""
    params: dict[str, Any] = {f"d_{name}": moves.get(name, 0) for name in (*COUNTERS, "chars")}
    params.update(now=now, cancel=cancel, d_audio=moves.get("audio", 0.0))
    return params


# --- claim: queued (and due) -> running -------------------------------------------------

_due = or_(ITEMS.c.next_attempt_at.is_(None), ITEMS.c.next_attempt_at <= NOW)
CLAIM = (
    update(ITEMS)
    .where(ITEMS.c.id == bindparam("item_id"), ITEMS.c.status == "queued", _due)
    .values(
        status="running",
        attempts=ITEMS.c.attempts + 1,
        claim_token=bindparam("token"),
        lease_expires_at=bindparam("lease_until", type_=UTCDateTime()),
        updated_at=NOW,
    )
    .returning(
        ITEMS.c.job_id,
        ITEMS.c.seq,
        ITEMS.c.external_id,
        ITEMS.c.text,
        ITEMS.c.source,
        ITEMS.c.voice.label("item_voice"),
        ITEMS.c.attempts,
        ITEMS.c.provider_job,
        ITEMS.c.route,
        ITEMS.c.content_hash,
    )
)
_CLAIMED = CLAIM.cte("moved")
_TWIN = ITEMS.alias("twin")


# Whether another item shares the claimed line's hash: a succeeded copy with an output, or a
# pending copy before it. Answered in the claim (a range of `ix_items_content_hash`), so the
# worker skips reuse's own lookup for the lines that have no twin (`workers.reuse`).
def _has_twin(content_hash: Any) -> Any:
    return (
        select(_TWIN.c.id)
        .where(
            _TWIN.c.content_hash == content_hash,
            _TWIN.c.id != bindparam("item_id"),
            or_(
                and_(_TWIN.c.status == "succeeded", _TWIN.c.output_key.is_not(None)),
                and_(
                    or_(_TWIN.c.status == "queued", _TWIN.c.status == "running"),
                    _TWIN.c.id < bindparam("item_id"),
                ),
            ),
        )
        .exists()
    )


_HAS_TWIN = _has_twin(_CLAIMED.c.content_hash)
HAS_TWIN = select(_has_twin(bindparam("content_hash")))  # SQLite's claim asks it separately
CLAIM_AT_ONCE = counter_update(_CLAIMED.c.job_id).returning(
    *(_CLAIMED.c[name] for name in ("job_id", "seq", "external_id", "text", "source")),
    _CLAIMED.c.item_voice,
    _CLAIMED.c.attempts,
    _CLAIMED.c.provider_job,
    _CLAIMED.c.route,
    _CLAIMED.c.content_hash,
    _HAS_TWIN.label("twin"),
)

# --- leaving running: only the claim holder's token matches -----------------------------


def leave_running(target: str, *columns: str) -> Any:
    """UPDATE item `item_id`, running under claim `token`, to `target`, setting `columns`
    from bind parameters of the same names (`jobs.ledger_sql_budget` builds on it too)."""
    values: dict[str, Any] = {name: bindparam(name, type_=ITEMS.c[name].type) for name in columns}
    return (
        update(ITEMS)
        .where(
            ITEMS.c.id == bindparam("item_id"),
            ITEMS.c.status == "running",
            ITEMS.c.claim_token == bindparam("token"),
        )
        .values(status=target, lease_expires_at=None, updated_at=NOW, **values)
    )


SUCCEED = leave_running(
    "succeeded",
    "output_key",
    "output_bytes",
    "output_content_type",
    "duration_s",
    "characters",
    "pieces",
    "finished_at",
    "reused_from",
).values(
    error_code=None,
    error_message=None,
    next_attempt_at=None,
    # The hash of the route that spoke it (a fallback's differs); None keeps the submit's.
    content_hash=func.coalesce(
        bindparam("content_hash", type_=ITEMS.c.content_hash.type), ITEMS.c.content_hash
    ),
)
FAIL = leave_running("failed", "error_code", "error_message", "finished_at").values(
    next_attempt_at=None
)
REQUEUE = leave_running("queued", "error_code", "error_message", "next_attempt_at", "published_at")
# A hand-back gives the claim's attempt back: the hold-up was ours, not the item's.
HAND_BACK = leave_running("queued", "next_attempt_at", "published_at").values(
    error_code=None, error_message=None, attempts=ITEMS.c.attempts - 1
)
# Failing over: back to queued on the next route with a fresh attempt budget, due now; the
# error that moved it is kept until the fallback's outcome replaces it.
REROUTE = leave_running(
    "queued", "error_code", "error_message", "next_attempt_at", "published_at"
).values(route=ITEMS.c.route + 1, attempts=0)
# Waiting on a provider-side job is a hand-back that also records the job (SLNG batch).
AWAIT_PROVIDER = HAND_BACK.values(provider_job=bindparam("provider_job", type_=JSON()))
CANCEL_RUNNING = leave_running("canceled", "finished_at")

_SUCCEEDED = SUCCEED.returning(ITEMS.c.id, ITEMS.c.job_id).cte("moved")
_LOGGED = (
    func.jsonb_to_recordset(bindparam("attempt_log", type_=JSONB))
    .table_valued(
        column("started_at", UTCDateTime()),
        column("latency_ms", Float()),
        column("status_code", Integer()),
        column("error_code", Text()),
        column("provider_request_id", Text()),
    )
    .render_derived(name="logged", with_types=True)
)
SUCCEED_AT_ONCE = counter_update(_SUCCEEDED.c.job_id).add_cte(
    insert(ATTEMPTS)
    .from_select(
        ["item_id", *_LOGGED.c.keys()],
        select(_SUCCEEDED.c.id, *_LOGGED.c).select_from(_SUCCEEDED).join(_LOGGED, true()),
    )
    .cte("recorded")
)
RECORD_ATTEMPTS = insert(ATTEMPTS)

# --- helpers ----------------------------------------------------------------------------


def held(item_id: int, token: str, now: datetime) -> dict[str, Any]:
    """The compare-and-set parameters of a move out of running: only this claim matches."""
    return {"item_id": item_id, "token": token, "now": now}


def shift(c: Connection, job_id: str, now: datetime, **moves: Any) -> Any:
    """Move the job's counters (and usage) by `moves`; returns the job's new row."""
    return c.execute(COUNTER_UPDATE, counter_params(now, **moves) | {"job_id": job_id}).one()


def record(c: Connection, item_id: int, attempts: Sequence[AttemptRecord]) -> None:
    """Insert an item's attempts (nothing when there are none)."""
    if attempts:
        c.execute(RECORD_ATTEMPTS, [a.row() | {"item_id": item_id} for a in attempts])
