"""The Celery-free pipeline for one item: claim → call the provider → write → record.

`run_item` is what the Celery task, local mode and the tests all call (`run_items` for a
message that carries a group of ids). The item is claimed through the ledger (a conditional
UPDATE and a lease) and settled before any call when it can be (an identical line's output,
its job's budget); otherwise its kind's path makes the calls and writes the output
(`workers.tts`, `workers.stt`, through `workers.calls`), and `workers.outcomes` records how
it ended: each kind of failure is mapped to one outcome here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import replace

from jobs.error_codes import ErrorCode
from jobs.records import AttemptRecord, ClaimedItem, ItemError, ItemResult
from jobs.status import JobKind
from storage.objects import StorageUnavailable
from workers import batch_stt, outcomes, reuse, stt, tts
from workers.canceled import end_stopped, remove_if_canceled
from workers.circuit import CircuitOpen
from workers.interrupt import ItemStop, ItemStopped
from workers.outcomes import Outcome, about, item_fields
from workers.providers.errors import (
    AuthenticationFailed,
    PermanentProviderError,
    ProviderError,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    TransientProviderError,
)
from workers.retry import next_delay
from workers.runtime import Runtime
from workers.throttle import ThrottleBusy

log = logging.getLogger(__name__)

__all__ = ["Outcome", "run_item", "run_items"]


def run_items(rt: Runtime, item_ids: Sequence[int], stop: threading.Event) -> list[int]:
    """Run a message's group of ids one after another, and return the ids handed back.

    Once `stop` is set (a warm shutdown) the ids not yet started are published again, as
    fresh messages, so the worker can exit after its current item instead of after the
    whole group. A redelivered group is harmless: its finished items are skipped by the claim.
    """
    for done, item_id in enumerate(item_ids):
        if stop.is_set():
            rest = list(item_ids[done:])
            rt.ledger.publish(rest)
            return rest
        run_item(rt, item_id)
    return []


def run_item(rt: Runtime, item_id: int) -> Outcome:
    """Run one item to an outcome. Never raises for provider or input problems.

    Each delivery logs one `item N outcome X` line (the chaos suite greps them to prove no
    item succeeded twice): `workers.outcomes` logs it for a claimed item, naming its job and
    provider; an unclaimable one is logged here by id only (its job is not read just to log).
    """
    item = rt.ledger.claim(item_id, lease_s=rt.config.lease_s)
    if item is None:
        skipped = Outcome.SKIPPED.value
        log.info(
            "item %s outcome %s", item_id, skipped, extra={"item_id": item_id, "outcome": skipped}
        )
        return Outcome.SKIPPED
    with rt.leases.holding(item) as stop:
        return _work(rt, item, stop)


def _work(rt: Runtime, item: ClaimedItem, stop: ItemStop) -> Outcome:  # noqa: PLR0911 - one return per outcome kind
    attempts: list[AttemptRecord] = []
    try:
        with stop.interruptible():  # the heartbeat cuts a canceled item's provider call off
            written = _before_call(rt, item)
            if written is None and item.kind == JobKind.TTS:
                written = tts.synthesize(rt, item, attempts)
            elif written is None:
                written = stt.transcribe(rt, item, attempts)
    except ItemStopped:
        return end_stopped(rt, item)
    except batch_stt.AwaitProvider as waiting:  # SLNG batch: the item waits in the database
        return outcomes.await_provider(rt, item, attempts, waiting.job, waiting.delay_s)
    except CircuitOpen as down:
        # Down for every worker: a fallback now, else back once the next probe may have run.
        if item.can_fail_over:
            return outcomes.fail_over(
                rt, item, attempts, ItemError(ErrorCode.CIRCUIT_OPEN, str(down))
            )
        return outcomes.hand_back(
            rt, item, attempts, down.retry_in_s + rt.rng.uniform(0.5, 3.0), ErrorCode.CIRCUIT_OPEN
        )
    except ThrottleBusy:
        return outcomes.hand_back(rt, item, attempts, rt.rng.uniform(1.0, 3.0))
    except StorageUnavailable:
        # Our own storage is down, not the item's fault: no attempt is spent on it.
        log.warning(
            "object storage unavailable; handing item %s back %s",
            item.id,
            about(item),
            extra=item_fields(item),
        )
        return outcomes.hand_back(rt, item, attempts, rt.rng.uniform(5.0, 15.0))
    except ProviderError as error:
        return _refused(rt, item, attempts, error)
    except Exception as error:  # a bug or an unexpected outage: bounded by item_attempts
        code = ErrorCode.INTERNAL_ERROR
        log.exception(
            "item %s failed unexpectedly %s",
            item.id,
            about(item, code),
            extra=item_fields(item, error_code=code.value),
        )
        transient = ProviderUnavailable(
            f"Internal error ({type(error).__name__}) while processing the item; retrying.",
            code=code,
        )
        return outcomes.retry_later(rt, item, attempts, transient)
    return _settle(rt, item, attempts, written)


def _settle(
    rt: Runtime, item: ClaimedItem, attempts: list[AttemptRecord], written: Settled
) -> Outcome:
    """The outcome of an item that ran (or was settled before its call) without an error."""
    if isinstance(written, reuse.WaitForLeader):  # an identical line is being spoken
        return outcomes.hand_back(rt, item, attempts, written.delay_s)
    if isinstance(written, OverBudget):
        return outcomes.stop_for_budget(rt, item)
    if written.content_hash is None and item.kind == JobKind.TTS:
        # Recorded for the route that spoke it, so a fallback's audio is found by its own hash.
        written = replace(written, content_hash=reuse.route_hash(item))
    outcome = outcomes.succeed(rt, item, attempts, written)
    if outcome is Outcome.LOST:  # canceled after its output was written: remove it
        remove_if_canceled(rt, item)
    return outcome


class OverBudget:
    """`_before_call`'s answer when starting the item would exceed its job's budget."""


Settled = ItemResult | reuse.WaitForLeader | OverBudget


def _before_call(rt: Runtime, item: ClaimedItem) -> Settled | None:
    """What settles an item before any provider call (issue 12): an identical line's output
    copied (`workers.reuse`), a wait for the identical line being spoken, or its job's
    budget cap reached; None when the provider is to be called."""
    found = reuse.reuse_or_wait(rt, item) if item.kind == JobKind.TTS else None
    if found is not None:
        return found
    # An item whose provider-side job is under way (SLNG batch) already started: let it end.
    if item.capped and item.provider_job is None and not rt.ledger.pass_budget(item):
        return OverBudget()
    return None


def _refused(
    rt: Runtime, item: ClaimedItem, attempts: list[AttemptRecord], error: ProviderError
) -> Outcome:
    """The outcome of a call the provider refused or failed, by the kind of error."""
    if isinstance(error, QuotaExceeded) and item.can_fail_over:
        # This account is out of quota; the fallback's may not be.
        return outcomes.fail_over(rt, item, attempts, _error(error))
    if isinstance(error, AuthenticationFailed | QuotaExceeded):
        # Every other item of the job would be refused the same way: stop the job's calls
        # now instead of burning through thousands of items (and the provider's patience).
        return outcomes.fail(rt, item, attempts, _error(error), whole_job=True)
    if isinstance(error, PermanentProviderError):
        return outcomes.fail(rt, item, attempts, _error(error))
    if isinstance(error, RateLimited):
        # "Slow down" is about the provider, not the item: wait at least Retry-After, and
        # spend no attempt, so a long 429 storm delays items instead of failing them.
        # (Quota-type refusals are QuotaExceeded, handled above.)
        policy = rt.config.retry
        wait = next_delay(1, error, base=policy.item_base_s, cap=policy.max_countdown_s, rng=rt.rng)
        return outcomes.hand_back(rt, item, attempts, wait, error.code)
    if isinstance(error, TransientProviderError):
        return outcomes.retry_later(rt, item, attempts, error)
    return outcomes.fail(rt, item, attempts, _error(error))


def _error(error: ProviderError) -> ItemError:
    return ItemError(error.code, error.message)
