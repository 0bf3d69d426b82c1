"""Each tenant's Standard Webhooks signing secret: made on first use, read, rotated.

A secret is `whsec_` + base64 of 32 random bytes, the form `standardwebhooks.Webhook`
takes. It is stored as is: signing needs the secret itself, not a digest (unlike API keys).

Rotation keeps the old secret signing beside the new one for `ROTATION_GRACE` (24 h, the
length of a delivery's retry window): every request then carries two `v1,<sig>` values in
`webhook-signature`, so a receiver that has not switched yet keeps verifying, and a
delivery recorded before the rotation still verifies with the new secret when it is retried.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from jobs.errors import not_found
from jobs.models import Tenant

SECRET_PREFIX = "whsec_"  # noqa: S105  (the format's prefix, not a secret)
SECRET_BYTES = 32
ROTATION_GRACE = timedelta(hours=24)


def new_secret() -> str:
    """A fresh `whsec_...` secret."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


@dataclass(frozen=True)
class TenantSecrets:
    """The secret a tenant's receivers verify with, and the one still signing beside it."""

    secret: str
    previous: str | None
    rotated_at: datetime | None

    def signing(self, now: datetime) -> list[str]:
        """Secrets to sign a request sent at `now` with: the current one, and the previous
        one while the rotation's grace period lasts."""
        keys = [self.secret]
        if self.previous and self.rotated_at and now < self.rotated_at + ROTATION_GRACE:
            keys.append(self.previous)
        return keys

    def previous_valid_until(self, now: datetime) -> datetime | None:
        """When the previous secret stops signing (None when it already has)."""
        if self.previous and self.rotated_at and now < self.rotated_at + ROTATION_GRACE:
            return self.rotated_at + ROTATION_GRACE
        return None


def _read(session: Session, tenant_id: str) -> TenantSecrets | None:
    row = session.execute(
        select(
            Tenant.webhook_secret, Tenant.webhook_previous_secret, Tenant.webhook_secret_rotated_at
        ).where(Tenant.id == tenant_id)
    ).one_or_none()
    if row is None:
        raise not_found("tenant")
    if row.webhook_secret is None:
        return None
    return TenantSecrets(
        row.webhook_secret, row.webhook_previous_secret, row.webhook_secret_rotated_at
    )


def tenant_secrets(session: Session, tenant_id: str) -> TenantSecrets:
    """The tenant's secrets, creating the first one if it has none. The creation is a
    conditional UPDATE (`WHERE webhook_secret IS NULL`), so two first uses at once agree on
    one secret. The caller commits."""
    found = _read(session, tenant_id)
    if found is not None:
        return found
    session.execute(
        update(Tenant)
        .where(Tenant.id == tenant_id, Tenant.webhook_secret.is_(None))
        .values(webhook_secret=new_secret())
    )
    made = _read(session, tenant_id)
    assert made is not None  # just set, by us or by a concurrent first use
    return made


def read_secrets(sessions: sessionmaker[Session], tenant_id: str) -> TenantSecrets:
    """`GET /v1/webhook-secret`: the secret, made now if this is its first use."""
    with sessions() as session:
        found = tenant_secrets(session, tenant_id)
        session.commit()
    return found


def rotate_secret(sessions: sessionmaker[Session], tenant_id: str, now: datetime) -> TenantSecrets:
    """`POST /v1/webhook-secret/rotate`: a new secret; the one it replaces signs beside it
    for `ROTATION_GRACE` (a second rotation within it drops the oldest)."""
    fresh = new_secret()
    with sessions() as session:
        current = tenant_secrets(session, tenant_id)
        # Conditional on the secret we read: of two rotations at once, one wins and the
        # other answers with the winner's secret instead of one that was overwritten.
        session.execute(
            update(Tenant)
            .where(Tenant.id == tenant_id, Tenant.webhook_secret == current.secret)
            .values(
                webhook_secret=fresh,
                webhook_previous_secret=current.secret,
                webhook_secret_rotated_at=now,
            )
        )
        rotated = _read(session, tenant_id)
        session.commit()
    assert rotated is not None
    return rotated
