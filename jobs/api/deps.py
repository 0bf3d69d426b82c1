"""Per-app resources (held on `app.state`) and request dependencies (auth).

Both dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in the
thread pool, and on a busy machine each thread hop is a wait for a CPU; hops made up about
half of the slowest polls' time in bench/bulk_submit.py. They stay on the event loop unless
they must touch the database (a key-cache miss).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from jobs.keys import digest_key
from jobs.ledger import ItemLedger
from jobs.netpolicy import Allowlist
from jobs.settings import Settings
from jobs.tenants import authenticate
from storage.db import ping
from storage.objects import ObjectStore
from storage.publisher import Publisher


class KeyCache:
    """Tenant ids of recently verified keys, for one second.

    Pollers hit GET /v1/jobs/{id} constantly; caching the key check halves the queries per
    poll, and one second is short enough that a revoked key stops working almost at once.
    Entries are keyed by the key's digest, so no plaintext key is held.
    """

    def __init__(self, ttl_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.clock = ttl_s, clock
        self._entries: dict[str, tuple[float, str]] = {}

    def cached(self, presented: str | None) -> str | None:
        """The tenant id of a key verified less than `ttl_s` ago, else None (no I/O)."""
        hit = self._entries.get(_slot(presented))
        if hit is not None and self.clock() - hit[0] < self.ttl_s:
            return hit[1]
        return None

    def verify(self, sessions: sessionmaker[Session], presented: str | None) -> str:
        """Check the key against the database (401 if unknown) and remember the answer."""
        now = self.clock()
        tenant_id = authenticate(sessions, presented)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[_slot(presented)] = (now, tenant_id)
        return tenant_id

    def tenant(self, sessions: sessionmaker[Session], presented: str | None) -> str:
        cached = self.cached(presented)
        return cached if cached is not None else self.verify(sessions, presented)


def _slot(presented: str | None) -> str:
    return digest_key(presented) if presented else ""


@dataclass
class Resources:
    """What every request may need. `reads` are autocommit sessions for one-statement reads:
    no BEGIN/ROLLBACK round trips around a single SELECT (used by the poll endpoint)."""

    settings: Settings
    ledger: ItemLedger
    store: ObjectStore
    reads: sessionmaker[Session]
    keys: KeyCache = field(default_factory=KeyCache)
    source_allow: Allowlist = ()

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.ledger.db.sessions

    @property
    def publisher(self) -> Publisher:
        return self.ledger.publisher

    def ping_database(self) -> None:
        ping(self.ledger.db.engine)


async def resources(request: Request) -> Resources:
    res: Resources = request.app.state.resources
    return res


# Declares the bearer scheme in OpenAPI; a missing or non-bearer header is ours to refuse
# (401 with the error envelope), not FastAPI's (403 with its own body).
BEARER = HTTPBearer(auto_error=False, description="An API key: `speechbatch keys create`.")


async def tenant(
    res: Annotated[Resources, Depends(resources)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> str:
    """The tenant id behind `Authorization: Bearer <key>`; 401 otherwise."""
    presented = credentials.credentials.strip() if credentials else None
    cached = res.keys.cached(presented)
    if cached is not None:
        return cached
    return await run_in_threadpool(res.keys.verify, res.reads, presented)


Res = Annotated[Resources, Depends(resources)]
TenantId = Annotated[str, Depends(tenant)]
