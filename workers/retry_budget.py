"""A retry budget per provider credential, shared by every worker through Redis.

Token bucket (the AWS SDK "retry quota" / Google SRE retry-ratio idea): every first call
deposits `ratio` tokens, every in-call retry spends one, and the bucket holds at most
`capacity`. While a provider fails, first calls keep coming but retries soon find the bucket
empty, so the fleet's extra traffic stays near `ratio` of its calls (10 %) instead of
multiplying it. An item that cannot retry in-call goes back to the queue with item-level
backoff, which paces itself. If Redis cannot be reached the budget says no (fail closed).

Deposits are gathered in the process and sent a whole token at a time, so a healthy
provider costs one Redis round trip per 1/ratio calls instead of one per call; a killed
process loses less than one token.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

import redis

log = logging.getLogger(__name__)

# KEYS[1] bucket; ARGV[1] capacity, ARGV[2] delta (+ratio deposit, -1 withdrawal).
_MOVE = """
local capacity = tonumber(ARGV[1])
local delta = tonumber(ARGV[2])
local tokens = tonumber(redis.call('GET', KEYS[1])) or capacity
if delta < 0 and tokens < -delta then
  return 0
end
tokens = math.min(capacity, tokens + delta)
redis.call('SET', KEYS[1], tostring(tokens), 'EX', 3600)
return 1
"""


class RetryBudget(Protocol):
    """May this call be retried in-call? One object per process, for every credential."""

    def deposit(self, provider: str, fingerprint: str) -> None:
        """A first call was made with this credential."""

    def try_withdraw(self, provider: str, fingerprint: str) -> bool:
        """Take one retry from the credential's budget; False when it is spent."""


class UnlimitedRetryBudget:
    """Every retry allowed: local mode, whose engines are this machine's own CPU."""

    def deposit(self, provider: str, fingerprint: str) -> None:
        """Nothing to count."""

    def try_withdraw(self, provider: str, fingerprint: str) -> bool:
        return True


class RedisRetryBudget:
    """The shared bucket of each provider credential (a fingerprint, never the key)."""

    def __init__(
        self, client: redis.Redis[Any], *, ratio: float = 0.1, capacity: float = 10.0
    ) -> None:
        self.ratio, self.capacity = ratio, capacity
        self._move = client.register_script(_MOVE)
        self._client = client
        self._lock = threading.Lock()
        self._batch = max(1, round(1 / ratio))  # deposits per round trip (one whole token)
        self._pending: dict[str, int] = {}  # deposits not sent yet, per bucket

    @staticmethod
    def key(provider: str, fingerprint: str) -> str:
        return f"speechbatch:retry:{{{provider}:{fingerprint}}}"

    def _apply(self, key: str, delta: float) -> bool:
        try:
            return bool(self._move(keys=[key], args=[self.capacity, delta]))
        except redis.RedisError:
            log.warning("retry budget unavailable (Redis); not retrying in-call", exc_info=True)
            return False

    def deposit(self, provider: str, fingerprint: str) -> None:
        key = self.key(provider, fingerprint)
        with self._lock:
            pending = self._pending.get(key, 0) + 1
            self._pending[key] = 0 if pending >= self._batch else pending
        if pending >= self._batch:
            self._apply(key, self._batch * self.ratio)

    def try_withdraw(self, provider: str, fingerprint: str) -> bool:
        return self._apply(self.key(provider, fingerprint), -1.0)

    def tokens(self, provider: str, fingerprint: str) -> float:
        value = self._client.get(self.key(provider, fingerprint))
        return float(value) if value is not None else self.capacity
