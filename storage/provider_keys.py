"""The Redis names of each provider credential's shared state, and a read-only view of them.

Workers keep one throttle and one circuit per credential in Redis (`workers.throttle`,
`workers.throttle_redis`, `workers.circuit`); the API shows them (`jobs.provider_states`). Both
sides name the keys here, so they cannot drift apart. A credential is `(limits name,
fingerprint)`: the limits name is a provider or `provider-kind` when a kind has limits of its
own (`jobs.catalog.limits_name`), the fingerprint 16 hex digits of the key's SHA-256.

    speechbatch:throttle:{NAME:FP}:slots   ZSET   holder token -> lease expiry (µs, Redis TIME)
    speechbatch:throttle:{NAME:FP}:tat     STRING GCRA theoretical arrival time (µs)
    speechbatch:throttle:{NAME:FP}:adapt   HASH   limit, rate after 429s (gone: configured)
    speechbatch:circuit:NAME:FP            HASH   open_until (wall-clock seconds; 0 closed)
    speechbatch:circuit:NAME:FP:probe      STRING held by the one worker probing a half-open one

The braces of the throttle's names are a Redis Cluster hash tag, so one script's keys share a
slot. `read_shared_states` never writes: expired slots are left for the workers' next script to
prune, and are not counted.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
_NAME = re.compile(r"^[a-z0-9_-]+$")


def credential_fingerprint(api_key: str | None) -> str:
    """16 hex digits of the key's SHA-256: tells credentials apart, useless to replay."""
    return hashlib.sha256((api_key or "").encode()).hexdigest()[:16]


def _checked(name: str, fingerprint: str) -> None:
    if not _NAME.match(name) or not _FINGERPRINT.match(fingerprint):
        raise ValueError("throttle names take a provider name and credential_fingerprint(key)")


def throttle_name(name: str, fingerprint: str) -> str:
    """The Redis name of one credential's throttle; refuses anything but a fingerprint."""
    _checked(name, fingerprint)
    return f"speechbatch:throttle:{{{name}:{fingerprint}}}"


@dataclass(frozen=True)
class ThrottleKeys:
    """The four keys of the throttle called `name` (see workers/throttle_redis.py)."""

    slots: str
    tat: str
    adapt: str
    wanted: str

    @classmethod
    def for_name(cls, name: str) -> ThrottleKeys:
        return cls(f"{name}:slots", f"{name}:tat", f"{name}:adapt", f"{name}:wanted")

    @classmethod
    def of(cls, name: str, fingerprint: str) -> ThrottleKeys:
        return cls.for_name(throttle_name(name, fingerprint))


def circuit_key(name: str, fingerprint: str) -> str:
    """The hash holding one credential's `open_until` (not checked, unlike the throttle's:
    a circuit never refused a credential name, and failing a call over a name is worse)."""
    return f"speechbatch:circuit:{name}:{fingerprint}"


def circuit_probe_key(name: str, fingerprint: str) -> str:
    return circuit_key(name, fingerprint) + ":probe"


def shared_redis(url: str, *, retries: int | None = None) -> redis.Redis[Any]:
    """A client whose calls fail within a second instead of hanging (celery#9705).

    `retries` replaces redis-py's default retries: a reader that must answer a page at once
    (`jobs.provider_states`) takes 0, so a silent Redis costs it one timeout, not several.
    """
    extra: dict[str, Any] = {} if retries is None else {"retry": Retry(NoBackoff(), retries)}
    return redis.Redis.from_url(
        url, socket_timeout=1.0, socket_connect_timeout=1.0, health_check_interval=15, **extra
    )


@dataclass(frozen=True)
class SharedState:
    """What Redis holds for one credential now. None: nothing stored (configured values)."""

    limit: int | None  # the adaptive concurrency limit, when 429s lowered it
    rate: float | None  # the adaptive rate (requests/s), when 429s lowered it
    in_flight: int  # slots held under a live lease, by every worker
    open_until: float  # the circuit's end (wall-clock seconds); 0 when closed
    probing: bool  # a worker holds the half-open circuit's probe


def read_shared_states(
    client: redis.Redis[Any], credentials: Sequence[tuple[str, str]]
) -> list[SharedState]:
    """One `SharedState` per `(name, fingerprint)`, in two pipelined round trips.

    Raises redis.RedisError when Redis does not answer; the caller says so per row.
    """
    seconds, micros = client.time()
    now_us = int(seconds) * 1_000_000 + int(micros)
    with client.pipeline(transaction=False) as pipe:
        for name, fingerprint in credentials:
            keys = ThrottleKeys.of(name, fingerprint)
            pipe.hmget(keys.adapt, ["limit", "rate"])
            pipe.zcount(keys.slots, f"({now_us}", "+inf")
            pipe.hget(circuit_key(name, fingerprint), "open_until")
            pipe.exists(circuit_probe_key(name, fingerprint))
        answers = pipe.execute()
    states = []
    for i in range(len(credentials)):
        (limit, rate), in_flight, open_until, probe = answers[4 * i : 4 * i + 4]
        states.append(
            SharedState(
                limit=int(float(limit)) if limit is not None else None,
                rate=float(rate) if rate is not None else None,
                in_flight=int(in_flight),
                open_until=float(open_until or 0),
                probing=bool(probe),
            )
        )
    return states
