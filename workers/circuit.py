"""A circuit breaker per provider credential, shared by every worker through Redis (issue 11).

Closed, a credential's calls go ahead. `failures` transient failures in a row (5xx, timeouts,
an unreachable host: not 429s, which the throttle paces, nor refusals of the input) open it
for `open_s`: every worker's calls then fail at once with `CircuitOpen`, so the fleet stops
hammering a provider that is down, and items with a fallback move to it. When `open_s` has
passed the circuit is half-open: one call, whichever worker wins a Redis SET NX, is the probe;
everyone else still sees it open. The probe's success closes the circuit, its failure opens it
for another `open_s`. A quota refusal opens it at once (for `quota_open_s`): the account will
not recover in seconds.

Each process keeps the last state it read for `refresh_s`, so a healthy provider costs no
Redis call per item: the state is read once a second per credential, and written only on a
failure, or on the first success after one. If Redis cannot be reached the breaker stays out
of the way (fail open): the throttle and retry budget already fail closed.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis

log = logging.getLogger(__name__)

# KEYS[1] the state hash, KEYS[2] the probe; ARGV: now, failures, open_s, ttl_s, force.
# Returns the time the circuit stays open until (0: still closed).
_FAILED = """
local fails = redis.call('HINCRBY', KEYS[1], 'fails', 1)
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
local probing = redis.call('DEL', KEYS[2]) == 1
if ARGV[5] == '1' or probing or fails >= tonumber(ARGV[2]) then
  open_until = tonumber(ARGV[1]) + tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], 'open_until', tostring(open_until))
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return tostring(open_until)
"""
_TTL_S = 3600


class CircuitOpen(Exception):
    """The provider credential's circuit is open: no call is made. Deliberately not a
    ProviderError, so in-call retries do not spin on it."""

    def __init__(self, provider: str, retry_in_s: float) -> None:
        super().__init__(
            f"{provider} is failing for every worker (its circuit is open); the next probe is "
            f"in {retry_in_s:.0f} s."
        )
        self.provider, self.retry_in_s = provider, retry_in_s


class Circuit(Protocol):
    """One object per process, for every credential `(limits name, fingerprint)`."""

    def check(self, credential: tuple[str, str]) -> None:
        """Raise CircuitOpen unless a call may go ahead (closed, or this is the probe)."""

    def succeeded(self, credential: tuple[str, str]) -> None: ...

    def failed(self, credential: tuple[str, str], *, quota: bool = False) -> None: ...


class NoCircuit:
    """Never open: local mode and tests without Redis."""

    def check(self, credential: tuple[str, str]) -> None:
        """Always closed."""

    def succeeded(self, credential: tuple[str, str]) -> None:
        """Nothing to record."""

    def failed(self, credential: tuple[str, str], *, quota: bool = False) -> None:
        """Nothing to record."""


@dataclass
class _View:
    read_at: float  # monotonic
    fails: int
    open_until: float  # wall clock, shared by every worker; 0: closed


class RedisCircuit:
    """The shared breaker; `clock` is wall time (workers on several hosts compare it)."""

    def __init__(
        self,
        client: redis.Redis[Any],
        *,
        failures: int = 5,
        open_s: float = 30.0,
        quota_open_s: float = 300.0,
        refresh_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis, self.failures, self.open_s = client, failures, open_s
        self.quota_open_s, self.refresh_s = quota_open_s, refresh_s
        self.clock, self.monotonic = clock, monotonic
        self._failed: Any = client.register_script(_FAILED)
        self._views: dict[tuple[str, str], _View] = {}
        self._lock = threading.Lock()

    def check(self, credential: tuple[str, str]) -> None:
        view = self._view(credential)
        if not view.open_until:
            return
        now = self.clock()
        if now < view.open_until:
            raise CircuitOpen(credential[0], view.open_until - now)
        # Half-open: one probe for the whole fleet, for as long as a call may take.
        token = secrets.token_hex(4)
        try:
            won = self.redis.set(_probe(credential), token, nx=True, ex=int(self.open_s) + 1)
        except redis.RedisError:
            return
        if not won:
            raise CircuitOpen(credential[0], self.open_s)

    def succeeded(self, credential: tuple[str, str]) -> None:
        view = self._view(credential)
        if not view.fails and not view.open_until:
            return  # the usual case: nothing to reset, no Redis call
        try:
            with self.redis.pipeline() as pipe:
                pipe.hset(_key(credential), mapping={"fails": 0, "open_until": 0})
                pipe.expire(_key(credential), _TTL_S)
                pipe.delete(_probe(credential))
                pipe.execute()
        except redis.RedisError:
            log.warning("could not close the circuit of %s", credential[0], exc_info=True)
            return
        self._remember(credential, 0, 0.0)

    def failed(self, credential: tuple[str, str], *, quota: bool = False) -> None:
        open_s = self.quota_open_s if quota else self.open_s
        args = [self.clock(), self.failures, open_s, _TTL_S, "1" if quota else "0"]
        try:
            until = float(self._failed(keys=[_key(credential), _probe(credential)], args=args))
        except redis.RedisError:
            log.warning("could not count a failure of %s", credential[0], exc_info=True)
            return
        if until:
            log.warning(
                "circuit of %s open for %.0f s (failing for every worker)", credential[0], open_s
            )
        with self._lock:
            view = self._views.get(credential)
            fails = (view.fails if view else 0) + 1
        self._remember(credential, fails, until)

    def _view(self, credential: tuple[str, str]) -> _View:
        with self._lock:
            view = self._views.get(credential)
        if view is not None and self.monotonic() - view.read_at < self.refresh_s:
            return view
        try:
            raw = self.redis.hgetall(_key(credential))
        except redis.RedisError:
            return _View(self.monotonic(), 0, 0.0)  # fail open
        fails = int(raw.get(b"fails", 0) or 0)
        until = float(raw.get(b"open_until", 0) or 0)
        return self._remember(credential, fails, until)

    def _remember(self, credential: tuple[str, str], fails: int, until: float) -> _View:
        view = _View(self.monotonic(), fails, until)
        with self._lock:
            self._views[credential] = view
        return view


def _key(credential: tuple[str, str]) -> str:
    return f"speechbatch:circuit:{credential[0]}:{credential[1]}"


def _probe(credential: tuple[str, str]) -> str:
    return _key(credential) + ":probe"
