"""Document workflow: number registers, planned symbols, pending external signatures.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

* ``register_counters``: the last number given in each agency's register for a year (Decree
  30 Art. 15: the sequence restarts at 01 every 1 January, per agency).  A number is taken by
  ``UPDATE … SET last_number = last_number + 1 … RETURNING`` (the row lock serialises
  concurrent clerks on PostgreSQL; SQLite serialises writers).
* ``register_numbers``: every number given, unique per (agency, year, number), one per
  document: the database itself refuses a number twice.
* ``document_plans``: the symbol (ký hiệu) and place planned at upload for the clerk's step.
* ``pending_signatures``: two-phase (USB token / remote) signatures waiting for their value:
  which document, user and version they were prepared from.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "register_counters",
        sa.Column("agency_id", sa.String(35), nullable=False),
        sa.Column("year", sa.Integer, nullable=False),
        sa.Column("last_number", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("agency_id", "year", name="pk_register_counters"),
    )
    op.create_table(
        "register_numbers",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("agency_id", sa.String(35), nullable=False),
        sa.Column("year", sa.Integer, nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("document_id", sa.Integer, nullable=False),
        sa.Column("symbol", sa.String(30), nullable=False),
        sa.Column("issued_date", sa.Date, nullable=False),
        sa.Column("place", sa.String(100), nullable=True),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_register_numbers"),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name="fk_register_numbers_document_id_documents",
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint(
            "agency_id", "year", "number", name="uq_register_numbers_agency_id_year_number"
        ),
        sa.UniqueConstraint("document_id", name="uq_register_numbers_document_id"),
        sa.CheckConstraint("state IN ('reserved', 'issued')", name="ck_register_numbers_state"),
    )
    op.create_table(
        "document_plans",
        sa.Column("document_id", sa.Integer, nullable=False),
        sa.Column("symbol", sa.String(30), nullable=True),
        sa.Column("place", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("document_id", name="pk_document_plans"),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name="fk_document_plans_document_id_documents",
            ondelete="RESTRICT",
        ),
    )
    op.create_table(
        "pending_signatures",
        sa.Column("handle", sa.String(64), nullable=False),
        sa.Column("document_id", sa.Integer, nullable=False),
        sa.Column("agency_id", sa.String(35), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("base_seq", sa.Integer, nullable=False),
        sa.Column("certificate", sa.LargeBinary, nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("handle", name="pk_pending_signatures"),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name="fk_pending_signatures_document_id_documents",
            ondelete="RESTRICT",
        ),
    )
    op.create_index("ix_pending_signatures_document_id", "pending_signatures", ["document_id"])


def downgrade() -> None:
    op.drop_index("ix_pending_signatures_document_id", table_name="pending_signatures")
    op.drop_table("pending_signatures")
    op.drop_table("document_plans")
    op.drop_table("register_numbers")
    op.drop_table("register_counters")
