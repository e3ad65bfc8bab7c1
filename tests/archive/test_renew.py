"""Long-term validation renewal (kyso/archive/renew.py): which records are due, and renewing
them as new ``ltv_extended`` versions without ever rewriting an object."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from pyhanko.pdf_utils.reader import PdfFileReader

from kyso.api.services import Services
from kyso.archive.catalog import Catalog
from kyso.archive.metadata import DocumentMetadata, Recipient
from kyso.archive.renew import (
    RenewalCandidate,
    RenewalError,
    assess,
    due_for_renewal,
    renew,
)
from kyso.archive.storage import LocalStore, Retention
from kyso.certs import identity
from kyso.i18n import t
from kyso.signer.sign import Level, SignOptions
from kyso.signer.verify import VerificationReport, VerifyPolicy, verify
from tests.archive.test_migrations import DATABASES, catalog_for
from tests.signer.helpers import make_pdf

ACTOR = "lưu trữ viên"


@pytest.fixture()
def sqlite_catalog(tmp_path: Path) -> Iterator[Catalog]:
    with catalog_for("sqlite", tmp_path) as c:
        yield c


@dataclasses.dataclass
class Signed:
    services: Services
    policy: VerifyPolicy
    b_t: Path
    b_lta: Path
    unsigned: Path
    signer_cert: x509.Certificate

    @property
    def tsa_not_after(self) -> dt.datetime:
        return self.services.pki.tsa_cert.not_valid_after_utc


@pytest.fixture()
def signed(fresh_services: Services, tmp_path: Path) -> Signed:
    issued = fresh_services.pki.issue(
        kind="person",
        subject=identity.person_subject(
            "Nguyễn Văn An", ids=["CCCD:001090000001"], title="Chủ tịch"
        ),
        label="an",
    )
    signer = fresh_services.document_signer("an")
    folder = tmp_path / "signed"
    folder.mkdir()
    source = folder / "cong-van.pdf"
    source.write_bytes(make_pdf(1))
    b_t, b_lta = folder / "b-t.pdf", folder / "b-lta.pdf"
    signer.sign(source, b_t, SignOptions(level=Level.B_T))
    signer.sign(source, b_lta, SignOptions(level=Level.B_LTA))
    policy = VerifyPolicy.from_services(fresh_services, offline=True)
    return Signed(fresh_services, policy, b_t, b_lta, source, issued.certificate)


def meta(n: int) -> DocumentMetadata:
    return DocumentMetadata(
        organ_id="000.00.31.H37",
        code_number=n,
        code_notation="QĐ-UBND",
        issued_date=dt.date(2025, 3, 5),
        type_name="Quyết định",
        organ_name="Ủy ban nhân dân quận Long Biên",
        subject=f"Quyết định số {n} về lưu trữ dài hạn",
        signer_position="Chủ tịch",
        signer_full_name="Nguyễn Văn An",
        to=[Recipient("Sở Nội vụ", "H37.02")],
        page_amount=1,
    )


def archive(
    catalog: Catalog,
    store: LocalStore,
    path: Path,
    n: int,
    *,
    report: dict[str, Any] | None = None,
    sha256: str | None = None,
) -> tuple[int, int]:
    """Archive ``path`` as document ``n``'s sealed version (with ``report`` if given)."""
    doc = catalog.add_document(meta(n), actor=ACTOR)
    obj = store.put(path)
    version = catalog.add_version(doc, "sealed", obj.key, sha256 or obj.sha256, obj.size, ACTOR)
    if report is not None:
        catalog.add_report(version, report, actor=ACTOR)
    return doc, version


def doc_timestamps(data: bytes) -> int:
    reader = PdfFileReader(BytesIO(data))
    return sum(1 for s in reader.embedded_signatures if s.sig_object_type == "/DocTimeStamp")


def object_bytes(store: LocalStore, key: str, tmp_path: Path) -> bytes:
    target = tmp_path / f"read-{key[-12:]}.pdf"
    target.unlink(missing_ok=True)
    store.get(key, target)
    return target.read_bytes()


@pytest.mark.parametrize("database", DATABASES)
def test_due_records_are_renewed_as_new_versions(
    database: str, signed: Signed, local_store: LocalStore, tmp_path: Path
) -> None:
    with catalog_for(database, tmp_path) as catalog:
        _due_and_renew(catalog, signed, local_store, tmp_path)


def _due_and_renew(catalog: Catalog, signed: Signed, store: LocalStore, tmp_path: Path) -> None:
    bt_report = verify(signed.b_t, signed.policy).to_dict()
    bt_doc, bt_version = archive(catalog, store, signed.b_t, 1, report=bt_report)
    lta_doc, lta_version = archive(catalog, store, signed.b_lta, 2)  # no report: verified now
    originals = {bt_doc: signed.b_t.read_bytes(), lta_doc: signed.b_lta.read_bytes()}

    assert due_for_renewal(catalog, store, dt.timedelta(0), policy=signed.policy) == []

    now = dt.datetime.now(dt.UTC)
    window = signed.tsa_not_after - now + dt.timedelta(days=1)  # beyond the TSA's life
    due = due_for_renewal(catalog, store, window, policy=signed.policy)
    by_doc = {c.document_id: c for c in due}
    assert set(by_doc) == {bt_doc, lta_doc}
    assert by_doc[bt_doc].reason == "no_archive_timestamp"
    assert by_doc[bt_doc].version_id == bt_version
    assert by_doc[lta_doc].reason == "expires"
    assert by_doc[lta_doc].version_id == lta_version
    # the B-LTA record relies on its document timestamp: the TSA certificate's expiry
    assert by_doc[lta_doc].horizon == signed.tsa_not_after.replace(microsecond=0)
    # the same, with the clock moved forward instead of a long window
    later = signed.tsa_not_after - dt.timedelta(days=10)
    moved = due_for_renewal(catalog, store, dt.timedelta(days=180), now=later, policy=signed.policy)
    assert {c.document_id for c in moved} == {bt_doc, lta_doc}
    assert "hết hạn" in by_doc[lta_doc].reason_text("vi")

    ticks: list[tuple[int, int]] = []
    result = renew(
        catalog,
        store,
        signed.services,
        due,
        actor=ACTOR,
        policy=signed.policy,
        progress=lambda done, total: ticks.append((done, total)),
    )
    assert result.ok and not result.skipped, [f.message("en") for f in result.failed]
    assert ticks == [(1, 2), (2, 2)]
    assert len(result.renewed) == 2
    for outcome in result.renewed:
        doc = catalog.get(outcome.document_id, actor=ACTOR)
        old, new = doc.versions[-2], doc.versions[-1]
        assert new.id == outcome.new_version_id and new.kind == "ltv_extended"
        assert old.id == outcome.old_version_id
        assert new.object_key != old.object_key
        old_bytes = object_bytes(store, old.object_key, tmp_path)
        assert old_bytes == originals[outcome.document_id]  # the old object is untouched
        assert hashlib.sha256(old_bytes).hexdigest() == old.sha256
        new_bytes = object_bytes(store, new.object_key, tmp_path)
        assert hashlib.sha256(new_bytes).hexdigest() == new.sha256 == outcome.sha256
        assert new_bytes.startswith(old_bytes)  # an incremental update
        assert doc_timestamps(new_bytes) == doc_timestamps(old_bytes) + 1
        assert outcome.archive_timestamps_after == outcome.archive_timestamps_before + 1
        assert outcome.level == "B-LTA"
        (stored,) = new.reports
        assert stored.id == outcome.report_id
        report = VerificationReport.from_dict(json.loads(stored.report_json))
        assert report.indication == "TOTAL_PASSED"
        sigs = [s for s in report.signatures if s.kind == "signature"]
        assert [s.level for s in sigs] == ["B-LTA"]
        assert outcome.horizon_before is not None and outcome.horizon_after is not None
        assert outcome.horizon_after >= outcome.horizon_before
        assert sigs[0].verifiable_until is not None
        assert sigs[0].verifiable_until >= outcome.horizon_before

    # the same list again: the versions are no longer the latest, nothing is added
    again = renew(catalog, store, signed.services, due, actor=ACTOR, policy=signed.policy)
    assert not again.renewed and not again.failed
    assert {s.code for s in again.skipped} == {"archive.renew.stale"}
    for doc_id in (bt_doc, lta_doc):
        assert len(catalog.get(doc_id, actor=ACTOR).versions) == 2

    # renewed records are not due now; they are due again only when their horizon is near
    # (the development TSA's certificate did not change, so its expiry is the same)
    assert due_for_renewal(catalog, store, dt.timedelta(days=180)) == []
    due_again = due_for_renewal(catalog, store, window)
    assert {c.reason for c in due_again} == {"expires"}
    assert {c.version_id for c in due_again} == {o.new_version_id for o in result.renewed}


def test_a_document_signer_works_too_and_failures_do_not_stop_the_others(
    signed: Signed, sqlite_catalog: Catalog, local_store: LocalStore
) -> None:
    catalog = sqlite_catalog
    good_doc, good = archive(catalog, local_store, signed.b_lta, 1)
    unsigned_doc, unsigned = archive(catalog, local_store, signed.unsigned, 2)
    bad_doc, bad = archive(catalog, local_store, signed.b_t, 3, sha256="ab" * 32)
    ghost = RenewalCandidate(good_doc, 10_000, "expires", None)
    candidates = [
        RenewalCandidate(unsigned_doc, unsigned, "expires", None),
        RenewalCandidate(bad_doc, bad, "no_archive_timestamp", None),
        ghost,
        RenewalCandidate(good_doc, good, "expires", None),
    ]
    signer = signed.services.document_signer(None)
    until = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=3650)
    retention = Retention("GOVERNANCE", until)
    result = renew(catalog, local_store, signer, candidates, actor=ACTOR, retention=retention)
    assert [o.document_id for o in result.renewed] == [good_doc]
    assert local_store.stat(result.renewed[0].object_key).retention == retention
    codes = {f.document_id: f.code for f in result.failed if f.version_id != ghost.version_id}
    assert codes == {unsigned_doc: "archive.renew.unsigned", bad_doc: "archive.renew.checksum"}
    assert any(f.code == "archive.renew.version.not_found" for f in result.failed)
    assert all(f.orphan_key is None for f in result.failed)
    assert all(f.message("vi") != f.code for f in result.failed)
    for doc in (unsigned_doc, bad_doc):
        assert len(catalog.get(doc, actor=ACTOR).versions) == 1
    assert "1" in result.summary("en")


def test_an_object_without_version_is_reported_as_an_orphan(
    signed: Signed,
    sqlite_catalog: Catalog,
    local_store: LocalStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    catalog = sqlite_catalog
    doc, version = archive(catalog, local_store, signed.b_lta, 1)
    before = {o.key for o in local_store.iter_objects()}

    def broken(*_a: object, **_k: object) -> int:
        raise RuntimeError("database went away")

    monkeypatch.setattr(catalog, "add_version", broken)
    result = renew(
        catalog,
        local_store,
        signed.services,
        [RenewalCandidate(doc, version, "expires", None)],
        actor=ACTOR,
        policy=signed.policy,
    )
    (failure,) = result.failed
    assert failure.code == "archive.renew.orphan" and failure.orphan_key is not None
    assert {o.key for o in local_store.iter_objects()} == before | {failure.orphan_key}
    assert failure.orphan_key in failure.message("en")
    monkeypatch.undo()
    assert len(catalog.get(doc, actor=ACTOR).versions) == 1


def test_weak_algorithms_are_due_whatever_the_window(
    signed: Signed, sqlite_catalog: Catalog, local_store: LocalStore
) -> None:
    catalog = sqlite_catalog
    report = verify(signed.b_lta, signed.policy).to_dict()
    stamp_weak = json.loads(json.dumps(report))
    for sig in stamp_weak["signatures"]:
        if sig["kind"] == "document_timestamp":
            sig["algorithms"]["weak"] = True
    covered = json.loads(json.dumps(report))  # a weak signature under a strong timestamp
    for sig in covered["signatures"]:
        if sig["kind"] == "signature":
            sig["algorithms"]["weak"] = True
    weak_doc, _ = archive(catalog, local_store, signed.b_lta, 1, report=stamp_weak)
    archive(catalog, local_store, signed.b_lta, 2, report=covered)
    due = due_for_renewal(catalog, local_store, dt.timedelta(0))
    assert [(c.document_id, c.reason) for c in due] == [(weak_doc, "weak_algorithm")]
    assert assess(VerificationReport.from_dict(covered)).weak is False


def test_bad_arguments(signed: Signed, sqlite_catalog: Catalog, local_store: LocalStore) -> None:
    archive(sqlite_catalog, local_store, signed.b_t, 1)  # no stored report
    with pytest.raises(RenewalError) as info:
        due_for_renewal(sqlite_catalog, local_store, dt.timedelta(days=1))
    assert info.value.code == "archive.renew.needs_policy"
    with pytest.raises(RenewalError) as info:
        due_for_renewal(sqlite_catalog, local_store, dt.timedelta(days=-1))
    assert info.value.code == "archive.renew.window.negative"
    assert t("archive.renew.window.negative", locale="en", within="x") != (
        "archive.renew.window.negative"
    )
    # an unsigned document is never a candidate
    unsigned_doc, _ = archive(sqlite_catalog, local_store, signed.unsigned, 2)
    due = due_for_renewal(
        sqlite_catalog, local_store, dt.timedelta(days=36500), policy=signed.policy
    )
    assert len(due) == 1 and due[0].document_id != unsigned_doc


def test_a_revoked_signer_is_kept_alive_by_a_new_timestamp_alone(
    signed: Signed, sqlite_catalog: Catalog, local_store: LocalStore
) -> None:
    """After the signer's certificate is revoked, validation data cannot be refreshed; the
    B-LTA file still gets its new document timestamp (the old DSS keeps the proof)."""
    catalog = sqlite_catalog
    lta_doc, lta = archive(catalog, local_store, signed.b_lta, 1)
    bt_doc, bt = archive(catalog, local_store, signed.b_t, 2)
    signed.services.pki.revoke(
        signed.signer_cert.serial_number,
        at=dt.datetime.now(dt.UTC),
        reason=x509.ReasonFlags.key_compromise,
    )
    result = renew(
        catalog,
        local_store,
        signed.services,
        [
            RenewalCandidate(lta_doc, lta, "expires", None),
            RenewalCandidate(bt_doc, bt, "no_archive_timestamp", None),
        ],
        actor=ACTOR,
        policy=signed.policy,
    )
    (outcome,) = result.renewed
    assert outcome.document_id == lta_doc
    assert "archive.renew.validation_not_refreshed" in outcome.warnings
    assert outcome.archive_timestamps_after == outcome.archive_timestamps_before + 1
    assert outcome.level == "B-LTA"
    (failure,) = result.failed  # a B-T file has no DSS to fall back on
    assert failure.document_id == bt_doc
