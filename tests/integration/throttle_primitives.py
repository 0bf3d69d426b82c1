"""Thin drivers of the throttle's Lua scripts, for testing each check on its own.

Production code only ever goes through `workers.throttle.ProviderThrottle`; these two let
the tests hold a slot without releasing it (a crashed worker), renew it, or ask for a rate
token alone.
"""

from __future__ import annotations

from typing import Any

import redis

from workers.throttle import Adaptation, CallOutcome
from workers.throttle_redis import ADMITTED, Keys, Scripts


class ConcurrencySlots:
    """At most `limit` holders at once (lowered while 429s say so); a holder's slot lapses
    after `lease_s` unless renewed, so a crashed holder frees it by itself."""

    def __init__(self, client: redis.Redis[Any], name: str, limit: int, lease_s: float) -> None:
        if limit < 1 or lease_s <= 0:
            raise ValueError("limit must be >= 1 and lease_s > 0")
        self._scripts, self._keys = Scripts(client), Keys.for_name(name)
        self.limit, self.lease_s = limit, lease_s

    def try_acquire(self, token: str) -> bool:
        grant = self._scripts.acquire(
            self._keys, token, limit=self.limit, rate=0, burst=1, lease_s=self.lease_s
        )
        return grant.state == ADMITTED

    def release(self, token: str) -> None:
        self._scripts.release(
            self._keys,
            token,
            CallOutcome.OTHER,
            0,
            limit=self.limit,
            rate=0,
            adaptation=Adaptation(),
        )

    def renew(self, token: str) -> bool:
        """Extend the lease; False when it had lapsed and the slot may be someone else's."""
        return self._scripts.renew(self._keys, token, self.lease_s)

    def in_use(self) -> int:
        return self._scripts.in_use(self._keys)


class RateLimiter:
    """GCRA: at most `rate_per_s` admissions per second on Redis' clock, `burst` at once."""

    def __init__(
        self, client: redis.Redis[Any], name: str, rate_per_s: float, burst: int = 1
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self._scripts, self._keys = Scripts(client), Keys.for_name(name)
        self.rate, self.burst = rate_per_s, burst

    def try_acquire(self) -> float:
        """0.0 when admitted, else the seconds until the next admission is possible."""
        grant = self._scripts.acquire(
            self._keys, "", limit=1, rate=self.rate, burst=self.burst, lease_s=1
        )
        return 0.0 if grant.state == ADMITTED else grant.value / 1e6
