"""kyso.signer.verify on files kyso signed: levels, trust, revocation, time, the change list,
the annotation rules and the JSON contract."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pytest
from cryptography import x509
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko.sign.fields import MDPPerm

from kyso.api.services import Services
from kyso.certs import identity
from kyso.certs.trust import TrustStore
from kyso.signer.register import fill_register_fields
from kyso.signer.sign import Level, SignOptions
from kyso.signer.verify import (
    INDETERMINATE,
    TOTAL_FAILED,
    TOTAL_PASSED,
    VerificationReport,
    VerifyInputError,
    VerifyPolicy,
    verify,
)
from tests.conftest import LiveServer

A4 = [0, 0, 595, 842]


def make_pdf(pages: int = 2) -> bytes:
    writer = PdfFileWriter()
    for n in range(pages):
        content = writer.add_object(
            generic.StreamObject(
                stream_data=f"BT /F1 18 Tf 72 760 Td (Trang {n + 1}) Tj ET".encode()
            )
        )
        font = generic.DictionaryObject(
            {
                pdf_name("/Type"): pdf_name("/Font"),
                pdf_name("/Subtype"): pdf_name("/Type1"),
                pdf_name("/BaseFont"): pdf_name("/Helvetica"),
            }
        )
        resources = generic.DictionaryObject(
            {pdf_name("/Font"): generic.DictionaryObject({pdf_name("/F1"): font})}
        )
        writer.insert_page(PageObject(contents=content, media_box=A4, resources=resources))
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def append_update(pdf: bytes, mutate: Callable[[IncrementalPdfFileWriter], None]) -> bytes:
    writer = IncrementalPdfFileWriter(BytesIO(pdf))
    mutate(writer)
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def _page(writer: IncrementalPdfFileWriter, index: int = 0) -> generic.IndirectObject:
    kids = writer.root["/Pages"]["/Kids"]
    ref = kids.raw_get(index) if hasattr(kids, "raw_get") else kids[index]
    assert isinstance(ref, generic.IndirectObject)
    return ref


def replace_content(writer: IncrementalPdfFileWriter) -> None:
    ref = _page(writer)
    page = ref.get_object()
    page[pdf_name("/Contents")] = writer.add_object(
        generic.StreamObject(stream_data=b"BT /F1 18 Tf 72 760 Td (GIA MAO) Tj ET")
    )
    writer.mark_update(ref)


def add_annotation(subtype: str) -> Callable[[IncrementalPdfFileWriter], None]:
    def mutate(writer: IncrementalPdfFileWriter) -> None:
        ref = _page(writer)
        page = ref.get_object()
        annot = writer.add_object(
            generic.DictionaryObject(
                {
                    pdf_name("/Type"): pdf_name("/Annot"),
                    pdf_name("/Subtype"): pdf_name(subtype),
                    pdf_name("/Rect"): generic.ArrayObject(
                        [generic.FloatObject(v) for v in (100, 100, 300, 200)]
                    ),
                    pdf_name("/Contents"): generic.TextStringObject("Ghi chú của người nhận"),
                }
            )
        )
        raw = page.raw_get("/Annots") if "/Annots" in page else None
        if isinstance(raw, generic.IndirectObject):
            raw.get_object().append(annot)
            writer.mark_update(raw)
        else:
            annots = raw if raw is not None else generic.ArrayObject()
            annots.append(annot)
            page[pdf_name("/Annots")] = annots
            writer.mark_update(ref)

    return mutate


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("verify-in") / "cong-van.pdf"
    path.write_bytes(make_pdf())
    return path


def _issue_person(services: Services, label: str, **kw: object) -> None:
    if label in {r.label for r in services.pki.records()}:
        return
    services.pki.issue(
        kind="person",
        subject=identity.person_subject(
            "Nguyễn Văn An",
            ids=["CCCD:001090000001"],
            title="Chủ tịch",
            organisation="UBND Quận Long Biên",
        ),
        label=label,
        **kw,  # type: ignore[arg-type]
    )


def _issue_agency(services: Services, label: str) -> None:
    if label in {r.label for r in services.pki.records()}:
        return
    services.pki.issue(
        kind="org",
        subject=identity.organisation_subject("UBND Quận Long Biên", ids=["MST:0101234567"]),
        label=label,
    )


@pytest.fixture(scope="module")
def signed(dev_services: Services, source: Path, tmp_path_factory: pytest.TempPathFactory):
    """One file per level, signed with the session's dev PKI."""
    _issue_person(dev_services, "verify-person")
    signer = dev_services.document_signer("verify-person")
    folder = tmp_path_factory.mktemp("verify-signed")
    files = {}
    for level in Level:
        target = folder / f"{level.value}.pdf"
        signer.sign(source, target, SignOptions(level=level))
        files[level] = target
    return files


def dev_policy(services: Services, **kw: object) -> VerifyPolicy:
    return VerifyPolicy(trust_roots=(services.pki.root_cert,), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("level", list(Level))
def test_each_level_is_reported_and_offline_needs_embedded_revocation_data(
    dev_services: Services, signed: dict[Level, Path], level: Level
) -> None:
    report = verify(signed[level], dev_policy(dev_services, offline=True))
    sig = report.signatures[0]
    assert sig.kind == "signature"
    assert sig.level == level.value
    assert sig.integrity.digest_ok and sig.integrity.signature_ok and sig.integrity.byte_range_ok
    assert sig.signer is not None and sig.signer.identities == {"CCCD": "001090000001"}
    assert sig.signer.title == "Chủ tịch"
    assert sig.chain[0].sha256 == sig.signer.sha256 and len(sig.chain) == 3
    if level in (Level.B_LT, Level.B_LTA):
        # everything needed is in the file: passes with nothing fetched
        assert report.indication == TOTAL_PASSED, report.to_dict("en")
        assert sig.revocation.status == "good" and sig.revocation.source == "embedded"
        assert sig.verifiable_until is not None
    else:
        # no CRL/OCSP in the file and none may be fetched: ETSI's TRY_LATER
        assert (report.indication, report.sub_indication) == (INDETERMINATE, "TRY_LATER")
        assert report.exit_code == 2
    if level is not Level.B_B:
        assert sig.timestamp is not None and sig.timestamp.intact
        assert sig.timestamp.tsa is not None and "TSA" in (sig.timestamp.tsa.common_name or "")
    if level is Level.B_LTA:
        stamps = [s for s in report.signatures if s.kind == "document_timestamp"]
        assert len(stamps) == 1 and stamps[0].indication == TOTAL_PASSED
    assert not report.modified_after_signing


def test_online_revocation_check_passes_a_b_t_signature(
    live_server: LiveServer, source: Path, tmp_path: Path
) -> None:
    services = live_server.services
    _issue_person(services, "verify-online")
    target = tmp_path / "b-t.pdf"
    services.document_signer("verify-online").sign(source, target, SignOptions(level=Level.B_T))
    report = verify(target, VerifyPolicy(trust_roots=(services.pki.root_cert,)))
    assert report.indication == TOTAL_PASSED, report.to_dict("en")
    assert report.signatures[0].revocation.source == "online"
    assert report.policy.revocation == "online"


def test_revoked_signer_fails(live_server: LiveServer, source: Path, tmp_path: Path) -> None:
    services = live_server.services
    issued = services.pki.issue(
        kind="person",
        subject=identity.person_subject("Lê Văn Cường", ids=["CCCD:001090000003"]),
        label="verify-revoked",
    )
    target = tmp_path / "b-b.pdf"
    services.document_signer("verify-revoked").sign(source, target, SignOptions(level=Level.B_B))
    services.pki.revoke(issued.certificate.serial_number, reason=x509.ReasonFlags.key_compromise)
    report = verify(target, VerifyPolicy(trust_roots=(services.pki.root_cert,)))
    sig = report.signatures[0]
    assert report.indication != TOTAL_PASSED
    assert sig.sub_indication in ("REVOKED", "REVOKED_NO_POE"), sig.to_dict("en")
    assert sig.revocation.status == "revoked"


def test_an_expired_certificate_protected_by_an_earlier_timestamp_still_passes(
    live_server: LiveServer, source: Path, tmp_path: Path
) -> None:
    services = live_server.services
    services.pki.issue(
        kind="person",
        subject=identity.person_subject("Trần Thị Bình", ids=["CCCD:001190000002"]),
        label="verify-short",
        days=6 / 86400,  # six seconds
    )
    signer = services.document_signer("verify-short")
    b_b, b_lta = tmp_path / "b-b.pdf", tmp_path / "b-lta.pdf"
    signer.sign(source, b_b, SignOptions(level=Level.B_B))
    signer.sign(source, b_lta, SignOptions(level=Level.B_LTA))
    time.sleep(7)
    policy = VerifyPolicy(trust_roots=(services.pki.root_cert,))
    protected = verify(b_lta, policy)
    assert protected.indication == TOTAL_PASSED, protected.to_dict("en")
    assert protected.signatures[0].signer is not None
    assert protected.signatures[0].signer.not_after < protected.verified_at
    unprotected = verify(b_b, policy)
    assert unprotected.indication == INDETERMINATE
    assert unprotected.sub_indication in ("OUT_OF_BOUNDS_NO_POE", "OUT_OF_BOUNDS_NOT_REVOKED")
    # and validated at a time when it was still valid, the B-B signature needed nothing more
    claimed = unprotected.signatures[0].claimed_signing_time
    at_signing = verify(b_b, VerifyPolicy(trust_roots=(services.pki.root_cert,), at=claimed))
    assert at_signing.policy.time_given
    assert at_signing.signatures[0].sub_indication not in ("OUT_OF_BOUNDS_NO_POE",)


def test_untrusted_root_is_no_certificate_chain_found(
    dev_services: Services, signed: dict[Level, Path]
) -> None:
    gov_only = TrustStore.preset("vn-gov")
    report = verify(
        signed[Level.B_LT], VerifyPolicy(trust_roots=gov_only.certificates, offline=True)
    )
    assert (report.indication, report.sub_indication) == (
        INDETERMINATE,
        "NO_CERTIFICATE_CHAIN_FOUND",
    )
    assert report.policy.trust_anchors[0]["subject"].startswith("CN=RootCA")


def test_person_register_agency_passes_with_permitted_changes_listed(
    dev_services: Services, source: Path, tmp_path: Path
) -> None:
    _issue_person(dev_services, "verify-person")
    _issue_agency(dev_services, "verify-agency")
    person, registered, sealed = (tmp_path / n for n in ("p.pdf", "r.pdf", "s.pdf"))
    dev_services.document_signer("verify-person").sign(
        source, person, SignOptions(level=Level.B_T, register_fields=True)
    )
    fill_register_fields(person, registered, number=15, symbol="QĐ-UBND")
    dev_services.document_signer("verify-agency").sign(
        registered, sealed, SignOptions(level=Level.B_LTA)
    )
    report = verify(sealed, dev_policy(dev_services, offline=True))
    assert report.indication == TOTAL_PASSED, report.to_dict("en")
    assert not report.modified_after_signing
    kinds = {(c.kind, c.target) for c in report.changes}
    assert ("form_filled", "so_hieu") in kinds
    assert ("form_filled", "ngay_ban_hanh") in kinds
    assert any(k == "signature_added" for k, _ in kinds)
    assert any(k == "doc_timestamp_added" for k, _ in kinds)
    assert all(c.permitted for c in report.changes)
    person_sig, agency_sig = report.signatures[0], report.signatures[1]
    assert person_sig.signer and person_sig.signer.kind == "person"
    assert agency_sig.signer and agency_sig.signer.kind == "organisation"
    assert agency_sig.signer.identities == {"MST": "0101234567"}
    described = {c.to_dict("vi")["description"] for c in report.changes}
    assert "Trường biểu mẫu 'so_hieu' được điền (trang 1)." in described


def test_page_content_replaced_after_signing_fails(
    dev_services: Services, signed: dict[Level, Path], tmp_path: Path
) -> None:
    forged = tmp_path / "forged.pdf"
    forged.write_bytes(append_update(signed[Level.B_LT].read_bytes(), replace_content))
    report = verify(forged, dev_policy(dev_services, offline=True))
    assert report.indication == TOTAL_FAILED
    assert report.modified_after_signing and report.exit_code == 1
    sig = report.signatures[0]
    assert sig.integrity.digest_ok  # the signed bytes are intact...
    change = next(c for c in report.changes if not c.permitted)
    assert (change.kind, change.page) == ("page_content_changed", 1)  # ...the page is not
    assert change.to_dict("en")["description"] == "Page 1 content replaced."


@pytest.mark.parametrize(
    ("subtype", "passes"),
    [("/Text", True), ("/Highlight", True), ("/FreeText", False), ("/Square", False)],
)
def test_annotations_after_an_approval_signature(
    dev_services: Services,
    signed: dict[Level, Path],
    tmp_path: Path,
    subtype: str,
    passes: bool,
) -> None:
    annotated = tmp_path / "annotated.pdf"
    annotated.write_bytes(append_update(signed[Level.B_LT].read_bytes(), add_annotation(subtype)))
    report = verify(annotated, dev_policy(dev_services, offline=True))
    change = next(c for c in report.changes if c.kind == "annotation_added")
    assert (change.page, change.target, change.permitted) == (1, subtype[1:], passes)
    assert report.indication == (TOTAL_PASSED if passes else TOTAL_FAILED), report.to_dict("en")


@pytest.mark.parametrize(
    ("permission", "passes"), [(MDPPerm.ANNOTATE, True), (MDPPerm.FILL_FORMS, False)]
)
def test_annotations_follow_the_certification_docmdp(
    dev_services: Services,
    source: Path,
    tmp_path: Path,
    permission: MDPPerm,
    passes: bool,
) -> None:
    _issue_person(dev_services, "verify-person")
    key = dev_services.keys.resolve("verify-person")
    certified = BytesIO()
    signers.sign_pdf(
        IncrementalPdfFileWriter(BytesIO(source.read_bytes())),
        signers.PdfSignatureMetadata(
            field_name="Certification", certify=True, docmdp_permissions=permission
        ),
        signer=key.pyhanko_signer(),
        new_field_spec=fields.SigFieldSpec("Certification"),
        output=certified,
    )
    annotated = tmp_path / "annotated.pdf"
    annotated.write_bytes(append_update(certified.getvalue(), add_annotation("/Text")))
    report = verify(annotated, dev_policy(dev_services, offline=True))
    sig = report.signatures[0]
    assert sig.certification == permission.name
    change = next(c for c in report.changes if c.kind == "annotation_added")
    assert change.permitted is passes
    assert (report.indication == TOTAL_FAILED) is not passes


def test_a_pdf_without_signatures_is_indeterminate(source: Path) -> None:
    report = verify(source, VerifyPolicy())
    assert (report.indication, report.sub_indication) == (INDETERMINATE, "SIGNED_DATA_NOT_FOUND")
    assert report.signatures == [] and report.file.pages == 2


@pytest.mark.parametrize(
    ("content", "code"),
    [(b"", "verify.input.empty"), (b"hello, not a pdf", "verify.input.not_pdf")],
)
def test_input_that_is_no_pdf_raises(tmp_path: Path, content: bytes, code: str) -> None:
    path = tmp_path / "x.pdf"
    path.write_bytes(content)
    with pytest.raises(VerifyInputError) as caught:
        verify(path, VerifyPolicy())
    assert caught.value.code == code
    with pytest.raises(VerifyInputError):
        verify(tmp_path / "missing.pdf", VerifyPolicy())


def test_a_truncated_signed_file_is_a_report_not_a_crash(
    dev_services: Services, signed: dict[Level, Path], tmp_path: Path
) -> None:
    data = signed[Level.B_T].read_bytes()
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(data[: len(data) // 2])
    report = verify(cut, dev_policy(dev_services, offline=True))
    assert report.indication in (TOTAL_FAILED, INDETERMINATE)
    assert report.sub_indication is not None


def test_the_json_contract_round_trips(dev_services: Services, signed: dict[Level, Path]) -> None:
    report = verify(signed[Level.B_LTA], dev_policy(dev_services, offline=True))
    data = report.to_dict("vi")
    text = json.dumps(data, ensure_ascii=False)
    again = VerificationReport.from_dict(json.loads(text)).to_dict("vi")
    assert again == data
    assert data["schema_version"] == "1.0"
    assert {"indication", "sub_indication", "modified_after_signing", "signatures"} <= data.keys()
    for sig in data["signatures"]:
        assert {"kind", "indication", "sub_indication", "modified_after_signing"} <= sig.keys()
    assert data["policy"]["revocation"] == "offline"
    assert data["summary"].startswith("Hợp lệ")
