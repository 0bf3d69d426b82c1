"""usage, budgets and content-addressed reuse of TTS outputs (issue 12)

`jobs.budget` is the cap a client asked for (`budget{characters, audio_seconds, cost}`);
`cap_characters` / `cap_audio_seconds` are what the workers enforce, derived from it at
submit (a cost cap becomes a character or audio cap at the job's dearest route), and
`budget_stopped_at` says when the cap stopped the job. `items.budget_passed` marks an item
that passed its job's budget check (its characters then count as in flight).
`items.content_hash` names a TTS line's audio (tenant, provider, model, voice, audio
options, text) and `items.reused_from` the item whose stored output an item copied instead
of calling its provider. The partial index on `route > 0` keeps the per-provider usage
query of a job that failed over down to its rerouted items.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 21:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HASHED = "content_hash IS NOT NULL"
REROUTED = "route > 0"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("budget", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("cap_characters", sa.BigInteger(), nullable=True))
    op.add_column("jobs", sa.Column("cap_audio_seconds", sa.Float(), nullable=True))
    op.add_column("jobs", sa.Column("budget_stopped_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("items", sa.Column("content_hash", sa.String(length=64), nullable=True))
    op.add_column("items", sa.Column("reused_from", sa.BigInteger(), nullable=True))
    op.add_column(
        "items",
        sa.Column("budget_passed", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index(
        "ix_items_content_hash",
        "items",
        ["content_hash", "status", "id"],
        postgresql_where=sa.text(HASHED),
        sqlite_where=sa.text(HASHED),
    )
    op.create_index(
        "ix_items_job_rerouted",
        "items",
        ["job_id", "route"],
        postgresql_where=sa.text(REROUTED),
        sqlite_where=sa.text(REROUTED),
    )


def downgrade() -> None:
    op.drop_index("ix_items_job_rerouted", table_name="items")
    op.drop_index("ix_items_content_hash", table_name="items")
    op.drop_column("items", "budget_passed")
    op.drop_column("items", "reused_from")
    op.drop_column("items", "content_hash")
    op.drop_column("jobs", "budget_stopped_at")
    op.drop_column("jobs", "cap_audio_seconds")
    op.drop_column("jobs", "cap_characters")
    op.drop_column("jobs", "budget")
