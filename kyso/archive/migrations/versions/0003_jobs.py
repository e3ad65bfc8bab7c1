"""Background jobs and their items.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

A job is one request (batch verify, seal, LTV extension, fixity sweep...) owned by an agency
(NULL: a scheduled job of the system); its items are the ids and options it acts on, never
file bytes and never a PIN.  API replicas and Celery workers share these rows, so the job's
status is the same whichever process runs it (``kyso/api/jobs.py``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ITEM_STATES = "('queued', 'running', 'retrying', 'done', 'failed', 'cancelled')"


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("agency_id", sa.String(35), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("principal", sa.JSON, nullable=True),
        sa.Column("locale", sa.String(5), nullable=False),
        sa.Column("runner", sa.String(20), nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("cancelled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.CheckConstraint("runner IN ('inprocess', 'celery')", name="ck_jobs_runner"),
    )
    op.create_index("ix_jobs_agency_id_created_at", "jobs", ["agency_id", "created_at"])

    op.create_table(
        "job_items",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("checkpoint", sa.JSON, nullable=True),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("error_code", sa.String(100), nullable=True),
        sa.Column("error_params", sa.JSON, nullable=True),
        sa.Column("progress_done", sa.Integer, nullable=True),
        sa.Column("progress_total", sa.Integer, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_job_items"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_items_job_id_jobs", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("job_id", "seq", name="uq_job_items_job_id_seq"),
        sa.CheckConstraint(f"state IN {ITEM_STATES}", name="ck_job_items_state"),
    )
    op.create_index("ix_job_items_job_id", "job_items", ["job_id"])


def downgrade() -> None:
    op.drop_table("job_items")
    op.drop_table("jobs")
