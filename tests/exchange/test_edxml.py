"""edXML packages: round trips, an independent check by xmlsec1, and every way a received
message must be refused."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import io
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from kyso.api.services import Services
from kyso.archive.metadata import DocumentMetadata, Recipient
from kyso.certs import identity
from kyso.exchange._xml import DS_NS, NS, Limits, sign_envelope
from kyso.exchange.codes import DEFAULT_CODE_TABLES, BusinessDocType, CodeTables
from kyso.exchange.edxml import (
    VN_TZ,
    Attachment,
    Business,
    StaffInfo,
    build_edxml,
    header_from_metadata,
    metadata_from_header,
    parse_edxml,
    write_edxml,
)
from kyso.exchange.errors import (
    ExchangeRejected,
    MalformedMessage,
    MessageTooLarge,
    UnsupportedMetadata,
)
from tests.conftest import require_tool, run
from tests.exchange.conftest import RECEIVER, SENDER, Agencies, sample_header, sample_trace

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
APPENDIX = bytes(reversed(range(256))) * 7 + b"\x00\xff"
XMLSEC_ID = f"--id-attr:Id {NS}:edXMLEnvelope".split(" ", 1)


def _attachments() -> list[Attachment]:
    return [
        Attachment("7816-VPCP-TTDT.pdf", data=PDF, description="Văn bản chính"),
        Attachment(
            "phu-luc.bin",
            data=APPENDIX,
            content_type="application/octet-stream",
            content_id="phu-luc-1@kyso",
        ),
    ]


@pytest.fixture(scope="module")
def message(agencies: Agencies) -> bytes:
    return build_edxml(
        sample_header(),
        _attachments(),
        sample_trace(),
        signing_key=agencies.sender,
        business=Business(
            doc_type=BusinessDocType.NEW,
            reason="Văn bản mới",
            staff=StaffInfo(department="Văn thư", staff="Trần Thị Bình", email="vt@x.vn"),
            paper=0,
        ),
    )


def _parse(data: bytes, agencies: Agencies, **kw: object):  # type: ignore[no-untyped-def]
    return parse_edxml(data, trust_roots=[agencies.root], **kw)  # type: ignore[arg-type]


# -- round trips ---------------------------------------------------------------------------------


def test_round_trip_keeps_header_trace_business_and_attachment_bytes(
    message: bytes, agencies: Agencies
) -> None:
    with _parse(message, agencies) as parsed:
        assert parsed.verdict.accepted, parsed.verdict.codes
        assert parsed.signed
        assert parsed.header == sample_header()
        assert list(parsed.trace) == sample_trace()
        assert parsed.business == Business(
            doc_type=BusinessDocType.NEW,
            reason="Văn bản mới",
            staff=StaffInfo(department="Văn thư", staff="Trần Thị Bình", email="vt@x.vn"),
            paper=0,
        )
        names = [a.name for a in parsed.attachments]
        assert names == ["7816-VPCP-TTDT.pdf", "phu-luc.bin"]
        assert parsed.attachments[0].read_bytes() == PDF
        assert parsed.attachments[1].read_bytes() == APPENDIX
        assert parsed.attachments[1].content_id == "phu-luc-1@kyso"
        assert parsed.attachments[0].sha256 == hashlib.sha256(PDF).hexdigest()
        assert parsed.attachments[0].description == "Văn bản chính"
        assert parsed.signer_certificate == agencies.sender.certificate
        assert parsed.signer_path[0] == agencies.sender.certificate
        assert parsed.signer_path[-1] == agencies.root
        assert parsed.message_sha256 == hashlib.sha256(message).hexdigest()
        folder = parsed.attachments[0].path.parent
        assert folder.is_dir()
        parsed.require_accepted()
    assert not folder.exists()  # closing the message deletes the temporary files


def test_the_structure_follows_qcvn_102(message: bytes) -> None:
    root = etree.fromstring(message)
    assert root.tag == f"{{{NS}}}edXML"
    ns = {"e": NS, "ds": DS_NS}
    assert (
        root.xpath(
            "string(e:edXMLEnvelope/e:edXMLHeader/e:MessageHeader/e:DocumentId)", namespaces=ns
        )
        == "000.00.00.G22,2018/09/20,7816/VPCP-TTĐT"
    )
    mh = root.find(f"{{{NS}}}edXMLEnvelope/{{{NS}}}edXMLHeader/{{{NS}}}MessageHeader")
    assert mh is not None
    order = [etree.QName(c).localname for c in mh]
    assert order == [
        "From",
        "To",
        "To",
        "Code",
        "PromulgationInfo",
        "DocumentType",
        "Subject",
        "Content",
        "SignerInfo",
        "DueDate",
        "ToPlaces",
        "OtherInfo",
        "SteeringType",
        "DocumentId",
    ]
    assert mh.findtext(f"{{{NS}}}PromulgationInfo/{{{NS}}}PromulgationDate") == "2018/09/20"
    stamp = root.xpath("string(//e:TraceHeader/e:Timestamp)", namespaces=ns)
    assert stamp == "2018/09/20 15:04:05"
    assert root.xpath("string(//e:Bussiness/e:BussinessDocType)", namespaces=ns) == "0"
    hrefs = root.xpath(
        "//e:edXMLManifest/e:Reference/@xlink:href",
        namespaces={**ns, "xlink": "http://www.w3.org/1999/xlink"},
    )
    encoded = root.xpath("//e:AttachmentEncoded/e:Attachment", namespaces=ns)
    assert len(hrefs) == len(encoded) == 2
    assert hrefs[1] == "cid:phu-luc-1@kyso"
    content = encoded[0].findtext(f"{{{NS}}}ContentTransferEncoded")
    assert base64.b64decode(content) == PDF
    # one enveloped signature, in the header, over the envelope
    signatures = root.findall(f".//{{{DS_NS}}}Signature")
    assert len(signatures) == 1
    assert etree.QName(signatures[0].getparent()).localname == "edXMLHeader"
    envelope_id = root.find(f"{{{NS}}}edXMLEnvelope").get("Id")
    reference = signatures[0].find(f"{{{DS_NS}}}SignedInfo/{{{DS_NS}}}Reference")
    assert reference.get("URI") == f"#{envelope_id}"


def test_an_ec_key_signs_as_well(agencies: Agencies) -> None:
    data = build_edxml(sample_header(), _attachments(), signing_key=agencies.sender_ec)
    assert b"ecdsa-sha256" in data
    with _parse(data, agencies) as parsed:
        assert parsed.verdict.accepted, parsed.verdict.codes
        assert parsed.signer_certificate == agencies.sender_ec.certificate
        # the default trace: one hop, the sender, now
        assert [t.organ_id for t in parsed.trace] == ["000.00.00.G22"]
        assert abs(parsed.trace[0].timestamp - dt.datetime.now(VN_TZ)) < dt.timedelta(minutes=5)


def test_write_edxml_streams_a_file_attachment(agencies: Agencies, tmp_path: Path) -> None:
    source = tmp_path / "big.pdf"
    blob = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 7)  # ~3 MB
    source.write_bytes(blob)
    target = tmp_path / "out.edxml"
    with target.open("wb") as out:
        write_edxml(
            out, sample_header(), [Attachment("big.pdf", path=source)], signing_key=agencies.sender
        )
    with parse_edxml(target, trust_roots=[agencies.root], workdir=tmp_path) as parsed:
        assert parsed.verdict.accepted, parsed.verdict.codes
        assert parsed.attachments[0].sha256 == hashlib.sha256(blob).hexdigest()
        assert parsed.attachments[0].path.read_bytes() == blob
        with (
            target.open("rb") as fh,  # a file object works too
            parse_edxml(fh, trust_roots=[agencies.root]) as again,
        ):
            assert again.verdict.accepted


# -- the independent checker ---------------------------------------------------------------------


def _xmlsec(path: Path, agencies: Agencies) -> tuple[int, str]:
    require_tool("xmlsec1")
    proc = run(
        "xmlsec1", "--verify", "--trusted-pem", agencies.root_pem, *XMLSEC_ID, path, check=False
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_xmlsec1_verifies_what_we_sign_and_refuses_a_changed_copy(
    message: bytes, agencies: Agencies, tmp_path: Path
) -> None:
    path = tmp_path / "message.edxml"
    path.write_bytes(message)
    code, output = _xmlsec(path, agencies)
    assert code == 0 and "OK" in output, output
    ec_path = tmp_path / "ec.edxml"
    ec_path.write_bytes(build_edxml(sample_header(), [], signing_key=agencies.sender_ec))
    code, output = _xmlsec(ec_path, agencies)
    assert code == 0 and "OK" in output, output
    changed = tmp_path / "changed.edxml"
    changed.write_bytes(message.replace("trục liên thông".encode(), "trục khác".encode()))
    code, output = _xmlsec(changed, agencies)
    assert code != 0, output


# -- tampering -----------------------------------------------------------------------------------


def test_a_changed_header_is_rejected(message: bytes, agencies: Agencies) -> None:
    data = message.replace(b"<edXML:CodeNumber>7816<", b"<edXML:CodeNumber>7817<")
    assert data != message
    with _parse(data, agencies) as parsed:
        assert parsed.verdict.codes[0] == "exchange.reason.digest_mismatch"
        assert not parsed.signed
        assert parsed.header.code_number == "7817"  # read for the answer, but not trusted
        with pytest.raises(ExchangeRejected) as info:
            parsed.require_accepted()
        assert "exchange.reason.digest_mismatch" in str(info.value.params)


def test_a_changed_trace_is_rejected(message: bytes, agencies: Agencies) -> None:
    data = message.replace(b"2018/09/20 15:04:05", b"2018/09/21 15:04:05")
    with _parse(data, agencies) as parsed:
        assert parsed.verdict.codes == ("exchange.reason.digest_mismatch",)


def _swap_attachment(message: bytes, index: int, new: bytes) -> bytes:
    root = etree.fromstring(message)
    node = root.findall(f".//{{{NS}}}ContentTransferEncoded")[index]
    node.text = base64.b64encode(new).decode()
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


def test_a_changed_attachment_is_rejected(message: bytes, agencies: Agencies) -> None:
    altered = bytearray(PDF)
    altered[100] ^= 1
    with _parse(_swap_attachment(message, 0, bytes(altered)), agencies) as parsed:
        assert parsed.signed  # the envelope is intact ...
        assert parsed.verdict.codes == ("exchange.reason.attachment_altered",)  # ... the file not
        assert parsed.verdict.reasons[0].params["name"] == "7816-VPCP-TTDT.pdf"


def test_a_removed_or_added_attachment_is_rejected(message: bytes, agencies: Agencies) -> None:
    root = etree.fromstring(message)
    encoded = root.find(f"{{{NS}}}AttachmentEncoded")
    assert encoded is not None
    encoded.remove(encoded[1])
    with _parse(etree.tostring(root), agencies) as parsed:
        assert parsed.verdict.codes == ("exchange.reason.attachment_missing",)
    extra = etree.fromstring(message)
    encoded = extra.find(f"{{{NS}}}AttachmentEncoded")
    assert encoded is not None
    clone = etree.fromstring(etree.tostring(encoded[0]))
    clone.find(f"{{{NS}}}ContentId").text = "smuggled"
    encoded.append(clone)
    with _parse(etree.tostring(extra), agencies) as parsed:
        assert parsed.verdict.codes == ("exchange.reason.attachment_unreferenced",)


def test_a_changed_signature_value_is_rejected(message: bytes, agencies: Agencies) -> None:
    root = etree.fromstring(message)
    value = root.find(f".//{{{DS_NS}}}SignatureValue")
    raw = bytearray(base64.b64decode(value.text))
    raw[10] ^= 0x40
    value.text = base64.b64encode(bytes(raw)).decode()
    with _parse(etree.tostring(root), agencies) as parsed:
        assert parsed.verdict.codes == ("exchange.reason.signature_invalid",)


def test_a_signature_checked_with_another_agencys_certificate_is_rejected(
    message: bytes, agencies: Agencies
) -> None:
    root = etree.fromstring(message)
    cert = root.find(f".//{{{DS_NS}}}X509Certificate")
    cert.text = base64.b64encode(agencies.receiver.certificate.public_bytes(Encoding.DER)).decode()
    with _parse(etree.tostring(root), agencies) as parsed:
        assert parsed.verdict.codes == ("exchange.reason.signature_invalid",)


def test_a_removed_signature_is_rejected(message: bytes, agencies: Agencies) -> None:
    root = etree.fromstring(message)
    signature = root.find(f".//{{{DS_NS}}}Signature")
    signature.getparent().remove(signature)
    with _parse(etree.tostring(root), agencies) as parsed:
        assert parsed.verdict.codes == ("exchange.reason.signature_missing",)
        assert parsed.header == sample_header()


def test_an_untrusted_certificate_is_rejected(agencies: Agencies, stranger) -> None:  # type: ignore[no-untyped-def]
    data = build_edxml(sample_header(), _attachments(), signing_key=stranger)
    with _parse(data, agencies) as parsed:
        assert parsed.verdict.codes == ("exchange.reason.certificate_untrusted",)
        assert parsed.signed  # intact, but by nobody we trust
    with parse_edxml(data, trust_roots=[stranger.chain[0]]) as parsed:
        assert parsed.verdict.accepted  # the same bytes pass once its CA is trusted


def test_a_certificate_out_of_its_validity_is_rejected(message: bytes, agencies: Agencies) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3650)
    with _parse(message, agencies, at=later) as parsed:
        assert parsed.verdict.codes == ("exchange.reason.certificate_expired",)


def test_the_signer_must_be_the_sending_agency(message: bytes, agencies: Agencies) -> None:
    known = {"000.00.00.G22": [agencies.sender.certificate]}
    with _parse(message, agencies, sender_certificates=known) as parsed:
        assert parsed.verdict.accepted
    others = {"000.00.00.G22": [agencies.receiver.certificate]}
    with _parse(message, agencies, sender_certificates=others) as parsed:
        assert parsed.verdict.codes == ("exchange.reason.signer_not_sender",)
    with _parse(message, agencies, sender_certificates={"G06.01": []}) as parsed:
        assert parsed.verdict.codes == ("exchange.reason.sender_unknown",)


# -- metadata ------------------------------------------------------------------------------------


def _signed_envelope(envelope: etree._Element, agencies: Agencies) -> bytes:
    """Sign a hand-made envelope (bypassing build_edxml's checks) and wrap it."""
    header = envelope.find(f"{{{NS}}}edXMLHeader")
    etree.SubElement(header, f"{{{DS_NS}}}Signature", nsmap={"ds": DS_NS}).set("Id", "placeholder")
    signed = sign_envelope(envelope, agencies.sender)
    return etree.tostring(signed)


def _envelope_of(message: bytes) -> etree._Element:
    root = etree.fromstring(message)
    envelope = root.find(f"{{{NS}}}edXMLEnvelope")
    signature = envelope.find(f".//{{{DS_NS}}}Signature")
    signature.getparent().remove(signature)
    body = envelope.find(f"{{{NS}}}edXMLBody")
    envelope.remove(body)  # no files: the envelope alone is the whole message
    return envelope


def test_bad_metadata_in_a_well_signed_message_is_rejected(
    message: bytes, agencies: Agencies
) -> None:
    envelope = _envelope_of(message)
    organ = envelope.find(f".//{{{NS}}}From/{{{NS}}}OrganId")
    organ.text = "g22 lower case"
    with _parse(_signed_envelope(envelope, agencies), agencies) as parsed:
        assert parsed.signed and not parsed.verdict.accepted
        assert parsed.verdict.codes[0] == "archive.catalog.metadata.agency_code"
        assert parsed.attachments == ()
    envelope = _envelope_of(message)
    envelope.find(
        f".//{{{NS}}}MessageHeader/{{{NS}}}DocumentId"
    ).text = "000.00.00.G22,2018/09/21,7816/VPCP-TTĐT"
    with _parse(_signed_envelope(envelope, agencies), agencies) as parsed:
        assert "exchange.reason.document_id" in parsed.verdict.codes
    envelope = _envelope_of(message)
    envelope.find(f".//{{{NS}}}OtherInfo/{{{NS}}}Priority").text = "9"
    with _parse(_signed_envelope(envelope, agencies), agencies) as parsed:
        assert parsed.verdict.codes == ("exchange.reason.unknown_code",)


def test_a_number_written_differently_still_matches_its_document_id(agencies: Agencies) -> None:
    header = sample_header(code_number="05", document_id="000.00.00.G22,2018/09/20,5/VPCP-TTĐT")
    data = build_edxml(header, [], signing_key=agencies.sender)
    with _parse(data, agencies) as parsed:
        assert parsed.verdict.accepted, parsed.verdict.codes


def test_build_refuses_what_a_receiver_would_reject(agencies: Agencies) -> None:
    with pytest.raises(UnsupportedMetadata) as info:
        build_edxml(
            sample_header(to=(RECEIVER.__class__("bad code", "X"),)),
            [],
            signing_key=agencies.sender,
        )
    assert info.value.code == "archive.catalog.metadata.agency_code"
    with pytest.raises(UnsupportedMetadata) as info:
        build_edxml(sample_header(document_id="x"), [], signing_key=agencies.sender)
    assert info.value.code == "exchange.reason.document_id"
    with pytest.raises(UnsupportedMetadata) as info:
        build_edxml(sample_header(subject="a\x01b"), [], signing_key=agencies.sender)
    assert info.value.code == "exchange.metadata.not_xml_text"
    with pytest.raises(UnsupportedMetadata) as info:
        build_edxml(
            sample_header(),
            [
                Attachment("a.pdf", data=b"1", content_id="x"),
                Attachment("b.pdf", data=b"2", content_id="x"),
            ],
            signing_key=agencies.sender,
        )
    assert info.value.code == "exchange.attachment.bad_cid"
    with pytest.raises(MessageTooLarge):
        build_edxml(
            sample_header(),
            [Attachment("a.pdf", data=b"x" * 2000)],
            signing_key=agencies.sender,
            limits=Limits(max_attachment_bytes=1000),
        )


def test_metadata_maps_to_a_header_and_back() -> None:
    meta = DocumentMetadata(
        organ_id="000.00.00.G22",
        code_number=7816,
        code_notation="VPCP-TTĐT",
        issued_date=dt.date(2018, 9, 20),
        type_name="Công văn",
        organ_name="Văn phòng Chính phủ",
        subject="Về việc triển khai trục liên thông văn bản quốc gia",
        page_amount=2,
        description="Nội dung ngắn.",
        signer_position="Phó Chủ nhiệm",
        signer_full_name="Nguyễn Văn An",
        to=[Recipient("Bộ Tài chính", "G06.01"), Recipient("Báo chí")],
        urgency="Thượng khẩn",
        issued_amount=3,
        due_date=dt.date(2018, 9, 30),
    )
    header = header_from_metadata(meta, place="Hà Nội", sender=SENDER)
    assert header.document_id == "000.00.00.G22,2018/09/20,7816/VPCP-TTĐT"
    assert header.document_type == 18
    assert header.priority == 2
    assert header.to == (RECEIVER,)  # only addressees with an agency code are sent to
    assert header.to_places == ("Bộ Tài chính", "Báo chí")
    assert header.from_organ == SENDER
    trace = sample_trace()
    back = metadata_from_header(header, dt.date(2018, 9, 21), 12, agency_id="G06.01", trace=trace)
    assert back.direction == "incoming"
    assert back.agency_id == "G06.01"
    assert back.arrival_number == "12"
    assert back.arrival_date == dt.date(2018, 9, 21)
    assert back.trace == [{"organ_id": "000.00.00.G22", "timestamp": "2018-09-20T15:04:05+07:00"}]
    for name in (
        "organ_id",
        "code_number",
        "code_notation",
        "issued_date",
        "type_name",
        "organ_name",
        "subject",
        "document_id",
        "page_amount",
        "description",
        "signer_position",
        "signer_full_name",
        "urgency",
        "issued_amount",
        "due_date",
    ):
        assert getattr(back, name) == getattr(meta.validate(), name), name
    assert [r.organ_id for r in back.to] == ["G06.01"]


def test_drafts_classified_documents_and_unknown_codes_are_not_sent() -> None:
    base = DocumentMetadata(
        organ_id="G06.01",
        code_number=None,
        code_notation=None,
        issued_date=None,
        type_name="Tờ trình",
        organ_name="Bộ Tài chính",
        subject="Dự thảo",
        to=[Recipient("Văn phòng Chính phủ", "000.00.00.G22")],
    )
    with pytest.raises(UnsupportedMetadata) as info:
        header_from_metadata(base)
    assert info.value.code == "exchange.metadata.unregistered"
    registered = dataclasses.replace(
        base, code_number=3, code_notation="TTr-BTC", issued_date=dt.date(2025, 1, 2)
    )
    with pytest.raises(UnsupportedMetadata) as info:
        header_from_metadata(dataclasses.replace(registered, secrecy="Mật"))
    assert info.value.code == "exchange.metadata.secret"
    with pytest.raises(UnsupportedMetadata) as info:
        header_from_metadata(dataclasses.replace(registered, to=[Recipient("Báo chí")]))
    assert info.value.code == "exchange.metadata.no_recipient"
    with pytest.raises(UnsupportedMetadata) as info:
        header_from_metadata(registered, steering_type=7)
    assert info.value.code == "exchange.metadata.unknown_code"
    header = header_from_metadata(registered)
    assert header.document_type == 16  # Tờ trình, 16th in Decree 30 Art. 7
    custom = CodeTables(document_types={5: "Tờ trình"}, priority={7: "Thường", 8: "Khẩn"})
    header = header_from_metadata(
        dataclasses.replace(registered, urgency="Khẩn"), code_tables=custom
    )
    assert (header.document_type, header.priority) == (5, 8)
    assert DEFAULT_CODE_TABLES.document_type_code("Văn bản lạ") == 0


# -- hostile and malformed input -----------------------------------------------------------------


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE edXML [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"><edXMLEnvelope>&xxe;</edXMLEnvelope></edXML>
"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"><edXMLEnvelope>&lol9;</edXMLEnvelope></edXML>
"""


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (XXE, "exchange.malformed.doctype"),
        (BILLION_LAUGHS, "exchange.malformed.doctype"),
        (b"%PDF-1.7 not xml at all", "exchange.malformed.not_xml"),
        (b"", "exchange.malformed.not_xml"),
        (
            b"<edXML xmlns='http://www.mic.gov.vn/TBT/QCVN_102_2016'><unclosed></edXML>",
            "exchange.malformed.not_xml",
        ),
        (
            b"<edXML xmlns='http://www.mic.gov.vn/TBT/QCVN_102_2016'>&undefined;</edXML>",
            "exchange.malformed.not_xml",
        ),
        (b"<html><body>hello</body></html>", "exchange.malformed.root"),
        (b"<edXML xmlns='http://www.mic.gov.vn/TBT/QCVN_102_2016'/>", "exchange.malformed.missing"),
        (
            b"<edXML xmlns='http://www.mic.gov.vn/TBT/QCVN_102_2016'>"
            + b"<a>" * 100
            + b"</a>" * 100
            + b"</edXML>",
            "exchange.malformed.too_deep",
        ),
    ],
    ids=[
        "xxe",
        "billion-laughs",
        "not-xml",
        "empty",
        "broken",
        "entity",
        "html",
        "no-envelope",
        "deep",
    ],
)
def test_hostile_or_malformed_input_raises_a_clear_error(
    data: bytes, code: str, agencies: Agencies
) -> None:
    with pytest.raises(MalformedMessage) as info:
        _parse(data, agencies)
    assert info.value.code == code
    assert "Traceback" not in info.value.message("en")
    assert "/etc/passwd" not in str(info.value.params) or code == "exchange.malformed.doctype"


def test_bad_base64_and_missing_fields_raise(message: bytes, agencies: Agencies) -> None:
    root = etree.fromstring(message)
    root.find(f".//{{{NS}}}ContentTransferEncoded").text = "not*base64!"
    with pytest.raises(MalformedMessage) as info:
        _parse(etree.tostring(root), agencies)
    assert info.value.code == "exchange.malformed.base64"
    root = etree.fromstring(message)
    root.find(f".//{{{NS}}}ContentTransferEncoded").text = "QUJD" + "=" + "QUJD"
    with pytest.raises(MalformedMessage) as info:
        _parse(etree.tostring(root), agencies)
    assert info.value.code == "exchange.malformed.base64"
    root = etree.fromstring(message)
    subject = root.find(f".//{{{NS}}}MessageHeader/{{{NS}}}Subject")
    subject.getparent().remove(subject)
    with pytest.raises(MalformedMessage) as info:
        _parse(etree.tostring(root), agencies)
    assert info.value.code == "exchange.malformed.missing"
    assert info.value.params["element"].endswith("MessageHeader/Subject")
    root = etree.fromstring(message)
    root.find(f".//{{{NS}}}PromulgationDate").text = "20/09/2018"
    with pytest.raises(MalformedMessage) as info:
        _parse(etree.tostring(root), agencies)
    assert info.value.code == "exchange.malformed.value"


def test_limits_are_enforced_while_reading(message: bytes, agencies: Agencies) -> None:
    cases = [
        (Limits(max_message_bytes=1000), "exchange.malformed.message_too_large"),
        (Limits(max_attachment_bytes=len(PDF) - 1), "exchange.malformed.attachment_too_large"),
        (Limits(max_attachments=1), "exchange.malformed.too_many_attachments"),
        (Limits(max_envelope_bytes=500), "exchange.malformed.envelope_too_large"),
    ]
    for limits, code in cases:
        with pytest.raises(MessageTooLarge) as info:
            parse_edxml(io.BytesIO(message), trust_roots=[agencies.root], limits=limits)
        assert info.value.code == code
    assert not re.search(rb"<!DOCTYPE", message)


def test_revocation_is_checked_with_the_data_given(
    message: bytes, agencies: Agencies, dev_services: Services
) -> None:
    ocsps, crls = dev_services.pki.revocation_material([agencies.sender.certificate])
    with _parse(message, agencies, revocation_mode="hard-fail", ocsps=ocsps, crls=crls) as parsed:
        assert parsed.verdict.accepted, parsed.verdict.codes
    with _parse(message, agencies, revocation_mode="hard-fail") as parsed:
        assert parsed.verdict.codes == ("exchange.reason.revocation_unknown",)  # no data
    issued = dev_services.pki.issue(
        kind="org",
        subject=identity.organisation_subject("Văn phòng Chính phủ", ids=["MST:0400000001"]),
        label="exch-revoked",
        key_type="ec-p256",
    )
    data = build_edxml(sample_header(), [], signing_key=dev_services.file_keys.load(issued.label))
    dev_services.pki.revoke(
        issued.certificate.serial_number, reason=x509.ReasonFlags.key_compromise
    )
    ocsps, crls = dev_services.pki.revocation_material([issued.certificate])
    with _parse(data, agencies, revocation_mode="hard-fail", ocsps=ocsps, crls=crls) as parsed:
        assert parsed.verdict.codes == ("exchange.reason.certificate_revoked",)


def test_a_wrapped_signature_does_not_vouch_for_a_forged_header(
    message: bytes, agencies: Agencies
) -> None:
    """Signature wrapping: a forged envelope carries the genuine signed one inside it."""
    root = etree.fromstring(message)
    genuine = root.find(f"{{{NS}}}edXMLEnvelope")
    forged = etree.fromstring(etree.tostring(genuine))
    forged.find(f".//{{{NS}}}MessageHeader/{{{NS}}}Subject").text = "Giả mạo"
    signature = forged.find(f".//{{{DS_NS}}}Signature")
    signature.getparent().remove(signature)
    forged.find(f"{{{NS}}}edXMLHeader").append(etree.fromstring(etree.tostring(genuine)))
    root.replace(genuine, forged)
    with _parse(etree.tostring(root), agencies) as parsed:
        assert not parsed.signed
        assert parsed.verdict.codes[0] == "exchange.reason.signature_misplaced"
