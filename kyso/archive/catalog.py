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
COUNT_CAP = 500
"""A search counts its matches up to this many (exactly below it); beyond, the total says
"more than" (``Page.total_exact`` false).  An exact count of a common word at 1 M rows
costs hundreds of milliseconds (``bench/archive.py``)."""
RECENT_WINDOW = 50_000
"""PostgreSQL: how many of the newest documents a subject search walks (index only) looking
for its page and the capped count before it asks the GIN index instead."""


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
    """The number of matches; a lower bound when ``total_exact`` is false."""
    page: int
    per_page: int
    total_exact: bool = True
    """False when counting stopped early (see :data:`COUNT_CAP`): there are *more than*
    ``total`` matches."""

    @property
    def pages(self) -> int:
        """The number of pages (a lower bound when ``total_exact`` is false)."""
        return max(1, -(-self.total // self.per_page))

    @property
    def has_next(self) -> bool:
        return self.page * self.per_page < self.total or not self.total_exact


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
        self.schema = schema
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
        """One statement: the documents with the same id, and those with the same number,
        symbol and issuing agency in the same year (each found by its own index); a document
        that is both is warned about once, as the same id."""
        conditions: list[Any] = []
        if meta.document_id:
            conditions.append(Document.document_id == meta.document_id)
        year = meta.issued_date.year if meta.issued_date is not None else 0
        if meta.code_number is not None and meta.issued_date is not None:
            same_number = sa.and_(
                Document.organ_id == meta.organ_id,
                Document.code_number == meta.code_number,
                Document.code_notation == meta.code_notation,
                Document.issued_date >= dt.date(year, 1, 1),
                Document.issued_date <= dt.date(year, 12, 31),
                # Another agency's copy (an incoming document it received) is not a duplicate.
                *([Document.agency_id == meta.agency_id] if meta.agency_id is not None else []),
            )
            conditions.append(same_number)
        if not conditions:
            return []
        by_id: list[DuplicateWarning] = []
        by_number: list[DuplicateWarning] = []
        found = s.execute(
            sa.select(Document.id, Document.document_id)
            .where(sa.or_(*conditions))
            .order_by(Document.id)
        )
        for existing, document_id in found:
            if meta.document_id and document_id == meta.document_id:
                by_id.append(
                    DuplicateWarning(
                        "document_id",
                        existing,
                        "archive.catalog.duplicate.document_id",
                        {"document_id": meta.document_id, "existing": existing},
                    )
                )
            else:
                by_number.append(
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
        return by_id + by_number

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
            return self.insert_document(s, meta, case, actor)

    def insert_document(
        self,
        s: Session,
        meta: DocumentMetadata,
        case: int | str | None,
        actor: str,
        warnings: list[DuplicateWarning] | None = None,
    ) -> int:
        """:meth:`add_document` inside the caller's transaction (``meta`` validated);
        ``warnings``: its :meth:`_duplicates` when the caller has just asked them in ``s``.

        The new row stays known to the transaction (see :func:`_inserted`): its first
        :meth:`insert_version` reads nothing back."""
        if warnings is None:
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
        _inserted(s)[("document", row.id)] = row
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
            return self.insert_version(s, document_id, kind, object_key, digest, size, actor)

    def insert_version(
        self,
        s: Session,
        document_id: int,
        kind: str,
        object_key: str,
        digest: str,
        size: int,
        actor: str,
    ) -> int:
        """:meth:`add_version` inside the caller's transaction (arguments checked).

        One statement reads the document and its last version, none at all for the first
        version of a document :meth:`insert_document` has just inserted in this transaction
        (it has no version yet: this one is seq 1).  The new row stays known to the
        transaction (see :func:`_inserted`), so :meth:`insert_report` and ``s.get`` of it
        read nothing back either."""
        known = _inserted(s)
        fresh = known.pop(("document", document_id), None)
        if fresh is not None and sa.inspect(fresh).persistent:
            doc: Document = fresh
            last_seq: int | None = None
            last_kind: str | None = None
        else:
            found = self._document_and_last_version(s, document_id)
            if found is None:
                raise NotFoundError("archive.catalog.document.not_found", id=document_id)
            doc, last_seq, last_kind = found
        self._check_order(doc, last_kind, kind)
        version = DocumentVersion(
            document_id=document_id,
            seq=1 if last_seq is None else last_seq + 1,
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
        known[("version", version.id)] = version
        return version.id

    @staticmethod
    def _document_and_last_version(
        s: Session, document_id: int
    ) -> tuple[Document, int | None, str | None] | None:
        """One statement: the document and the (seq, kind) of its last version (None, None
        when it has none); None when there is no such document."""
        last = (
            sa.select(DocumentVersion.seq, DocumentVersion.kind)
            .where(DocumentVersion.document_id == document_id)
            .order_by(DocumentVersion.seq.desc())
            .limit(1)
            .subquery()
        )
        row = s.execute(
            sa.select(Document, last.c.seq, last.c.kind)
            .outerjoin(last, sa.true())
            .where(Document.id == document_id)
        ).first()
        if row is None:
            return None
        return row[0], row[1], row[2]

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
            return self.insert_report(s, version_id, report, actor, report_object_key)

    def insert_report(
        self,
        s: Session,
        version_id: int,
        report: dict[str, Any],
        actor: str,
        report_object_key: str | None,
    ) -> int:
        """:meth:`add_report` inside the caller's transaction (``report`` checked).  A version
        :meth:`insert_version` has just inserted is in the session already: nothing is read."""
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
        """Record a read that did not go through :meth:`get` (a download of a version...).

        One INSERT on an autocommit connection: a statement alone is its own transaction
        (atomic, committed and durable when it returns, as the database commits), without
        the round trips of BEGIN and COMMIT around it.  The row is an access record only: no
        audit event goes with it, so there is nothing to keep in one transaction."""
        row = {
            "document_id": document_id,
            "version_id": version_id,
            "actor": actor,
            "action": action,
            "purpose": purpose,
        }
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.insert(AccessEntry), row)

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

        The page is read first; matches are then counted up to :data:`COUNT_CAP` (the total
        is exact below it, else a lower bound: ``Page.total_exact`` false) — and not at all
        when the first page is not full.  On PostgreSQL a subject query (alone or with
        ``tenant``) reads the narrow ``documents_search`` table (migration 0007): newest first
        over the :data:`RECENT_WINDOW` newest documents, then, for rarer words, through its
        GIN index.
        """
        page = max(1, page)
        per_page = min(max(1, per_page), MAX_PER_PAGE)
        offset = (page - 1) * per_page
        wanted = max(offset + per_page, COUNT_CAP) + 1  # the page, and one past the count's cap
        words = re.findall(r"\w+", fold(query)) if query else []
        conditions: list[Any] = []
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
        with self.session() as s:
            if case is not None:
                conditions.append(Document.case_file_id == self._case_id(s, case))
            if words and not conditions and self.dialect == "postgresql":
                ids = self._pg_subject_ids(s, words, tenant, wanted)
                exact = len(ids) < wanted
                shown = ids[offset : offset + per_page]
                found = {
                    d.id: d for d in s.scalars(sa.select(Document).where(Document.id.in_(shown)))
                }
                items = [found[i] for i in shown if i in found]
                total = len(ids) if exact else wanted - 1
                return Page(items, total, page, per_page, total_exact=exact)
            if words:
                conditions.append(self._subject_match(words))
            if tenant:
                conditions.append(Document.agency_id == tenant)
            # Newest first: on PostgreSQL the index ix_documents_issued_date_desc (migration
            # 0005) serves this order, so a query matching many rows stops at the page.
            items = list(
                s.scalars(
                    sa.select(Document)
                    .where(*conditions)
                    .order_by(Document.issued_date.desc().nulls_last(), Document.id.desc())
                    .limit(per_page)
                    .offset(offset)
                )
            )
            if page == 1 and len(items) < per_page:
                return Page(items, len(items), page, per_page)
            # count(*) of at most `wanted` rows: an index-only scan can count a date range
            matches = sa.select(sa.literal(1)).select_from(Document).where(*conditions)
            counted = sa.select(sa.func.count()).select_from(matches.limit(wanted).subquery())
            total = int(s.scalar(counted) or 0)
        if total < wanted:
            return Page(items, total, page, per_page)
        return Page(items, wanted - 1, page, per_page, total_exact=False)

    def _pg_subject_ids(
        self, s: Session, words: list[str], tenant: str | None, wanted: int
    ) -> list[int]:
        """The ids of up to ``wanted`` documents whose subject has ``words`` (and of agency
        ``tenant``), newest first, from ``documents_search`` (PostgreSQL, migration 0007).

        First over the :data:`RECENT_WINDOW` newest documents (of ``tenant``), walking the
        index ``([agency_id,] issued_date DESC NULLS LAST, id DESC) INCLUDE (…, subject_tsv)``
        (index only): a common word fills ``wanted`` there in a few milliseconds, where its GIN
        posting lists would have to be read whole and every match sorted.  When that window
        holds fewer, the word is rare (among recent documents): the GIN index finds all its
        matches, few, and they are sorted."""
        tsquery = sa.func.to_tsquery(sa.literal_column("'simple'::regconfig"), _tsquery_text(words))

        def newest(table: Any) -> tuple[Any, Any]:
            return table.c.issued_date.desc().nulls_last(), table.c.id.desc()

        def where(table: Any) -> list[Any]:
            found = [table.c.subject_tsv.op("@@")(tsquery)]
            if tenant:
                found.append(table.c.agency_id == tenant)
            return found

        window = (
            sa.select(
                _SEARCH.c.id, _SEARCH.c.issued_date, _SEARCH.c.agency_id, _SEARCH.c.subject_tsv
            )
            # one agency's newest documents: the index ix_documents_search_agency_newest
            .where(*([_SEARCH.c.agency_id == tenant] if tenant else []))
            .order_by(*newest(_SEARCH))
            .limit(RECENT_WINDOW)
            .subquery()
        )
        recent = (
            sa.select(window.c.id).where(*where(window)).order_by(*newest(window)).limit(wanted)
        )
        ids = _inlined(s, recent)
        if len(ids) >= wanted:
            return ids
        # OFFSET 0 keeps the planner from walking the ordered index with the words as a
        # filter (its estimate for a rare word is far too high: the whole index, measured
        # 430 ms for a word found nowhere): the GIN index finds the matches, then they are
        # sorted.
        matches = (
            sa.select(_SEARCH.c.id, _SEARCH.c.issued_date).where(*where(_SEARCH)).offset(0)
        ).subquery()
        rare = sa.select(matches.c.id).order_by(*newest(matches)).limit(wanted)
        return _inlined(s, rare)

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
            tsquery = _tsquery_text(words)
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


_INSERTED = "kyso.catalog.inserted"


def _inserted(s: Session) -> dict[tuple[str, int], Any]:
    """The rows the session's current transaction has inserted through :class:`Catalog`:
    ``("document", id)`` for a document that has no version yet, ``("version", id)``.

    Held here, they stay in the session's identity map (which holds clean rows only weakly):
    ``s.get`` of them is answered from memory, not by a SELECT of what was just written.
    Tied to the transaction (another one starts empty); a row a rolled-back savepoint took
    back is no longer persistent, and is read again."""
    transaction = s.get_transaction()
    known = s.info.get(_INSERTED)
    if known is None or known[0] is not transaction:
        known = (transaction, {})
        s.info[_INSERTED] = known
    return known[1]


def _tsquery_text(words: list[str]) -> str:
    """The ``to_tsquery`` text of a subject search: every word whole, the last also as a
    prefix from :data:`PREFIX_MIN` letters (``\\w+`` words of folded text: no operators)."""
    *whole, last = words
    return " & ".join([*whole, f"{last}:*" if len(last) >= PREFIX_MIN else last])


def _inlined(s: Session, statement: Any) -> list[int]:
    """The ids ``statement`` selects, its values written into the SQL instead of bound.

    psycopg prepares a statement run five times, and PostgreSQL then switches to a generic
    plan, made without the values: for these statements it walks the whole index or reads
    a GIN posting list whole where the value-specific plan stops after a few thousand rows
    (measured: 7 ms → 70 ms at 1 M rows).  The values are integers and a tsquery built of
    ``\\w+`` words (:func:`_tsquery_text`), rendered as SQL literals by SQLAlchemy."""
    sql = statement.compile(dialect=s.get_bind().dialect, compile_kwargs={"literal_binds": True})
    return [int(v) for v in s.connection().exec_driver_sql(str(sql)).scalars()]


_SEARCH = sa.table(
    "documents_search",
    sa.column("id", sa.Integer),
    sa.column("issued_date", sa.Date),
    sa.column("agency_id", sa.String),
    sa.column("subject_tsv"),
)
"""PostgreSQL's narrow search table (migration 0007, kept in step by a trigger)."""


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
