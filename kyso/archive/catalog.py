"""The archive catalogue: documents with their Decree 30 Appendix VI metadata, case files, the
version chain of every document with its verification reports, search, access history.

One :class:`Catalog` per database (``sqlite:///path`` embedded, ``postgresql+psycopg://…`` in
production; a bare ``postgresql://`` URL is taken as psycopg 3).  ``migrate()`` brings the
schema to the latest Alembic revision.  Every method runs in its own transaction, and every
change appends its audit event (:mod:`kyso.archive.audit`) in that same transaction.
Objects returned are detached ORM rows, fully loaded for what the method promises.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload, sessionmaker

from kyso.archive import audit
from kyso.archive.metadata import (
    CaseFileMetadata,
    CatalogError,
    DocumentMetadata,
    fold,
    normalise_number,
)
from kyso.archive.models import (
    VERSION_KINDS,
    AccessEntry,
    CaseFile,
    Document,
    DocumentVersion,
    VerificationReport,
)

__all__ = [
    "Catalog",
    "CatalogError",
    "DuplicateWarning",
    "NotFoundError",
    "Page",
    "VersionOrderError",
]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MAX_PER_PAGE = 200
PREFIX_MIN = 3
"""The last word of a subject search is also matched as a prefix from this many letters."""


class NotFoundError(CatalogError):
    code = "archive.catalog.not_found"


class VersionOrderError(CatalogError):
    code = "archive.catalog.version.order"


@dataclass(frozen=True)
class DuplicateWarning:
    """Appendix VI: a document with the same id, or the same number, symbol and issuing agency
    in the same year, is already in the catalogue."""

    kind: str
    """``document_id`` or ``number_symbol``."""
    existing_id: int
    code: str
    params: dict[str, Any]

    def message(self, locale: str | None = None) -> str:
        from kyso.i18n import t

        return t(self.code, locale=locale, **self.params)


@dataclass(frozen=True)
class Page:
    items: list[Document]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


# The order of a document's versions.  A kind may follow any kind of a lower or equal rank;
# only drafts and LTV extensions repeat.  An incoming document starts as ``received``.
_RANK = {
    "draft": 0,
    "received": 0,
    "person_signed": 1,
    "registered": 2,
    "sealed": 3,
    "ltv_extended": 4,
}
_REPEATABLE = {"draft", "ltv_extended"}
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _engine_url(url: str | sa.URL) -> sa.URL:
    parsed = sa.make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


class Catalog:
    """The catalogue in one SQL database."""

    def __init__(self, url: str | sa.URL, *, schema: str | None = None, echo: bool = False):
        """:param schema: PostgreSQL only: the schema to work in (its ``search_path``)."""
        self.url = _engine_url(url)
        connect_args: dict[str, Any] = {}
        if self.url.get_backend_name() == "sqlite":
            connect_args["timeout"] = 30
        elif schema is not None:
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
                raise ValueError(f"invalid schema name {schema!r}")
            connect_args["options"] = f"-csearch_path={schema}"
        self.engine = sa.create_engine(self.url, echo=echo, connect_args=connect_args)
        if self.url.get_backend_name() == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    # -- schema -----------------------------------------------------------------------------------
    def alembic_config(self) -> Any:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        # configparser interpolates '%': a percent-encoded password or option must survive
        url = self.url.render_as_string(hide_password=False).replace("%", "%%")
        config.set_main_option("sqlalchemy.url", url)
        return config

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to ``revision`` (Alembic)."""
        from alembic import command

        config = self.alembic_config()
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    def revision(self) -> str | None:
        """The schema's current Alembic revision (None: not migrated)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """A session in a transaction, committed on success.

        ``write``: on SQLite, take the database's write lock first (``BEGIN IMMEDIATE``). A
        deferred transaction that reads (the audit chain's head, a duplicate check) and then
        writes can find that another writer got in between: one of them would fail on the
        audit chain's primary key or with "database is locked". PostgreSQL serialises the
        audit head with an advisory lock instead."""
        with self._sessions.begin() as session:
            if write and self.dialect == "sqlite":
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            yield session

    # -- case files ------------------------------------------------------------------------------
    def add_case(self, meta: CaseFileMetadata, *, actor: str = "system") -> int:
        meta.validate()
        with self.session(write=True) as s:
            exists = s.scalar(
                sa.select(CaseFile.id).where(
                    CaseFile.organ_id == meta.organ_id,
                    CaseFile.file_catalog == meta.file_catalog,
                    CaseFile.file_notation == meta.file_notation,
                )
            )
            if exists is not None:
                raise CatalogError("archive.catalog.case.exists", file_code=meta.file_code)
            row = CaseFile(
                agency_id=meta.organ_id,
                organ_id=meta.organ_id,
                file_catalog=meta.file_catalog,
                file_notation=meta.file_notation,
                title=meta.title,
                maintenance=meta.maintenance,
                rights=meta.rights,
                creator=meta.creator,
                language=meta.language,
                start_date=meta.start_date,
                end_date=meta.end_date,
                description=meta.description,
                created_by=actor,
            )
            s.add(row)
            s.flush()
            audit.append(s, actor, "case.add", f"case:{row.id}", {"file_code": meta.file_code})
            return row.id

    def _case_id(self, s: Session, case: int | str | None) -> int | None:
        if case is None:
            return None
        if isinstance(case, int):
            found = s.get(CaseFile, case)
        else:
            organ, _, rest = case.rpartition(".")
            organ, _, year = organ.rpartition(".")
            found = None
            if year.isdigit():
                found = s.scalars(
                    sa.select(CaseFile).where(
                        CaseFile.organ_id == organ,
                        CaseFile.file_catalog == int(year),
                        CaseFile.file_notation == rest,
                    )
                ).first()
        if found is None:
            raise NotFoundError("archive.catalog.case.not_found", case=str(case))
        return found.id

    # -- documents -------------------------------------------------------------------------------
    def duplicates(self, meta: DocumentMetadata) -> list[DuplicateWarning]:
        """Appendix VI duplicate warnings for ``meta`` (validated first)."""
        meta.validate()
        with self.session() as s:
            return self._duplicates(s, meta)

    def _duplicates(self, s: Session, meta: DocumentMetadata) -> list[DuplicateWarning]:
        warnings: list[DuplicateWarning] = []
        if meta.document_id:
            for existing in s.scalars(
                sa.select(Document.id).where(Document.document_id == meta.document_id)
            ):
                warnings.append(
                    DuplicateWarning(
                        "document_id",
                        existing,
                        "archive.catalog.duplicate.document_id",
                        {"document_id": meta.document_id, "existing": existing},
                    )
                )
        if meta.code_number is not None and meta.issued_date is not None:
            year = meta.issued_date.year
            query = sa.select(Document.id).where(
                Document.organ_id == meta.organ_id,
                Document.code_number == meta.code_number,
                Document.code_notation == meta.code_notation,
                Document.issued_date >= dt.date(year, 1, 1),
                Document.issued_date <= dt.date(year, 12, 31),
            )
            if meta.agency_id is not None:
                # Another agency's copy (an incoming document it received) is not a duplicate.
                query = query.where(Document.agency_id == meta.agency_id)
            already = {w.existing_id for w in warnings}
            for existing in s.scalars(query):
                if existing in already:
                    continue
                warnings.append(
                    DuplicateWarning(
                        "number_symbol",
                        existing,
                        "archive.catalog.duplicate.number_symbol",
                        {
                            "number": f"{meta.code_number}/{meta.code_notation}",
                            "agency": meta.organ_id,
                            "year": year,
                            "existing": existing,
                        },
                    )
                )
        return warnings

    def add_document(
        self,
        meta: DocumentMetadata,
        case: int | str | None = None,
        *,
        actor: str = "system",
    ) -> int:
        """Store ``meta`` (validated) and return the document's id.  Duplicates are recorded in
        the audit event; ask :meth:`duplicates` first to warn the user."""
        meta.validate()
        with self.session(write=True) as s:
            return self._insert_document(s, meta, case, actor)

    def _insert_document(
        self, s: Session, meta: DocumentMetadata, case: int | str | None, actor: str
    ) -> int:
        """:meth:`add_document` inside the caller's transaction (``meta`` validated)."""
        warnings = self._duplicates(s, meta)
        row = Document(
            direction=meta.direction,
            agency_id=meta.agency_id,
            case_file_id=self._case_id(s, case),
            document_id=meta.document_id,
            organ_id=meta.organ_id,
            organ_name=meta.organ_name,
            doc_ordinal=meta.doc_ordinal,
            type_name=meta.type_name,
            code_number=meta.code_number,
            code_notation=meta.code_notation,
            issued_date=meta.issued_date,
            subject=meta.subject,
            subject_folded=fold(meta.subject),
            language=meta.language,
            page_amount=meta.page_amount,
            description=meta.description,
            signer_position=meta.signer_position,
            signer_full_name=meta.signer_full_name,
            signer_folded=fold(meta.signer_full_name) or None,
            recipients=[r.as_dict() for r in meta.to],
            urgency=meta.urgency,
            secrecy=meta.secrecy,
            issued_amount=meta.issued_amount,
            due_date=meta.due_date,
            arrival_date=meta.arrival_date,
            arrival_number=meta.arrival_number,
            to_places=[r.as_dict() for r in meta.to_places],
            trace=list(meta.trace),
            created_by=actor,
        )
        s.add(row)
        s.flush()
        details: dict[str, Any] = {
            "direction": meta.direction,
            "document_id": meta.document_id,
            "number": row.number_symbol,
            "organ_id": meta.organ_id,
            "case_file_id": row.case_file_id,
        }
        if warnings:
            details["duplicates"] = [{"kind": w.kind, "existing": w.existing_id} for w in warnings]
        audit.append(s, actor, "document.add", f"document:{row.id}", details)
        return row.id

    # -- versions and reports -------------------------------------------------------------------
    def add_version(
        self,
        document_id: int,
        kind: str,
        object_key: str,
        sha256: str,
        size: int,
        actor: str,
    ) -> int:
        """Append a version (an immutable object) to the document's chain; returns its id."""
        if kind not in VERSION_KINDS:
            raise VersionOrderError("archive.catalog.version.kind", kind=kind)
        digest = (sha256 or "").lower()
        if not _HEX64.fullmatch(digest):
            raise CatalogError("archive.catalog.version.sha256", value=sha256)
        if size < 0 or not object_key:
            raise CatalogError("archive.catalog.version.object", key=object_key)
        with self.session(write=True) as s:
            return self._insert_version(s, document_id, kind, object_key, digest, size, actor)

    def _insert_version(
        self,
        s: Session,
        document_id: int,
        kind: str,
        object_key: str,
        digest: str,
        size: int,
        actor: str,
    ) -> int:
        """:meth:`add_version` inside the caller's transaction (arguments checked)."""
        doc = s.get(Document, document_id)
        if doc is None:
            raise NotFoundError("archive.catalog.document.not_found", id=document_id)
        last = s.scalars(
            sa.select(DocumentVersion)
            .where(DocumentVersion.document_id == document_id)
            .order_by(DocumentVersion.seq.desc())
            .limit(1)
        ).first()
        self._check_order(doc, last.kind if last else None, kind)
        version = DocumentVersion(
            document_id=document_id,
            seq=1 if last is None else last.seq + 1,
            kind=kind,
            object_key=object_key,
            sha256=digest,
            size=size,
            created_by=actor,
        )
        s.add(version)
        s.flush()
        audit.append(
            s,
            actor,
            "version.add",
            f"document:{document_id}/version:{version.seq}",
            {"kind": kind, "object_key": object_key, "sha256": digest, "size": size},
        )
        return version.id

    @staticmethod
    def _check_order(doc: Document, last: str | None, kind: str) -> None:
        if kind == "received" and doc.direction != "incoming":
            raise VersionOrderError(
                "archive.catalog.version.order", previous=last or "-", kind=kind
            )
        if last is None:
            first = "received" if doc.direction == "incoming" else None
            if first is not None and kind != first:
                raise VersionOrderError("archive.catalog.version.order", previous="-", kind=kind)
            return
        if (
            kind == "received"
            or _RANK[kind] < _RANK[last]
            or (kind == last and kind not in _REPEATABLE)
        ):
            raise VersionOrderError("archive.catalog.version.order", previous=last, kind=kind)

    def add_report(
        self,
        version_id: int,
        report: dict[str, Any],
        *,
        actor: str = "system",
        report_object_key: str | None = None,
    ) -> int:
        """Attach a verification report (the JSON of ``kyso verify``) to a version."""
        indication = report.get("indication")
        if indication not in {"TOTAL_PASSED", "TOTAL_FAILED", "INDETERMINATE"}:
            raise CatalogError("archive.catalog.report.invalid", value=str(indication))
        with self.session(write=True) as s:
            return self._insert_report(s, version_id, report, actor, report_object_key)

    def _insert_report(
        self,
        s: Session,
        version_id: int,
        report: dict[str, Any],
        actor: str,
        report_object_key: str | None,
    ) -> int:
        """:meth:`add_report` inside the caller's transaction (``report`` checked)."""
        indication = report["indication"]
        version = s.get(DocumentVersion, version_id)
        if version is None:
            raise NotFoundError("archive.catalog.version.not_found", id=version_id)
        row = VerificationReport(
            version_id=version_id,
            indication=indication,
            sub_indication=report.get("sub_indication"),
            report_json=json.dumps(report, ensure_ascii=False, sort_keys=True),
            report_object_key=report_object_key,
            created_by=actor,
        )
        s.add(row)
        s.flush()
        audit.append(
            s,
            actor,
            "report.add",
            f"document:{version.document_id}/version:{version.seq}",
            {"report": row.id, "indication": indication, "sub_indication": row.sub_indication},
        )
        return row.id

    # -- reading ---------------------------------------------------------------------------------
    def get(self, document_id: int, *, actor: str, purpose: str | None = None) -> Document:
        """The document with its case file, versions and their reports; the read is logged."""
        with self.session(write=True) as s:
            doc = s.scalars(
                sa.select(Document)
                .where(Document.id == document_id)
                .options(
                    selectinload(Document.case_file),
                    selectinload(Document.versions).selectinload(DocumentVersion.reports),
                )
            ).first()
            if doc is None:
                raise NotFoundError("archive.catalog.document.not_found", id=document_id)
            s.add(AccessEntry(document_id=doc.id, actor=actor, action="read", purpose=purpose))
            return doc

    def log_access(
        self,
        actor: str,
        *,
        document_id: int | None = None,
        version_id: int | None = None,
        action: str = "read",
        purpose: str | None = None,
    ) -> None:
        """Record a read that did not go through :meth:`get` (a download of a version...)."""
        with self.session(write=True) as s:
            s.add(
                AccessEntry(
                    document_id=document_id,
                    version_id=version_id,
                    actor=actor,
                    action=action,
                    purpose=purpose,
                )
            )

    def access_history(self, document_id: int) -> list[AccessEntry]:
        with self.session() as s:
            return list(
                s.scalars(
                    sa.select(AccessEntry)
                    .where(AccessEntry.document_id == document_id)
                    .order_by(AccessEntry.id)
                )
            )

    def search(
        self,
        query: str | None = None,
        *,
        number: int | str | None = None,
        symbol: str | None = None,
        agency: str | None = None,
        type: str | None = None,
        date_from: dt.date | None = None,
        date_to: dt.date | None = None,
        signer: str | None = None,
        case: int | str | None = None,
        direction: str | None = None,
        tenant: str | None = None,
        page: int = 1,
        per_page: int = 20,
    ) -> Page:
        """Documents matching every criterion given, newest first.

        ``query`` matches words of the subject with or without diacritics (``quyet dinh``
        finds ``Quyết định``): every word whole (a Vietnamese word is one syllable) and the
        last one, from three letters, also as a prefix, as it is typed (``phe duy`` finds
        ``phê duyệt``);
        ``signer`` is a substring of the signer's name, also diacritics-insensitive;
        ``agency`` the issuing agency's code; ``tenant`` restricts to one agency's archive
        (``agency_id``).

        The page is read first; the total is counted only when the first page is full (else
        it is the number of rows on it).
        """
        page = max(1, page)
        per_page = min(max(1, per_page), MAX_PER_PAGE)
        conditions: list[Any] = []
        if query:
            words = re.findall(r"\w+", fold(query))
            if words:
                conditions.append(self._subject_match(words))
        if number is not None:
            conditions.append(Document.code_number == normalise_number(number))
        if symbol:
            conditions.append(sa.func.upper(Document.code_notation) == symbol.strip().upper())
        if agency:
            conditions.append(Document.organ_id == agency.strip())
        if type:
            conditions.append(sa.func.lower(Document.type_name) == type.strip().lower())
        if date_from is not None:
            conditions.append(Document.issued_date >= date_from)
        if date_to is not None:
            conditions.append(Document.issued_date <= date_to)
        if signer:
            pattern = "%" + _escape_like(fold(signer)) + "%"
            conditions.append(Document.signer_folded.like(pattern, escape="\\"))
        if direction:
            conditions.append(Document.direction == direction)
        if tenant:
            conditions.append(Document.agency_id == tenant)
        with self.session() as s:
            if case is not None:
                conditions.append(Document.case_file_id == self._case_id(s, case))
            # Newest first: on PostgreSQL the index ix_documents_issued_date_desc (migration
            # 0005) serves this order, so a query matching many rows stops at the page.
            items = list(
                s.scalars(
                    sa.select(Document)
                    .where(*conditions)
                    .order_by(Document.issued_date.desc().nulls_last(), Document.id.desc())
                    .limit(per_page)
                    .offset((page - 1) * per_page)
                )
            )
            if page == 1 and len(items) < per_page:
                total = len(items)
            else:
                # count(*), not count(id): an index-only scan can count a date range
                count = sa.select(sa.func.count()).select_from(Document).where(*conditions)
                total = s.scalar(count) or 0
        return Page(items=items, total=total, page=page, per_page=per_page)

    def _subject_match(self, words: list[str]) -> Any:
        # Whole words, the last also as a prefix when it has three letters or more: a prefix
        # of a short, common syllable ("so:*", "dinh:*") expands to many index entries, each
        # read whole (measured: 2-4 times the GIN time of whole words at 1 M rows,
        # bench/archive.py).
        *whole, last = words
        prefix = len(last) >= PREFIX_MIN
        if self.dialect == "sqlite":
            fts = " ".join([*(f'"{w}"' for w in whole), f'"{last}"*' if prefix else f'"{last}"'])
            return Document.id.in_(
                sa.text("SELECT rowid FROM documents_fts WHERE documents_fts MATCH :fts")
                .bindparams(fts=fts)
                .columns(sa.column("rowid", sa.Integer))
            )
        if self.dialect == "postgresql":
            tsquery = " & ".join([*whole, f"{last}:*" if prefix else last])
            return sa.func.to_tsvector(
                sa.literal_column("'simple'::regconfig"), Document.subject_folded
            ).op("@@")(sa.func.to_tsquery(sa.literal_column("'simple'::regconfig"), tsquery))
        return sa.and_(
            *(Document.subject_folded.like(f"%{_escape_like(w)}%", escape="\\") for w in words)
        )

    # -- audit -----------------------------------------------------------------------------------
    def anchor_audit(self, tsa: Any) -> int | None:
        """Timestamp the audit chain's head now; the anchored seq (None: empty log)."""
        with self.session(write=True) as s:
            row = audit.anchor(s, tsa)
            return None if row is None else row.event_seq

    def verify_audit(
        self, trust_roots: Iterable[Any], *, require_anchor: bool = False
    ) -> audit.AuditVerification:
        with self.session() as s:
            return audit.verify(s, trust_roots, require_anchor=require_anchor)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
