"""webhook deliveries and tenants' signing secrets (issue 12)

`webhook_deliveries` holds one row per job finish (unique on job, event and the finish's
time), written by beat before anything is sent; `webhook_attempts` logs each POST. Jobs get
`webhook_url` and `webhook_recorded_finish` (the finish whose delivery exists), with a partial
index over the jobs still waiting for theirs. Tenants get their `whsec_` secrets.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 21:10:00
"""

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WEBHOOK_UNRECORDED = (
    "webhook_url IS NOT NULL AND finished_at IS NOT NULL"
    " AND (webhook_recorded_finish IS NULL OR webhook_recorded_finish <> finished_at)"
)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _when(name: str, nullable: bool) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.add_column("tenants", sa.Column("webhook_secret", sa.String(100), nullable=True))
    op.add_column("tenants", sa.Column("webhook_previous_secret", sa.String(100), nullable=True))
    op.add_column("tenants", _when("webhook_secret_rotated_at", True))
    op.add_column("jobs", sa.Column("webhook_url", sa.String(2048), nullable=True))
    op.add_column("jobs", _when("webhook_recorded_finish", True))
    op.create_index(
        "ix_jobs_webhook_unrecorded",
        "jobs",
        ["finished_at"],
        postgresql_where=sa.text(WEBHOOK_UNRECORDED),
        sqlite_where=sa.text(WEBHOOK_UNRECORDED),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        _when("job_finished_at", False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False),
        _when("window_started_at", False),
        _when("next_attempt_at", True),
        sa.Column("lease_token", sa.String(32), nullable=True),
        _when("lease_expires_at", True),
        _when("created_at", False),
        _when("updated_at", False),
        _when("delivered_at", True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name="fk_webhook_deliveries_job_id_jobs",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_webhook_deliveries_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
        sa.UniqueConstraint(
            "job_id",
            "event",
            "job_finished_at",
            name="uq_webhook_deliveries_job_id_event_job_finished_at",
        ),
    )
    op.create_index(
        "ix_webhook_deliveries_status_next_attempt",
        "webhook_deliveries",
        ["status", "next_attempt_at"],
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(40), nullable=False),
        _when("started_at", False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(300), nullable=True),
        sa.Column("response_excerpt", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name="fk_webhook_attempts_delivery_id_webhook_deliveries",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_attempts"),
    )
    op.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_attempts_delivery_id", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_deliveries_status_next_attempt", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_jobs_webhook_unrecorded", table_name="jobs")
    op.drop_column("jobs", "webhook_recorded_finish")
    op.drop_column("jobs", "webhook_url")
    op.drop_column("tenants", "webhook_secret_rotated_at")
    op.drop_column("tenants", "webhook_previous_secret")
    op.drop_column("tenants", "webhook_secret")
