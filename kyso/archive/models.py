"""The catalogue's tables (SQLAlchemy 2 declarative).  The schema itself is created by the
Alembic migrations in ``kyso/archive/migrations``; these classes must match them
(``tests/archive/test_migrations.py`` compares the two)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "VERSION_KINDS",
    "AccessEntry",
    "AuditAnchor",
    "AuditEvent",
    "Base",
    "CaseFile",
    "Document",
    "DocumentVersion",
    "VerificationReport",
]

VERSION_KINDS = ("draft", "person_signed", "registered", "sealed", "ltv_extended", "received")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CaseFile(Base):
    """Hồ sơ: FileCode (OrganId, FileCatalog, FileNotation), title, retention, access regime."""

    __tablename__ = "case_files"
    __table_args__ = (sa.UniqueConstraint("organ_id", "file_catalog", "file_notation"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    agency_id: Mapped[str | None] = mapped_column(sa.String(35), index=True)
    organ_id: Mapped[str] = mapped_column(sa.String(35))
    file_catalog: Mapped[int] = mapped_column(sa.Integer)
    file_notation: Mapped[str] = mapped_column(sa.String(20))
    title: Mapped[str] = mapped_column(sa.String(1000))
    maintenance: Mapped[str] = mapped_column(sa.String(30))
    rights: Mapped[str] = mapped_column(sa.String(30))
    creator: Mapped[str | None] = mapped_column(sa.String(200))
    language: Mapped[str] = mapped_column(sa.String(100))
    start_date: Mapped[dt.date | None] = mapped_column(sa.Date)
    end_date: Mapped[dt.date | None] = mapped_column(sa.Date)
    description: Mapped[str | None] = mapped_column(sa.String(500))
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(200))

    @property
    def file_code(self) -> str:
        return f"{self.organ_id}.{self.file_catalog}.{self.file_notation}"


class Document(Base):
    """An outgoing or incoming document with its Appendix VI metadata."""

    __tablename__ = "documents"
    __table_args__ = (
        sa.Index(None, "organ_id", "code_number", "code_notation"),
        sa.CheckConstraint("direction IN ('outgoing', 'incoming')", name="direction"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    direction: Mapped[str] = mapped_column(sa.String(8))
    agency_id: Mapped[str | None] = mapped_column(sa.String(35), index=True)
    case_file_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("case_files.id", ondelete="RESTRICT"), index=True
    )
    document_id: Mapped[str | None] = mapped_column(sa.String(100), index=True)
    organ_id: Mapped[str] = mapped_column(sa.String(35))
    organ_name: Mapped[str] = mapped_column(sa.String(200))
    doc_ordinal: Mapped[int | None] = mapped_column(sa.Integer)
    type_name: Mapped[str] = mapped_column(sa.String(100))
    code_number: Mapped[str | None] = mapped_column(sa.String(11))
    code_notation: Mapped[str | None] = mapped_column(sa.String(30))
    issued_date: Mapped[dt.date | None] = mapped_column(sa.Date, index=True)
    subject: Mapped[str] = mapped_column(sa.String(500))
    subject_folded: Mapped[str] = mapped_column(sa.String(500))
    language: Mapped[str] = mapped_column(sa.String(100))
    page_amount: Mapped[int | None] = mapped_column(sa.Integer)
    description: Mapped[str | None] = mapped_column(sa.String(500))
    signer_position: Mapped[str | None] = mapped_column(sa.String(100))
    signer_full_name: Mapped[str | None] = mapped_column(sa.String(50))
    signer_folded: Mapped[str | None] = mapped_column(sa.String(50))
    recipients: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    urgency: Mapped[str | None] = mapped_column(sa.String(20))
    secrecy: Mapped[str | None] = mapped_column(sa.String(20))
    issued_amount: Mapped[int | None] = mapped_column(sa.Integer)
    due_date: Mapped[dt.date | None] = mapped_column(sa.Date)
    arrival_date: Mapped[dt.date | None] = mapped_column(sa.Date)
    arrival_number: Mapped[str | None] = mapped_column(sa.String(11))
    to_places: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    trace: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(200))

    case_file: Mapped[CaseFile | None] = relationship()
    versions: Mapped[list[DocumentVersion]] = relationship(
        back_populates="document", order_by="DocumentVersion.seq"
    )

    @property
    def number_symbol(self) -> str | None:
        if self.code_number is None:
            return None
        return f"{self.code_number}/{self.code_notation}"


class DocumentVersion(Base):
    """One immutable object in a document's chain (draft → … → LTV-extended)."""

    __tablename__ = "document_versions"
    __table_args__ = (
        sa.UniqueConstraint("document_id", "seq"),
        # migration 0005: one version per content in a document; serves WHERE sha256 = ?
        sa.Index(None, "sha256", "document_id", unique=True),
        sa.CheckConstraint(
            "kind IN ('draft', 'person_signed', 'registered', 'sealed', 'ltv_extended', "
            "'received')",
            name="kind",
        ),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(
        sa.ForeignKey("documents.id", ondelete="RESTRICT"), index=True
    )
    seq: Mapped[int] = mapped_column(sa.Integer)
    kind: Mapped[str] = mapped_column(sa.String(20))
    object_key: Mapped[str] = mapped_column(sa.String(512))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(200))

    document: Mapped[Document] = relationship(back_populates="versions")
    reports: Mapped[list[VerificationReport]] = relationship(
        back_populates="version", order_by="VerificationReport.id"
    )


class VerificationReport(Base):
    """A verification report of a version (the JSON of ``kyso verify``)."""

    __tablename__ = "verification_reports"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(
        sa.ForeignKey("document_versions.id", ondelete="RESTRICT"), index=True
    )
    indication: Mapped[str] = mapped_column(sa.String(20))
    sub_indication: Mapped[str | None] = mapped_column(sa.String(60))
    report_json: Mapped[str] = mapped_column(sa.Text)
    report_object_key: Mapped[str | None] = mapped_column(sa.String(512))
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(200))

    version: Mapped[DocumentVersion] = relationship(back_populates="reports")


class AccessEntry(Base):
    """Access history: who read which document (or version), when, and why."""

    __tablename__ = "access_log"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    document_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("documents.id", ondelete="RESTRICT"), index=True
    )
    version_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("document_versions.id", ondelete="RESTRICT")
    )
    actor: Mapped[str] = mapped_column(sa.String(200))
    action: Mapped[str] = mapped_column(sa.String(30))
    purpose: Mapped[str | None] = mapped_column(sa.String(500))
    at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)


class AuditEvent(Base):
    """One event of the append-only, hash-chained audit log (see :mod:`kyso.archive.audit`).

    ``at`` and ``details_json`` are kept as the exact strings that were hashed."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(sa.String(32))
    actor: Mapped[str] = mapped_column(sa.String(200))
    action: Mapped[str] = mapped_column(sa.String(60))
    subject: Mapped[str] = mapped_column(sa.String(200))
    details_json: Mapped[str] = mapped_column(sa.Text)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64), unique=True)


class AuditAnchor(Base):
    """An RFC 3161 token over the chain's head hash at ``event_seq``."""

    __tablename__ = "audit_anchors"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    event_seq: Mapped[int] = mapped_column(sa.Integer, index=True)
    head_hash: Mapped[str] = mapped_column(sa.String(64))
    tsa_token: Mapped[bytes] = mapped_column(sa.LargeBinary)
    at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)
