"""The archive catalogue: case files, documents, versions, reports, access log, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Subject search: the subject is stored a second time folded (lower case, no diacritics,
đ → d, see ``kyso.archive.metadata.fold``).  SQLite indexes the folded copy in an FTS5
table kept in step by triggers; PostgreSQL in a GIN index over
``to_tsvector('simple', subject_folded)`` (no extension needed: folding is done by kyso, so
the same words match on both databases).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _created() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "case_files",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("agency_id", sa.String(35), nullable=True),
        sa.Column("organ_id", sa.String(35), nullable=False),
        sa.Column("file_catalog", sa.Integer, nullable=False),
        sa.Column("file_notation", sa.String(20), nullable=False),
        sa.Column("title", sa.String(1000), nullable=False),
        sa.Column("maintenance", sa.String(30), nullable=False),
        sa.Column("rights", sa.String(30), nullable=False),
        sa.Column("creator", sa.String(200), nullable=True),
        sa.Column("language", sa.String(100), nullable=False),
        sa.Column("start_date", sa.Date, nullable=True),
        sa.Column("end_date", sa.Date, nullable=True),
        sa.Column("description", sa.String(500), nullable=True),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_case_files"),
        sa.UniqueConstraint(
            "organ_id",
            "file_catalog",
            "file_notation",
            name="uq_case_files_organ_id_file_catalog_file_notation",
        ),
    )
    op.create_index("ix_case_files_agency_id", "case_files", ["agency_id"])

    op.create_table(
        "documents",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("agency_id", sa.String(35), nullable=True),
        sa.Column("case_file_id", sa.Integer, nullable=True),
        sa.Column("document_id", sa.String(100), nullable=True),
        sa.Column("organ_id", sa.String(35), nullable=False),
        sa.Column("organ_name", sa.String(200), nullable=False),
        sa.Column("doc_ordinal", sa.Integer, nullable=True),
        sa.Column("type_name", sa.String(100), nullable=False),
        sa.Column("code_number", sa.String(11), nullable=True),
        sa.Column("code_notation", sa.String(30), nullable=True),
        sa.Column("issued_date", sa.Date, nullable=True),
        sa.Column("subject", sa.String(500), nullable=False),
        sa.Column("subject_folded", sa.String(500), nullable=False),
        sa.Column("language", sa.String(100), nullable=False),
        sa.Column("page_amount", sa.Integer, nullable=True),
        sa.Column("description", sa.String(500), nullable=True),
        sa.Column("signer_position", sa.String(100), nullable=True),
        sa.Column("signer_full_name", sa.String(50), nullable=True),
        sa.Column("signer_folded", sa.String(50), nullable=True),
        sa.Column("recipients", sa.JSON, nullable=False),
        sa.Column("urgency", sa.String(20), nullable=True),
        sa.Column("secrecy", sa.String(20), nullable=True),
        sa.Column("issued_amount", sa.Integer, nullable=True),
        sa.Column("due_date", sa.Date, nullable=True),
        sa.Column("arrival_date", sa.Date, nullable=True),
        sa.Column("arrival_number", sa.String(11), nullable=True),
        sa.Column("to_places", sa.JSON, nullable=False),
        sa.Column("trace", sa.JSON, nullable=False),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_documents"),
        sa.ForeignKeyConstraint(
            ["case_file_id"],
            ["case_files.id"],
            name="fk_documents_case_file_id_case_files",
            ondelete="RESTRICT",
        ),
        sa.CheckConstraint("direction IN ('outgoing', 'incoming')", name="ck_documents_direction"),
    )
    op.create_index("ix_documents_agency_id", "documents", ["agency_id"])
    op.create_index("ix_documents_case_file_id", "documents", ["case_file_id"])
    op.create_index("ix_documents_document_id", "documents", ["document_id"])
    op.create_index("ix_documents_issued_date", "documents", ["issued_date"])
    op.create_index(
        "ix_documents_organ_id_code_number_code_notation",
        "documents",
        ["organ_id", "code_number", "code_notation"],
    )

    op.create_table(
        "document_versions",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("document_id", sa.Integer, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("object_key", sa.String(512), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_document_versions"),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name="fk_document_versions_document_id_documents",
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint("document_id", "seq", name="uq_document_versions_document_id_seq"),
        sa.CheckConstraint(
            "kind IN ('draft', 'person_signed', 'registered', 'sealed', 'ltv_extended', "
            "'received')",
            name="ck_document_versions_kind",
        ),
    )
    op.create_index("ix_document_versions_document_id", "document_versions", ["document_id"])

    op.create_table(
        "verification_reports",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("indication", sa.String(20), nullable=False),
        sa.Column("sub_indication", sa.String(60), nullable=True),
        sa.Column("report_json", sa.Text, nullable=False),
        sa.Column("report_object_key", sa.String(512), nullable=True),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_verification_reports"),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["document_versions.id"],
            name="fk_verification_reports_version_id_document_versions",
            ondelete="RESTRICT",
        ),
    )
    op.create_index("ix_verification_reports_version_id", "verification_reports", ["version_id"])

    op.create_table(
        "access_log",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("document_id", sa.Integer, nullable=True),
        sa.Column("version_id", sa.Integer, nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(30), nullable=False),
        sa.Column("purpose", sa.String(500), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_access_log"),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name="fk_access_log_document_id_documents",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["document_versions.id"],
            name="fk_access_log_version_id_document_versions",
            ondelete="RESTRICT",
        ),
    )
    op.create_index("ix_access_log_document_id", "access_log", ["document_id"])

    op.create_table(
        "audit_events",
        sa.Column("seq", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("details_json", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_events"),
        sa.UniqueConstraint("hash", name="uq_audit_events_hash"),
    )

    op.create_table(
        "audit_anchors",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("event_seq", sa.Integer, nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("tsa_token", sa.LargeBinary, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_anchors"),
    )
    op.create_index("ix_audit_anchors_event_seq", "audit_anchors", ["event_seq"])

    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE documents_fts USING fts5("
            "subject_folded, content='documents', content_rowid='id', "
            "tokenize='unicode61 remove_diacritics 2')"
        )
        op.execute(
            "CREATE TRIGGER documents_fts_ai AFTER INSERT ON documents BEGIN "
            "INSERT INTO documents_fts(rowid, subject_folded) "
            "VALUES (new.id, new.subject_folded); END"
        )
        op.execute(
            "CREATE TRIGGER documents_fts_ad AFTER DELETE ON documents BEGIN "
            "INSERT INTO documents_fts(documents_fts, rowid, subject_folded) "
            "VALUES ('delete', old.id, old.subject_folded); END"
        )
        op.execute(
            "CREATE TRIGGER documents_fts_au AFTER UPDATE OF subject_folded ON documents BEGIN "
            "INSERT INTO documents_fts(documents_fts, rowid, subject_folded) "
            "VALUES ('delete', old.id, old.subject_folded); "
            "INSERT INTO documents_fts(rowid, subject_folded) "
            "VALUES (new.id, new.subject_folded); END"
        )
    elif dialect == "postgresql":
        op.execute(
            "CREATE INDEX ix_documents_subject_tsv ON documents "
            "USING gin (to_tsvector('simple'::regconfig, subject_folded))"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for trigger in ("documents_fts_ai", "documents_fts_ad", "documents_fts_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS documents_fts")
    for table in (
        "audit_anchors",
        "audit_events",
        "access_log",
        "verification_reports",
        "document_versions",
        "documents",
        "case_files",
    ):
        op.drop_table(table)
