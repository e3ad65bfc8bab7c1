"""Archive.put/get/reconcile/fixity on SQLite and PostgreSQL, with the local store (and S3
for the round trip)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kyso.archive.catalog import Catalog, NotFoundError, VersionOrderError
from kyso.archive.errors import ObjectCorrupt
from kyso.archive.ingest import Archive, IngestError, IngestResult, retention_period
from kyso.archive.metadata import CaseFileMetadata, DocumentMetadata, MetadataError
from kyso.archive.models import AuditEvent, Document, DocumentVersion
from kyso.archive.storage import LocalStore, ObjectStore
from tests.archive.test_migrations import DATABASES, catalog_for


def fake_report(path: Path) -> dict[str, Any]:
    """What the verifier returns, without signing anything (the CLI test verifies for real)."""
    return {
        "indication": "INDETERMINATE",
        "sub_indication": "TRY_LATER",
        "file": {"name": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()},
        "signatures": [{"index": 0}],
    }


def meta(
    number: int = 12, subject: str = "Quyết định về việc phê duyệt kế hoạch"
) -> DocumentMetadata:
    return DocumentMetadata(
        organ_id="G06.01",
        code_number=number,
        code_notation="QĐ-BNV",
        issued_date=dt.date(2025, 3, 15),
        type_name="Quyết định",
        organ_name="Bộ Nội vụ",
        subject=subject,
        signer_full_name="Nguyễn Văn An",
    )


def pdf(tmp_path: Path, name: str, body: bytes = b"") -> Path:
    path = tmp_path / name
    path.write_bytes(b"%PDF-1.7\n" + name.encode() + body + os.urandom(16) + b"\n%%EOF\n")
    return path


@pytest.fixture(params=DATABASES)
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    with catalog_for(request.param, tmp_path) as c:
        yield c


@pytest.fixture
def archive(catalog: Catalog, local_store: LocalStore) -> Archive:
    return Archive(catalog, local_store, verifier=fake_report, retention_years=0)


def _count(catalog: Catalog, model: Any) -> int:
    with catalog.session() as s:
        return int(s.scalar(sa.select(sa.func.count()).select_from(model)) or 0)


def test_round_trip(archive: Archive, tmp_path: Path) -> None:
    source = pdf(tmp_path, "qd.pdf")
    result = archive.put(source, meta(), actor="vanthu")
    assert result.created and result.version_seq == 1
    assert result.kind == "person_signed"  # the report found a signature
    assert result.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert result.indication == "INDETERMINATE" and result.report_object_key
    assert archive.store.exists(result.object_key)
    assert archive.store.exists(result.report_object_key)

    target = tmp_path / "out" / "copy.pdf"
    version = archive.get(result.document_id, target, actor="luutru")
    assert target.read_bytes() == source.read_bytes()
    assert version.seq == 1
    actions = [a.action for a in archive.catalog.access_history(result.document_id)]
    assert actions == ["download"]  # one row per Archive.get: the verified download

    doc = archive.catalog.get(result.document_id, actor="t")
    [v] = doc.versions
    assert v.reports[0].indication == "INDETERMINATE"
    assert archive.catalog.search("quyet dinh phe duyet").total == 1
    with archive.catalog.session() as s:
        events = [e.action for e in s.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq))]
    assert events == ["document.add", "version.add", "report.add"]
    assert archive.catalog.verify_audit([]).ok


def test_round_trip_on_s3(catalog: Catalog, s3_store: ObjectStore, tmp_path: Path) -> None:
    archive = Archive(catalog, s3_store, verifier=fake_report, retention_years=1)
    source = pdf(tmp_path, "s3.pdf")
    result = archive.put(source, meta(), actor="vanthu")
    stat = s3_store.stat(result.object_key)
    assert stat.retention is not None and stat.retention.mode == "GOVERNANCE"
    target = tmp_path / "back.pdf"
    archive.get(result.document_id, target, actor="luutru")
    assert target.read_bytes() == source.read_bytes()
    assert archive.reconcile().ok


def test_put_is_idempotent_by_content(archive: Archive, tmp_path: Path) -> None:
    source = pdf(tmp_path, "a.pdf")
    first = archive.put(source, meta(), actor="vanthu")
    again = archive.put(source, meta(number=13), actor="vanthu")
    assert not again.created
    assert (again.document_id, again.version_id) == (first.document_id, first.version_id)
    assert _count(archive.catalog, Document) == 1
    assert _count(archive.catalog, DocumentVersion) == 1


def test_versions_of_a_document(archive: Archive, tmp_path: Path) -> None:
    first = archive.put(pdf(tmp_path, "signed.pdf"), meta(), actor="vanthu")
    sealed = archive.put(
        pdf(tmp_path, "sealed.pdf"), document=first.document_id, kind="sealed", actor="vanthu"
    )
    assert (sealed.document_id, sealed.version_seq, sealed.kind) == (first.document_id, 2, "sealed")
    objects = sum(1 for _ in archive.store.iter_objects())
    # a version out of order is refused before anything is written
    with pytest.raises(VersionOrderError):
        archive.put(
            pdf(tmp_path, "late.pdf"), document=first.document_id, kind="registered", actor="x"
        )
    with pytest.raises(NotFoundError):
        archive.put(pdf(tmp_path, "nodoc.pdf"), document=999, kind="sealed", actor="x")
    assert sum(1 for _ in archive.store.iter_objects()) == objects
    target = tmp_path / "v1.pdf"
    archive.get(first.document_id, target, version=1, actor="x")
    assert target.read_bytes() == (tmp_path / "signed.pdf").read_bytes()
    with pytest.raises(NotFoundError):
        archive.get(first.document_id, target, version=7, actor="x")


def test_bad_metadata_stores_nothing(archive: Archive, tmp_path: Path) -> None:
    bad = meta()
    bad.subject = " "
    with pytest.raises(MetadataError) as info:
        archive.put(pdf(tmp_path, "x.pdf"), bad, actor="x")
    assert info.value.params["field"] == "subject"
    with pytest.raises(IngestError):
        archive.put(pdf(tmp_path, "y.pdf"), actor="x")
    assert list(archive.store.iter_objects()) == []
    assert _count(archive.catalog, Document) == 0


def test_reconcile_reports_and_records(archive: Archive, tmp_path: Path) -> None:
    kept = archive.put(pdf(tmp_path, "kept.pdf"), meta(), actor="vanthu")
    lost = archive.put(pdf(tmp_path, "lost.pdf"), meta(number=20), actor="vanthu")
    orphan = archive.store.put(io.BytesIO(b"%PDF-1.7 orphan"))
    archive.store.delete(lost.object_key)  # no retention in this archive
    report = archive.reconcile()
    assert not report.ok
    assert [o.key for o in report.orphans] == [orphan.key]
    assert [(m.key, m.document_id, m.version_seq) for m in report.missing] == [
        (lost.object_key, lost.document_id, 1)
    ]
    assert report.recorded == 0
    repaired = archive.reconcile(repair=True, actor="auditor")
    assert repaired.recorded == 2
    with archive.catalog.session() as s:
        actions = [e.action for e in s.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq))]
    assert actions[-2:] == ["reconcile.orphan", "reconcile.missing"]
    # putting the original again restores the missing object
    archive.put(tmp_path / "lost.pdf", meta(number=20), actor="vanthu")
    assert archive.reconcile().missing == []
    assert kept.object_key not in {o.key for o in archive.reconcile().orphans}


def test_fixity_sweep_is_aggregated(archive: Archive, tmp_path: Path) -> None:
    results = [
        archive.put(pdf(tmp_path, f"{i}.pdf"), meta(number=i), actor="v") for i in range(1, 5)
    ]
    clean = archive.fixity()
    assert clean.passed and clean.total == clean.checked == clean.ok == 8  # 4 PDFs, 4 reports
    bad = archive.store.root / results[0].object_key  # type: ignore[attr-defined]
    bad.chmod(0o644)
    bad.write_bytes(b"%PDF-1.7 swapped")
    archive.store.delete(results[1].object_key)
    seen: list[tuple[int, int]] = []
    report = archive.fixity(progress=lambda done, total: seen.append((done, total)))
    assert not report.passed
    assert report.corrupt == [results[0].object_key]
    assert report.missing == [results[1].object_key]
    assert report.ok == 6 and seen[-1] == (8, 8)
    sampled = archive.fixity(sample=3, rng=random.Random(1))
    assert sampled.checked == 3 and sampled.total == 8
    with pytest.raises(ObjectCorrupt):
        archive.get(results[0].document_id, tmp_path / "nope.pdf", actor="x")
    assert not (tmp_path / "nope.pdf").exists()


# -- tenancy of idempotency ---------------------------------------------------------------------


def test_the_same_bytes_in_two_agencies_are_two_records(archive: Archive, tmp_path: Path) -> None:
    """Agency B archiving the file it received from agency A gets a record of its own: the
    "already archived?" check never hands out another agency's record."""
    source = pdf(tmp_path, "shared.pdf")
    mine = meta()
    mine.agency_id = "G06.01"
    first = archive.put(source, mine, actor="a")
    theirs = meta()
    theirs.agency_id = "H40.01"
    other = archive.put(source, theirs, actor="b")
    assert other.created and other.document_id != first.document_id
    assert other.sha256 == first.sha256 and other.object_key == first.object_key
    with archive.catalog.session() as s:
        owners = dict(s.execute(sa.select(Document.id, Document.agency_id)).all())
    assert owners == {first.document_id: "G06.01", other.document_id: "H40.01"}
    # each agency's repeat finds its own record
    again = meta()
    again.agency_id = "H40.01"
    repeat = archive.put(source, again, actor="b")
    assert (repeat.document_id, repeat.created) == (other.document_id, False)
    again_a = archive.put(source, meta(), actor="a")  # agency_id defaults to the issuer
    assert (again_a.document_id, again_a.created) == (first.document_id, False)
    # a document without agency (an incoming one archived without owner) is separate too
    incoming = meta()
    incoming.direction = "incoming"
    unowned = archive.put(source, incoming, actor="c")
    assert unowned.created and unowned.document_id not in owners
    assert _count(archive.catalog, Document) == 3
    # one object in the store (content-addressed), three records pointing to it
    assert [o.key for o in archive.store.iter_objects() if o.key == first.object_key] == [
        first.object_key
    ]
    assert archive.reconcile().ok


# -- retention per the record's retention period -------------------------------------------------


@pytest.mark.parametrize(
    ("maintenance", "expected"),
    [
        ("10 năm", 10),
        ("  70  NĂM ", 70),
        ("5 nam", 5),
        ("20 years", 20),
        ("Vĩnh viễn", "permanent"),
        ("VINH VIEN", "permanent"),
        ("0 năm", None),
        ("Theo quy định", None),
        ("", None),
        (None, None),
        ("10 năm 5 tháng", None),
    ],
)
def test_retention_period_of_a_maintenance(maintenance: str | None, expected: Any) -> None:
    assert retention_period(maintenance) == expected


def _case(catalog: Catalog, notation: str, maintenance: str) -> int:
    return catalog.add_case(
        CaseFileMetadata(
            organ_id="G06.01",
            file_catalog=2025,
            file_notation=notation,
            title=f"Hồ sơ {notation}",
            maintenance=maintenance,
        ),
        actor="luutru",
    )


def test_retention_follows_the_case_files_period(
    catalog: Catalog, local_store: LocalStore, clock: Any, tmp_path: Path
) -> None:
    archive = Archive(
        catalog,
        local_store,
        retention_years=5,
        retention_mode="COMPLIANCE",
        permanent_retention_years=80,
        now=clock,
    )
    ten = _case(catalog, "HS-10", "10 năm")
    forever = _case(catalog, "HS-VV", "Vĩnh viễn")
    _case(catalog, "HS-X", "Theo danh mục")

    def years(result: IngestResult) -> int:
        kept = local_store.stat(result.object_key).retention
        assert kept is not None and kept.mode == "COMPLIANCE"
        return kept.until.year - clock.now.year

    loose = archive.put(pdf(tmp_path, "loose.pdf"), meta(1), actor="x")
    assert years(loose) == 5  # no case file: the configured default
    in_ten = archive.put(pdf(tmp_path, "ten.pdf"), meta(2), case=ten, actor="x")
    assert years(in_ten) == 10
    permanent = archive.put(pdf(tmp_path, "vv.pdf"), meta(3), case="G06.01.2025.HS-VV", actor="x")
    assert years(permanent) == 80
    other = archive.put(pdf(tmp_path, "x.pdf"), meta(4), case="G06.01.2025.HS-X", actor="x")
    assert years(other) == 5  # a Maintenance that names no period: the default
    # a new version of a document gets its case file's period; so does its verification report
    archive.verifier = fake_report
    sealed = archive.put(pdf(tmp_path, "ten-sealed.pdf"), document=in_ten.document_id, actor="x")
    assert years(sealed) == 10
    assert sealed.report_object_key is not None
    report = local_store.stat(sealed.report_object_key).retention
    assert report is not None and report.until.year - clock.now.year == 10
    assert archive.retention_for_document(permanent.document_id) == archive.retention("Vĩnh viễn")
    # the same bytes archived by another agency into a permanent case file: the shared object
    # keeps the longer retention (never shortened)
    theirs = meta(5)
    theirs.agency_id = "H40.01"
    shared = archive.put(tmp_path / "ten.pdf", theirs, case=forever, actor="y")
    assert shared.created and shared.object_key == in_ten.object_key
    assert years(shared) == 80
    # retention disabled (0): nothing gets any, whatever the case file says
    off = Archive(catalog, local_store, retention_years=0, now=clock)
    none = off.put(pdf(tmp_path, "off.pdf"), meta(6), case=forever, actor="x")
    assert local_store.stat(none.object_key).retention is None
    with pytest.raises(ValueError):
        Archive(catalog, local_store, permanent_retention_years=0)


def test_duplicate_warnings_of_a_put(archive: Archive, tmp_path: Path) -> None:
    first = archive.put(pdf(tmp_path, "one.pdf"), meta(), actor="vanthu")
    assert first.duplicate_warnings == []
    second = archive.put(pdf(tmp_path, "two.pdf"), meta(), actor="vanthu")  # same number
    assert second.created
    assert second.duplicate_warnings
    assert {w.existing_id for w in second.duplicate_warnings} == {first.document_id}
    with archive.catalog.session() as s:
        details = s.scalars(
            sa.select(AuditEvent.details_json)
            .where(AuditEvent.subject == f"document:{second.document_id}")
            .where(AuditEvent.action == "document.add")
        ).one()
    assert f'"existing":{first.document_id}' in details


@pytest.mark.parametrize("kind", DATABASES)
def test_two_versions_racing_for_the_same_place(
    kind: str, tmp_path: Path, local_store: LocalStore
) -> None:
    """Different bytes added to one document at the same moment (two clerks, two replicas
    completing two signatures of one draft): the per-document lock (PostgreSQL) or the write
    lock (SQLite) lets one in; the other then sees the new last version and is refused by the
    version order (409 over HTTP), never a second "sealed" nor a database error."""
    import threading

    with catalog_for(kind, tmp_path) as catalog:
        archive = Archive(catalog, local_store, verifier=fake_report, retention_years=0)
        first = archive.put(pdf(tmp_path, "signed.pdf"), meta(), actor="vanthu")
        start = threading.Barrier(2, timeout=30)
        outcomes: list[Any] = []

        def seal(name: str) -> None:
            source = pdf(tmp_path, name)
            start.wait()
            try:
                outcomes.append(
                    archive.put(source, document=first.document_id, kind="sealed", actor=name)
                )
            except Exception as exc:  # collected for the assertions below
                outcomes.append(exc)

        threads = [threading.Thread(target=seal, args=(f"sealed-{n}.pdf",)) for n in (1, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        created = [o for o in outcomes if isinstance(o, IngestResult)]
        refused = [o for o in outcomes if isinstance(o, VersionOrderError)]
        assert len(created) == 1 and len(refused) == 1, outcomes
        assert refused[0].code in (
            "archive.catalog.version.order",
            "archive.catalog.version.concurrent",
        )
        assert created[0].version_seq == 2
        assert _count(catalog, DocumentVersion) == 2


class Statements:
    """The SQL statements a catalogue's engine sends, and its transactions (BEGIN … COMMIT:
    two more round trips each; an autocommit read sends neither)."""

    def __init__(self, catalog: Catalog) -> None:
        self.engine = catalog.engine
        self.sql: list[str] = []
        self.transactions = 0
        sa.event.listen(self.engine, "before_cursor_execute", self._statement)
        sa.event.listen(self.engine, "begin", self._begin)

    def _statement(self, _c: Any, _cur: Any, statement: str, *_: Any) -> None:
        self.sql.append(" ".join(statement.split()))

    def _begin(self, conn: Any) -> None:
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            self.transactions += 1

    def clear(self) -> None:
        self.sql.clear()
        self.transactions = 0

    def close(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._statement)
        sa.event.remove(self.engine, "begin", self._begin)

    def matching(self, text: str) -> list[str]:
        return [q for q in self.sql if text in q]


def test_statements_of_a_put(archive: Archive, tmp_path: Path) -> None:
    """The catalogue's statements of a put (a regression shows here): a new document with its
    report, then a new version.  One write transaction each; the audit head is locked and read
    once per transaction; nothing just inserted is read back (the new document, the versions
    of a document that has none, the version its report belongs to)."""
    catalog = archive.catalog
    pg = catalog.dialect == "postgresql"
    archive.put(pdf(tmp_path, "warm.pdf"), meta(1), actor="vanthu")
    seen = Statements(catalog)
    try:
        seen.clear()
        new = archive.put(pdf(tmp_path, "new.pdf"), meta(2), actor="vanthu")
        first = list(seen.sql)
        first_transactions = seen.transactions
        seen.clear()
        later = archive.put(
            pdf(tmp_path, "sealed.pdf"), document=new.document_id, kind="sealed", actor="vanthu"
        )
        second = list(seen.sql)
        second_transactions = seen.transactions
    finally:
        seen.close()

    def count(sql: list[str], text: str) -> int:
        return len([q for q in sql if text in q])

    # new document: the plan's read; the content lock (PostgreSQL); the read again under it;
    # the duplicates (one statement); 3 inserts and 3 audit events; the head, read once
    assert first_transactions == 1
    assert count(first, "FROM audit_events") == 1
    assert count(first, "pg_advisory_xact_lock") == (2 if pg else 0)
    assert count(first, "INSERT INTO audit_events") == 3
    assert count(first, "FROM documents") == 1  # the duplicates, not the new row
    # (SQLite: no locks, but BEGIN IMMEDIATE is a statement)
    assert len(first) == (12 if pg else 11), first
    # new version: the plan's read, the case file's period, the pre-check (one statement,
    # no transaction), then under the lock the read again and the document with its last
    # version; 2 inserts and 2 events, the head read once
    assert second_transactions == 1
    assert count(second, "FROM audit_events") == 1
    assert count(second, "INSERT INTO audit_events") == 2
    assert len(second) == (12 if pg else 11), second
    assert (new.version_seq, later.version_seq) == (1, 2)
    assert later.indication == "INDETERMINATE" and later.report_object_key
    with catalog.session() as s:
        events = list(s.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq)))
    assert [e.action for e in events[-5:]] == [
        "document.add",
        "version.add",
        "report.add",
        "version.add",
        "report.add",
    ]
    assert events[-2].subject == f"document:{new.document_id}/version:2"
    assert catalog.verify_audit([]).ok
