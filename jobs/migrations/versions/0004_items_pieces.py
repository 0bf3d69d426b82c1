"""items.pieces: how many provider requests a long TTS line took (issue 11)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 18:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("items", sa.Column("pieces", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("items", "pieces")
