"""The XML machinery shared by edXML packages and status messages.

* :class:`Limits` and :func:`read_message`: a defused, streaming reader.  The input is fed in
  chunks to lxml's pull parser with entities never resolved, no DTD loaded and the network
  never touched; a DTD is refused outright (no entity, internal or external, is expanded),
  nesting and sizes are capped, the small signed ``edXMLEnvelope`` is kept as parsed (its
  namespace prefixes intact, which exclusive canonicalisation depends on), and each
  attachment's base64 content is decoded into a temporary file as soon as its element ends
  (SHA-256 computed on the way), then dropped from the tree.
* :func:`sign_envelope`: the XML-DSig signature, made by signxml, enveloped in
  ``edXMLHeader`` and covering the ``edXMLEnvelope`` (``Reference URI="#<Id>"``, exclusive
  canonicalisation, so the envelope can be checked on its own or inside the whole message).
  The private operation goes through :meth:`KeyHandle.sign`, so a key on a PKCS#11 token
  signs without ever leaving it.
* :func:`check_signature`: signxml's verification of that signature with the certificate
  found in the signature, then the certification path of that certificate built and checked
  against the caller's trust roots by pyhanko-certvalidator (as :mod:`kyso.signer` does).
* :func:`read_and_check` (the two steps above, where every parser starts), :func:`check_sender`
  and :func:`sync_twin` (a parser's synchronous form): what the edXML and status parsers share,
  so that each of them only reads and checks its own part of the header.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, cast

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import (
    ExpiredError,
    InsufficientRevinfoError,
    InvalidCertificateError,
    NotYetValidError,
    PathBuildingError,
    RevokedError,
)
from signxml import SignatureConfiguration, XMLSigner, XMLVerifier
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.exceptions import (
    InvalidCertificate,
    InvalidDigest,
    InvalidInput,
    InvalidSignature,
    SignXMLException,
)

from kyso.aio import sync_twin
from kyso.certs.keys import KeyHandle
from kyso.certs.trust import TrustStore
from kyso.exchange.errors import ExchangeSigningError, MalformedMessage, MessageTooLarge
from kyso.signer.verify.model import Reason

__all__ = [
    "DS_NS",
    "KYSO_NS",
    "NS",
    "XLINK_NS",
    "CheckedMessage",
    "Limits",
    "RawAttachment",
    "RawMessage",
    "RevocationMode",
    "SignatureCheck",
    "TrustSettings",
    "check_sender",
    "check_signature",
    "read_and_check",
    "read_message",
    "sign_envelope",
    "sync_twin",
]

NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
"""The edXML namespace (QCVN 102:2016)."""
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
XLINK_NS = "http://www.w3.org/1999/xlink"
KYSO_NS = "urn:kyso:exchange:1"
"""kyso's extension elements (attachment digests, receipts): ignorable by other systems."""

MiB = 1024 * 1024
_CHUNK = 1024 * 1024
_B64_WHITESPACE = re.compile(r"\s+")
_B64_SPACE = b" \t\r\n"
_ALLOWED_SIGNATURES = frozenset(
    {
        SignatureMethod.RSA_SHA256,
        SignatureMethod.RSA_SHA384,
        SignatureMethod.RSA_SHA512,
        SignatureMethod.ECDSA_SHA256,
        SignatureMethod.ECDSA_SHA384,
        SignatureMethod.ECDSA_SHA512,
    }
)
_ALLOWED_DIGESTS = frozenset(
    {DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512}
)


def q(local: str, ns: str = NS) -> str:
    """The Clark name ``{ns}local``."""
    return f"{{{ns}}}{local}"


# --------------------------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What a reader accepts (and a builder produces).  Every limit is a hard error."""

    max_message_bytes: int = 1024 * MiB
    """The whole message as received."""
    max_attachment_bytes: int = 50 * MiB
    """One attachment, decoded (practice: exchanged PDFs are at most 50 MB)."""
    max_attachments: int = 100
    max_envelope_bytes: int = 4 * MiB
    """Text and attributes of the signed envelope (header, trace, manifest, signature)."""
    max_depth: int = 32
    max_field_chars: int = 64 * 1024
    """One text field outside the envelope (attachment name, content type...)."""


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@dataclass
class RawAttachment:
    """One ``AttachmentEncoded/Attachment`` as read: its fields and its decoded content on
    disk (``path``), with the SHA-256 and size computed while decoding."""

    fields: dict[str, str]
    path: Path | None = None
    sha256: str | None = None
    size: int = 0


@dataclass
class RawMessage:
    """What :func:`read_message` found: the root's tag, the envelope (rebuilt, small), the
    attachments (decoded into ``workdir``) and the SHA-256 of the bytes read."""

    root_tag: str
    envelope: etree._Element
    attachments: list[RawAttachment]
    message_sha256: str
    size: int
    workdir: Path

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


class _Base64Sink:
    """Decodes base64 text arriving in pieces into a file, hashing as it goes (line breaks
    and spaces between the characters are allowed, anything else outside the alphabet not)."""

    def __init__(self, out: IO[bytes], limit: int) -> None:
        self._out = out
        self._limit = limit
        self._pending = b""
        self._done = False
        self.hash = hashlib.sha256()
        self.size = 0

    def feed(self, text: str) -> None:
        try:
            chunk = text.encode("ascii").translate(None, _B64_SPACE)
        except UnicodeEncodeError:
            raise MalformedMessage("exchange.malformed.base64") from None
        if not chunk:
            return
        if self._done:
            raise MalformedMessage("exchange.malformed.base64")
        self._pending += chunk
        usable = len(self._pending) // 4 * 4
        if usable:
            self._decode(self._pending[:usable])
            self._pending = self._pending[usable:]

    def _decode(self, data: bytes) -> None:
        try:
            raw = binascii.a2b_base64(data, strict_mode=True)
        except (binascii.Error, ValueError):
            raise MalformedMessage("exchange.malformed.base64") from None
        if data.endswith(b"="):
            self._done = True
        self.size += len(raw)
        if self.size > self._limit:
            raise MessageTooLarge("exchange.malformed.attachment_too_large", limit=self._limit)
        self.hash.update(raw)
        self._out.write(raw)

    def finish(self) -> None:
        if self._pending:
            raise MalformedMessage("exchange.malformed.base64")


_ATTACHMENT_FIELDS = ("ContentType", "ContentId", "Description", "AttachmentName")
_B64_SLICE = 4 * 1024 * 1024


class _Walker:
    """Consumes the pull parser's events: checks the root, depth and DTD, keeps the
    envelope, and decodes each attachment as soon as its element ends, then drops it."""

    def __init__(self, limits: Limits, workdir: Path) -> None:
        self.limits = limits
        self.workdir = workdir
        self.depth = 0
        self.root_tag: str | None = None
        self.envelope: etree._Element | None = None
        self.envelope_depth = 0
        self.envelope_chars = 0
        self.attachments: list[RawAttachment] = []

    def handle(self, events: Iterable[tuple[str, Any]]) -> None:
        for event, element in events:
            if event == "start":
                self._start(element)
            else:
                self._end(element)

    def _start(self, element: etree._Element) -> None:
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise MessageTooLarge("exchange.malformed.too_deep", limit=self.limits.max_depth)
        if self.depth == 1:
            docinfo = element.getroottree().docinfo
            if docinfo.doctype or docinfo.internalDTD is not None:
                raise MalformedMessage("exchange.malformed.doctype")
            if element.tag not in (q("edXML"), q("edXMLEnvelope")):
                raise MalformedMessage("exchange.malformed.root", tag=_local(str(element.tag)))
            self.root_tag = str(element.tag)
        if element.tag == q("edXMLEnvelope") and self.depth <= 2 and not self.envelope_depth:
            if self.envelope is not None:
                raise MalformedMessage("exchange.malformed.duplicate", element="edXMLEnvelope")
            self.envelope_depth = self.depth

    def _end(self, element: etree._Element) -> None:
        depth = self.depth
        self.depth -= 1
        if self.envelope_depth and depth >= self.envelope_depth:
            if not isinstance(element.tag, str):  # comment or processing instruction
                self._count(len(element.text or ""))
                return
            self._count(
                len(element.text or "")
                + len(element.tail or "")
                + sum(len(k) + len(v) for k, v in element.attrib.items())
                + 16
            )
            if depth == self.envelope_depth:
                self.envelope = element
                self.envelope_depth = 0
            return
        if depth == 3 and element.tag == q("Attachment"):
            parent = element.getparent()
            if parent is not None and parent.tag == q("AttachmentEncoded"):
                self._attachment(element)
                parent.remove(element)
                return
        if depth == 2 and element.tag not in (q("edXMLEnvelope"), q("AttachmentEncoded")):
            parent = element.getparent()
            if parent is not None:  # nothing else is read: do not keep it in memory
                parent.remove(element)

    def _count(self, chars: int) -> None:
        self.envelope_chars += chars
        if self.envelope_chars > self.limits.max_envelope_bytes:
            raise MessageTooLarge(
                "exchange.malformed.envelope_too_large", limit=self.limits.max_envelope_bytes
            )

    def _attachment(self, element: etree._Element) -> None:
        if len(self.attachments) >= self.limits.max_attachments:
            raise MessageTooLarge(
                "exchange.malformed.too_many_attachments", limit=self.limits.max_attachments
            )
        item = RawAttachment(fields={})
        content: str | None = None
        seen_content = False
        for child in element:
            if not isinstance(child.tag, str) or not child.tag.startswith(f"{{{NS}}}"):
                continue
            local = _local(child.tag)
            if local == "ContentTransferEncoded":
                if seen_content:
                    raise MalformedMessage(
                        "exchange.malformed.duplicate", element="ContentTransferEncoded"
                    )
                seen_content = True
                content = child.text or ""
            elif local in _ATTACHMENT_FIELDS:
                if local in item.fields:
                    raise MalformedMessage("exchange.malformed.duplicate", element=local)
                text = child.text or ""
                if len(text) > self.limits.max_field_chars:
                    raise MessageTooLarge(
                        "exchange.malformed.field_too_large",
                        element=local,
                        limit=self.limits.max_field_chars,
                    )
                item.fields[local] = text.strip()
        if content is not None:
            fd, name = tempfile.mkstemp(dir=self.workdir, suffix=".bin")
            item.path = Path(name)
            with os.fdopen(fd, "wb") as fh:
                sink = _Base64Sink(fh, self.limits.max_attachment_bytes)
                for start in range(0, len(content), _B64_SLICE):
                    sink.feed(content[start : start + _B64_SLICE])
                sink.finish()
            item.sha256 = sink.hash.hexdigest()
            item.size = sink.size
        element.clear()
        self.attachments.append(item)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _chunks(data: bytes | BinaryIO | Path) -> Iterator[bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data)
        for start in range(0, len(view), _CHUNK):
            yield bytes(view[start : start + _CHUNK])
        return
    if isinstance(data, Path):
        with data.open("rb") as fh:
            yield from iter(lambda: fh.read(_CHUNK), b"")
        return
    yield from iter(lambda: data.read(_CHUNK), b"")


_PARSER_OPTIONS: dict[str, Any] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "remove_blank_text": False,
}


def _parser() -> etree.XMLParser:
    """The parser configuration for small pieces of exchange XML."""
    return etree.XMLParser(**_PARSER_OPTIONS)


def read_message(
    data: bytes | BinaryIO | Path, *, limits: Limits, workdir: Path | None = None
) -> RawMessage:
    """Read an edXML message defensively (see the module docstring); MalformedMessage if it
    is not one.  The caller owns the returned temporary directory (``RawMessage.cleanup``)."""
    folder = Path(tempfile.mkdtemp(prefix="kyso-edxml-", dir=workdir))
    walker = _Walker(limits, folder)
    # huge_tree: one base64 text node may exceed libxml2's default 10 MB; entities are never
    # expanded (resolve_entities=False) and any DTD is refused at the root's start.
    parser = etree.XMLPullParser(events=("start", "end"), huge_tree=True, **_PARSER_OPTIONS)
    digest = hashlib.sha256()
    size = 0
    head = bytearray()
    try:
        try:
            for chunk in _chunks(data):
                size += len(chunk)
                if size > limits.max_message_bytes:
                    raise MessageTooLarge(
                        "exchange.malformed.message_too_large", limit=limits.max_message_bytes
                    )
                digest.update(chunk)
                if walker.root_tag is None and len(head) < _CHUNK:
                    head += chunk[:_CHUNK]
                parser.feed(chunk)
                walker.handle(parser.read_events())
            parser.close()
            walker.handle(parser.read_events())
        except etree.XMLSyntaxError as exc:
            if walker.root_tag is None and b"<!DOCTYPE" in head:
                # libxml2 stopped inside the DTD (an entity loop or bomb) before the root
                raise MalformedMessage("exchange.malformed.doctype") from None
            raise MalformedMessage("exchange.malformed.not_xml", detail=_short(exc)) from None
        except (UnicodeDecodeError, LookupError) as exc:
            raise MalformedMessage("exchange.malformed.not_xml", detail=_short(exc)) from None
        if walker.envelope is None:
            raise MalformedMessage("exchange.malformed.missing", element="edXMLEnvelope")
        assert walker.root_tag is not None
        return RawMessage(
            root_tag=walker.root_tag,
            envelope=walker.envelope,
            attachments=walker.attachments,
            message_sha256=digest.hexdigest(),
            size=size,
            workdir=folder,
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def safe_fromstring(data: bytes) -> etree._Element:
    """Parse a small, already-read piece of XML (no DTD, no entities, no network)."""
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise MalformedMessage("exchange.malformed.not_xml", detail=_short(exc)) from None
    if root.getroottree().docinfo.doctype:
        raise MalformedMessage("exchange.malformed.doctype")
    return root


class TempDir:
    """A temporary directory removed by :meth:`close`, or when its owner is collected."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(path), True)

    def close(self) -> None:
        self._finalizer()


# --------------------------------------------------------------------------------------------
# Signing
# --------------------------------------------------------------------------------------------


class _HandleKey:
    """The part of cryptography's private-key interface signxml calls, backed by a
    :class:`KeyHandle`: signxml hands over the canonical SignedInfo and the hash, the handle
    signs it (with a parsed file key or on the PKCS#11 token)."""

    def __init__(self, handle: KeyHandle) -> None:
        self._handle = handle
        self.key_size: int = cast(Any, handle.certificate.public_key()).key_size

    def public_key(self) -> Any:
        return self._handle.certificate.public_key()

    def sign(
        self,
        data: bytes,
        padding: Any = None,
        algorithm: hashes.HashAlgorithm | None = None,
        signature_algorithm: Any = None,
    ) -> bytes:
        if signature_algorithm is not None:  # ECDSA
            algorithm = signature_algorithm.algorithm
        elif not isinstance(padding, PKCS1v15):
            raise ExchangeSigningError("exchange.sign.unsupported_padding")
        if algorithm is None:
            raise ExchangeSigningError("exchange.sign.unsupported_padding")
        return self._handle.sign(data, algorithm.name)


def _signature_method(handle: KeyHandle) -> SignatureMethod:
    return (
        SignatureMethod.RSA_SHA256
        if handle.key_algorithm == "rsa"
        else (SignatureMethod.ECDSA_SHA256)
    )


def _is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def sign_envelope(envelope: etree._Element, signing_key: KeyHandle) -> etree._Element:
    """Sign ``envelope`` (which must carry an ``Id`` and one ``ds:Signature Id="placeholder"``
    where the signature goes); returns the signed copy."""
    if not envelope.get("Id"):
        raise ExchangeSigningError("exchange.sign.failed", detail="envelope without Id")
    certificates = [signing_key.certificate] + [
        c for c in signing_key.chain if not _is_self_signed(c)
    ]
    signer = XMLSigner(
        signature_algorithm=_signature_method(signing_key),
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    signer.namespaces = {"ds": DS_NS}
    try:
        signed = signer.sign(
            envelope,
            key=cast(Any, _HandleKey(signing_key)),
            cert=certificates,
            reference_uri=[f"#{envelope.get('Id')}"],
        )
    except ExchangeSigningError:
        raise
    except SignXMLException as exc:
        raise ExchangeSigningError("exchange.sign.failed", detail=_short(exc)) from exc
    return cast(etree._Element, signed)


# --------------------------------------------------------------------------------------------
# Verifying
# --------------------------------------------------------------------------------------------


RevocationMode = Literal["soft-fail", "hard-fail", "require"]


@dataclass(frozen=True)
class TrustSettings:
    """What a signature's certificate is checked against."""

    roots: tuple[x509.Certificate, ...]
    at: dt.datetime | None = None
    """Validation time (None: now)."""
    revocation_mode: RevocationMode = "soft-fail"
    allow_fetching: bool = False
    crls: tuple[bytes, ...] = ()
    ocsps: tuple[bytes, ...] = ()
    fetcher_backend: Any = None

    @classmethod
    def of(cls, trust_roots: TrustStore | Iterable[x509.Certificate], **kw: Any) -> TrustSettings:
        return cls(roots=tuple(trust_roots), **kw)


@dataclass
class SignatureCheck:
    """The outcome of :func:`check_signature`."""

    signed_xml: etree._Element | None = None
    """The envelope as signed (only set when the signature verified): read data from here."""
    certificate: x509.Certificate | None = None
    path: tuple[x509.Certificate, ...] = ()
    """The validated certification path, leaf first, anchor last."""
    reasons: list[Reason] = field(default_factory=list)


def _asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))


def _crypto(cert: asn1_x509.Certificate) -> x509.Certificate:
    return x509.load_der_x509_certificate(cert.dump())


def _certificates_of(signature: etree._Element) -> list[x509.Certificate]:
    found: list[x509.Certificate] = []
    for node in signature.iterfind(
        f"{q('KeyInfo', DS_NS)}/{q('X509Data', DS_NS)}/{q('X509Certificate', DS_NS)}"
    ):
        text = _B64_WHITESPACE.sub("", node.text or "")
        try:
            found.append(x509.load_der_x509_certificate(base64.b64decode(text, validate=True)))
        except (ValueError, binascii.Error):
            raise MalformedMessage("exchange.malformed.certificate") from None
    return found


async def check_signature(envelope: etree._Element, trust: TrustSettings) -> SignatureCheck:
    """Verify the XML-DSig signature in ``envelope/edXMLHeader`` and its certificate."""
    result = SignatureCheck()
    header = envelope.find(q("edXMLHeader"))
    signatures = list(envelope.iter(q("Signature", DS_NS)))
    if header is None or not signatures:
        result.reasons.append(Reason("exchange.reason.signature_missing"))
        return result
    if len(signatures) > 1 or signatures[0].getparent() is not header:
        result.reasons.append(Reason("exchange.reason.signature_misplaced"))
        return result
    signature = signatures[0]
    certificates = _certificates_of(signature)
    if not certificates:
        result.reasons.append(Reason("exchange.reason.signature_no_certificate"))
        return result
    envelope_id = envelope.get("Id")
    references = signature.findall(f"{q('SignedInfo', DS_NS)}/{q('Reference', DS_NS)}")
    if not envelope_id or len(references) != 1 or references[0].get("URI") != f"#{envelope_id}":
        result.reasons.append(Reason("exchange.reason.signature_scope"))
        return result
    leaf = certificates[0]
    if not _key_fits(signature, leaf):
        result.reasons.append(Reason("exchange.reason.signature_invalid"))
        return result
    config = SignatureConfiguration(
        location=f"./{q('edXMLHeader')}/",
        expect_references=1,
        signature_methods=_ALLOWED_SIGNATURES,
        digest_algorithms=_ALLOWED_DIGESTS,
        verification_time=trust.at,
    )
    verifier = XMLVerifier()
    try:
        verified = verifier.verify(envelope, x509_cert=leaf, expect_config=config, parser=_parser())
    except InvalidDigest:
        result.reasons.append(Reason("exchange.reason.digest_mismatch"))
        return result
    except InvalidCertificate as exc:
        result.certificate = leaf
        result.reasons.append(
            Reason("exchange.reason.certificate_expired", {"detail": _short(exc)})
        )
        return result
    except InvalidSignature:
        result.reasons.append(Reason("exchange.reason.signature_invalid"))
        return result
    except (InvalidInput, SignXMLException, etree.LxmlError, ValueError) as exc:
        result.reasons.append(Reason("exchange.reason.signature_format", {"detail": _short(exc)}))
        return result
    signed_xml = cast(Any, verified).signed_xml
    if (
        signed_xml is None
        or signed_xml.tag != q("edXMLEnvelope")
        or (signed_xml.get("Id") != envelope_id)
    ):
        result.reasons.append(Reason("exchange.reason.signature_scope"))
        return result
    result.certificate = leaf
    reasons, path = await validate_certificate(leaf, certificates[1:], trust)
    result.reasons.extend(reasons)
    result.path = path
    result.signed_xml = signed_xml
    return result


def _key_fits(signature: etree._Element, leaf: x509.Certificate) -> bool:
    """Whether the certificate's key is of the kind the signature method needs (a signature
    checked against another kind of key is simply not that key's signature)."""
    method = signature.find(f"{q('SignedInfo', DS_NS)}/{q('SignatureMethod', DS_NS)}")
    algorithm = (method.get("Algorithm") or "") if method is not None else ""
    key = leaf.public_key()
    if "#rsa-" in algorithm:
        return isinstance(key, rsa.RSAPublicKey)
    if "#ecdsa-" in algorithm:
        return isinstance(key, ec.EllipticCurvePublicKey)
    return True


async def validate_certificate(
    leaf: x509.Certificate, others: Sequence[x509.Certificate], trust: TrustSettings
) -> tuple[list[Reason], tuple[x509.Certificate, ...]]:
    """Build and check the path of ``leaf`` to one of the trust roots (for signing use)."""
    context = ValidationContext(
        trust_roots=[_asn1(c) for c in trust.roots],
        other_certs=[_asn1(c) for c in others],
        allow_fetching=trust.allow_fetching,
        revocation_mode=trust.revocation_mode,
        moment=trust.at,
        crls=list(trust.crls),
        ocsps=list(trust.ocsps),
        fetcher_backend=trust.fetcher_backend,
    )
    validator = CertificateValidator(
        _asn1(leaf), intermediate_certs=[_asn1(c) for c in others], validation_context=context
    )
    subject = _subject(leaf)
    try:
        path = await validator.async_validate_usage({"digital_signature"})
    except RevokedError:
        return [Reason("exchange.reason.certificate_revoked", {"subject": subject})], ()
    except (ExpiredError, NotYetValidError):
        return [Reason("exchange.reason.certificate_expired", {"detail": subject})], ()
    except InsufficientRevinfoError:
        return [Reason("exchange.reason.revocation_unknown", {"subject": subject})], ()
    except PathBuildingError:
        return [Reason("exchange.reason.certificate_untrusted", {"subject": subject})], ()
    except InvalidCertificateError as exc:
        return [
            Reason(
                "exchange.reason.certificate_invalid", {"subject": subject, "detail": _short(exc)}
            )
        ], ()
    except Exception as exc:  # pyhanko-certvalidator raises several unrelated types
        return [
            Reason(
                "exchange.reason.certificate_invalid", {"subject": subject, "detail": _short(exc)}
            )
        ], ()
    chain = tuple(_crypto(c) for c in path.iter_certs(include_root=True))
    return [], tuple(reversed(chain))


def _subject(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string()
    except ValueError:
        return "<undecodable subject>"


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


# --------------------------------------------------------------------------------------------
# Where every parser starts
# --------------------------------------------------------------------------------------------


@dataclass
class CheckedMessage:
    """A message read by :func:`read_message` whose signature :func:`check_signature` has
    checked.  The attachments' temporary directory (``tmp``) is the caller's: to close, or to
    hand on to what it returns."""

    raw: RawMessage
    check: SignatureCheck
    tmp: TempDir

    @property
    def source(self) -> etree._Element:
        """The envelope to read the message from: as the signature covers it, or as received
        when the signature does not verify (so that a 02 rejection can still answer it; the
        message is then not :attr:`signed` and the signature's reasons reject it)."""
        return self.check.signed_xml if self.check.signed_xml is not None else self.raw.envelope

    @property
    def signed(self) -> bool:
        """Whether :attr:`source` is the content the signature covers."""
        return self.check.signed_xml is not None

    @property
    def envelope_id(self) -> str | None:
        return self.raw.envelope.get("Id")


async def read_and_check(
    data: bytes | BinaryIO | Path,
    trust: TrustSettings,
    *,
    limits: Limits,
    workdir: Path | None = None,
) -> CheckedMessage:
    """Read a message defensively (MalformedMessage if it is not one) and check its signature
    and the signer's certificate against ``trust``; the temporary directory is removed here
    if that fails, else it is the caller's (:attr:`CheckedMessage.tmp`)."""
    raw = read_message(data, limits=limits, workdir=workdir)
    tmp = TempDir(raw.workdir)
    try:
        check = await check_signature(raw.envelope, trust)
    except BaseException:
        tmp.close()
        raise
    return CheckedMessage(raw=raw, check=check, tmp=tmp)


def check_sender(
    organ_id: str,
    certificate: x509.Certificate | None,
    sender_certificates: Mapping[str, Sequence[x509.Certificate]] | None,
) -> list[Reason]:
    """With known agency certificates, the signer must be one of the sender's."""
    if sender_certificates is None or certificate is None:
        return []
    known = sender_certificates.get(organ_id)
    if known is None:
        return [Reason("exchange.reason.sender_unknown", {"organ_id": organ_id})]
    if fingerprint(certificate) not in {fingerprint(c) for c in known}:
        return [Reason("exchange.reason.signer_not_sender", {"organ_id": organ_id})]
    return []


def write_base64(
    out: Callable[[str], None],
    source: BinaryIO,
    *,
    chunk: int = 3 * 256 * 1024,
    flush: Callable[[], None] | None = None,
) -> None:
    """Write the base64 form of ``source`` through ``out`` in pieces (no line breaks),
    flushing after each piece (lxml's xmlfile otherwise buffers the whole output)."""
    for piece in iter(lambda: source.read(chunk), b""):
        out(base64.b64encode(piece).decode("ascii"))
        if flush is not None:
            flush()
