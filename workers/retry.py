"""Retry policy: full-jitter exponential backoff, Retry-After, and the in-call retry loop.

Two layers. In-call retries are short (a few seconds at most) and absorb blips; anything
longer frees the worker slot: the item goes back to `queued` with `next_attempt_at`, and
either a short countdown or the sweeper brings it back. Permanent errors are never retried.
Time and randomness are parameters so tests never sleep through a real backoff.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from jobs.clock import utc_now
from jobs.records import AttemptRecord
from storage.publisher import MAX_COUNTDOWN_S
from workers import metrics
from workers.providers.errors import ProviderError, RateLimited, TransientProviderError
from workers.retry_budget import RetryBudget

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    call_attempts: int = 3  # HTTP attempts per claim (SLNG's own SDK makes 3)
    call_base_s: float = 0.5
    call_cap_s: float = 8.0
    # A Retry-After longer than this is not slept through in-call; the item is re-queued.
    call_max_wait_s: float = 10.0
    item_attempts: int = 5  # claims per item before it fails for good
    item_base_s: float = 5.0
    item_cap_s: float = 300.0
    # Countdowns stay far below Redis' visibility timeout; longer waits use the sweeper.
    max_countdown_s: float = MAX_COUNTDOWN_S


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))] for attempt >= 1."""
    return rng.uniform(0.0, min(cap, base * 2.0 ** max(attempt - 1, 0)))


def next_delay(
    attempt: int, error: ProviderError, *, base: float, cap: float, rng: random.Random
) -> float:
    """Delay before the next try: backoff, but never sooner than the provider's Retry-After."""
    delay = backoff(attempt, base=base, cap=cap, rng=rng)
    if isinstance(error, RateLimited) and error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return delay


def attempt_record(
    started: float,
    started_at: datetime,
    *,
    status_code: int | None,
    error: ProviderError | None,
    request_id: str | None,
) -> AttemptRecord:
    return AttemptRecord(
        started_at=started_at,
        latency_ms=(time.monotonic() - started) * 1000.0,
        status_code=status_code,
        error_code=error.code if error else None,
        provider_request_id=request_id,
    )


def call_with_retries(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    rng: random.Random,
    attempts_log: list[AttemptRecord],
    deadline_s: float,
    budget: RetryBudget,
    credential: tuple[str, str],
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `fn` up to `policy.call_attempts` times on transient errors, logging each attempt.

    Raises the last error when attempts, the deadline, the shared retry `budget` of
    `credential` (provider, fingerprint), or patience for a long Retry-After run out;
    permanent errors are raised at once.
    """
    budget.deposit(*credential)
    metrics.forget_permit()  # 429s and retries count under this call's permits only
    begun = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        started, started_at = time.monotonic(), utc_now()
        try:
            result = fn()
        except ProviderError as error:
            metrics.provider_error(credential[0], error.status_code)
            attempts_log.append(
                attempt_record(
                    started,
                    started_at,
                    status_code=error.status_code,
                    error=error,
                    request_id=error.request_id,
                )
            )
            if not isinstance(error, TransientProviderError) or attempt >= policy.call_attempts:
                raise
            delay = next_delay(
                attempt, error, base=policy.call_base_s, cap=policy.call_cap_s, rng=rng
            )
            elapsed = time.monotonic() - begun
            if delay > policy.call_max_wait_s or elapsed + delay > deadline_s:
                raise
            if not budget.try_withdraw(*credential):
                raise  # the fleet is already retrying a lot against this provider
            metrics.retried(credential[0])
            sleep(delay)
            continue
        attempts_log.append(
            attempt_record(
                started,
                started_at,
                status_code=getattr(result, "status_code", 200),
                error=None,
                request_id=getattr(result, "request_id", None),
            )
        )
        return result
