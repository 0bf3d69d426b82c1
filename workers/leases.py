"""Lease heartbeats: keep the items this process is working on from being swept back.

One thread per worker process renews every in-flight claim in a single UPDATE every
`lease_s / 3`, so a lease can be short (a killed worker's items come back quickly) while a
slow provider call still keeps its item. A renewal only touches rows still running under
our claim token, so a lease already taken over is never stolen back.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from jobs import transitions
from jobs.clock import utc_now

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, sessions: sessionmaker[Session], lease_s: float) -> None:
        self.sessions = sessions
        self.lease_s = lease_s
        self._held: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, item_id: int, token: str) -> None:
        with self._lock:
            self._held[item_id] = token
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()

    def drop(self, item_id: int) -> None:
        with self._lock:
            self._held.pop(item_id, None)

    def renew_now(self) -> int:
        """Extend every held lease; returns how many rows were renewed."""
        with self._lock:
            tokens = list(self._held.values())
        if not tokens:
            return 0
        with self.sessions() as session:
            count = transitions.renew_leases(
                session, tokens, until=utc_now() + timedelta(seconds=self.lease_s)
            )
            session.commit()
        return count

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.renew_now()
            except Exception:  # a DB blip: the next beat (well inside the lease) tries again
                log.warning("lease renewal failed", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
