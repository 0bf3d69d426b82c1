"""From what happened to an item to the ledger move that records it.

`workers.pipeline` catches each kind of failure and calls one of these; each is a single
ledger call (one transaction that only the claim holder can commit) plus, for a final
outcome, the job's manifest when the outcome finished the job.

Each also logs the delivery's one outcome line, `item N outcome X (job J, provider P[, error
CODE])` (the chaos suite greps `item N outcome X`), with the same facts as `extra=` fields
(`item_fields`), which JSON logs carry as keys.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from enum import StrEnum

from jobs.error_codes import ErrorCode
from jobs.manifest import write_manifest_if_finished
from jobs.records import AttemptRecord, ClaimedItem, ItemError, ItemResult, ProviderJob
from jobs.status import JOB_TERMINAL, JobStatus
from workers import metrics
from workers.providers.errors import ProviderError
from workers.retry import next_delay
from workers.runtime import Runtime
from workers.stitched_job import stitch_job_if_finished

log = logging.getLogger(__name__)
Attempts = Sequence[AttemptRecord]


class Outcome(StrEnum):
    SKIPPED = "skipped"  # not claimable: someone else has it, it is done, or not due yet
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"  # back in the queue with next_attempt_at
    LOST = "lost"  # our lease was taken over while we worked; the new holder decides
    # handed back without spending an attempt (limit full, storage down, an SLNG batch job)
    DEFERRED = "deferred"
    REROUTED = "rerouted"  # moved to the job's next fallback provider, due now
    STOPPED = "stopped"  # not started: its job's budget cap was reached (issue 12)


def item_fields(item: ClaimedItem, **more: object) -> dict[str, object]:
    """The structured fields of a log line about `item` (pass as `extra=`)."""
    return {"job_id": item.job_id, "item_id": item.id, "provider": item.provider, **more}


def about(item: ClaimedItem, code: ErrorCode | None = None) -> str:
    """How a text log line names `item`'s job and provider (and the error code, if any)."""
    error = f", error {code.value}" if code else ""
    return f"(job {item.job_id}, provider {item.provider}{error})"


def _ended(item: ClaimedItem, outcome: Outcome, code: ErrorCode | None = None) -> Outcome:
    fields = item_fields(item, outcome=outcome.value)
    if code:
        fields["error_code"] = code.value
    level = logging.WARNING if outcome is Outcome.FAILED else logging.INFO
    log.log(level, "item %s outcome %s %s", item.id, outcome.value, about(item, code), extra=fields)
    metrics.ITEMS_FINISHED.labels(metrics.provider_label(item.provider), outcome.value).inc()
    return outcome


def succeed(rt: Runtime, item: ClaimedItem, attempts: Attempts, result: ItemResult) -> Outcome:
    status = rt.ledger.succeed(item, usage_safe(result), attempts)
    _after_final(rt, item, status)
    return _ended(item, Outcome.SUCCEEDED if status else Outcome.LOST)


def usage_safe(result: ItemResult) -> ItemResult:
    """`result` with a duration that can only add a finite, non-negative amount to the job's
    usage (a provider once reported -1e300 s, issue 9); anything else is recorded as unknown."""
    duration = result.duration_s
    if duration is None or (math.isfinite(duration) and duration >= 0.0):
        return result
    return replace(result, duration_s=None)


def fail(
    rt: Runtime, item: ClaimedItem, attempts: Attempts, error: ItemError, *, whole_job: bool = False
) -> Outcome:
    """Fail the item; with `whole_job`, also every queued item of its job (same cause)."""
    status = rt.ledger.fail(item, error, attempts, whole_job=whole_job)
    _after_final(rt, item, status)
    return _ended(item, Outcome.FAILED if status else Outcome.LOST, error.code)


BUDGET_MESSAGE = (
    "Not started: the job's budget cap was reached (see the job's budget and usage); "
    "submit the remaining lines as a new job, with a larger budget if they should run."
)


def stop_for_budget(rt: Runtime, item: ClaimedItem) -> Outcome:
    """Starting the item would exceed its job's budget: it and every queued item of the
    job are canceled with `budget_exceeded`; running ones finish (no call was made here)."""
    code = ErrorCode.BUDGET_EXCEEDED
    status = rt.ledger.stop_for_budget(item, ItemError(code, BUDGET_MESSAGE))
    _after_final(rt, item, status)
    return _ended(item, Outcome.STOPPED if status else Outcome.LOST, code)


def retry_later(
    rt: Runtime, item: ClaimedItem, attempts: Attempts, error: ProviderError
) -> Outcome:
    """Back to queued with a backoff, or failed for good once the attempt budget is spent."""
    policy = rt.config.retry
    if item.attempts >= policy.item_attempts:
        message = f"Gave up after {item.attempts} attempts; last error: {error.message}"
        if item.can_fail_over:
            return fail_over(rt, item, attempts, ItemError(error.code, message))
        return fail(rt, item, attempts, ItemError(error.code, message))
    delay = next_delay(
        item.attempts, error, base=policy.item_base_s, cap=policy.item_cap_s, rng=rt.rng
    )
    moved = rt.ledger.retry_later(
        item, ItemError(error.code, error.message), attempts, delay_s=delay
    )
    return _ended(item, Outcome.RETRYING if moved else Outcome.LOST, error.code)


def fail_over(rt: Runtime, item: ClaimedItem, attempts: Attempts, error: ItemError) -> Outcome:
    """To the job's next fallback provider, due now with a fresh attempt budget; `error` is
    why the item left its provider."""
    nxt = item.fallback[item.route]
    log.warning(
        "item %s fails over to %s/%s %s",
        item.id,
        nxt.provider,
        nxt.model,
        about(item, error.code),
        extra=item_fields(item, error_code=str(error.code)),
    )
    moved = rt.ledger.reroute(item, error, attempts)
    return _ended(item, Outcome.REROUTED if moved else Outcome.LOST, error.code)


def hand_back(
    rt: Runtime,
    item: ClaimedItem,
    attempts: Attempts,
    delay_s: float,
    code: ErrorCode | None = None,
) -> Outcome:
    """Back to queued without spending an attempt: the hold-up was ours, not the item's
    (`code` names it when it has one, e.g. the provider's rate limit)."""
    moved = rt.ledger.hand_back(item, attempts, delay_s=delay_s)
    return _ended(item, Outcome.DEFERRED if moved else Outcome.LOST, code)


def await_provider(
    rt: Runtime, item: ClaimedItem, attempts: Attempts, job: ProviderJob, delay_s: float
) -> Outcome:
    """Back to queued while the provider works on `job`, without spending an attempt."""
    moved = rt.ledger.await_provider(item, job, attempts, delay_s=delay_s)
    return _ended(item, Outcome.DEFERRED if moved else Outcome.LOST)


def _after_final(rt: Runtime, item: ClaimedItem, job_status: JobStatus | None) -> None:
    """Store the job's manifest if this outcome finished the job (never fails the item)."""
    if job_status not in JOB_TERMINAL:
        return
    try:
        write_manifest_if_finished(rt.ledger.db.sessions, rt.store, item.job_id)
    except Exception:  # the manifest endpoint still serves it; the next finisher rewrites
        log.warning(
            "could not write the manifest of job %s %s",
            item.job_id,
            about(item),
            exc_info=True,
            extra=item_fields(item),
        )
    try:
        stitch_job_if_finished(rt.ledger.db.sessions, rt.store, item.job_id)
    except Exception:  # `retry` on the job redoes it at its next finish
        log.warning(
            "could not stitch the outputs of job %s %s",
            item.job_id,
            about(item),
            exc_info=True,
            extra=item_fields(item),
        )
