"""Riding out a lost database connection: the item ledger's retry around each move.

A PostgreSQL restart takes a few seconds; a worker that just paid for a provider call must
not throw its result away because of it. A retry after an ambiguous failure (the COMMIT may
or may not have happened) is safe only because every ledger move is a compare-and-set: a move
that did commit makes its repeat a no-op.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError

T = TypeVar("T")
log = logging.getLogger(__name__)


def ride_out(attempt: Callable[[], T], *, outage_s: float, sleep: Callable[[float], None]) -> T:
    """Run `attempt`, again after a lost connection, for up to `outage_s`; then re-raise."""
    delay, deadline = 0.2, time.monotonic() + outage_s
    while True:
        try:
            return attempt()
        except (OperationalError, InterfaceError):
            if time.monotonic() + delay > deadline:
                raise
            log.warning("database unavailable; retrying in %.1f s", delay)
            sleep(delay)
            delay = min(delay * 2, 2.0)
