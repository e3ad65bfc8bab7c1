"""Putting documents into the archive and getting them back: :class:`Archive`.

An ingest cannot half-happen.  :meth:`Archive.put` works in this order:

1. hash the file; if the catalogue already holds a version with that SHA-256 (of this
   document; or, for a new document, of a document of the *same agency*,
   ``metadata.agency_id``), the existing record is returned (idempotent by content hash; the
   object is re-written when it had gone missing).  Another agency archiving the same bytes
   (a document it received from the first) gets a record of its own: the catalogue never
   hands one agency's record to another.  The object itself is shared (storage is
   content-addressed) and keeps the longest retention any of its records asks;
2. validate the metadata, check the document and the version order (nothing written yet);
3. verify the PDF (``kyso verify``); its report is kept with the version;
4. write the object (and the report's JSON) to the store, which hashes what it wrote
   (``LocalStore``) or reads it back (``S3Store``); the result is checked against step 1;
5. in **one** catalogue transaction: the document row (when new), the version row, the
   report row and their audit events.  The transaction first takes a lock that serialises
   ingests of the same content by the same agency (or of versions of the same document: a
   PostgreSQL advisory lock, SQLite's write lock) and checks step 1 again, so two processes
   archiving the same file at once make one record: the second gets the first's
   (``created=False``), its verification report attached to it.  The unique index on
   (sha256, document_id) backs this up.

Retention (when enabled, ``retention_years > 0``): every object is written with the retention
of its record's retention period (Thời hạn bảo quản, the case file's Maintenance): ``N năm``
→ N years, ``Vĩnh viễn`` → ``permanent_retention_years``; a document outside a case file, or
a Maintenance that is neither, gets ``retention_years``.  The period runs from the ingest.

A crash or a store error before step 5 commits leaves no catalogue rows; objects written by
step 4 without their rows are *orphans*, which :meth:`Archive.reconcile` lists (and a retry of
the same put adopts them: storage is content-addressed).  Rows whose object is gone are
*missing*.  ``reconcile(repair=True)`` never deletes anything (an orphan may be the only copy
of a record whose catalogue was restored from an older backup): it writes each finding into
the tamper-evident audit log (``reconcile.orphan`` / ``reconcile.missing``) so that it is on
record, and re-uploads nothing it cannot prove; putting the file again adopts an orphan, and a
missing object is restored by putting the original file (same SHA-256) again.

:meth:`Archive.fixity` re-reads every object the catalogue names (or a random sample),
re-hashing it, and returns one aggregated :class:`FixityReport`.

Test-only fault injection: when the environment variable ``KYSO_TEST_CRASH_AFTER_OBJECT_WRITE``
is set to ``1``, the process ends (``os._exit(137)``) right after step 4, as a power cut
would; unset, the check does nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import random
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload

from kyso.archive import audit
from kyso.archive.catalog import (
    Catalog,
    DuplicateWarning,
    NotFoundError,
    VersionOrderError,
)
from kyso.archive.errors import ObjectCorrupt, ObjectMissing, StorageError
from kyso.archive.metadata import CatalogError, DocumentMetadata, fold
from kyso.archive.models import (
    VERSION_KINDS,
    CaseFile,
    Document,
    DocumentVersion,
    VerificationReport,
)
from kyso.archive.storage import ObjectStore, Retention, RetentionMode, StoredObject, key_for

__all__ = [
    "CRASH_AFTER_OBJECT_WRITE",
    "Archive",
    "FixityReport",
    "IngestError",
    "IngestResult",
    "ReconcileReport",
    "retention_period",
]

CRASH_AFTER_OBJECT_WRITE = "KYSO_TEST_CRASH_AFTER_OBJECT_WRITE"
"""Test-only fault injection point (see the module's docstring)."""

_CHUNK = 1024 * 1024

Verifier = Callable[[Path], dict[str, Any]]
"""Verifies a PDF; returns the report's JSON (``VerificationReport.to_dict()``)."""
Progress = Callable[[int, int], None]
"""Called with (done, total) as a long operation advances."""


class IngestError(CatalogError):
    """An ingest was refused (the message says why); nothing was stored."""

    code = "archive.ingest.error"


@dataclass(frozen=True)
class IngestResult:
    document_id: int
    version_id: int
    version_seq: int
    kind: str
    sha256: str
    size: int
    object_key: str
    created: bool
    """False when the same bytes were already archived (idempotent put)."""
    indication: str | None = None
    sub_indication: str | None = None
    report_object_key: str | None = None
    duplicate_warnings: list[DuplicateWarning] = field(default_factory=list)

    def as_dict(self, locale: str | None = None) -> dict[str, Any]:
        return {
            "document_id": self.document_id,
            "version_id": self.version_id,
            "version": self.version_seq,
            "kind": self.kind,
            "sha256": self.sha256,
            "size": self.size,
            "object_key": self.object_key,
            "created": self.created,
            "indication": self.indication,
            "sub_indication": self.sub_indication,
            "report_object_key": self.report_object_key,
            "duplicate_warnings": [w.message(locale) for w in self.duplicate_warnings],
        }


@dataclass(frozen=True)
class MissingObject:
    document_id: int | None
    version_seq: int | None
    key: str
    what: str
    """``version`` or ``report``."""


@dataclass
class ReconcileReport:
    objects: int = 0
    """Objects in the store."""
    keys: int = 0
    """Object keys the catalogue names."""
    orphans: list[StoredObject] = field(default_factory=list)
    """In the store, not in the catalogue."""
    missing: list[MissingObject] = field(default_factory=list)
    """In the catalogue, not in the store."""
    recorded: int = 0
    """Findings written to the audit log by ``repair=True``."""

    @property
    def ok(self) -> bool:
        return not self.orphans and not self.missing

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "objects": self.objects,
            "keys": self.keys,
            "orphans": [{"key": o.key, "size": o.size} for o in self.orphans],
            "missing": [
                {
                    "key": m.key,
                    "document_id": m.document_id,
                    "version": m.version_seq,
                    "what": m.what,
                }
                for m in self.missing
            ],
            "recorded": self.recorded,
        }


@dataclass
class FixityReport:
    total: int = 0
    """Objects the catalogue names."""
    checked: int = 0
    ok: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    """(key, reason): the store could not be read (try again later)."""

    @property
    def passed(self) -> bool:
        return not self.missing and not self.corrupt and not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "total": self.total,
            "checked": self.checked,
            "ok": self.ok,
            "bytes": self.bytes,
            "missing": self.missing,
            "corrupt": self.corrupt,
            "errors": [{"key": k, "reason": r} for k, r in self.errors],
        }


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@contextmanager
def _read_session(catalog: Catalog) -> Iterator[Session]:
    """A session for reads only, on an autocommit connection: each statement sees what was
    committed at its moment, with no BEGIN and COMMIT around them (two round trips on
    PostgreSQL).  Only for reads that need no consistency between their statements, or
    whose result a write transaction checks again (as ``put`` does under its lock)."""
    with (
        catalog.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
        Session(bind=conn, expire_on_commit=False) as session,
    ):
        yield session


_LOCK_NAMESPACE = 0x6B79_736F  # "kyso": the first key of the two-key advisory locks below


def _lock_content(s: Any, sha256: str, document: int | None, agency: str | None) -> None:
    """Serialise, until the end of ``s``'s transaction, ingests that could race: of the same
    bytes as a new document of the same agency, or of any version of the same document.

    PostgreSQL: a transaction-level advisory lock on (content hash, agency) for new documents,
    on the document otherwise.  SQLite needs nothing more: the session was opened with
    ``write=True`` (``BEGIN IMMEDIATE``, the database's write lock), so what is read next is
    current."""
    if s.get_bind().dialect.name == "postgresql":
        if document is None:
            scoped = hashlib.sha256(f"{sha256}\0{agency or ''}".encode()).digest()
            key = int.from_bytes(scoped[:4], "big", signed=True)
            space = _LOCK_NAMESPACE
        else:
            key = int(document)
            space = _LOCK_NAMESPACE + 1
        s.execute(
            sa.text("SELECT pg_advisory_xact_lock(:space, :key)"), {"space": space, "key": key}
        )


def _existing_in(
    s: Any, sha256: str, document: int | None, agency: str | None
) -> DocumentVersion | None:
    """The version already holding these bytes: of ``document`` when one is named, else of a
    document of ``agency`` (``None``: of a document without agency) — never another agency's.
    """
    query = sa.select(DocumentVersion).where(DocumentVersion.sha256 == sha256)
    if document is not None:
        query = query.where(DocumentVersion.document_id == document)
    else:
        owner = Document.agency_id.is_(None) if agency is None else Document.agency_id == agency
        query = query.join(Document, Document.id == DocumentVersion.document_id).where(owner)
    return s.scalars(query.order_by(DocumentVersion.id).limit(1)).first()


_YEARS = re.compile(r"(\d{1,4})\s*(?:nam|years?)")
_PERMANENT = ("vinh vien", "permanent")


def retention_period(maintenance: str | None) -> int | Literal["permanent"] | None:
    """The retention period a Maintenance (Thời hạn bảo quản) names: a number of years
    (``10 năm``, ``10 years``), ``"permanent"`` (``Vĩnh viễn``), or None (empty or another
    text: the archive's default applies).  Case and diacritics do not matter."""
    folded = " ".join(fold(maintenance).split())
    if not folded:
        return None
    if folded in _PERMANENT:
        return "permanent"
    found = _YEARS.fullmatch(folded)
    if found is not None and int(found.group(1)) > 0:
        return int(found.group(1))
    return None


def _crash_point() -> None:
    if os.environ.get(CRASH_AFTER_OBJECT_WRITE) == "1":
        os._exit(137)


class Archive:
    """Documents in an object store, described in a catalogue."""

    def __init__(
        self,
        catalog: Catalog,
        store: ObjectStore,
        *,
        verifier: Verifier | None = None,
        retention_years: int = 0,
        retention_mode: RetentionMode = "GOVERNANCE",
        permanent_retention_years: int = 100,
        now: Callable[[], dt.datetime] | None = None,
    ) -> None:
        """:param retention_years: 0: objects get no retention at all; else the retention of
            an object whose record has no retention period of its own (see the module's
            docstring).
        :param permanent_retention_years: the retention of records kept permanently
            (``Vĩnh viễn``)."""
        if permanent_retention_years <= 0:
            raise ValueError("permanent_retention_years must be positive")
        self.catalog = catalog
        self.store = store
        self.verifier = verifier
        self.retention_years = retention_years
        self.retention_mode: RetentionMode = retention_mode
        self.permanent_retention_years = permanent_retention_years
        self._now = now or (lambda: dt.datetime.now(dt.UTC))

    # -- put ---------------------------------------------------------------------------------
    def retention(self, maintenance: str | None = None) -> Retention | None:
        """The retention a new object gets (None: retention disabled): from now, for the
        retention period ``maintenance`` names (see :func:`retention_period`), else the
        configured default."""
        if self.retention_years <= 0:
            return None
        period = retention_period(maintenance)
        if period == "permanent":
            years = self.permanent_retention_years
        elif period is None:
            years = self.retention_years
        else:
            years = period
        now = self._now()
        try:
            until = now.replace(year=now.year + years)
        except ValueError:  # 29 February
            until = now.replace(year=now.year + years, day=28)
        return Retention(self.retention_mode, until)

    def retention_for_document(self, document_id: int) -> Retention | None:
        """The retention new objects of this document get (its case file's period)."""
        with self.catalog.session() as s:
            maintenance = s.scalar(
                sa.select(CaseFile.maintenance)
                .join(Document, Document.case_file_id == CaseFile.id)
                .where(Document.id == document_id)
            )
        return self.retention(maintenance)

    def _existing(
        self, sha256: str, document_id: int | None, agency: str | None = None
    ) -> DocumentVersion | None:
        with self.catalog.session() as s:
            return _existing_in(s, sha256, document_id, agency)

    def _plan(
        self,
        sha256: str,
        document: int | None,
        agency: str | None,
        case: int | str | None,
    ) -> tuple[DocumentVersion | None, str | None]:
        """One read: the version already holding these bytes (see :func:`_existing_in`), and
        the Maintenance of the case file the record is (or will be) in.  No transaction: the
        insert transaction checks the first again under its lock."""
        with _read_session(self.catalog) as s:
            existing = _existing_in(s, sha256, document, agency)
            target = existing.document_id if existing is not None else document
            if target is not None:
                maintenance = s.scalar(
                    sa.select(CaseFile.maintenance)
                    .join(Document, Document.case_file_id == CaseFile.id)
                    .where(Document.id == target)
                )
            elif case is not None:
                case_id = self.catalog._case_id(s, case)
                maintenance = s.scalar(
                    sa.select(CaseFile.maintenance).where(CaseFile.id == case_id)
                )
            else:
                maintenance = None
        return existing, maintenance

    def _result_for(self, version: DocumentVersion, created: bool) -> IngestResult:
        with self.catalog.session() as s:
            report = s.scalars(
                sa.select(VerificationReport)
                .where(VerificationReport.version_id == version.id)
                .order_by(VerificationReport.id.desc())
                .limit(1)
            ).first()
        return IngestResult(
            document_id=version.document_id,
            version_id=version.id,
            version_seq=version.seq,
            kind=version.kind,
            sha256=version.sha256,
            size=version.size,
            object_key=version.object_key,
            created=created,
            indication=report.indication if report else None,
            sub_indication=report.sub_indication if report else None,
            report_object_key=report.report_object_key if report else None,
        )

    def _precheck(self, document: int, kind: str) -> None:
        """The document exists and ``kind`` may follow its last version (read only: one
        statement, no transaction; the insert transaction checks again under its lock)."""
        with _read_session(self.catalog) as s:
            found = Catalog._document_and_last_version(s, document)
            if found is None:
                raise NotFoundError("archive.catalog.document.not_found", id=document)
            doc, _, last = found
            Catalog._check_order(doc, last, kind)

    def put(
        self,
        path: Path | str,
        metadata: DocumentMetadata | None = None,
        *,
        case: int | str | None = None,
        document: int | None = None,
        kind: str | None = None,
        actor: str,
        verify: bool = True,
    ) -> IngestResult:
        """Archive the file at ``path``.

        Either ``metadata`` (a new document, optionally in case file ``case``) or
        ``document`` (a new version of that document) is given.  ``kind`` is the version's
        kind (default: ``received`` for an incoming document, else ``draft`` for an unsigned
        file, else what its signatures show: see :func:`kind_from_report`)."""
        path = Path(path)
        if (metadata is None) == (document is None):
            raise IngestError("archive.ingest.metadata_or_document")
        if kind is not None and kind not in VERSION_KINDS:
            raise VersionOrderError("archive.catalog.version.kind", kind=kind)
        if metadata is not None:
            metadata.validate()  # also settles agency_id (an outgoing document's: its issuer)
        sha256, size = _hash_file(path)
        agency = metadata.agency_id if metadata is not None else None
        existing, maintenance = self._plan(sha256, document, agency, case)
        if existing is not None:
            if not self.store.exists(existing.object_key):
                self.store.put(path, sha256=sha256, retention=self.retention(maintenance))
            return self._result_for(existing, created=False)

        warnings: list[DuplicateWarning] = []
        report: dict[str, Any] | None = None
        if verify and self.verifier is not None:
            report = self.verifier(path)
        if kind is None:
            kind = self._default_kind(metadata, document, report)
        if document is not None:
            self._precheck(document, kind)
        elif metadata is not None and metadata.direction == "incoming" and kind != "received":
            raise VersionOrderError("archive.catalog.version.order", previous="-", kind=kind)

        retention = self.retention(maintenance)
        stored = self.store.put(path, sha256=sha256, retention=retention)
        if stored.sha256 != sha256 or stored.size != size:
            raise ObjectCorrupt(name=stored.key)
        report_key: str | None = None
        if report is not None:
            data = json.dumps(report, ensure_ascii=False, sort_keys=True, indent=1).encode()
            report_key = self.store.put(
                io.BytesIO(data), retention=retention, content_type="application/json"
            ).key
        _crash_point()

        try:
            with self.catalog.session(write=True) as s:
                _lock_content(s, sha256, document, agency)
                raced = _existing_in(s, sha256, document, agency)
                if raced is not None:
                    # Another process archived the same bytes since the check above: theirs
                    # is the record.  Our report (an object already written) is kept with it.
                    if report is not None:
                        self.catalog.insert_report(s, raced.id, report, actor, report_key)
                    lost_race: DocumentVersion | None = raced
                else:
                    lost_race = None
                    if document is None:
                        assert metadata is not None
                        # Appendix VI duplicates, asked once, in the transaction that
                        # inserts (returned to the caller and recorded in the audit event)
                        warnings = self.catalog._duplicates(s, metadata)
                        doc_id = self.catalog.insert_document(s, metadata, case, actor, warnings)
                    else:
                        doc_id = document
                    # The rows just inserted stay in the session (catalog._inserted): the
                    # first version of a new document reads nothing back, and neither do the
                    # report's version nor the seq below.
                    version_id = self.catalog.insert_version(
                        s, doc_id, kind, stored.key, sha256, size, actor
                    )
                    if report is not None:
                        self.catalog.insert_report(s, version_id, report, actor, report_key)
                    new_version = s.get(DocumentVersion, version_id)
                    version_seq = new_version.seq if new_version is not None else 1
        except sa.exc.IntegrityError:
            # The unique (document_id, sha256) index caught a race the lock did not cover
            # (a writer without it): the same bytes are already a version of this document.
            lost_race = self._existing(sha256, document, agency)
            if lost_race is None:
                # other bytes took the same place in the version chain at the same moment
                # (the unique (document_id, seq)): the caller's view of the document is stale
                raise VersionOrderError(
                    "archive.catalog.version.concurrent", id=document if document else "-"
                ) from None
        if lost_race is not None:
            return self._result_for(lost_race, created=False)
        return IngestResult(
            document_id=doc_id,
            version_id=version_id,
            version_seq=version_seq,
            kind=kind,
            sha256=sha256,
            size=size,
            object_key=stored.key,
            created=True,
            indication=report.get("indication") if report else None,
            sub_indication=report.get("sub_indication") if report else None,
            report_object_key=report_key,
            duplicate_warnings=warnings,
        )

    def _default_kind(
        self,
        metadata: DocumentMetadata | None,
        document: int | None,
        report: dict[str, Any] | None,
    ) -> str:
        if metadata is not None and metadata.direction == "incoming":
            return "received"
        if document is not None:
            with _read_session(self.catalog) as s:
                doc = s.get(Document, document)
                if doc is not None and doc.direction == "incoming":
                    return "received"
        return kind_from_report(report)

    # -- get ---------------------------------------------------------------------------------
    def get(
        self,
        document_id: int,
        target: Path | str,
        *,
        version: int | None = None,
        actor: str,
        purpose: str | None = None,
    ) -> DocumentVersion:
        """Write the document's version ``version`` (default: the latest) to ``target``,
        bit-identical: the bytes are hashed as they stream and ``target`` appears only when
        the SHA-256 matches the catalogue's (else :class:`ObjectCorrupt`).

        Logged as **one** access row: ``download`` (with the version) once the verified bytes
        are in ``target``; ``read`` when the document exists but no bytes were delivered (no
        such version, the object missing or corrupt, the store down), so an attempt is on
        record too.  (It used to be two rows, ``read`` and then ``download``.)  The
        catalogue is read without a transaction (one statement in the usual case): the only
        write is the access row."""
        with _read_session(self.catalog) as s:
            # one statement: the version with its reports (as the caller gets it)
            query = (
                sa.select(DocumentVersion)
                .where(DocumentVersion.document_id == document_id)
                .options(joinedload(DocumentVersion.reports))
            )
            if version is None:
                query = query.order_by(DocumentVersion.seq.desc()).limit(1)
            else:
                query = query.where(DocumentVersion.seq == version)
            chosen = s.scalars(query).unique().first()
            if chosen is None and s.get(Document, document_id) is None:
                raise NotFoundError("archive.catalog.document.not_found", id=document_id)
        try:
            if chosen is None:
                if version is None:
                    raise NotFoundError("archive.ingest.no_versions", id=document_id)
                raise NotFoundError("archive.ingest.no_such_version", id=document_id, seq=version)
            if chosen.object_key != key_for(chosen.sha256):
                raise ObjectCorrupt(name=chosen.object_key)
            self.store.get(chosen.object_key, Path(target))
        except Exception:
            # nothing delivered: the attempt (the catalogue was read) is on record
            self.catalog.log_access(
                actor, document_id=document_id, action="read", purpose=purpose or "download"
            )
            raise
        self.catalog.log_access(
            actor,
            document_id=document_id,
            version_id=chosen.id,
            action="download",
            purpose=purpose or "download",
        )
        return chosen

    # -- reconcile -----------------------------------------------------------------------------
    def _known_keys(self) -> dict[str, MissingObject]:
        known: dict[str, MissingObject] = {}
        with self.catalog.session() as s:
            versions = sa.select(
                DocumentVersion.document_id, DocumentVersion.seq, DocumentVersion.object_key
            )
            for v in s.execute(versions):
                known.setdefault(
                    v.object_key, MissingObject(v.document_id, v.seq, v.object_key, "version")
                )
            for r in s.execute(
                sa.select(
                    DocumentVersion.document_id,
                    DocumentVersion.seq,
                    VerificationReport.report_object_key,
                )
                .join(DocumentVersion, DocumentVersion.id == VerificationReport.version_id)
                .where(VerificationReport.report_object_key.is_not(None))
            ):
                known.setdefault(
                    r.report_object_key,
                    MissingObject(r.document_id, r.seq, r.report_object_key, "report"),
                )
        return known

    def reconcile(self, *, repair: bool = False, actor: str = "system") -> ReconcileReport:
        """Objects without catalogue rows (orphans) and rows without objects (missing).

        ``repair=True`` records every finding in the audit log (nothing is deleted; see the
        module's docstring for how each kind is then resolved)."""
        known = self._known_keys()
        result = ReconcileReport(keys=len(known))
        present: set[str] = set()
        for obj in self.store.iter_objects():
            result.objects += 1
            present.add(obj.key)
            if obj.key not in known:
                result.orphans.append(obj)
        for key, info in sorted(known.items()):
            if key not in present and not self.store.exists(key):
                result.missing.append(info)
        if repair and not result.ok:
            with self.catalog.session() as s:
                for orphan in result.orphans:
                    audit.append(
                        s,
                        actor,
                        "reconcile.orphan",
                        f"object:{orphan.key}",
                        {"size": orphan.size},
                    )
                    result.recorded += 1
                for miss in result.missing:
                    audit.append(
                        s,
                        actor,
                        "reconcile.missing",
                        f"document:{miss.document_id}/version:{miss.version_seq}",
                        {"object_key": miss.key, "what": miss.what},
                    )
                    result.recorded += 1
        return result

    # -- fixity --------------------------------------------------------------------------------
    def fixity(
        self,
        *,
        sample: int | None = None,
        progress: Progress | None = None,
        actor: str = "system",
        rng: random.Random | None = None,
    ) -> FixityReport:
        """Re-read and re-hash every object the catalogue names (or ``sample`` of them, at
        random); one aggregated report, also recorded in the audit log (``fixity.run``)."""
        keys = sorted(self._known_keys())
        result = FixityReport(total=len(keys))
        if sample is not None and 0 <= sample < len(keys):
            keys = sorted((rng or random.SystemRandom()).sample(keys, sample))
        for done, key in enumerate(keys, 1):
            result.checked += 1
            try:
                with self.store.open(key) as stream:
                    while chunk := stream.read(_CHUNK):
                        result.bytes += len(chunk)
                result.ok += 1
            except ObjectMissing:
                result.missing.append(key)
            except ObjectCorrupt:
                result.corrupt.append(key)
            except StorageError as exc:
                result.errors.append((key, exc.message("en")))
            except OSError as exc:
                result.errors.append((key, exc.strerror or type(exc).__name__))
            if progress is not None:
                progress(done, len(keys))
        with self.catalog.session() as s:
            audit.append(
                s,
                actor,
                "fixity.run",
                "archive",
                {
                    "total": result.total,
                    "checked": result.checked,
                    "ok": result.ok,
                    "missing": result.missing,
                    "corrupt": result.corrupt,
                    "errors": [k for k, _ in result.errors],
                },
            )
        return result


def kind_from_report(report: dict[str, Any] | None) -> str:
    """The stage a file has reached, read from its verification report: ``sealed`` once an
    organisation (the agency) has signed, ``person_signed`` with a person's signature only,
    ``draft`` without signatures. A registered file (number written, no new signature) and an
    LTV extension are recorded as such only when the caller says so with ``kind``."""
    found = (report or {}).get("signatures", [])
    signatures = [s for s in found if s.get("kind", "signature") == "signature"]
    if not signatures:
        return "draft"
    kinds = {(s.get("signer") or {}).get("kind") for s in signatures}
    return "sealed" if "organisation" in kinds else "person_signed"
