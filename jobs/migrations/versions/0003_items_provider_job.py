"""items.provider_job: the provider-side job an item waits on (SLNG batch STT)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 15:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("items", sa.Column("provider_job", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("items", "provider_job")
