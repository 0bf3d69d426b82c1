"""Tenants and their API keys: create a key, find or make a tenant, authenticate a request.

Use cases behind the API (`jobs.api.deps`) and the CLI (`speechbatch keys create`); keys are
made and checked by `jobs.keys` and stored only as a digest, so the plaintext is shown once.
"""

from __future__ import annotations

import secrets

from sqlalchemy.orm import Session, sessionmaker

from jobs import repository as repo
from jobs.clock import utc_now
from jobs.error_codes import ErrorCode
from jobs.errors import ApiError
from jobs.keys import generate_key, matches, split_prefix
from jobs.models import Tenant


def create_api_key(sessions: sessionmaker[Session], tenant_name: str) -> str:
    """Create (or reuse) a tenant and a new key for it; returns the plaintext, shown once."""
    new = generate_key()
    with sessions() as session:
        now = utc_now()
        tenant = repo.get_or_create_tenant(
            session, tenant_name, tenant_id=f"t_{secrets.token_hex(8)}", now=now
        )
        repo.add_api_key(
            session, tenant_id=tenant.id, prefix=new.prefix, digest=new.digest, now=now
        )
        session.commit()
    return new.plaintext


def ensure_tenant(sessions: sessionmaker[Session], name: str) -> Tenant:
    with sessions() as session:
        tenant = repo.get_or_create_tenant(
            session, name, tenant_id=f"t_{secrets.token_hex(8)}", now=utc_now()
        )
        session.commit()
        return tenant


def authenticate(sessions: sessionmaker[Session], presented: str | None) -> str:
    """The tenant id a bearer key belongs to; ApiError 401 otherwise."""
    prefix = split_prefix(presented) if presented else None
    if presented and prefix:
        with sessions() as session:
            key = repo.find_api_key(session, prefix)
        if key is not None and matches(presented, key.digest):
            return key.tenant_id
    raise ApiError(
        401,
        ErrorCode.UNAUTHORIZED,
        "A valid API key is required: send `Authorization: Bearer <key>` "
        "(create one with `speechbatch keys create --tenant NAME`).",
    )
