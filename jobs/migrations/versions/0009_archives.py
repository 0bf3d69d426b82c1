"""archive sources: a job expanded from an object-store prefix (issue 12)

`archive_expansions` holds what an archive job lists and how far it got (the cursor moves in
the same transaction as the items it covers). `jobs.expanding` keeps the job unfinished
while it lists, `jobs.skipped` counts objects transcribed before, `jobs.output_layout` is
`job` or `mirror`. `items.archive_digest` (source + ETag + settings) finds an earlier
transcript of the same object; `items.skipped_from` names the job that made it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 21:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ARCHIVED = "archive_digest IS NOT NULL"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("skipped", sa.Integer(), nullable=False, server_default="0"))
    op.add_column(
        "jobs", sa.Column("expanding", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column(
        "jobs",
        sa.Column("output_layout", sa.String(length=8), nullable=False, server_default="job"),
    )
    op.add_column("items", sa.Column("archive_digest", sa.String(length=64), nullable=True))
    op.add_column("items", sa.Column("skipped_from", sa.String(length=40), nullable=True))
    op.create_index(
        "ix_items_archive_digest",
        "items",
        ["archive_digest"],
        postgresql_where=sa.text(ARCHIVED),
        sqlite_where=sa.text(ARCHIVED),
    )
    op.create_table(
        "archive_expansions",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("pattern", sa.String(length=200), nullable=True),
        sa.Column("min_bytes", sa.BigInteger(), nullable=True),
        sa.Column("max_bytes", sa.BigInteger(), nullable=True),
        sa.Column("modified_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("incremental", sa.Boolean(), nullable=False),
        sa.Column("max_items", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("next_seq", sa.Integer(), nullable=False),
        sa.Column("listed", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("lease_token", sa.String(length=32), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name="fk_archive_expansions_job_id_jobs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", name="pk_archive_expansions"),
    )
    op.create_index(
        "ix_archive_expansions_state_lease", "archive_expansions", ["state", "lease_until"]
    )


def downgrade() -> None:
    op.drop_index("ix_archive_expansions_state_lease", table_name="archive_expansions")
    op.drop_table("archive_expansions")
    op.drop_index("ix_items_archive_digest", table_name="items")
    op.drop_column("items", "skipped_from")
    op.drop_column("items", "archive_digest")
    op.drop_column("jobs", "output_layout")
    op.drop_column("jobs", "expanding")
    op.drop_column("jobs", "skipped")
