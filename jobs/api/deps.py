"""Per-app resources (held on `app.state`) and request dependencies (auth)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from jobs.keys import digest_key
from jobs.netpolicy import Allowlist
from jobs.publisher import CeleryPublisher
from jobs.service import authenticate
from jobs.settings import Settings
from storage.objects import ObjectStore


class KeyCache:
    """Tenant ids of recently verified keys, for one second.

    Pollers hit GET /v1/jobs/{id} constantly; caching the key check halves the queries per
    poll, and one second is short enough that a revoked key stops working almost at once.
    Entries are keyed by the key's digest, so no plaintext key is held.
    """

    def __init__(self, ttl_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.clock = ttl_s, clock
        self._entries: dict[str, tuple[float, str]] = {}

    def tenant(self, sessions: sessionmaker[Session], presented: str | None) -> str:
        digest = digest_key(presented) if presented else ""
        hit = self._entries.get(digest)
        now = self.clock()
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        tenant_id = authenticate(sessions, presented)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[digest] = (now, tenant_id)
        return tenant_id


@dataclass
class Resources:
    settings: Settings
    sessions: sessionmaker[Session]
    store: ObjectStore
    publisher: CeleryPublisher
    keys: KeyCache = field(default_factory=KeyCache)
    source_allow: Allowlist = ()

    def ping_database(self) -> None:
        with self.sessions() as session:
            session.execute(text("SELECT 1"))


def resources(request: Request) -> Resources:
    res: Resources = request.app.state.resources
    return res


def tenant(
    res: Annotated[Resources, Depends(resources)],
    authorization: Annotated[str | None, Header()] = None,
) -> str:
    """The tenant id behind `Authorization: Bearer <key>`; 401 otherwise."""
    presented = None
    if authorization and authorization[:7].lower() == "bearer ":
        presented = authorization[7:].strip()
    return res.keys.tenant(res.sessions, presented)


Res = Annotated[Resources, Depends(resources)]
TenantId = Annotated[str, Depends(tenant)]
