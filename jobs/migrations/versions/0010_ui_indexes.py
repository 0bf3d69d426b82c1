"""dashboard: an index for the item table's error-code filter (issue 13)

The job page's item table filters a job's items by `error_code` and pages them by `seq`
(keyset). `ix_items_job_error_seq` answers that page from an ordered range of the index,
even for a 100,000-item job; partial, so the (usually many) items without an error code
are not in it. The status filter already has `ix_items_job_status_seq`.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 00:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ERRORED = "error_code IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "ix_items_job_error_seq",
        "items",
        ["job_id", "error_code", "seq"],
        unique=False,
        postgresql_where=sa.text(ERRORED),
        sqlite_where=sa.text(ERRORED),
    )


def downgrade() -> None:
    op.drop_index("ix_items_job_error_seq", table_name="items")
