"""How an item's outside calls are made: provider calls and object-store calls.

Each provider call runs under one throttle permit of the provider's shared limits, behind
its circuit, with in-call retries (`workers.retry`); an object-store call rides out a short
storage outage, so a provider result already paid for is not thrown away. The TTS and STT
paths (`workers.tts`, `workers.stt`) make every call of theirs through these two.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from jobs.catalog import limits_name
from jobs.records import AttemptRecord, ClaimedItem
from storage.objects import StorageUnavailable
from workers import metrics
from workers.interrupt import provider_call
from workers.providers.errors import ProviderTimeout, ProviderUnavailable, QuotaExceeded
from workers.retry import call_with_retries
from workers.runtime import Runtime

T = TypeVar("T")

__all__ = ["stored", "with_retries"]


def stored(rt: Runtime, operation: Callable[[], T]) -> T:
    """Run an object-store call, riding out a short storage outage (up to half the lease) so
    a provider result already paid for is not thrown away; then StorageUnavailable."""
    delay, deadline = 0.25, time.monotonic() + rt.config.in_call_deadline_s
    while True:
        try:
            return operation()
        except StorageUnavailable:
            if time.monotonic() + delay > deadline:
                raise
            rt.sleep(delay)
            delay = min(delay * 2, 4.0)


def with_retries(
    rt: Runtime, item: ClaimedItem, attempts: list[AttemptRecord], call: Callable[[], T]
) -> T:
    """`call` with in-call retries, each HTTP attempt under one permit of the provider's
    shared limits, released (with how it went, for the adaptive limit) before any backoff."""
    credential = (limits_name(item.provider, item.kind), rt.providers.fingerprint(item.provider))
    wait_s = rt.config.throttle_wait_s

    def limited() -> T:
        rt.circuit.check(credential)  # CircuitOpen: the provider is down for every worker
        with provider_call(), rt.throttle.permit(*credential, max_wait_s=wait_s):
            try:
                with metrics.timed_call(item.provider, item.model, item.options.get("transport")):
                    result = call()
            except QuotaExceeded:
                rt.circuit.failed(credential, quota=True)
                raise
            except (ProviderUnavailable, ProviderTimeout) as error:
                if error.status_code is None or error.status_code >= 500:
                    rt.circuit.failed(credential)  # down, not "slow down" or bad output
                raise
        rt.circuit.succeeded(credential)
        return result

    return call_with_retries(
        limited,
        policy=rt.config.retry,
        rng=rt.rng,
        attempts_log=attempts,
        deadline_s=rt.config.in_call_deadline_s,
        budget=rt.budget,
        credential=credential,
        sleep=rt.sleep,
    )
