"""Reads about archive jobs outside the expansion's transactions: how a mirror-layout job
lays out its outputs (for workers, once per job), and which objects a tenant has had
transcribed before (for the dry run's count of incremental skips, `jobs.archive_count`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.archive_ledger import EXPANSIONS, ITEMS, JOBS
from jobs.archive_outputs import destination_of
from jobs.status import ItemStatus


@dataclass(frozen=True)
class Mirror:
    """How a mirror-layout job lays its outputs out: the archive URL whose paths are kept,
    and the `output.url` they go below (None: `output.prefix` in the service's storage)."""

    root: str
    destination: str | None


def mirror_of(session: Session, job_id: str) -> Mirror | None:
    """The mirror of a mirror-layout archive job (None: the job layout)."""
    row = session.execute(
        select(EXPANSIONS.c.location, JOBS.c.options)
        .join(JOBS, JOBS.c.id == EXPANSIONS.c.job_id)
        .where(EXPANSIONS.c.job_id == job_id, JOBS.c.output_layout == "mirror")
    ).first()
    if row is None:
        return None
    return Mirror(str(row.location), destination_of(row.options))


def transcribed_digests(session: Session, tenant_id: str, digests: Sequence[str]) -> set[str]:
    """Which of `digests` an earlier succeeded item of the tenant has: the objects an
    incremental job would insert `skipped` (the dry run's count, `jobs.archive_count`)."""
    if not digests:
        return set()
    found = session.execute(
        select(ITEMS.c.archive_digest)
        .join(JOBS, JOBS.c.id == ITEMS.c.job_id)
        .where(
            ITEMS.c.archive_digest.in_(list(digests)),
            ITEMS.c.archive_digest.is_not(None),
            ITEMS.c.status == ItemStatus.SUCCEEDED.value,
            JOBS.c.tenant_id == tenant_id,
        )
        .distinct()
    ).scalars()
    return {str(d) for d in found}
