"""Prepared two-phase signatures kept in the catalogue.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22

``pending_signatures`` now holds the prepared state itself, so that ``complete`` works on any
API replica, whatever host ``prepare`` ran on (before, the state was two files in the data
directory's ``pending`` folder, seen only by replicas sharing that volume):

* ``prepared_pdf``: the to-be-signed document (signature placeholder included), as
  :func:`kyso.signer.external.prepare` wrote it; as large as an upload, plus the placeholder.
* ``state``: the JSON state written beside it (public data only: digests, byte range, signed
  attributes, certificates, level, expiry).
* ``claimed_by`` / ``claimed_until``: the ``complete`` holding the row (a random token) and
  until when; another ``complete`` of the handle is refused meanwhile, and only the holder
  can consume the row, so a handle signs at most once.

Rows prepared before this revision have no state (NULL): their files stay in the old folder
and ``complete`` answers them as unknown handles (a preparation lives 15 minutes; the user
prepares again).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pending_signatures") as batch:
        batch.add_column(sa.Column("prepared_pdf", sa.LargeBinary, nullable=True))
        batch.add_column(sa.Column("state", sa.LargeBinary, nullable=True))
        batch.add_column(sa.Column("claimed_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # the state goes with its columns: a prepared signature cannot be completed afterwards
    op.execute(sa.text("DELETE FROM pending_signatures"))
    with op.batch_alter_table("pending_signatures") as batch:
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
        batch.drop_column("state")
        batch.drop_column("prepared_pdf")
