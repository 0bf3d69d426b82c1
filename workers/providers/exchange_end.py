"""The end of a call's one provider exchange, told to whoever holds the call's throttle slot.

A TTS call over plain HTTP is one request: once its whole 2xx body is read and the
connection is back in the pool, the provider is done with it, so the slot may go to the
next call while this one's answer is checked (bench/throughput.py: the checks and the
release took ~4 ms of a ~210 ms slot cycle). The throttle's permit block registers how to
give its slot back (`releasable`); a provider calls `exchange_ended()` after the last byte
of a call that makes exactly one request. A call of several requests (a batch submit and
its polls, a streamed answer written to storage as it arrives) never calls it, so its slot
is held to the end of the block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["exchange_ended", "releasable"]

_release: ContextVar[Callable[[], None] | None] = ContextVar("exchange_release", default=None)


@contextmanager
def releasable(release: Callable[[], None]) -> Iterator[None]:
    """Within the block, `exchange_ended()` calls `release` (once, as a success)."""
    token = _release.set(release)
    try:
        yield
    finally:
        _release.reset(token)


def exchange_ended() -> None:
    """The call's only exchange got its whole 2xx answer: free its slot now, if one is held."""
    release = _release.get()
    if release is not None:
        _release.set(None)
        release()
