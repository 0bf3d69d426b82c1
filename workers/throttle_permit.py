"""One admitted provider call's permit (`Permit`), as `workers.throttle` grants it."""

from __future__ import annotations

import logging
from typing import Protocol

from workers.throttle_redis import Keys, ThrottleUnavailable
from workers.throttle_seam import CallOutcome

log = logging.getLogger("workers.throttle")


class _Reporter(Protocol):
    def report(self, permit: Permit, outcome: CallOutcome) -> None: ...


class Permit:
    """One admitted provider call. Released exactly once (by `ProviderThrottle.permit`); a
    holder that dies without releasing loses the slot when its lease lapses. A permit may be
    passed on to a waiting thread of this process instead (`ProviderThrottle.permit`)."""

    def __init__(
        self,
        throttle: _Reporter,
        provider: str,
        keys: Keys,
        token: str,
        acquired_us: int,
        *,
        adapted: bool = False,
        contended: bool = False,
        granted_at: float = 0.0,
    ) -> None:
        self.provider, self.keys, self.token = provider, keys, token
        self.acquired_us = acquired_us  # Redis time; 429s of calls admitted before a cut don't cut
        self.adapted = adapted  # the adaptive limits had 429s to weigh when it was granted
        self.contended = contended  # another process was refused a slot just before
        self.granted_at = granted_at  # the throttle's clock when Redis granted it
        self.passes = 0  # calls it has been passed on to without going back to Redis
        self._throttle = throttle
        self._released = False

    def release(self, outcome: CallOutcome | str = CallOutcome.SUCCESS) -> None:
        """Free the slot and report the outcome; never raises (a lost slot lapses anyway)."""
        if self._released:
            return
        self._released = True
        try:
            self._throttle.report(self, CallOutcome(outcome))
        except ThrottleUnavailable:
            log.warning("could not release a %s permit; it lapses with its lease", self.provider)
