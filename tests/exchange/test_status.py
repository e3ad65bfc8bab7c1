"""Status messages (receipts): round trips, xmlsec1, and refusals."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from pathlib import Path

import pytest
from lxml import etree

from kyso.exchange._xml import DS_NS, KYSO_NS, NS
from kyso.exchange.codes import StatusCode
from kyso.exchange.edxml import VN_TZ, Organ, ResponseFor, StaffInfo, build_edxml
from kyso.exchange.errors import MalformedMessage, UnsupportedMetadata
from kyso.exchange.status import StatusMessage, build_status, parse_status
from kyso.signer.verify.model import Reason
from tests.conftest import require_tool, run
from tests.exchange.conftest import RECEIVER, Agencies, sample_header

PDF_SHA = hashlib.sha256(b"%PDF-1.7 the document").hexdigest()
ANSWERED = ResponseFor(
    organ_id="000.00.00.G22",
    code="7816/VPCP-TTĐT",
    promulgation_date=dt.date(2018, 9, 20),
    document_id="000.00.00.G22,2018/09/20,7816/VPCP-TTĐT",
)


def _status(code: StatusCode, **changes: object) -> StatusMessage:
    values: dict[str, object] = {
        "response_for": ANSWERED,
        "from_organ": RECEIVER,
        "status_code": code,
        "timestamp": dt.datetime(2018, 9, 20, 16, 0, 1, tzinfo=VN_TZ),
        "document_sha256": (PDF_SHA,),
        "description": "Đã nhận văn bản",
        "staff": StaffInfo(department="Văn thư", staff="Lê Văn Cường"),
        "message_sha256": hashlib.sha256(b"the edxml message").hexdigest(),
        "verdict": "TOTAL_PASSED",
    }
    values.update(changes)
    return StatusMessage(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("code", list(StatusCode), ids=[c.name for c in StatusCode])
def test_every_status_round_trips(code: StatusCode, agencies: Agencies) -> None:
    reasons = (Reason("exchange.reason.attachment_altered", {"cid": "a", "name": "x.pdf"}),)
    status = _status(code, reasons=reasons if code is StatusCode.REJECTED else ())
    data = build_status(status, signing_key=agencies.receiver)
    parsed = parse_status(data, trust_roots=[agencies.root])
    assert parsed.verdict.accepted, parsed.verdict.codes
    assert parsed.signed
    assert parsed.status == status
    assert parsed.signer_certificate == agencies.receiver.certificate
    assert parsed.received_sha256 == hashlib.sha256(data).hexdigest()
    root = etree.fromstring(data)
    assert root.findtext(f".//{{{NS}}}Status/{{{NS}}}StatusCode") == code.value
    assert root.findtext(f".//{{{NS}}}Status/{{{NS}}}Timestamp") == "2018/09/20 16:00:01"


def test_a_rejection_needs_its_reason(agencies: Agencies) -> None:
    with pytest.raises(UnsupportedMetadata) as info:
        build_status(_status(StatusCode.REJECTED, description=None), signing_key=agencies.receiver)
    assert info.value.code == "exchange.status.reason_required"
    with pytest.raises(UnsupportedMetadata) as info:
        build_status(_status(StatusCode.ARRIVED, document_sha256=()), signing_key=agencies.receiver)
    assert info.value.code == "exchange.status.bad_digest"
    with pytest.raises(UnsupportedMetadata) as info:
        build_status(
            _status(StatusCode.ARRIVED, from_organ=Organ("not a code", "X")),
            signing_key=agencies.receiver,
        )
    assert info.value.code == "archive.catalog.metadata.agency_code"


@pytest.fixture(scope="module")
def accepted(agencies: Agencies) -> bytes:
    return build_status(_status(StatusCode.ACCEPTED), signing_key=agencies.receiver)


def test_xmlsec1_verifies_a_status(accepted: bytes, agencies: Agencies, tmp_path: Path) -> None:
    require_tool("xmlsec1")
    path = tmp_path / "status.edxml"
    path.write_bytes(accepted)
    proc = run(
        "xmlsec1",
        "--verify",
        "--trusted-pem",
        agencies.root_pem,
        "--id-attr:Id",
        f"{NS}:edXMLEnvelope",
        path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_a_changed_status_digest_or_signature_is_rejected(
    accepted: bytes,
    agencies: Agencies,
    stranger,  # type: ignore[no-untyped-def]
) -> None:
    changed = accepted.replace(b">03<", b">02<")
    assert changed != accepted
    parsed = parse_status(changed, trust_roots=[agencies.root])
    assert parsed.verdict.codes == ("exchange.reason.digest_mismatch",)
    assert parsed.status.status_code is StatusCode.REJECTED and not parsed.signed
    root = etree.fromstring(accepted)
    digest = root.find(f".//{{{KYSO_NS}}}DocumentDigest")
    digest.text = hashlib.sha256(b"another file").hexdigest()
    parsed = parse_status(etree.tostring(root), trust_roots=[agencies.root])
    assert parsed.verdict.codes == ("exchange.reason.digest_mismatch",)
    root = etree.fromstring(accepted)
    value = root.find(f".//{{{DS_NS}}}SignatureValue")
    raw = bytearray(base64.b64decode(value.text))
    raw[-3] ^= 1
    value.text = base64.b64encode(bytes(raw)).decode()
    parsed = parse_status(etree.tostring(root), trust_roots=[agencies.root])
    assert parsed.verdict.codes == ("exchange.reason.signature_invalid",)
    foreign = build_status(_status(StatusCode.ACCEPTED), signing_key=stranger)
    parsed = parse_status(foreign, trust_roots=[agencies.root])
    assert parsed.verdict.codes == ("exchange.reason.certificate_untrusted",)
    parsed = parse_status(
        accepted,
        trust_roots=[agencies.root],
        sender_certificates={"G06.01": [agencies.sender.certificate]},
    )
    assert parsed.verdict.codes == ("exchange.reason.signer_not_sender",)


def test_a_document_is_not_a_status_and_hostile_input_is_refused(agencies: Agencies) -> None:
    document = build_edxml(sample_header(), [], signing_key=agencies.sender)
    with pytest.raises(MalformedMessage) as info:
        parse_status(document, trust_roots=[agencies.root])
    assert info.value.code == "exchange.malformed.missing"
    with pytest.raises(MalformedMessage) as info:
        parse_status(b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>", trust_roots=[agencies.root])
    assert info.value.code == "exchange.malformed.doctype"
    with pytest.raises(MalformedMessage) as info:
        parse_status(b"\x00\x01binary", trust_roots=[agencies.root])
    assert info.value.code == "exchange.malformed.not_xml"
