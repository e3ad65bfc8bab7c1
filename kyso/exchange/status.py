"""Status messages and receipts: the receiving agency's signed answers to a document.

A status message is an edXML message whose ``edXMLHeader`` holds a ``Status`` (the structure
the hub's integrations use: ``ResponseFor`` → the answered document, ``From``, ``StatusCode``,
``Description``, ``Timestamp``, ``StaffInfo``) and kyso's ``Receipt`` extension (the SHA-256
of every document file it answers, of the edXML message as received, the verification
verdict and the reasons), all covered by the receiving agency's XML-DSig signature::

    <edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016">
      <edXML:edXMLEnvelope xmlns:edXML="…" Id="edXML-…">
        <edXML:edXMLHeader>
          <edXML:Status>
            <edXML:ResponseFor> OrganId, Code, PromulgationDate, DocumentId </…>
            <edXML:From> OrganId, OrganName, … </edXML:From>
            <edXML:StatusCode>03</edXML:StatusCode>
            <edXML:Description>…</edXML:Description>
            <edXML:Timestamp>2026/11/22 09:30:00</edXML:Timestamp>
            <edXML:StaffInfo> Department, Staff, Mobile, Email </…>
          </edXML:Status>
          <kyso:Receipt xmlns:kyso="urn:kyso:exchange:1">
            <kyso:DocumentDigest Algorithm="sha256">…</kyso:DocumentDigest>
            <kyso:MessageDigest Algorithm="sha256">…</kyso:MessageDigest>
            <kyso:Verdict>TOTAL_PASSED</kyso:Verdict>
            <kyso:Reason Code="…"><kyso:Param Name="…">…</kyso:Param></kyso:Reason>
          </kyso:Receipt>
          <ds:Signature>…</ds:Signature>
        </edXML:edXMLHeader>
      </edXML:edXMLEnvelope>
    </edXML>
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography import x509
from lxml import etree

from kyso.archive.metadata import MetadataError, parse_agency_code
from kyso.certs.keys import KeyHandle
from kyso.certs.trust import TrustStore
from kyso.exchange._xml import (
    KYSO_NS,
    Limits,
    RevocationMode,
    TrustSettings,
    check_sender,
    q,
    read_and_check,
    sign_envelope,
    sync_twin,
)
from kyso.exchange.codes import StatusCode
from kyso.exchange.edxml import (
    Organ,
    ResponseFor,
    StaffInfo,
    Verdict,
    _date,
    _organ,
    _read_organ,
    _Reader,
    _staff,
    _sub,
    _write_message,
    format_timestamp,
    new_envelope,
    read_response_for,
    read_staff,
    signature_placeholder,
)
from kyso.exchange.errors import MalformedMessage, UnsupportedMetadata
from kyso.signer.verify.model import Reason

__all__ = [
    "ParsedStatus",
    "StatusCode",
    "StatusMessage",
    "async_parse_status",
    "build_status",
    "parse_status",
]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_VERDICT = re.compile(r"[A-Z_]{1,40}")
_SHA256 = "sha256"
_STATUS_LIMITS = Limits(max_message_bytes=4 * 1024 * 1024, max_attachments=0)
"""A status message is small and carries no attachment."""


@dataclass(frozen=True)
class StatusMessage:
    """One status of a document, as the receiving agency states and signs it."""

    response_for: ResponseFor
    """The document answered (its issuer, number/notation, date and DocumentId)."""
    from_organ: Organ
    """The agency answering (the receiver of the document)."""
    status_code: StatusCode
    timestamp: dt.datetime
    """When (aware; sent in Vietnam time to the second)."""
    document_sha256: tuple[str, ...]
    """SHA-256 (lowercase hex) of each document file (PDF) the status is about."""
    description: str | None = None
    """Free text; for 02 the reason in words (required unless ``reasons`` are given)."""
    staff: StaffInfo | None = None
    message_sha256: str | None = None
    """SHA-256 of the edXML message as received, when the status answers one."""
    verdict: str | None = None
    """The verification's indication (``TOTAL_PASSED``, ``TOTAL_FAILED``, ``INDETERMINATE``)."""
    reasons: tuple[Reason, ...] = ()
    """Why (catalogue codes; parameters travel as text)."""


@dataclass
class ParsedStatus:
    """A parsed status message with the outcome of its checks."""

    status: StatusMessage
    signer_certificate: x509.Certificate | None
    signer_path: tuple[x509.Certificate, ...]
    verdict: Verdict
    signed: bool
    envelope_id: str | None
    received_sha256: str
    """SHA-256 of the status message's own bytes."""


def _check(status: StatusMessage) -> None:
    try:
        parse_agency_code(status.from_organ.organ_id, "From.OrganId")
        parse_agency_code(status.response_for.organ_id, "ResponseFor.OrganId")
    except MetadataError as exc:
        raise UnsupportedMetadata(exc.code, **exc.params) from exc
    if not isinstance(status.status_code, StatusCode):
        raise UnsupportedMetadata("exchange.status.bad_code", value=str(status.status_code))
    if not status.document_sha256 or not all(_HEX64.fullmatch(h) for h in status.document_sha256):
        raise UnsupportedMetadata("exchange.status.bad_digest")
    if status.message_sha256 is not None and not _HEX64.fullmatch(status.message_sha256):
        raise UnsupportedMetadata("exchange.status.bad_digest")
    if status.verdict is not None and not _VERDICT.fullmatch(status.verdict):
        raise UnsupportedMetadata("exchange.status.bad_verdict", value=status.verdict)
    if status.status_code is StatusCode.REJECTED and not (
        status.reasons or (status.description or "").strip()
    ):
        raise UnsupportedMetadata("exchange.status.reason_required")


def _receipt(parent: etree._Element, status: StatusMessage) -> None:
    receipt = etree.SubElement(parent, q("Receipt", KYSO_NS), nsmap={"kyso": KYSO_NS})
    for digest in status.document_sha256:
        element = etree.SubElement(receipt, q("DocumentDigest", KYSO_NS))
        element.set("Algorithm", _SHA256)
        element.text = digest
    if status.message_sha256 is not None:
        element = etree.SubElement(receipt, q("MessageDigest", KYSO_NS))
        element.set("Algorithm", _SHA256)
        element.text = status.message_sha256
    if status.verdict is not None:
        etree.SubElement(receipt, q("Verdict", KYSO_NS)).text = status.verdict
    for reason in status.reasons:
        element = etree.SubElement(receipt, q("Reason", KYSO_NS))
        element.set("Code", reason.code)
        for name, value in reason.params.items():
            param = etree.SubElement(element, q("Param", KYSO_NS))
            param.set("Name", str(name))
            param.text = str(value)


def build_status(
    status: StatusMessage,
    *,
    signing_key: KeyHandle,
    envelope_id: str | None = None,
) -> bytes:
    """The status message, signed with XML-DSig by ``signing_key`` (the answering agency's
    key, file or PKCS#11).  :class:`UnsupportedMetadata` for an invalid status (bad agency
    code or digest, a 02 without a reason)."""
    _check(status)
    envelope, head = new_envelope(envelope_id)
    try:
        element = _sub(head, "Status")
        answered = _sub(element, "ResponseFor")
        _sub(answered, "OrganId", status.response_for.organ_id)
        _sub(answered, "Code", status.response_for.code)
        _sub(answered, "PromulgationDate", _date(status.response_for.promulgation_date))
        _sub(answered, "DocumentId", status.response_for.document_id)
        _organ(element, "From", status.from_organ)
        _sub(element, "StatusCode", status.status_code.value)
        _sub(element, "Description", status.description)
        _sub(element, "Timestamp", format_timestamp(status.timestamp))
        _staff(element, status.staff)
        _receipt(head, status)
        signature_placeholder(head)
    except ValueError as exc:
        raise UnsupportedMetadata("exchange.metadata.not_xml_text", detail=str(exc)) from exc
    signed = sign_envelope(envelope, signing_key)
    out = io.BytesIO()
    _write_message(out, signed, ())
    return out.getvalue()


def _read_receipt(
    head: _Reader,
) -> tuple[tuple[str, ...], str | None, str | None, tuple[Reason, ...]]:
    found = head.element.findall(q("Receipt", KYSO_NS))
    if len(found) != 1:
        raise MalformedMessage("exchange.malformed.missing", element="edXMLHeader/kyso:Receipt")
    receipt = found[0]
    digests: list[str] = []
    for element in receipt.findall(q("DocumentDigest", KYSO_NS)):
        digests.append(_digest_of(element, "DocumentDigest"))
    if not digests:
        raise MalformedMessage("exchange.malformed.missing", element="Receipt/DocumentDigest")
    messages = receipt.findall(q("MessageDigest", KYSO_NS))
    if len(messages) > 1:
        raise MalformedMessage("exchange.malformed.duplicate", element="Receipt/MessageDigest")
    message = _digest_of(messages[0], "MessageDigest") if messages else None
    verdicts = receipt.findall(q("Verdict", KYSO_NS))
    if len(verdicts) > 1:
        raise MalformedMessage("exchange.malformed.duplicate", element="Receipt/Verdict")
    verdict = (verdicts[0].text or "").strip() if verdicts else None
    if verdict is not None and not _VERDICT.fullmatch(verdict):
        raise MalformedMessage(
            "exchange.malformed.value", element="Receipt/Verdict", value=verdict[:50]
        )
    reasons: list[Reason] = []
    for element in receipt.findall(q("Reason", KYSO_NS)):
        code = element.get("Code") or ""
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", code):
            raise MalformedMessage(
                "exchange.malformed.value", element="Receipt/Reason", value=code[:50]
            )
        params = {str(p.get("Name")): p.text or "" for p in element.findall(q("Param", KYSO_NS))}
        reasons.append(Reason(code, params))
    return tuple(digests), message, verdict, tuple(reasons)


def _digest_of(element: etree._Element, name: str) -> str:
    value = (element.text or "").strip().lower()
    if element.get("Algorithm") != _SHA256 or not _HEX64.fullmatch(value):
        raise MalformedMessage(
            "exchange.malformed.value", element=f"Receipt/{name}", value=value[:70]
        )
    return value


def _read_status(envelope: etree._Element) -> StatusMessage:
    root = _Reader(envelope, "edXMLEnvelope")
    head = root.child("edXMLHeader")
    assert head is not None
    node = head.child("Status")
    assert node is not None
    answered = node.child("ResponseFor")
    from_node = node.child("From")
    assert answered is not None and from_node is not None
    code_text = node.req("StatusCode")
    try:
        code = StatusCode.parse(code_text)
    except ValueError:
        raise MalformedMessage(
            "exchange.malformed.value", element="Status/StatusCode", value=code_text[:20]
        ) from None
    digests, message, verdict, reasons = _read_receipt(head)
    return StatusMessage(
        response_for=read_response_for(answered),
        from_organ=_read_organ(from_node),
        status_code=code,
        timestamp=node.timestamp("Timestamp"),
        document_sha256=digests,
        description=node.text("Description"),
        staff=read_staff(node.child("StaffInfo", required=False)),
        message_sha256=message,
        verdict=verdict,
        reasons=reasons,
    )


async def async_parse_status(
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
    limits: Limits | None = None,
) -> ParsedStatus:
    """Read a status message defensively and check it (:func:`parse_status` from synchronous
    code), with the same rules as :func:`kyso.exchange.edxml.async_parse_edxml`:
    MalformedMessage for input that is not a status message; otherwise the verdict lists the
    reasons to reject it (signature, certificate, agency codes, signer not the answering
    agency when ``sender_certificates`` is given).  A status message carries no attachment
    (any is refused as too many)."""
    trust = TrustSettings.of(
        trust_roots,
        at=at,
        revocation_mode=revocation_mode,
        allow_fetching=allow_fetching,
        crls=tuple(crls),
        ocsps=tuple(ocsps),
        fetcher_backend=fetcher_backend,
    )
    message = await read_and_check(data, trust, limits=limits or _STATUS_LIMITS)
    try:
        reasons = list(message.check.reasons)
        status = _read_status(message.source)
        reasons.extend(_agency_code_reasons(status))
        reasons.extend(
            check_sender(status.from_organ.organ_id, message.check.certificate, sender_certificates)
        )
        return ParsedStatus(
            status=status,
            signer_certificate=message.check.certificate,
            signer_path=message.check.path,
            verdict=Verdict(tuple(reasons)),
            signed=message.signed,
            envelope_id=message.envelope_id,
            received_sha256=message.raw.message_sha256,
        )
    finally:
        message.tmp.close()


def _agency_code_reasons(status: StatusMessage) -> list[Reason]:
    """The agency codes of a received status that are not valid (its sender may not be kyso)."""
    reasons: list[Reason] = []
    for field_name, organ_id in (
        ("From.OrganId", status.from_organ.organ_id),
        ("ResponseFor.OrganId", status.response_for.organ_id),
    ):
        try:
            parse_agency_code(organ_id, field_name)
        except MetadataError as exc:
            reasons.append(Reason(exc.code, dict(exc.params)))
    return reasons


parse_status = sync_twin(async_parse_status)
