"""Exchange between agencies: peers, outgoing and incoming messages, status history.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22

* ``exchange_peers``: agencies served by another kyso instance (or another system): the
  endpoint their messages go to and the certificates their messages must be signed with.
* ``exchange_outgoing``: every message this instance sends (an edXML document, a recall or
  update, or a status message answering a received document): who sends it to whom, the
  signed bytes' object key in the archive store, and the delivery state with its attempts
  (``queued`` → ``sending`` → ``delivered``; ``failed`` when the peer refused it for good,
  ``dead`` after the configured number of attempts).
* ``exchange_incoming``: every edXML message received, once per (recipient, dedup key): a
  repeat of an accepted document returns the first answer and files nothing more.
* ``exchange_statuses``: the status history of each (DocumentId, agency) as each side sees
  it, with the signed status message kept in the store (receipts).
* ``exchange_arrivals``: the incoming register's last number per agency and year
  (Decree 30 Art. 22: arrival numbers restart at 01 every 1 January).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exchange_peers",
        sa.Column("code", sa.String(35), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("endpoint", sa.String(500), nullable=False),
        sa.Column("certificates", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_exchange_peers"),
    )
    op.create_table(
        "exchange_outgoing",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("agency_id", sa.String(35), nullable=False),
        sa.Column("recipient", sa.String(35), nullable=False),
        sa.Column("edxml_document_id", sa.String(200), nullable=False),
        sa.Column("document_id", sa.Integer, nullable=True),
        sa.Column("version_seq", sa.Integer, nullable=True),
        sa.Column("incoming_id", sa.Integer, nullable=True),
        sa.Column("business_type", sa.Integer, nullable=False),
        sa.Column("status_code", sa.String(2), nullable=True),
        sa.Column("object_key", sa.String(100), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("answer_code", sa.String(2), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_exchange_outgoing"),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name="fk_exchange_outgoing_document_id_documents",
            ondelete="RESTRICT",
        ),
        sa.CheckConstraint("kind IN ('document', 'status')", name="ck_exchange_outgoing_kind"),
        sa.CheckConstraint(
            "state IN ('queued', 'sending', 'delivered', 'failed', 'dead')",
            name="ck_exchange_outgoing_state",
        ),
    )
    op.create_index("ix_exchange_outgoing_agency_id", "exchange_outgoing", ["agency_id"])
    op.create_index(
        "ix_exchange_outgoing_state_next", "exchange_outgoing", ["state", "next_attempt_at"]
    )
    op.create_index(
        "ix_exchange_outgoing_edxml_document_id", "exchange_outgoing", ["edxml_document_id"]
    )
    op.create_table(
        "exchange_incoming",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("agency_id", sa.String(35), nullable=False),
        sa.Column("sender", sa.String(35), nullable=False),
        sa.Column("edxml_document_id", sa.String(200), nullable=False),
        sa.Column("business_type", sa.Integer, nullable=False),
        sa.Column("dedup_key", sa.String(400), nullable=False),
        sa.Column("message_sha256", sa.String(64), nullable=False),
        sa.Column("object_key", sa.String(100), nullable=True),
        sa.Column("document_id", sa.Integer, nullable=True),
        sa.Column("accepted", sa.Boolean, nullable=False),
        sa.Column("verdict", sa.JSON, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("answer_key", sa.String(100), nullable=False),
        sa.Column("answer_code", sa.String(2), nullable=False),
        sa.Column("via", sa.String(20), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_exchange_incoming"),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name="fk_exchange_incoming_document_id_documents",
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint(
            "agency_id", "dedup_key", name="uq_exchange_incoming_agency_id_dedup_key"
        ),
    )
    op.create_index(
        "ix_exchange_incoming_edxml_document_id", "exchange_incoming", ["edxml_document_id"]
    )
    op.create_table(
        "exchange_statuses",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(35), nullable=False),
        sa.Column("edxml_document_id", sa.String(200), nullable=False),
        sa.Column("agency", sa.String(35), nullable=False),
        sa.Column("code", sa.String(2), nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("verdict", sa.String(40), nullable=True),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("stated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("object_key", sa.String(100), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("outgoing_id", sa.Integer, nullable=True),
        sa.Column("incoming_id", sa.Integer, nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_exchange_statuses"),
        sa.UniqueConstraint("owner", "sha256", name="uq_exchange_statuses_owner_sha256"),
    )
    op.create_index(
        "ix_exchange_statuses_doc_agency", "exchange_statuses", ["edxml_document_id", "agency"]
    )
    op.create_table(
        "exchange_arrivals",
        sa.Column("agency_id", sa.String(35), nullable=False),
        sa.Column("year", sa.Integer, nullable=False),
        sa.Column("last_number", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("agency_id", "year", name="pk_exchange_arrivals"),
    )


def downgrade() -> None:
    op.drop_table("exchange_arrivals")
    op.drop_index("ix_exchange_statuses_doc_agency", table_name="exchange_statuses")
    op.drop_table("exchange_statuses")
    op.drop_index("ix_exchange_incoming_edxml_document_id", table_name="exchange_incoming")
    op.drop_table("exchange_incoming")
    op.drop_index("ix_exchange_outgoing_edxml_document_id", table_name="exchange_outgoing")
    op.drop_index("ix_exchange_outgoing_state_next", table_name="exchange_outgoing")
    op.drop_index("ix_exchange_outgoing_agency_id", table_name="exchange_outgoing")
    op.drop_table("exchange_outgoing")
    op.drop_table("exchange_peers")
