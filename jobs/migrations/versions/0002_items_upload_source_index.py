"""items: partial index on upload:// sources (upload retention's lookup)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 12:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPLOAD_SOURCES = "source LIKE 'upload://%'"


def upgrade() -> None:
    op.create_index(
        "ix_items_upload_source",
        "items",
        ["source"],
        postgresql_where=sa.text(UPLOAD_SOURCES),
        sqlite_where=sa.text(UPLOAD_SOURCES),
    )


def downgrade() -> None:
    op.drop_index("ix_items_upload_source", table_name="items")
