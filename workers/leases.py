"""Lease heartbeats: keep the items this process is working on from being swept back.

The seam is `Leases`: the pipeline runs an item inside `with leases.holding(item):`.
`HeartbeatLeases` is the real one: one thread per worker process renews every held claim in
a single UPDATE every `lease_s / 3` (through the ledger), so a lease can be short (a killed
worker's items come back quickly) while a slow provider call still keeps its item.
`NullLeases` renews nothing, for tests that move time by hand.

`holding` gives the item an `ItemStop` (`workers.interrupt`). A held claim the renewal does
not return was lost (its job was canceled, or its lease taken over): the keeper sets that
item's stop, so its thread quits its provider call and records nothing (issue 9).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Protocol

from jobs.ledger import ItemLedger
from jobs.records import ClaimedItem
from workers.interrupt import ItemStop

log = logging.getLogger(__name__)


class Leases(Protocol):
    def holding(self, item: ClaimedItem) -> AbstractContextManager[ItemStop]:
        """Keep `item`'s lease alive for the block; the stop is set if the claim is lost."""

    def close(self) -> None:
        """Stop renewing."""


class NullLeases:
    """Renews nothing: an item's lease lasts exactly as long as its claim set it."""

    def holding(self, item: ClaimedItem) -> AbstractContextManager[ItemStop]:
        return nullcontext(ItemStop())

    def close(self) -> None:
        """Nothing runs."""


class HeartbeatLeases:
    def __init__(self, ledger: ItemLedger, lease_s: float) -> None:
        self.ledger, self.lease_s = ledger, lease_s
        self._held: dict[int, tuple[str, ItemStop]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(self, item: ClaimedItem) -> Iterator[ItemStop]:
        stop = ItemStop()
        with self._lock:
            self._held[item.id] = (item.token, stop)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()
        try:
            yield stop
        finally:
            with self._lock:
                self._held.pop(item.id, None)

    def renew_now(self) -> int:
        """Extend every held lease and stop the items whose claim was lost; returns how many
        rows were renewed."""
        with self._lock:
            held = list(self._held.values())
        renewed = self.ledger.renew([token for token, _ in held], lease_s=self.lease_s)
        for token, stop in held:
            if token not in renewed:
                stop.set()
        return len(renewed)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.renew_now()
            except Exception:  # a DB blip: the next beat (well inside the lease) tries again
                log.warning("lease renewal failed", exc_info=True)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
