"""The typed records that cross the archive ledger's boundary, and the item rows a listing
becomes.

An expander (`workers.expand`) lists a page, turns each object that passed the filters into a
`Listed`, and hands the page to `ArchiveLedger.commit_batch` under its `ExpansionClaim`,
getting a `BatchResult` back. Each listed object becomes one item row: failed when no store
can read its key, skipped (with the earlier output) when the job is incremental and an
earlier job of the tenant transcribed the same digest, queued otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobs.error_codes import ErrorCode
from jobs.status import ItemStatus

_ITEM_COLUMNS = (
    "job_id",
    "seq",
    "external_id",
    "source",
    "status",
    "attempts",
    "characters",
    "published_at",
    "updated_at",
    "finished_at",
    "archive_digest",
    "skipped_from",
    "output_key",
    "output_bytes",
    "output_content_type",
    "duration_s",
    "error_code",
    "error_message",
)


@dataclass(frozen=True)
class Listed:
    """One object that passed the filters, ready to become an item."""

    relative: str  # its path below the prefix
    source: str  # the item's source URL
    digest: str | None  # archive_digest; None for an object no store can read
    external_id: str


@dataclass(frozen=True)
class ExpansionClaim:
    """An expansion held by one expander, with what it needs to list and insert."""

    job_id: str
    token: str
    tenant_id: str
    job: dict[str, Any]  # provider, model, options, output_prefix, output_layout
    row: dict[str, Any]  # the archive_expansions row as read at claim


@dataclass(frozen=True)
class BatchResult:
    """What a `commit_batch` did: the claim to go on with, the queued ids, how many skipped."""

    claim: ExpansionClaim | None  # None: the claim was lost (or the job canceled)
    queued: list[int]
    skipped: int


def blank_item_row(job_id: str, seq: int, now: datetime) -> dict[str, Any]:
    """An item row of `job_id` at `seq` naming every column, nothing attempted yet."""
    row: dict[str, Any] = dict.fromkeys(_ITEM_COLUMNS)
    return row | {"job_id": job_id, "seq": seq, "attempts": 0, "characters": 0, "updated_at": now}


def listed_item_row(
    claim: ExpansionClaim, seq: int, listed: Listed, earlier: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """The item row `listed` becomes at `seq`: failed if its key is unreadable, skipped with
    the output of `earlier`'s item of the same digest, else queued (and published)."""
    row = blank_item_row(claim.job_id, seq, now) | {
        "external_id": listed.external_id,
        "source": listed.source,
        "archive_digest": listed.digest,
    }
    if listed.digest is None:
        return row | {
            "status": ItemStatus.FAILED.value,
            "finished_at": now,
            "error_code": ErrorCode.UNREADABLE_KEY.value,
            "error_message": (
                f"The key {listed.relative!r} has a '..' or empty segment, a control character "
                "or over 200 characters, which speechbatch does not read; rename the object."
            ),
        }
    hit = earlier.get(listed.digest)
    if hit is None:
        return row | {"status": ItemStatus.QUEUED.value, "published_at": now}
    return row | {
        "status": ItemStatus.SKIPPED.value,
        "finished_at": now,
        "skipped_from": hit.job_id,
        "output_key": hit.output_key,
        "output_bytes": hit.output_bytes,
        "output_content_type": hit.output_content_type,
        "duration_s": hit.duration_s,
    }
