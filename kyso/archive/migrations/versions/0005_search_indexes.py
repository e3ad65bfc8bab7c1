"""One version per content in a document; search indexes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22

* ``ix_document_versions_sha256_document_id`` (unique): the same bytes cannot become two
  versions of one document, whoever writes them (``Archive.put`` also serialises concurrent
  ingests of the same content and returns the existing version: idempotent by content hash).
  Its leading column also serves the lookup every ingest starts with ("is this content already
  archived?", ``WHERE sha256 = ?``), a full scan of ``document_versions`` before.
* ``ix_documents_issued_date_desc`` (PostgreSQL): ``(issued_date DESC NULLS LAST, id DESC)``,
  the order every search returns.  A search matching many rows (a common word, a date range)
  then walks this index and stops at the page instead of sorting every match (measured with
  ``bench/archive.py`` at 1 M rows).  SQLite needs none: its NULLs sort first, so a backward
  walk of ``ix_documents_issued_date`` is already that order.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_document_versions_sha256_document_id",
        "document_versions",
        ["sha256", "document_id"],
        unique=True,
    )
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_documents_issued_date_desc",
            "documents",
            [sa.text("issued_date DESC NULLS LAST"), sa.text("id DESC")],
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_documents_issued_date_desc", table_name="documents")
    op.drop_index("ix_document_versions_sha256_document_id", table_name="document_versions")
