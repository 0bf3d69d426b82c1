"""A circuit breaker per provider credential, shared by every worker through Redis (issue 11).

Closed, a credential's calls go ahead. `failures` (10) transient failures in a row seen by
one worker process (5xx, timeouts, an unreachable host: not 429s, which the throttle paces,
nor refusals of the input) open it for `open_s` for the whole fleet: every worker's calls
then fail at once with `CircuitOpen`, so nobody hammers a provider that is down, and items
with a fallback move to it. When `open_s` has passed the circuit is half-open: one call,
whichever worker wins a Redis SET NX, is the probe; everyone else still sees it open. The
probe's success closes the circuit, its failure opens it for another `open_s`. A quota
refusal opens it at once (for `quota_open_s`): the account will not recover in seconds.

The run of failures is counted in each process, where the successes that break it are seen
for free: counted in Redis, every success would have to be written there (or a healthy
provider's scattered failures, never reset by other processes' successes, would add up to
an open circuit). A provider that is down fails every process's calls, so each reaches the
run on its own within a second. Each process keeps the shared state it last read for
`refresh_s`, so a healthy provider costs one Redis read a second per credential and no
write. If Redis cannot be reached the breaker stays out of the way (fail open): the
throttle and retry budget already fail closed.
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

from storage.provider_keys import circuit_key, circuit_probe_key
from workers import metrics

log = logging.getLogger(__name__)

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
    open_until: float  # wall clock, shared by every worker; 0: closed


class RedisCircuit:
    """The shared breaker; `clock` is wall time (workers on several hosts compare it)."""

    def __init__(
        self,
        client: redis.Redis[Any],
        *,
        failures: int = 10,
        open_s: float = 30.0,
        quota_open_s: float = 300.0,
        refresh_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis, self.failures, self.open_s = client, failures, open_s
        self.quota_open_s, self.refresh_s = quota_open_s, refresh_s
        self.clock, self.monotonic = clock, monotonic
        self._views: dict[tuple[str, str], _View] = {}
        self._runs: dict[tuple[str, str], int] = {}  # this process's failures in a row
        self._probing: set[tuple[str, str]] = set()  # credentials whose probe we hold
        self._lock = threading.Lock()

    def check(self, credential: tuple[str, str]) -> None:
        view = self._view(credential)
        if not view.open_until:
            return
        now = self.clock()
        if now < view.open_until:
            raise CircuitOpen(credential[0], view.open_until - now)
        # Half-open: one probe for the whole fleet, for as long as a call may take.
        try:
            won = self.redis.set(
                _probe(credential), secrets.token_hex(4), nx=True, ex=int(self.open_s) + 1
            )
        except redis.RedisError:
            return
        if not won:
            raise CircuitOpen(credential[0], self.open_s)
        with self._lock:
            self._probing.add(credential)
        metrics.circuit_state(*credential, 2)

    def succeeded(self, credential: tuple[str, str]) -> None:
        with self._lock:
            self._runs[credential] = 0
            probed = credential in self._probing
            self._probing.discard(credential)
        if not probed and not self._view(credential).open_until:
            return  # the usual case: no Redis call
        try:
            with self.redis.pipeline() as pipe:
                pipe.hset(_key(credential), "open_until", 0)
                pipe.expire(_key(credential), _TTL_S)
                pipe.delete(_probe(credential))
                pipe.execute()
        except redis.RedisError:
            log.warning("could not close the circuit of %s", credential[0], exc_info=True)
            return
        log.info("circuit of %s closed", credential[0])
        self._remember(credential, 0.0)

    def failed(self, credential: tuple[str, str], *, quota: bool = False) -> None:
        with self._lock:
            run = self._runs[credential] = self._runs.get(credential, 0) + 1
            probed = credential in self._probing
            self._probing.discard(credential)
        if not (quota or probed or run >= self.failures):
            return
        open_s = self.quota_open_s if quota else self.open_s
        until = self.clock() + open_s
        try:
            with self.redis.pipeline() as pipe:
                pipe.hset(_key(credential), "open_until", until)
                pipe.expire(_key(credential), _TTL_S)
                pipe.delete(_probe(credential))
                pipe.execute()
        except redis.RedisError:
            log.warning("could not open the circuit of %s", credential[0], exc_info=True)
            return
        with self._lock:
            self._runs[credential] = 0
        self._remember(credential, until)
        log.warning(
            "circuit of %s open for %.0f s (failing for every worker)", credential[0], open_s
        )

    def _view(self, credential: tuple[str, str]) -> _View:
        with self._lock:
            view = self._views.get(credential)
        if view is not None and self.monotonic() - view.read_at < self.refresh_s:
            return view
        try:
            raw = self.redis.hget(_key(credential), "open_until")
        except redis.RedisError:
            return _View(self.monotonic(), 0.0)  # fail open
        return self._remember(credential, float(raw or 0))

    def _remember(self, credential: tuple[str, str], until: float) -> _View:
        view = _View(self.monotonic(), until)
        metrics.circuit_state(*credential, 1 if until else 0)
        with self._lock:
            self._views[credential] = view
        return view


def _key(credential: tuple[str, str]) -> str:
    return circuit_key(*credential)


def _probe(credential: tuple[str, str]) -> str:
    return circuit_probe_key(*credential)
