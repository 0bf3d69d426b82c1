"""The throttle seam and its words: `Throttle` (one provider call per `with permit(...)`),
the no-limit one for local mode, `ThrottleBusy`, and how a call's end feeds the adaptive
limit (`CallOutcome`). The shared, Redis-backed throttle is `workers.throttle`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from enum import StrEnum
from typing import Protocol

from workers.providers.errors import RateLimited

__all__ = ["CallOutcome", "Throttle", "ThrottleBusy", "UnlimitedThrottle", "outcome_for"]


class ThrottleBusy(Exception):
    """No permit within the wait: re-queue the item soon; no provider call was made."""


class Throttle(Protocol):
    """The seam: one provider call runs inside `with throttle.permit(...)`."""

    def permit(
        self, provider: str, credential_fingerprint: str, *, max_wait_s: float
    ) -> AbstractContextManager[None]:
        """Hold a call slot for the block, or raise ThrottleBusy after `max_wait_s`; the
        slot is released on exit, reporting a 429 (RateLimited) to the adaptive limit."""

    def close(self) -> None:
        """Give back what the throttle still holds between calls (a worker's shutdown)."""


class UnlimitedThrottle:
    """No shared limit: local mode (its engines are limited by its own thread count)."""

    def permit(
        self, provider: str, credential_fingerprint: str, *, max_wait_s: float
    ) -> AbstractContextManager[None]:
        return nullcontext()

    def close(self) -> None:
        return None


class CallOutcome(StrEnum):
    SUCCESS = "success"  # counts towards raising a throttled-down limit again
    RATE_LIMITED = "rate_limited"  # the provider said 429: too many in a window cut the limits
    OTHER = "other"  # any other failure: says nothing about the limits


def outcome_for(error: BaseException | None) -> CallOutcome:
    """How a finished call should feed the adaptive limit (quota 429s are not RateLimited)."""
    if error is None:
        return CallOutcome.SUCCESS
    return CallOutcome.RATE_LIMITED if isinstance(error, RateLimited) else CallOutcome.OTHER
