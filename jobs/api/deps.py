"""Per-app resources (held on `app.state`) and request dependencies (auth)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from jobs.publisher import CeleryPublisher
from jobs.service import authenticate
from jobs.settings import Settings
from storage.objects import ObjectStore


@dataclass
class Resources:
    settings: Settings
    sessions: sessionmaker[Session]
    store: ObjectStore
    publisher: CeleryPublisher

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
    return authenticate(res.sessions, presented)


Res = Annotated[Resources, Depends(resources)]
TenantId = Annotated[str, Depends(tenant)]
