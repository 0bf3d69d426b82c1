"""The one vocabulary for jobs and items: kinds, statuses, and the moves allowed between them.

The ORM columns, the API schemas, the CLI and the logs all use these enums (their values are
the strings stored and sent). The item ledger (`jobs.ledger`) checks every move it makes
against `ITEM_TRANSITIONS`; an illegal move raises.
"""

from __future__ import annotations

from enum import StrEnum


class JobKind(StrEnum):
    TTS = "tts"  # text in, one audio file per item out
    STT = "stt"  # a recording in, one transcript (JSON plus renderings) per item out


class ItemStatus(StrEnum):
    QUEUED = "queued"  # waiting for a worker (maybe not before next_attempt_at)
    RUNNING = "running"  # claimed by a worker holding a lease
    SUCCEEDED = "succeeded"  # output written and recorded
    FAILED = "failed"  # gave up; error_code/error_message say why
    CANCELED = "canceled"  # the job was canceled before this item ran
    # An archive object transcribed before with the same key, ETag and settings: not run
    # again; its output points at the earlier item's (issue 12, incremental archives).
    SKIPPED = "skipped"


class JobStatus(StrEnum):
    EXPANDING = "expanding"  # an archive job still listing its prefix into items
    QUEUED = "queued"  # accepted, no item started yet
    RUNNING = "running"  # at least one item started, some not finished
    SUCCEEDED = "succeeded"  # every item succeeded (or was skipped as done before)
    COMPLETED_WITH_ERRORS = "completed_with_errors"  # finished; some items failed, some succeeded
    FAILED = "failed"  # finished; no item succeeded
    CANCELED = "canceled"  # canceled by the user before every item ran


ITEM_TERMINAL = frozenset(
    {ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.CANCELED, ItemStatus.SKIPPED}
)
JOB_TERMINAL = frozenset(
    {
        JobStatus.SUCCEEDED,
        JobStatus.COMPLETED_WITH_ERRORS,
        JobStatus.FAILED,
        JobStatus.CANCELED,
    }
)

ITEM_TRANSITIONS: dict[ItemStatus, frozenset[ItemStatus]] = {
    ItemStatus.QUEUED: frozenset({ItemStatus.RUNNING, ItemStatus.CANCELED, ItemStatus.FAILED}),
    # running -> queued is an item-level retry or a recovered lease.
    ItemStatus.RUNNING: frozenset(
        {ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.QUEUED, ItemStatus.CANCELED}
    ),
    # failed -> queued is "retry failed items".
    ItemStatus.FAILED: frozenset({ItemStatus.QUEUED}),
    ItemStatus.SUCCEEDED: frozenset(),
    ItemStatus.CANCELED: frozenset(),
    # Inserted skipped by an archive's expansion (jobs.archives); never run, never left.
    ItemStatus.SKIPPED: frozenset(),
}


class IllegalTransition(ValueError):
    """A status change the transition table does not allow."""


def check_item_transition(current: ItemStatus, target: ItemStatus) -> None:
    """Raise IllegalTransition unless an item may move from `current` to `target`."""
    if target not in ITEM_TRANSITIONS[current]:
        raise IllegalTransition(f"item cannot move from {current} to {target}")


def job_status_from_counts(
    *,
    total: int,
    queued: int,
    running: int,
    succeeded: int,
    failed: int,
    canceled: int,
    skipped: int = 0,
    expanding: bool = False,
    budget_stopped: bool = False,
) -> JobStatus:
    """Derive a job's status from its item counts (the counts are the truth).

    An archive job is `expanding` until its listing is done, whatever its items did: it
    cannot be reported finished while items may still be added. A skipped item counts as
    done, like a succeeded one. Items a budget cap canceled (`budget_stopped`, issue 12) are
    not a user's cancel: the job ends with what it made, as if they had failed."""
    if expanding:
        return JobStatus.EXPANDING
    if queued or running:
        return JobStatus.RUNNING if (succeeded or failed or running) else JobStatus.QUEUED
    if canceled and not budget_stopped:
        return JobStatus.CANCELED
    if failed == 0 and canceled == 0:
        return JobStatus.SUCCEEDED
    if succeeded + skipped == 0:
        return JobStatus.FAILED
    return JobStatus.COMPLETED_WITH_ERRORS
