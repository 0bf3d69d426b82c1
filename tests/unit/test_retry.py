"""Backoff maths and the in-call retry loop, with a seeded RNG and no real sleeping."""

import random

import pytest
from prometheus_client import REGISTRY

from jobs.records import AttemptRecord
from workers import metrics
from workers.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    ProviderUnavailable,
    RateLimited,
)
from workers.retry import RetryPolicy, backoff, call_with_retries, next_delay
from workers.retry_budget import UnlimitedRetryBudget


def test_full_jitter_stays_within_the_exponential_envelope() -> None:
    """Each delay is in [0, min(cap, base*2^(n-1))] and the envelope doubles until the cap."""
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(8.0, 0.5 * 2 ** (attempt - 1))
        samples = [backoff(attempt, base=0.5, cap=8.0, rng=rng) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8  # jitter really spreads over the envelope


def test_backoff_is_reproducible_with_a_seed() -> None:
    """The same seed gives the same delays (tests can pin a schedule)."""
    first = [backoff(n, base=1, cap=30, rng=random.Random(3)) for n in range(1, 6)]
    second = [backoff(n, base=1, cap=30, rng=random.Random(3)) for n in range(1, 6)]
    assert first == second


@pytest.mark.parametrize("retry_after", [0.0, 2.5, 7.0, 45.0])
def test_retry_after_is_a_floor(retry_after: float) -> None:
    """The next attempt is never sooner than the provider's Retry-After."""
    error = RateLimited("slow down", retry_after=retry_after)
    rng = random.Random(1)
    for attempt in range(1, 6):
        assert next_delay(attempt, error, base=0.5, cap=8, rng=rng) >= retry_after


CREDENTIAL = ("slng", "0123456789abcdef")


class Flaky:
    """Fails with the given errors in order, then returns 'ok'."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def run(fn: Flaky, policy: RetryPolicy | None = None) -> tuple[list[float], list[AttemptRecord]]:
    slept: list[float] = []
    log: list[AttemptRecord] = []
    call_with_retries(
        fn,
        policy=policy or RetryPolicy(),
        rng=random.Random(0),
        attempts_log=log,
        deadline_s=60,
        sleep=slept.append,
        budget=UnlimitedRetryBudget(),
        credential=CREDENTIAL,
    )
    return slept, log


def test_transient_errors_are_retried_then_succeed() -> None:
    """Two 503s then success: three attempts logged, two sleeps, result returned."""
    fn = Flaky(
        ProviderUnavailable("503", status_code=503), ProviderUnavailable("503", status_code=503)
    )
    slept, log = run(fn)
    assert fn.calls == 3
    assert len(slept) == 2
    assert [a.status_code for a in log] == [503, 503, 200]


@pytest.mark.parametrize("error", [InvalidInput("bad"), AuthenticationFailed("no key")])
def test_permanent_errors_are_never_retried(error: Exception) -> None:
    """A permanent error is raised after exactly one call."""
    fn = Flaky(error)
    with pytest.raises(type(error)):
        run(fn)
    assert fn.calls == 1


def test_attempts_are_capped() -> None:
    """After call_attempts transient failures the last error is raised."""
    fn = Flaky(*[ProviderUnavailable("down") for _ in range(10)])
    with pytest.raises(ProviderUnavailable):
        run(fn, RetryPolicy(call_attempts=3))
    assert fn.calls == 3


def test_long_retry_after_is_not_slept_in_call() -> None:
    """A Retry-After beyond call_max_wait_s frees the slot (raised) instead of sleeping."""
    fn = Flaky(RateLimited("busy", retry_after=120))
    with pytest.raises(RateLimited):
        run(fn, RetryPolicy(call_max_wait_s=10))
    assert fn.calls == 1


def test_short_retry_after_is_honoured_in_call() -> None:
    """A short Retry-After is slept through at least as long as asked."""
    fn = Flaky(RateLimited("busy", retry_after=3))
    slept, log = run(fn)
    assert slept and slept[0] >= 3
    assert fn.calls == 2 and len(log) == 2


def test_countdowns_stay_far_below_the_visibility_timeout() -> None:
    """No Celery countdown may exceed 10 % of the broker's visibility timeout (reliability R4):
    the retry policy stays under it and the publisher refuses anything longer."""
    from celery import Celery

    from storage.publisher import MAX_COUNTDOWN_S, VISIBILITY_TIMEOUT_S, send_items

    assert MAX_COUNTDOWN_S <= 0.1 * VISIBILITY_TIMEOUT_S
    assert RetryPolicy().max_countdown_s <= MAX_COUNTDOWN_S
    app = Celery("never-connects", broker="redis://127.0.0.1:1/0", set_as_current=False)
    with pytest.raises(ValueError, match="visibility timeout"):
        send_items(app, [1], countdown=MAX_COUNTDOWN_S + 1)


class Budget:
    """An in-memory retry budget holding a fixed number of tokens."""

    def __init__(self, tokens: int) -> None:
        self.tokens, self.deposits = tokens, 0

    def deposit(self, provider: str, fingerprint: str) -> None:
        assert (provider, fingerprint) == CREDENTIAL
        self.deposits += 1

    def try_withdraw(self, provider: str, fingerprint: str) -> bool:
        assert (provider, fingerprint) == CREDENTIAL
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def test_an_empty_retry_budget_stops_in_call_retries() -> None:
    """With no tokens left, a transient failure is raised after the first call."""
    fn = Flaky(ProviderUnavailable("down"), ProviderUnavailable("down"))
    budget = Budget(tokens=0)
    with pytest.raises(ProviderUnavailable):
        call_with_retries(
            fn,
            policy=RetryPolicy(),
            rng=random.Random(0),
            attempts_log=[],
            deadline_s=60,
            sleep=lambda _s: None,
            budget=budget,
            credential=CREDENTIAL,
        )
    assert (fn.calls, budget.deposits) == (1, 1)


def test_each_retry_spends_one_token() -> None:
    """Two retries spend two tokens; every call deposits once."""
    fn = Flaky(ProviderUnavailable("down"), ProviderUnavailable("down"))
    budget = Budget(tokens=5)
    assert (
        call_with_retries(
            fn,
            policy=RetryPolicy(),
            rng=random.Random(0),
            attempts_log=[],
            deadline_s=60,
            sleep=lambda _s: None,
            budget=budget,
            credential=CREDENTIAL,
        )
        == "ok"
    )
    assert (fn.calls, budget.tokens, budget.deposits) == (3, 3, 1)


def test_an_earlier_calls_permit_is_not_counted_for_a_call_without_one() -> None:
    """A 429 on a call made without a permit counts under credential `none`, even when an
    earlier call on the same thread held a permit of that provider (the stale label made a
    CI run of the metrics test fail, depending on which test ran before it)."""
    labels = {"provider": "slng", "credential": "none"}
    before = REGISTRY.get_sample_value("speechbatch_provider_rate_limited_total", labels) or 0.0
    metrics.permit_granted("slng", "fedcba9876543210", 0.0)  # an earlier item's permit
    with pytest.raises(RateLimited):
        run(Flaky(RateLimited("busy", status_code=429, retry_after=120)))
    after = REGISTRY.get_sample_value("speechbatch_provider_rate_limited_total", labels)
    assert after == before + 1
