"""Beat's lease: one row saying which beat process does the chores until when.

Two beats are already *safe* without it: a sweep's moves are conditional UPDATEs and a
re-published id is deduplicated by the claim, a schedule's fire time is a unique key, and a
webhook delivery is leased per row. The lease is for *economy*: with `speechbatch worker
--beat` on every worker of a small deployment there are as many beats as workers, and
without it each would walk the same expired leases, publish the same stale ids (the queue
then holds each several times) and list the same upload prefix. With it one beat works and
the others renew nothing but their hope, taking over `ttl` after the holder stops (SIGKILL,
a lost host) or at once when it lets go on a clean shutdown.

The row lives in the database, not Redis: it is the store every beat needs anyway (an
embedded SQLite deployment has no Redis), and a Redis restart must not let every beat act
at once for nothing. Expiry compares the beats' clocks, so `ttl` should dwarf their skew;
a beat that overruns its lease (a pass longer than `ttl`) only means two beats briefly
work, which is safe.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from jobs.clock import utc_now
from jobs.models_schedules import BeatLease
from jobs.settings import Settings

BEAT = "beat"
log = logging.getLogger(__name__)


def holder_name() -> str:
    """Who this process is, for the lease row and for people reading it: host, pid, nonce."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{secrets.token_hex(4)}"


class Lease:
    """`hold()` takes or renews the named lease and says whether this process has it."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        ttl: timedelta,
        name: str = BEAT,
        holder: str | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.sessions, self.ttl, self.name, self.clock = sessions, ttl, name, clock
        self.holder = holder or holder_name()
        self.held = False

    def hold(self) -> bool:
        """Renew the lease if this process holds it, take it if it expired; True if held."""
        held = self._take()
        if held != self.held:
            log.info("beat lease %r %s by %s", self.name, "taken" if held else "lost", self.holder)
        self.held = held
        return held

    def _take(self) -> bool:
        now = self.clock()
        with self.sessions() as session:
            taken = session.execute(
                update(BeatLease)
                .where(BeatLease.name == self.name)
                .where((BeatLease.holder == self.holder) | (BeatLease.expires_at < now))
                .values(holder=self.holder, expires_at=now + self.ttl)
            ).rowcount  # type: ignore[attr-defined]
            if taken:
                session.commit()
                return True
            session.rollback()
            session.add(BeatLease(name=self.name, holder=self.holder, expires_at=now + self.ttl))
            try:
                session.commit()  # the first beat ever: the row did not exist
            except IntegrityError:
                return False  # another beat holds it (or created it a moment ago)
            return True

    def release(self) -> None:
        """Let go on a clean shutdown, so another beat takes over at its next tick (if the
        database is away, the lease simply runs out)."""
        try:
            with self.sessions() as session:
                session.execute(
                    update(BeatLease)
                    .where(BeatLease.name == self.name, BeatLease.holder == self.holder)
                    .values(expires_at=self.clock() - timedelta(seconds=1))
                )
                session.commit()
        except Exception:
            log.warning("could not release beat's lease; it expires by itself", exc_info=True)
        self.held = False


def beat_lease(settings: Settings, sessions: sessionmaker[Session], interval_s: float) -> Lease:
    """Beat's lease: SPEECHBATCH_BEAT_LEASE_SECONDS, and never under three ticks, so a beat
    that is merely between ticks is not taken over."""
    ttl = max(settings.beat_lease_seconds, 3 * interval_s)
    return Lease(sessions, ttl=timedelta(seconds=ttl))
