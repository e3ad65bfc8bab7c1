"""edXML packages (QCVN 102:2016): build, sign, parse and check; mapping to the archive.

The message as built (docs/exchange.md shows a full sample)::

    <edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016">
      <edXML:edXMLEnvelope xmlns:edXML="…QCVN_102_2016" Id="edXML-…">
        <edXML:edXMLHeader>
          <edXML:MessageHeader> From, To*, Code, PromulgationInfo, DocumentType, Subject,
            Content, SignerInfo, DueDate, ToPlaces, OtherInfo, ResponseFor*, SteeringType,
            DocumentId </edXML:MessageHeader>
          <edXML:TraceHeaderList> TraceHeader* (OrganId, Timestamp), Bussiness </…>
          <ds:Signature> … Reference URI="#edXML-…" … </ds:Signature>
        </edXML:edXMLHeader>
        <edXML:edXMLBody><edXML:edXMLManifest version="1.0">
          <edXML:Reference xlink:href="cid:…"> Description, AttachmentName, ContentType,
            ContentId, kyso:Digest (SHA-256 and size of the decoded content) </…>
        </edXML:edXMLManifest></edXML:edXMLBody>
      </edXML:edXMLEnvelope>
      <AttachmentEncoded><Attachment> ContentType, ContentId, Description,
        ContentTransferEncoded (base64), AttachmentName </Attachment></AttachmentEncoded>
    </edXML>

The signature covers the envelope: header, trace and the manifest, which carries each
attachment's SHA-256; the attachments themselves sit outside it, so that they can be written
and read as streams, and are bound to the signature through those digests.

Everything a reader uses comes from the signed content (signxml's ``signed_xml``), never from
the unsigned tree, except when the signature does not verify: the header is then still read
(to answer with a 02 rejection) but the message is marked unsigned and rejected.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cryptography import x509
from lxml import etree

from kyso.archive.metadata import DocumentMetadata, MetadataError, Recipient, parse_agency_code
from kyso.certs.keys import KeyHandle
from kyso.certs.trust import TrustStore
from kyso.exchange._xml import (
    DS_NS,
    KYSO_NS,
    NS,
    XLINK_NS,
    Limits,
    RawAttachment,
    RawMessage,
    RevocationMode,
    TempDir,
    TrustSettings,
    check_sender,
    q,
    read_and_check,
    sign_envelope,
    sync_twin,
    write_base64,
)
from kyso.exchange.codes import DEFAULT_CODE_TABLES, BusinessDocType, CodeTables
from kyso.exchange.errors import (
    ExchangeRejected,
    MalformedMessage,
    MessageTooLarge,
    UnsupportedMetadata,
)
from kyso.signer.verify.model import Reason

__all__ = [
    "VN_TZ",
    "Attachment",
    "Business",
    "EdxmlMessage",
    "MessageHeader",
    "Organ",
    "ReceivedAttachment",
    "ResponseFor",
    "StaffInfo",
    "TraceHeader",
    "Verdict",
    "async_parse_edxml",
    "build_edxml",
    "document_id",
    "header_from_metadata",
    "metadata_from_header",
    "parse_edxml",
    "write_edxml",
]

VN_TZ = dt.timezone(dt.timedelta(hours=7), "ICT")
"""edXML dates and times carry no zone: they are Vietnam time (UTC+7, no daylight saving)."""

DATE_FORMAT = "%Y/%m/%d"
TIMESTAMP_FORMAT = "%Y/%m/%d %H:%M:%S"
SHA256 = "sha256"


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Organ:
    """An agency as ``From``/``To`` name it: code, name and contact details."""

    organ_id: str
    organ_name: str
    organization_in_charge: str | None = None
    address: str | None = None
    """``OrganAdd``."""
    email: str | None = None
    telephone: str | None = None
    fax: str | None = None
    website: str | None = None


_ORGAN_FIELDS = (
    ("OrganId", "organ_id"),
    ("OrganizationInCharge", "organization_in_charge"),
    ("OrganName", "organ_name"),
    ("OrganAdd", "address"),
    ("Email", "email"),
    ("Telephone", "telephone"),
    ("Fax", "fax"),
    ("Website", "website"),
)


@dataclass(frozen=True)
class ResponseFor:
    """The document a message answers: its issuer, number/notation, date and DocumentId."""

    organ_id: str
    code: str
    """``Number/Notation``, e.g. ``7816/VPCP-TTĐT``."""
    promulgation_date: dt.date
    document_id: str


@dataclass(frozen=True)
class StaffInfo:
    """Who handled a message (``StaffInfo``)."""

    department: str | None = None
    staff: str | None = None
    mobile: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class MessageHeader:
    """``MessageHeader`` of an edXML message (Appendix VI metadata in QCVN 102 names)."""

    from_organ: Organ
    to: tuple[Organ, ...]
    code_number: str
    code_notation: str
    promulgation_date: dt.date
    document_type: int
    """``DocumentType/Type``: a code of :attr:`CodeTables.document_types`."""
    type_name: str
    subject: str
    document_id: str
    """``OrganId,yyyy/MM/dd,Number/Notation`` (see :func:`document_id`)."""
    promulgation_place: str | None = None
    content: str | None = None
    signer_competence: str | None = None
    """``SignerInfo/Competence``: the authority the signer signs with (``TM.``, ``KT.``...)."""
    signer_position: str | None = None
    signer_full_name: str | None = None
    due_date: dt.date | None = None
    to_places: tuple[str, ...] = ()
    priority: int = 0
    """``OtherInfo/Priority``: a code of :attr:`CodeTables.priority`."""
    sphere_of_promulgation: str | None = None
    typer_notation: str | None = None
    promulgation_amount: int | None = None
    page_amount: int | None = None
    appendixes: tuple[str, ...] = ()
    response_for: tuple[ResponseFor, ...] = ()
    steering_type: int = 0
    """``SteeringType``: a code of :attr:`CodeTables.steering`."""


@dataclass(frozen=True)
class TraceHeader:
    """One hop of ``TraceHeaderList``: the agency and when it handled the message."""

    organ_id: str
    timestamp: dt.datetime
    """Aware; written in Vietnam time to the second."""


@dataclass(frozen=True)
class Business:
    """``Bussiness`` of ``TraceHeaderList``: new, recall, update or replace."""

    doc_type: BusinessDocType = BusinessDocType.NEW
    reason: str | None = None
    """``BussinessDocReason``."""
    staff: StaffInfo | None = None
    paper: int | None = None
    """``Paper``: 1 if a paper copy is also sent."""


@dataclass(frozen=True)
class Attachment:
    """A file to send: its bytes (``data``) or a file (``path``), read as a stream."""

    name: str
    data: bytes | None = None
    path: Path | None = None
    content_type: str = "application/pdf"
    description: str | None = None
    content_id: str | None = None
    """Without ``cid:``; generated when None."""

    @contextmanager
    def open(self) -> Iterator[BinaryIO]:
        if self.data is not None:
            yield io.BytesIO(self.data)
        elif self.path is not None:
            with Path(self.path).open("rb") as fh:
                yield fh
        else:
            raise UnsupportedMetadata("exchange.attachment.no_content", name=self.name)


@dataclass(frozen=True)
class ReceivedAttachment:
    """An attachment of a parsed message, decoded into a temporary file (``path``), which
    lives until the message is closed."""

    content_id: str
    name: str
    content_type: str
    description: str | None
    size: int
    sha256: str
    path: Path

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()

    def open(self) -> BinaryIO:
        return self.path.open("rb")


@dataclass(frozen=True)
class Verdict:
    """The checks' outcome: accepted when there is no reason to reject."""

    reasons: tuple[Reason, ...] = ()

    @property
    def accepted(self) -> bool:
        return not self.reasons

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)

    def to_dict(self, locale: str | None = None) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "reasons": [r.to_dict(locale) for r in self.reasons],
        }


@dataclass
class EdxmlMessage:
    """A parsed edXML message.  Use it as a context manager (or call :meth:`close`) to delete
    the attachments' temporary files."""

    header: MessageHeader
    trace: tuple[TraceHeader, ...]
    business: Business | None
    attachments: tuple[ReceivedAttachment, ...]
    signer_certificate: x509.Certificate | None
    signer_path: tuple[x509.Certificate, ...]
    """The validated certification path, leaf first (empty unless trusted)."""
    verdict: Verdict
    signed: bool
    """Whether header, trace and manifest were read from content the signature covers."""
    envelope_id: str | None
    message_sha256: str
    """SHA-256 of the message bytes as received."""
    _tmp: TempDir | None = field(default=None, repr=False)

    def require_accepted(self) -> EdxmlMessage:
        """``self`` if accepted, else :class:`ExchangeRejected` with the reasons."""
        if not self.verdict.accepted:
            raise ExchangeRejected(reasons=", ".join(self.verdict.codes))
        return self

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.close()

    def __enter__(self) -> EdxmlMessage:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def document_id(organ_id: str, date: dt.date, number: str, notation: str) -> str:
    """``OrganId,yyyy/MM/dd,Number/Notation``: ``000.00.00.G22,2018/09/20,7816/VPCP-TTĐT``."""
    return f"{organ_id},{date:%Y/%m/%d},{number}/{notation}"


# --------------------------------------------------------------------------------------------
# Mapping to and from the archive's metadata
# --------------------------------------------------------------------------------------------


def header_from_metadata(
    meta: DocumentMetadata,
    *,
    to: Sequence[Organ] | None = None,
    sender: Organ | None = None,
    place: str | None = None,
    content: str | None = None,
    competence: str | None = None,
    sphere_of_promulgation: str | None = None,
    typer_notation: str | None = None,
    appendixes: Sequence[str] = (),
    response_for: Sequence[ResponseFor] = (),
    steering_type: int = 0,
    code_tables: CodeTables = DEFAULT_CODE_TABLES,
) -> MessageHeader:
    """The MessageHeader of a registered document.

    ``to`` defaults to the metadata's addressees that have an agency code; ``sender`` (contact
    details) to the issuing agency's code and name; ``content`` to the description.  A draft
    (no number or date) and a classified document (secrecy other than ``Thường``) cannot be
    sent: :class:`UnsupportedMetadata`.
    """
    try:
        checked = dataclasses.replace(meta).validate()
    except MetadataError as exc:
        raise UnsupportedMetadata(exc.code, **exc.params) from exc
    if checked.code_number is None or checked.code_notation is None or not checked.issued_date:
        raise UnsupportedMetadata("exchange.metadata.unregistered")
    if checked.secrecy not in (None, "Thường"):
        raise UnsupportedMetadata("exchange.metadata.secret", secrecy=checked.secrecy)
    if sender is None:
        sender = Organ(organ_id=checked.organ_id, organ_name=checked.organ_name)
    elif sender.organ_id != checked.organ_id:
        raise UnsupportedMetadata(
            "exchange.metadata.sender_mismatch", sender=sender.organ_id, issuer=checked.organ_id
        )
    recipients = (
        tuple(to)
        if to is not None
        else tuple(
            Organ(organ_id=r.organ_id, organ_name=r.organ_name) for r in checked.to if r.organ_id
        )
    )
    if not recipients:
        raise UnsupportedMetadata("exchange.metadata.no_recipient")
    places = tuple(r.organ_name for r in (checked.to_places or checked.to))
    assert checked.document_id is not None  # set by validate() for a registered document
    return MessageHeader(
        from_organ=sender,
        to=recipients,
        code_number=str(checked.code_number),
        code_notation=checked.code_notation,
        promulgation_date=checked.issued_date,
        document_type=code_tables.document_type_code(checked.type_name),
        type_name=checked.type_name,
        subject=checked.subject,
        document_id=checked.document_id,
        promulgation_place=place,
        content=content if content is not None else checked.description,
        signer_competence=competence,
        signer_position=checked.signer_position,
        signer_full_name=checked.signer_full_name,
        due_date=checked.due_date,
        to_places=places,
        priority=code_tables.priority_code(checked.urgency),
        sphere_of_promulgation=sphere_of_promulgation,
        typer_notation=typer_notation,
        promulgation_amount=checked.issued_amount,
        page_amount=checked.page_amount,
        appendixes=tuple(appendixes),
        response_for=tuple(response_for),
        steering_type=code_tables.check_steering(steering_type),
    )


_DESCRIPTION_MAX = 500


def metadata_from_header(
    header: MessageHeader,
    arrival_date: dt.date,
    arrival_number: str | int,
    *,
    agency_id: str | None = None,
    trace: Sequence[TraceHeader] = (),
    code_tables: CodeTables = DEFAULT_CODE_TABLES,
) -> DocumentMetadata:
    """The archive metadata of a received document (direction ``incoming``), validated.

    ``agency_id`` is the receiving agency (whose archive files it).  ``Content`` becomes the
    description when it fits Appendix VI's 500 characters (the whole message is archived
    anyway).  MetadataError if a field is invalid.
    """
    content = header.content if header.content and len(header.content) <= _DESCRIPTION_MAX else None
    meta = dataclasses.replace(
        _header_metadata(header, "incoming"),
        document_id=header.document_id,
        agency_id=agency_id,
        description=content,
        urgency=code_tables.urgency_of(header.priority),
        arrival_date=arrival_date,
        arrival_number=str(arrival_number),
        to_places=[Recipient(organ_name=name) for name in header.to_places],
        trace=[{"organ_id": t.organ_id, "timestamp": t.timestamp.isoformat()} for t in trace],
    )
    return meta.validate()


def _header_metadata(header: MessageHeader, direction: str) -> DocumentMetadata:
    """The Appendix VI fields every header carries, as archive metadata: the sender's view
    (``outgoing``, to validate a header) or the start of the receiver's record (``incoming``)."""
    return DocumentMetadata(
        organ_id=header.from_organ.organ_id,
        code_number=header.code_number,
        code_notation=header.code_notation,
        issued_date=header.promulgation_date,
        type_name=header.type_name,
        organ_name=header.from_organ.organ_name,
        subject=header.subject,
        direction=direction,
        page_amount=header.page_amount,
        signer_position=header.signer_position,
        signer_full_name=header.signer_full_name,
        to=[Recipient(organ_name=o.organ_name, organ_id=o.organ_id) for o in header.to],
        issued_amount=header.promulgation_amount,
        due_date=header.due_date,
    )


def check_header(
    header: MessageHeader,
    trace: Sequence[TraceHeader],
    code_tables: CodeTables = DEFAULT_CODE_TABLES,
) -> list[Reason]:
    """What is wrong with a header's metadata (empty when nothing)."""
    reasons: list[Reason] = []
    try:
        meta = _header_metadata(header, "outgoing").validate()
        for hop in trace:
            parse_agency_code(hop.organ_id, "TraceHeader.OrganId")
        for answered in header.response_for:
            parse_agency_code(answered.organ_id, "ResponseFor.OrganId")
    except MetadataError as exc:
        return [Reason(exc.code, dict(exc.params))]
    expected = document_id(
        meta.organ_id, header.promulgation_date, str(meta.code_number), str(meta.code_notation)
    )
    if not _same_document_id(header.document_id, expected):
        reasons.append(
            Reason(
                "exchange.reason.document_id",
                {"document_id": header.document_id, "expected": expected},
            )
        )
    if header.priority not in code_tables.priority:
        reasons.append(
            Reason("exchange.reason.unknown_code", {"field": "Priority", "value": header.priority})
        )
    if header.steering_type not in code_tables.steering:
        reasons.append(
            Reason(
                "exchange.reason.unknown_code",
                {"field": "SteeringType", "value": header.steering_type},
            )
        )
    for amount_field in ("page_amount", "promulgation_amount"):
        value = getattr(header, amount_field)
        if value is not None and value < 0:
            reasons.append(
                Reason("exchange.reason.unknown_code", {"field": amount_field, "value": value})
            )
    return reasons


def _same_document_id(actual: str, expected: str) -> bool:
    """DocumentIds are equal, the number compared as a number (``05`` = ``5``)."""
    if actual == expected:
        return True
    a, b = actual.split(",", 2), expected.split(",", 2)
    if len(a) != 3 or a[:2] != b[:2]:
        return False
    num_a, _, notation_a = a[2].partition("/")
    num_b, _, notation_b = b[2].partition("/")
    return (
        num_a.isdigit()
        and num_b.isdigit()
        and int(num_a) == int(num_b)
        and (notation_a == notation_b)
    )


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _sub(parent: etree._Element, local: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, q(local))
    if text is not None:
        element.text = text
    return element


def _opt(parent: etree._Element, local: str, value: object) -> None:
    """A child element, empty when ``value`` is None."""
    _sub(parent, local, None if value is None else str(value))


def _organ(parent: etree._Element, local: str, organ: Organ) -> None:
    element = _sub(parent, local)
    for tag, attr in _ORGAN_FIELDS:
        _opt(element, tag, getattr(organ, attr))


def _staff(parent: etree._Element, staff: StaffInfo | None) -> None:
    if staff is None:
        return
    element = _sub(parent, "StaffInfo")
    _opt(element, "Department", staff.department)
    _opt(element, "Staff", staff.staff)
    _opt(element, "Mobile", staff.mobile)
    _opt(element, "Email", staff.email)


def _date(value: dt.date | None) -> str | None:
    return None if value is None else value.strftime(DATE_FORMAT)


def format_timestamp(value: dt.datetime) -> str:
    """An aware datetime as ``yyyy/MM/dd HH:mm:ss`` in Vietnam time."""
    if value.tzinfo is None:
        raise UnsupportedMetadata("exchange.metadata.naive_time")
    return value.astimezone(VN_TZ).strftime(TIMESTAMP_FORMAT)


def _message_header(parent: etree._Element, header: MessageHeader) -> None:
    mh = _sub(parent, "MessageHeader")
    _organ(mh, "From", header.from_organ)
    for organ in header.to:
        _organ(mh, "To", organ)
    code = _sub(mh, "Code")
    _sub(code, "CodeNumber", header.code_number)
    _sub(code, "CodeNotation", header.code_notation)
    info = _sub(mh, "PromulgationInfo")
    _opt(info, "Place", header.promulgation_place)
    _sub(info, "PromulgationDate", _date(header.promulgation_date))
    doc_type = _sub(mh, "DocumentType")
    _sub(doc_type, "Type", str(header.document_type))
    _sub(doc_type, "TypeName", header.type_name)
    _sub(mh, "Subject", header.subject)
    _opt(mh, "Content", header.content)
    signer = _sub(mh, "SignerInfo")
    _opt(signer, "Competence", header.signer_competence)
    _opt(signer, "Position", header.signer_position)
    _opt(signer, "FullName", header.signer_full_name)
    _opt(mh, "DueDate", _date(header.due_date))
    places = _sub(mh, "ToPlaces")
    for place in header.to_places:
        _sub(places, "Place", place)
    other = _sub(mh, "OtherInfo")
    _sub(other, "Priority", str(header.priority))
    _opt(other, "SphereOfPromulgation", header.sphere_of_promulgation)
    _opt(other, "TyperNotation", header.typer_notation)
    _opt(other, "PromulgationAmount", header.promulgation_amount)
    _opt(other, "PageAmount", header.page_amount)
    appendixes = _sub(other, "Appendixes")
    for appendix in header.appendixes:
        _sub(appendixes, "Appendix", appendix)
    for answered in header.response_for:
        rf = _sub(mh, "ResponseFor")
        _sub(rf, "OrganId", answered.organ_id)
        _sub(rf, "Code", answered.code)
        _sub(rf, "PromulgationDate", _date(answered.promulgation_date))
        _sub(rf, "DocumentId", answered.document_id)
    _sub(mh, "SteeringType", str(header.steering_type))
    _sub(mh, "DocumentId", header.document_id)


def _trace_list(parent: etree._Element, trace: Sequence[TraceHeader], business: Business) -> None:
    element = _sub(parent, "TraceHeaderList")
    for hop in trace:
        th = _sub(element, "TraceHeader")
        _sub(th, "OrganId", hop.organ_id)
        _sub(th, "Timestamp", format_timestamp(hop.timestamp))
    bus = _sub(element, "Bussiness")
    _sub(bus, "BussinessDocType", str(int(business.doc_type)))
    _opt(bus, "BussinessDocReason", business.reason)
    _staff(bus, business.staff)
    _opt(bus, "Paper", business.paper)


@dataclass(frozen=True)
class _Prepared:
    attachment: Attachment
    content_id: str
    sha256: str
    size: int


def _prepare(attachments: Sequence[Attachment], limits: Limits) -> list[_Prepared]:
    if len(attachments) > limits.max_attachments:
        raise MessageTooLarge(
            "exchange.malformed.too_many_attachments", limit=limits.max_attachments
        )
    prepared: list[_Prepared] = []
    seen: set[str] = set()
    for attachment in attachments:
        if not attachment.name.strip():
            raise UnsupportedMetadata("exchange.attachment.no_name")
        cid = attachment.content_id or uuid.uuid4().hex
        if cid.startswith("cid:"):
            cid = cid[4:]
        if not cid or cid in seen or any(c.isspace() or c in "<>" for c in cid):
            raise UnsupportedMetadata("exchange.attachment.bad_cid", cid=cid)
        seen.add(cid)
        digest = hashlib.sha256()
        size = 0
        with attachment.open() as fh:
            for piece in iter(lambda: fh.read(1024 * 1024), b""):
                size += len(piece)
                if size > limits.max_attachment_bytes:
                    raise MessageTooLarge(
                        "exchange.malformed.attachment_too_large",
                        limit=limits.max_attachment_bytes,
                    )
                digest.update(piece)
        prepared.append(_Prepared(attachment, cid, digest.hexdigest(), size))
    return prepared


def _manifest(parent: etree._Element, prepared: Sequence[_Prepared]) -> None:
    body = _sub(parent, "edXMLBody")
    manifest = _sub(body, "edXMLManifest")
    manifest.set("version", "1.0")
    for item in prepared:
        ref = etree.SubElement(manifest, q("Reference"), nsmap={"xlink": XLINK_NS})
        ref.set(q("href", XLINK_NS), f"cid:{item.content_id}")
        ref.set(q("role", XLINK_NS), "XLinkRole")
        ref.set(q("type", XLINK_NS), "simple")
        _opt(ref, "Description", item.attachment.description)
        _sub(ref, "AttachmentName", item.attachment.name)
        _sub(ref, "ContentType", item.attachment.content_type)
        _sub(ref, "ContentId", f"cid:{item.content_id}")
        digest = etree.SubElement(ref, q("Digest", KYSO_NS), nsmap={"kyso": KYSO_NS})
        digest.set("Algorithm", SHA256)
        digest.set("Size", str(item.size))
        digest.text = item.sha256


def new_envelope(envelope_id: str | None = None) -> tuple[etree._Element, etree._Element]:
    """An empty ``edXMLEnvelope`` with its ``edXMLHeader`` (returned second)."""
    envelope = etree.Element(q("edXMLEnvelope"), nsmap={"edXML": NS})
    envelope.set("Id", envelope_id or f"edXML-{uuid.uuid4().hex}")
    return envelope, _sub(envelope, "edXMLHeader")


def signature_placeholder(header: etree._Element) -> None:
    """Where signxml puts the signature: the end of ``edXMLHeader``."""
    etree.SubElement(header, q("Signature", DS_NS), nsmap={"ds": DS_NS}).set("Id", "placeholder")


def write_edxml(
    out: BinaryIO,
    header: MessageHeader,
    attachments: Sequence[Attachment],
    trace: Sequence[TraceHeader] = (),
    *,
    signing_key: KeyHandle,
    business: Business | None = None,
    code_tables: CodeTables = DEFAULT_CODE_TABLES,
    limits: Limits | None = None,
    envelope_id: str | None = None,
) -> str:
    """Write a signed edXML message to ``out``, attachments streamed from their sources;
    returns the envelope's Id.  See :func:`build_edxml`."""
    limits = limits or Limits()
    reasons = check_header(header, trace, code_tables)
    if reasons:
        raise UnsupportedMetadata(reasons[0].code, **reasons[0].params)
    if not trace:
        trace = [TraceHeader(header.from_organ.organ_id, dt.datetime.now(VN_TZ))]
    prepared = _prepare(attachments, limits)
    envelope, head = new_envelope(envelope_id)
    try:
        _message_header(head, header)
        _trace_list(head, trace, business or Business())
        signature_placeholder(head)
        _manifest(envelope, prepared)
    except ValueError as exc:  # lxml: text that XML cannot carry (control characters)
        raise UnsupportedMetadata("exchange.metadata.not_xml_text", detail=str(exc)) from exc
    signed = sign_envelope(envelope, signing_key)
    _write_message(out, signed, prepared)
    return str(envelope.get("Id"))


def _write_message(out: BinaryIO, envelope: etree._Element, prepared: Sequence[_Prepared]) -> None:
    try:
        with etree.xmlfile(out, encoding="utf-8") as xf:
            xf.write_declaration()
            with xf.element(q("edXML"), nsmap={None: NS}):
                xf.write(envelope)
                if not prepared:
                    return
                with xf.element(q("AttachmentEncoded")):
                    for item in prepared:
                        with xf.element(q("Attachment")):
                            _field(xf, "ContentType", item.attachment.content_type)
                            _field(xf, "ContentId", item.content_id)
                            _field(xf, "Description", item.attachment.description)
                            with (
                                xf.element(q("ContentTransferEncoded")),
                                item.attachment.open() as fh,
                            ):
                                write_base64(xf.write, fh, flush=xf.flush)
                            _field(xf, "AttachmentName", item.attachment.name)
    except ValueError as exc:
        raise UnsupportedMetadata("exchange.metadata.not_xml_text", detail=str(exc)) from exc


def _field(xf: Any, local: str, text: str | None) -> None:
    with xf.element(q(local)):
        if text:
            xf.write(text)


def build_edxml(
    header: MessageHeader,
    attachments: Sequence[Attachment],
    trace: Sequence[TraceHeader] = (),
    *,
    signing_key: KeyHandle,
    business: Business | None = None,
    code_tables: CodeTables = DEFAULT_CODE_TABLES,
    limits: Limits | None = None,
    envelope_id: str | None = None,
) -> bytes:
    """A signed edXML message: ``header``, ``trace`` (default: one hop, the sender, now),
    ``business`` (default: a new document) and ``attachments`` (base64, by ``cid:``), with an
    XML-DSig signature by ``signing_key`` (a file or PKCS#11 key) over the envelope.

    The header is checked first (agency codes, number and notation, DocumentId, code tables):
    :class:`UnsupportedMetadata` rather than a message the receiver would reject.  For big
    attachments write to a file with :func:`write_edxml` instead.
    """
    out = io.BytesIO()
    write_edxml(
        out,
        header,
        attachments,
        trace,
        signing_key=signing_key,
        business=business,
        code_tables=code_tables,
        limits=limits,
        envelope_id=envelope_id,
    )
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


class _Reader:
    """Typed reads of a (signed) subtree; MalformedMessage names the missing or bad element."""

    def __init__(self, element: etree._Element, where: str) -> None:
        self.element = element
        self.where = where

    def child(self, local: str, *, required: bool = True) -> _Reader | None:
        found = self.element.findall(q(local))
        if len(found) > 1:
            raise MalformedMessage("exchange.malformed.duplicate", element=f"{self.where}/{local}")
        if not found:
            if required:
                raise MalformedMessage(
                    "exchange.malformed.missing", element=f"{self.where}/{local}"
                )
            return None
        return _Reader(found[0], f"{self.where}/{local}")

    def children(self, local: str) -> list[_Reader]:
        return [_Reader(e, f"{self.where}/{local}") for e in self.element.findall(q(local))]

    def text(self, local: str, *, required: bool = False) -> str | None:
        node = self.child(local, required=required)
        value = None if node is None else _text_of(node.element)
        if required and value is None:
            raise MalformedMessage("exchange.malformed.missing", element=f"{self.where}/{local}")
        return value

    def req(self, local: str) -> str:
        value = self.text(local, required=True)
        assert value is not None
        return value

    def integer(self, local: str, *, required: bool = False) -> int | None:
        value = self.text(local, required=required)
        if value is None:
            return None
        try:
            return int(value.strip(), 10)
        except ValueError:
            raise MalformedMessage(
                "exchange.malformed.value", element=f"{self.where}/{local}", value=value[:50]
            ) from None

    def date(self, local: str, *, required: bool = False) -> dt.date | None:
        value = self.text(local, required=required)
        if value is None:
            return None
        try:
            return dt.datetime.strptime(value.strip(), DATE_FORMAT).date()
        except ValueError:
            raise MalformedMessage(
                "exchange.malformed.value", element=f"{self.where}/{local}", value=value[:50]
            ) from None

    def timestamp(self, local: str) -> dt.datetime:
        value = self.req(local)
        try:
            return dt.datetime.strptime(value.strip(), TIMESTAMP_FORMAT).replace(tzinfo=VN_TZ)
        except ValueError:
            raise MalformedMessage(
                "exchange.malformed.value", element=f"{self.where}/{local}", value=value[:50]
            ) from None


def _text_of(element: etree._Element) -> str | None:
    if len(element):
        raise MalformedMessage("exchange.malformed.value", element=_local(element.tag), value="…")
    text = element.text
    return text if text and text.strip() else None


def _local(tag: Any) -> str:
    return str(tag).rsplit("}", 1)[-1]


def _read_organ(node: _Reader) -> Organ:
    values = {attr: node.text(tag) for tag, attr in _ORGAN_FIELDS}
    for required in ("OrganId", "OrganName"):
        node.req(required)
    return Organ(**values)  # type: ignore[arg-type]


def read_staff(node: _Reader | None) -> StaffInfo | None:
    if node is None:
        return None
    return StaffInfo(
        department=node.text("Department"),
        staff=node.text("Staff"),
        mobile=node.text("Mobile"),
        email=node.text("Email"),
    )


def read_response_for(node: _Reader) -> ResponseFor:
    date = node.date("PromulgationDate", required=True)
    assert date is not None
    return ResponseFor(
        organ_id=node.req("OrganId"),
        code=node.req("Code"),
        promulgation_date=date,
        document_id=node.req("DocumentId"),
    )


def _read_header(
    envelope: etree._Element,
) -> tuple[MessageHeader, tuple[TraceHeader, ...], Business | None]:
    root = _Reader(envelope, "edXMLEnvelope")
    head = root.child("edXMLHeader")
    assert head is not None
    mh = head.child("MessageHeader")
    assert mh is not None
    to = tuple(_read_organ(n) for n in mh.children("To"))
    code = mh.child("Code")
    info = mh.child("PromulgationInfo")
    doc_type = mh.child("DocumentType")
    assert code is not None and info is not None and doc_type is not None
    signer = mh.child("SignerInfo", required=False)
    places = mh.child("ToPlaces", required=False)
    other = mh.child("OtherInfo", required=False)
    appendixes = other.child("Appendixes", required=False) if other else None
    from_node = mh.child("From")
    assert from_node is not None
    promulgation_date = info.date("PromulgationDate", required=True)
    assert promulgation_date is not None
    header = MessageHeader(
        from_organ=_read_organ(from_node),
        to=to,
        code_number=code.req("CodeNumber"),
        code_notation=code.req("CodeNotation"),
        promulgation_date=promulgation_date,
        document_type=doc_type.integer("Type", required=True) or 0,
        type_name=doc_type.req("TypeName"),
        subject=mh.req("Subject"),
        document_id=mh.req("DocumentId"),
        promulgation_place=info.text("Place"),
        content=mh.text("Content"),
        signer_competence=signer.text("Competence") if signer else None,
        signer_position=signer.text("Position") if signer else None,
        signer_full_name=signer.text("FullName") if signer else None,
        due_date=mh.date("DueDate"),
        to_places=tuple(t for t in (_text_of(p.element) for p in places.children("Place")) if t)
        if places
        else (),
        priority=(other.integer("Priority") if other else None) or 0,
        sphere_of_promulgation=other.text("SphereOfPromulgation") if other else None,
        typer_notation=other.text("TyperNotation") if other else None,
        promulgation_amount=other.integer("PromulgationAmount") if other else None,
        page_amount=other.integer("PageAmount") if other else None,
        appendixes=tuple(
            t for t in (_text_of(a.element) for a in appendixes.children("Appendix")) if t
        )
        if appendixes
        else (),
        response_for=tuple(read_response_for(n) for n in mh.children("ResponseFor")),
        steering_type=mh.integer("SteeringType") or 0,
    )
    trace: tuple[TraceHeader, ...] = ()
    business: Business | None = None
    trace_list = head.child("TraceHeaderList", required=False)
    if trace_list is not None:
        trace = tuple(
            TraceHeader(organ_id=n.req("OrganId"), timestamp=n.timestamp("Timestamp"))
            for n in trace_list.children("TraceHeader")
        )
        bus = trace_list.child("Bussiness", required=False)
        if bus is not None:
            kind = bus.integer("BussinessDocType", required=True)
            assert kind is not None
            try:
                doc_type_value = BusinessDocType(kind)
            except ValueError:
                raise MalformedMessage(
                    "exchange.malformed.value",
                    element="Bussiness/BussinessDocType",
                    value=str(kind),
                ) from None
            business = Business(
                doc_type=doc_type_value,
                reason=bus.text("BussinessDocReason"),
                staff=read_staff(bus.child("StaffInfo", required=False)),
                paper=bus.integer("Paper"),
            )
    return header, trace, business


@dataclass(frozen=True)
class _ManifestEntry:
    content_id: str
    name: str
    content_type: str
    description: str | None
    sha256: str | None
    size: int | None


def _read_manifest(envelope: etree._Element) -> list[_ManifestEntry]:
    root = _Reader(envelope, "edXMLEnvelope")
    body = root.child("edXMLBody", required=False)
    manifest = body.child("edXMLManifest", required=False) if body else None
    if manifest is None:
        return []
    entries: list[_ManifestEntry] = []
    for ref in manifest.children("Reference"):
        href = ref.element.get(q("href", XLINK_NS)) or ref.text("ContentId") or ""
        cid = _cid(href)
        if not cid:
            raise MalformedMessage("exchange.malformed.missing", element="Reference/ContentId")
        digests = ref.element.findall(q("Digest", KYSO_NS))
        sha256: str | None = None
        size: int | None = None
        if len(digests) > 1:
            raise MalformedMessage("exchange.malformed.duplicate", element="Reference/Digest")
        if digests and digests[0].get("Algorithm") == SHA256:
            sha256 = (digests[0].text or "").strip().lower()
            try:
                size = int(digests[0].get("Size", ""))
            except ValueError:
                raise MalformedMessage(
                    "exchange.malformed.value", element="Reference/Digest@Size", value="…"
                ) from None
        entries.append(
            _ManifestEntry(
                content_id=cid,
                name=ref.text("AttachmentName") or cid,
                content_type=ref.text("ContentType") or "application/octet-stream",
                description=ref.text("Description"),
                sha256=sha256,
                size=size,
            )
        )
    return entries


def _cid(text: str) -> str:
    value = text.strip()
    if value.lower().startswith("cid:"):
        value = value[4:]
    return value.strip("<>").strip()


def _match_attachments(
    raw: RawMessage, manifest: Sequence[_ManifestEntry], reasons: list[Reason]
) -> tuple[ReceivedAttachment, ...]:
    by_cid: dict[str, tuple[RawAttachment, Path, str]] = {}
    for item in raw.attachments:
        cid = _cid(item.fields.get("ContentId", ""))
        if not cid:
            raise MalformedMessage("exchange.malformed.missing", element="Attachment/ContentId")
        if item.path is None or item.sha256 is None:
            raise MalformedMessage(
                "exchange.malformed.missing", element="Attachment/ContentTransferEncoded"
            )
        if cid in by_cid:
            raise MalformedMessage("exchange.malformed.duplicate", element=f"cid:{cid}")
        by_cid[cid] = (item, item.path, item.sha256)
    seen: set[str] = set()
    received: list[ReceivedAttachment] = []
    for entry in manifest:
        if entry.content_id in seen:
            raise MalformedMessage(
                "exchange.malformed.duplicate", element=f"cid:{entry.content_id}"
            )
        seen.add(entry.content_id)
        found = by_cid.get(entry.content_id)
        if found is None:
            reasons.append(Reason("exchange.reason.attachment_missing", {"cid": entry.content_id}))
            continue
        item, path, sha256 = found
        if entry.sha256 is None:
            reasons.append(Reason("exchange.reason.attachment_unsigned", {"cid": entry.content_id}))
        elif entry.sha256 != sha256 or entry.size != item.size:
            reasons.append(
                Reason(
                    "exchange.reason.attachment_altered",
                    {"cid": entry.content_id, "name": entry.name},
                )
            )
        received.append(
            ReceivedAttachment(
                content_id=entry.content_id,
                name=entry.name,
                content_type=entry.content_type,
                description=entry.description,
                size=item.size,
                sha256=sha256,
                path=path,
            )
        )
    for cid in by_cid:
        if cid not in seen:
            reasons.append(Reason("exchange.reason.attachment_unreferenced", {"cid": cid}))
    return tuple(received)


async def async_parse_edxml(
    data: bytes | BinaryIO | Path,
    *,
    trust_roots: TrustStore | Iterable[x509.Certificate],
    at: dt.datetime | None = None,
    revocation_mode: RevocationMode = "soft-fail",
    allow_fetching: bool = False,
    crls: Sequence[bytes] = (),
    ocsps: Sequence[bytes] = (),
    fetcher_backend: Any = None,
    sender_certificates: Mapping[str, Sequence[x509.Certificate]] | None = None,
    code_tables: CodeTables = DEFAULT_CODE_TABLES,
    limits: Limits | None = None,
    workdir: Path | None = None,
) -> EdxmlMessage:
    """Read an edXML message defensively and check it (:func:`parse_edxml` from synchronous
    code).

    Raises :class:`MalformedMessage` (or :class:`MessageTooLarge`) when the input is not an
    edXML message kyso can read: not XML, a DTD (external entities, entity bombs), over a
    limit, a required element missing or unreadable, base64 that does not decode.

    Otherwise returns the message, whose :class:`Verdict` lists every reason to reject it:
    the XML signature (missing, invalid, content altered, certificate expired, revoked or not
    chaining to ``trust_roots`` at ``at``), attachments (missing, altered, not referenced,
    not covered by the signature), metadata (agency codes in both forms, number and notation,
    DocumentId, code tables) and, when ``sender_certificates`` maps agency codes to their
    known certificates, whether the signer is the sending agency.  Revocation is soft-fail
    without fetching unless asked otherwise (``crls``/``ocsps`` may be passed).

    Attachments are decoded into temporary files (in ``workdir`` if given), deleted when the
    message is closed.
    """
    trust = TrustSettings.of(
        trust_roots,
        at=at,
        revocation_mode=revocation_mode,
        allow_fetching=allow_fetching,
        crls=tuple(crls),
        ocsps=tuple(ocsps),
        fetcher_backend=fetcher_backend,
    )
    message = await read_and_check(data, trust, limits=limits or Limits(), workdir=workdir)
    try:
        reasons = list(message.check.reasons)
        header, trace, business = _read_header(message.source)
        manifest = _read_manifest(message.source)
        attachments = _match_attachments(message.raw, manifest, reasons)
        reasons.extend(check_header(header, trace, code_tables))
        reasons.extend(
            check_sender(header.from_organ.organ_id, message.check.certificate, sender_certificates)
        )
        return EdxmlMessage(
            header=header,
            trace=trace,
            business=business,
            attachments=attachments,
            signer_certificate=message.check.certificate,
            signer_path=message.check.path,
            verdict=Verdict(tuple(reasons)),
            signed=message.signed,
            envelope_id=message.envelope_id,
            message_sha256=message.raw.message_sha256,
            _tmp=message.tmp,  # the attachments' files live as long as the message
        )
    except BaseException:
        message.tmp.close()
        raise


parse_edxml = sync_twin(async_parse_edxml)
