"""The circuit breaker shared through a real Redis: opened by consecutive failures for every
worker, one half-open probe for the fleet, and no Redis traffic while a provider is healthy."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis

from workers.circuit import CircuitOpen, RedisCircuit

pytestmark = pytest.mark.integration


class Clock:
    """Wall and monotonic time that move only when told to."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Counting:
    """A Redis client that counts the commands sent through it."""

    def __init__(self, inner: redis.Redis[Any]) -> None:
        self.inner, self.commands = inner, 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name in {"hget", "hgetall", "set", "pipeline"}:
            self.commands += 1
        return attribute


def breakers(redis_url: str, count: int = 2, **kw: Any) -> tuple[list[RedisCircuit], Clock]:
    """`count` workers' breakers on one Redis and one clock."""
    clock = Clock()
    client = redis.Redis.from_url(redis_url)
    made = [
        RedisCircuit(client, clock=clock, monotonic=clock, refresh_s=1.0, **kw)
        for _ in range(count)
    ]
    return made, clock


def credential() -> tuple[str, str]:
    return ("vendor", uuid.uuid4().hex[:16])


def test_consecutive_failures_open_the_circuit_for_every_worker(redis_url: str) -> None:
    """Five failures seen by one worker open the circuit: the other worker's next check (once
    its 1 s view is stale) refuses too, until open_s has passed."""
    (one, two), clock = breakers(redis_url, failures=5, open_s=30)
    cred = credential()
    two.check(cred)  # closed, and now cached by `two`
    for _ in range(4):
        one.failed(cred)
    one.check(cred)  # four is not enough
    one.failed(cred)
    with pytest.raises(CircuitOpen) as caught:
        one.check(cred)
    assert caught.value.retry_in_s == pytest.approx(30)
    clock.now += 1.5  # past two's refresh
    with pytest.raises(CircuitOpen):
        two.check(cred)


def test_a_success_between_failures_keeps_it_closed(redis_url: str) -> None:
    """Failures must be consecutive: a success resets the count."""
    (one,), _ = breakers(redis_url, count=1, failures=3)
    cred = credential()
    for _ in range(2):
        one.failed(cred)
    one.succeeded(cred)
    for _ in range(2):
        one.failed(cred)
    one.check(cred)


def test_runs_are_counted_per_process_so_scattered_failures_never_add_up(
    redis_url: str,
) -> None:
    """Four failures in each of two processes (a flaky provider, not a dead one) leave the
    circuit closed: only one process's own run of five opens it."""
    (one, two), _ = breakers(redis_url, failures=5)
    cred = credential()
    for _ in range(4):
        one.failed(cred)
        two.failed(cred)
    one.check(cred)
    two.check(cred)
    two.failed(cred)  # two's fifth in a row
    with pytest.raises(CircuitOpen):
        two.check(cred)


def test_half_open_lets_exactly_one_probe_through_and_its_success_closes(
    redis_url: str,
) -> None:
    """After open_s, of two workers checking, one gets the probe and the other is still
    refused; the probe's success closes the circuit for both."""
    (one, two), clock = breakers(redis_url, failures=1, open_s=10)
    cred = credential()
    one.failed(cred)
    clock.now += 11
    one.check(cred)  # the probe
    with pytest.raises(CircuitOpen):
        two.check(cred)
    one.succeeded(cred)
    clock.now += 1.5
    two.check(cred)
    one.check(cred)


def test_a_failed_probe_opens_it_again(redis_url: str) -> None:
    """The probe's failure opens the circuit for another open_s at once (one failure, not N)."""
    (one,), clock = breakers(redis_url, count=1, failures=5, open_s=10)
    cred = credential()
    for _ in range(5):
        one.failed(cred)
    clock.now += 11
    one.check(cred)  # the probe
    one.failed(cred)
    with pytest.raises(CircuitOpen) as caught:
        one.check(cred)
    assert caught.value.retry_in_s == pytest.approx(10)


def test_quota_opens_it_at_once_for_longer(redis_url: str) -> None:
    """A quota refusal opens the circuit on the first failure, for quota_open_s."""
    (one,), _ = breakers(redis_url, count=1, failures=5, quota_open_s=300)
    cred = credential()
    one.failed(cred, quota=True)
    with pytest.raises(CircuitOpen) as caught:
        one.check(cred)
    assert caught.value.retry_in_s == pytest.approx(300)


def test_a_healthy_provider_costs_one_read_a_second_and_no_writes(redis_url: str) -> None:
    """1,000 successful calls within one second cost one Redis read, and no write."""
    client = Counting(redis.Redis.from_url(redis_url))
    clock = Clock()
    breaker = RedisCircuit(client, clock=clock, monotonic=clock)  # type: ignore[arg-type]
    cred = credential()
    for _ in range(1000):
        breaker.check(cred)
        breaker.succeeded(cred)
    assert client.commands == 1
