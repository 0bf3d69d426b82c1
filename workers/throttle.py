"""One throttle per provider credential, shared by every worker through Redis.

A call to a provider needs a `Permit`: a concurrency slot (a leased entry in a Redis ZSET, so
a killed worker's slot comes back by itself after `lease_s`) and, when the provider has a
request rate, a GCRA token. Both are checked and taken by one Lua script in one round trip
(`workers.throttle_redis`). The shared limits adapt per window of calls, as TCP does (AIMD):
a window in which more than a fifth of the calls got 429 halves them (never below a quarter
of the configured values), a window with fewer adds one slot, so occasional 429s that have
nothing to do with our own concurrency cannot pin the limit down. Every worker sees the same
values because they live in Redis.

`ProviderThrottle.acquire` waits at most `max_wait_s` and then returns None: the caller
re-queues the item instead of holding a worker thread, so a saturated provider never starves
items of other providers. When Redis is down it raises `ThrottleUnavailable`; it never admits
silently. Time, sleeping and jitter are parameters so tests control them.

    throttle = ProviderThrottle(client, provider_limits(settings.provider_limits), lease_s=90)
    with throttle.permit("slng", credential_fingerprint(key), max_wait_s=5):  # or ThrottleBusy
        response = call()
"""

from __future__ import annotations

import itertools
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

from jobs.catalog_limits import ProviderLimits
from storage.provider_keys import credential_fingerprint, shared_redis, throttle_name
from workers import metrics
from workers.providers.exchange_end import releasable
from workers.throttle_local import LocalGate, ParkTimer
from workers.throttle_permit import Permit
from workers.throttle_redis import (
    ADMITTED,
    OVER_RATE,
    Adaptation,
    Keys,
    Scripts,
    ThrottleUnavailable,
)
from workers.throttle_seam import (
    CallOutcome,
    Throttle,
    ThrottleBusy,
    UnlimitedThrottle,
    outcome_for,
)

__all__ = [
    "Adaptation",
    "CallOutcome",
    "Permit",
    "ProviderThrottle",
    "Throttle",
    "ThrottleBusy",
    "ThrottleUnavailable",
    "UnlimitedThrottle",
    "credential_fingerprint",
    "outcome_for",
    "redis_for_throttle",
    "throttle_name",
]


def redis_for_throttle(url: str) -> redis.Redis[Any]:
    """A client whose calls fail within a second instead of hanging a worker (celery#9705)."""
    return shared_redis(url)


class ProviderThrottle:
    """Permits per (provider, credential) under `limits`, shared by every worker process."""

    def __init__(
        self,
        client: redis.Redis[Any],
        limits: dict[str, ProviderLimits],
        *,
        lease_s: float,
        burst: int = 1,
        poll_s: float = 0.02,
        rate_jitter_s: float = 0.002,
        pass_s: float = 5.0,
        max_passes: int = 16,
        park_s: float = 0.05,
        wanted_s: float = 1.0,
        adaptation: Adaptation | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._scripts = Scripts(client)
        self.limits, self.lease_s, self.burst = dict(limits), lease_s, burst
        # Waiting for a slot polls (no release signal to wait on); waiting for a rate token
        # sleeps exactly until it is due plus a little jitter, so waiters don't all wake at once.
        self.poll_s, self.rate_jitter_s = poll_s, rate_jitter_s
        # A slot is passed on in-process for at most `max_passes` calls and `pass_s` after
        # Redis granted it, then goes back to Redis: other processes get their turn, a cut
        # made elsewhere reaches this process, and the lease (longer than a call by more
        # than `pass_s`) still covers the last call it is passed to.
        self.pass_s, self.max_passes = pass_s, max_passes
        # A passable slot nobody waits for is parked for the next caller of this process
        # (its threads come back within milliseconds when the provider answers fast: two
        # Redis calls per item saved, bench/overhead.py); one still parked when the timer
        # fires, `park_s` to 2 x `park_s` after it was parked, goes back to Redis, so other
        # processes wait at most that much longer for it. 0: never park. A slot granted
        # while another process was refused one within `wanted_s` is never parked: with
        # several worker processes on one limit it would sit idle while they poll for it.
        self.park_s, self.wanted_s = park_s, wanted_s
        self.adaptation = adaptation or Adaptation()
        self._sleep, self._clock = sleep, clock
        self._rng = rng or random.Random()
        # Holder tokens: a random prefix, the pid (a forked child shares the prefix and the
        # counter) and a counter; urandom per permit would cost ~15 µs, a tenth of the check.
        self._token_prefix = secrets.token_hex(6)
        self._tokens = itertools.count()
        # An in-process gate per credential, as wide as its shared limit (workers.throttle_local).
        self._gates: dict[tuple[str, str], LocalGate[Permit]] = {}
        self._gates_lock = threading.Lock()
        self._park_timer = ParkTimer(park_s, self._all_gates, lambda p: p.release())

    def acquire(
        self, provider: str, credential_fingerprint: str, *, max_wait_s: float
    ) -> Permit | None:
        """A permit within `max_wait_s`, or None so the caller can re-queue the item."""
        return self._acquire(provider, credential_fingerprint, max_wait_s, self._pause)

    def _pause(self, seconds: float) -> Permit | None:
        self._sleep(seconds)
        return None  # nothing handed over: ask Redis again

    def _acquire(
        self,
        provider: str,
        credential_fingerprint: str,
        max_wait_s: float,
        pause: Callable[[float], Permit | None],
    ) -> Permit | None:
        """`acquire`, waiting between Redis tries in `pause`, which may hand over a permit
        of this process instead (`LocalGate.seek`)."""
        limits = self._limits(provider)
        keys = Keys.for_name(throttle_name(provider, credential_fingerprint))
        process = f"{self._token_prefix}-{os.getpid()}"
        token = f"{process}-{next(self._tokens)}"
        deadline = self._clock() + max_wait_s
        while True:
            state, value, adapted, contended = self._scripts.acquire(
                keys,
                token,
                limit=limits.max_concurrency,
                rate=limits.max_rps or 0,
                burst=self.burst,
                lease_s=self.lease_s,
                wanted_s=self.wanted_s,
                process=process,
            )
            if state == ADMITTED:
                return Permit(
                    self,
                    provider,
                    keys,
                    token,
                    value,
                    adapted=adapted,
                    contended=contended,
                    granted_at=self._clock(),
                )
            left = deadline - self._clock()
            if left <= 0:
                return None
            if state == OVER_RATE:
                wait = value / 1e6 + self._rng.uniform(0, self.rate_jitter_s)
            else:
                wait = self.poll_s * self._rng.uniform(0.5, 1.5)
            handed = pause(min(wait, left))
            if handed is not None:
                return handed

    @contextmanager
    def permit(
        self, provider: str, credential_fingerprint: str, *, max_wait_s: float
    ) -> Iterator[None]:
        """`acquire` as a block: ThrottleBusy when no slot frees in time; on exit the permit
        is released with how the call went (before any backoff sleep of the caller), or
        earlier, as a success, when the call's one exchange ended with a whole 2xx answer
        (`workers.providers.exchange_end`).

        This process's own callers first pass a local gate of the same width, so at most
        `max_concurrency` of its threads ask Redis at once; the shared slots still decide.
        A successful call's slot goes straight to the next thread of this process waiting
        for one (inside the gate between Redis polls first, then at the gate), when
        `_passable` allows, without a release and an acquire in Redis.
        """
        gate = self._gate(provider, credential_fingerprint)
        started = self._clock()
        entered, permit = gate.enter(max_wait_s)
        if not entered:
            raise ThrottleBusy(provider)
        if permit is None:
            try:
                left = max_wait_s - (self._clock() - started)
                permit = self._acquire(
                    provider, credential_fingerprint, max(left, 0.0), pause=gate.seek
                )
            except BaseException:
                gate.leave()
                raise
            if permit is None:
                gate.leave()
                metrics.throttle_busy(provider, credential_fingerprint)
                raise ThrottleBusy(provider)
        metrics.permit_granted(provider, credential_fingerprint, self._clock() - started)
        finished = False

        def finish(outcome: CallOutcome) -> None:  # once: at `exchange_ended()` or at exit
            nonlocal finished
            if finished:
                return
            finished = True
            park_at = time.monotonic() if self.park_s > 0 and not permit.contended else None
            if self._passable(permit, outcome) and gate.pass_on(permit, park_at=park_at):
                if park_at is not None:
                    self._park_timer.arm()
            else:
                try:
                    permit.release(outcome)
                finally:
                    gate.leave()

        error: BaseException | None = None
        try:
            with releasable(lambda: finish(CallOutcome.SUCCESS)):
                yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            finish(outcome_for(error))

    def close(self) -> None:
        """Send every parked slot back to Redis now (a worker's shutdown)."""
        self._park_timer.close()

    def _passable(self, permit: Permit, outcome: CallOutcome) -> bool:
        """Whether the slot may go to a waiting thread of this process as it is: after a
        success only (a 429 must reach the adaptive limit), while the adaptive limits had no
        429s to weigh, within `max_passes` and `pass_s`, and for a provider without a
        request rate (each call needs a rate token from Redis)."""
        if (
            outcome is not CallOutcome.SUCCESS
            or permit.adapted
            or self.limits[permit.provider].max_rps
        ):
            return False
        if permit.passes >= self.max_passes or self._clock() - permit.granted_at >= self.pass_s:
            return False
        permit.passes += 1
        return True

    def _all_gates(self) -> list[LocalGate[Permit]]:
        with self._gates_lock:
            return list(self._gates.values())

    def _gate(self, provider: str, credential_fingerprint: str) -> LocalGate[Permit]:
        key = (provider, credential_fingerprint)
        gate = self._gates.get(key)
        if gate is None:
            with self._gates_lock:
                width = self._limits(provider).max_concurrency
                gate = self._gates.setdefault(key, LocalGate(width))
        return gate

    def effective_limits(self, provider: str, credential_fingerprint: str) -> ProviderLimits:
        """The limits in force now for that credential (configured, or lowered by 429s)."""
        limits = self._limits(provider)
        keys = Keys.for_name(throttle_name(provider, credential_fingerprint))
        limit, rate = self._scripts.effective(
            keys, limit=limits.max_concurrency, rate=limits.max_rps or 0
        )
        return ProviderLimits(limit, rate if limits.max_rps else None)

    def in_use(self, provider: str, credential_fingerprint: str) -> int:
        return self._scripts.in_use(Keys.for_name(throttle_name(provider, credential_fingerprint)))

    def _limits(self, provider: str) -> ProviderLimits:
        try:
            return self.limits[provider]
        except KeyError:
            raise KeyError(f"no throttle limits configured for provider {provider!r}") from None

    def report(self, permit: Permit, outcome: CallOutcome) -> None:
        """Free the permit's slot and feed `outcome` to the shared adaptive limits."""
        limits = self._limits(permit.provider)
        self._scripts.release(
            permit.keys,
            permit.token,
            outcome.value,
            permit.acquired_us,
            limit=limits.max_concurrency,
            rate=limits.max_rps or 0,
            adaptation=self.adaptation,
        )
