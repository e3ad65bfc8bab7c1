"""Hand-written edXML samples (see samples/README.md for where each comes from)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509

from kyso.exchange.codes import BusinessDocType, StatusCode
from kyso.exchange.edxml import VN_TZ, parse_edxml
from kyso.exchange.status import parse_status
from tests.conftest import require_tool, run
from tests.exchange.conftest import Agencies

SAMPLES = Path(__file__).parent / "samples"
ROOT = x509.load_pem_x509_certificate((SAMPLES / "dev-root.pem").read_bytes())
PDF_SHA = "6084f58d673dde339614adb6bde34f398bdfc752e2bd8db2867f7707449c5813"


def _signing_time() -> dt.datetime:
    with parse_edxml(SAMPLES / "cong-van-signed.edxml", trust_roots=[ROOT]) as message:
        assert message.signer_certificate is not None
        return message.signer_certificate.not_valid_before_utc + dt.timedelta(hours=1)


def test_the_signed_sample_is_accepted_at_its_signing_time() -> None:
    at = _signing_time()
    with parse_edxml(SAMPLES / "cong-van-signed.edxml", trust_roots=[ROOT], at=at) as message:
        assert message.verdict.accepted, message.verdict.codes
        header = message.header
        assert header.from_organ.organ_id == "000.00.00.G22"
        assert header.from_organ.website == "https://vpcp.chinhphu.vn"
        assert [o.organ_id for o in header.to] == ["G06.01"]
        assert header.document_id == "000.00.00.G22,2018/09/20,7816/VPCP-TTĐT"
        assert (header.document_type, header.type_name) == (18, "Công văn")
        assert header.to_places == ("Như trên", "Lưu: VT, TTĐT")
        assert header.appendixes == ()
        assert header.signer_competence == "KT. BỘ TRƯỞNG, CHỦ NHIỆM"
        assert message.trace[0].timestamp == dt.datetime(2018, 9, 20, 15, 4, 5, tzinfo=VN_TZ)
        assert message.business is not None and message.business.paper == 0
        (attachment,) = message.attachments
        assert attachment.sha256 == PDF_SHA and attachment.size == 121
        assert attachment.read_bytes().startswith(b"%PDF-1.4\n")


def test_the_signed_sample_is_refused_by_another_trust_store(agencies: Agencies) -> None:
    at = _signing_time()
    with parse_edxml(
        SAMPLES / "cong-van-signed.edxml", trust_roots=[agencies.root], at=at
    ) as message:
        assert message.verdict.codes == ("exchange.reason.certificate_untrusted",)


def test_xmlsec1_verifies_the_signed_sample(tmp_path: Path) -> None:
    require_tool("xmlsec1")
    at = _signing_time().strftime("%Y-%m-%d %H:%M:%S")
    proc = run(
        "xmlsec1",
        "--verify",
        "--trusted-pem",
        SAMPLES / "dev-root.pem",
        "--verification-gmt-time",
        at,
        "--id-attr:Id",
        "http://www.mic.gov.vn/TBT/QCVN_102_2016:edXMLEnvelope",
        SAMPLES / "cong-van-signed.edxml",
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    changed = tmp_path / "changed.edxml"
    changed.write_bytes(
        (SAMPLES / "cong-van-signed.edxml").read_bytes().replace(b">7816<", b">7817<")
    )
    proc = run(
        "xmlsec1",
        "--verify",
        "--trusted-pem",
        SAMPLES / "dev-root.pem",
        "--verification-gmt-time",
        at,
        "--id-attr:Id",
        "http://www.mic.gov.vn/TBT/QCVN_102_2016:edXMLEnvelope",
        changed,
        check=False,
    )
    assert proc.returncode != 0


def test_the_unsigned_source_is_read_but_refused() -> None:
    with parse_edxml(SAMPLES / "cong-van.src.edxml", trust_roots=[ROOT]) as message:
        assert message.verdict.codes == ("exchange.reason.signature_missing",)
        assert not message.signed
        assert message.header.subject == "Về việc kết nối, liên thông văn bản điện tử"
        assert message.attachments[0].sha256 == PDF_SHA


def test_a_foreign_message_without_signature_or_digest_is_read_and_refused() -> None:
    with parse_edxml(SAMPLES / "foreign-unsigned.edxml", trust_roots=[ROOT]) as message:
        assert message.verdict.codes == (
            "exchange.reason.signature_missing",
            "exchange.reason.attachment_unsigned",
        )
        header = message.header
        assert header.from_organ.organ_id == "H37.02.02"
        assert header.code_number == "05"
        assert header.steering_type == 2
        (answered,) = header.response_for
        assert answered.document_id == "000.00.00.G22,2018/09/20,7816/VPCP-TTĐT"
        assert answered.promulgation_date == dt.date(2018, 9, 20)
        assert [t.organ_id for t in message.trace] == ["H37.02.02", "000.00.00.G22"]
        assert message.business is not None
        assert message.business.doc_type is BusinessDocType.RECALL
        assert message.attachments[0].sha256 == PDF_SHA


def test_the_status_sample_is_read_but_refused() -> None:
    parsed = parse_status(SAMPLES / "status-02-unsigned.edxml", trust_roots=[ROOT])
    assert parsed.verdict.codes == ("exchange.reason.signature_missing",)
    status = parsed.status
    assert status.status_code is StatusCode.REJECTED
    assert status.from_organ.organ_id == "G06.01"
    assert status.document_sha256 == (PDF_SHA,)
    assert status.verdict == "TOTAL_FAILED"
    assert [r.code for r in status.reasons] == ["verify.sub.HASH_FAILURE"]
    assert status.timestamp == dt.datetime(2018, 9, 20, 16, 30, tzinfo=VN_TZ)
