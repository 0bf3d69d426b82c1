"""The shared retry budget keeps a fleet's retries near 10 % of its calls (reliability R5)."""

from __future__ import annotations

import random
import threading
import uuid

import pytest
import redis

from workers.providers.errors import ProviderUnavailable
from workers.retry import RetryPolicy, call_with_retries
from workers.retry_budget import RedisRetryBudget

pytestmark = pytest.mark.integration


def test_a_failing_provider_gets_few_retries_fleet_wide(redis_url: str) -> None:
    """8 threads x 100 calls to an always-failing provider retry at most 10 % + capacity."""
    client = redis.Redis.from_url(redis_url)
    fingerprint = uuid.uuid4().hex[:16]
    calls = [0]
    lock = threading.Lock()

    def always_down() -> None:
        with lock:
            calls[0] += 1
        raise ProviderUnavailable("503")

    def worker() -> None:
        budget = RedisRetryBudget(client)
        for _ in range(100):
            with pytest.raises(ProviderUnavailable):
                call_with_retries(
                    always_down,
                    policy=RetryPolicy(call_attempts=3),
                    rng=random.Random(0),
                    attempts_log=[],
                    deadline_s=60,
                    sleep=lambda _s: None,
                    budget=budget,
                    credential=("slng", fingerprint),
                )

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first_calls = 800
    retries = calls[0] - first_calls
    assert 0 < retries <= 0.1 * first_calls + 10  # ratio plus the bucket's starting capacity
    client.delete(RedisRetryBudget.key("slng", fingerprint))
    client.close()


def test_an_unreachable_budget_refuses_retries(redis_url: str) -> None:
    """If Redis cannot be reached the budget fails closed (no in-call retry)."""
    from tests.services import free_port

    dead = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    assert RedisRetryBudget(dead).try_withdraw("slng", "0" * 16) is False


def test_deposits_reach_redis_a_whole_token_at_a_time(redis_url: str) -> None:
    """25 first calls (ratio 0.1) into an empty bucket add exactly 2 tokens in Redis: deposits
    are sent per whole token, and the remaining half token waits in the process."""
    client = redis.Redis.from_url(redis_url)
    budget, credential = RedisRetryBudget(client), ("slng", uuid.uuid4().hex[:16])
    while budget.try_withdraw(*credential):
        pass
    assert budget.tokens(*credential) < 1.0
    before = budget.tokens(*credential)
    for _ in range(25):
        budget.deposit(*credential)
    assert budget.tokens(*credential) - before == pytest.approx(2.0)
    client.delete(RedisRetryBudget.key(*credential))
    client.close()
