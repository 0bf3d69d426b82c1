"""jobs.fallback, items.route, jobs.stitched: failover and the stitched track (issue 11)

`jobs.fallback` lists the providers a job may move its items to, in order; `items.route` is
which one an item uses now (0: the job's own provider, n: fallback n). `jobs.stitched` asks
for the job's TTS outputs as one track with a cue sheet once it finishes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 18:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("fallback", sa.JSON(), nullable=True))
    op.add_column(
        "jobs", sa.Column("stitched", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column(
        "items", sa.Column("route", sa.SmallInteger(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.drop_column("items", "route")
    op.drop_column("jobs", "stitched")
    op.drop_column("jobs", "fallback")
