"""The attachments of an incoming document.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22

``exchange_incoming.attachments``: for an accepted message, every file it carried besides the
archived document itself (appendices signed by the sending agency, spreadsheets…), each
archived as an object of its own: ``[{"index", "name", "content_type", "description",
"size", "sha256", "object_key", "indication"}]``.  NULL for rows received before this
revision and for rejected messages (nothing of a rejected message is kept).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("exchange_incoming") as batch:
        batch.add_column(sa.Column("attachments", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("exchange_incoming") as batch:
        batch.drop_column("attachments")
