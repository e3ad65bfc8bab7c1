"""A corpus of hostile and tricky signed PDFs for the verifier (``kyso.signer.verify``).

Every file starts from a document kyso itself signed (or, for the CMS-level cases, signed with
a CMS built by hand with asn1crypto + cryptography and embedded by pyhanko's low-level
``PdfCMSEmbedder``); the hostile variants are then made by byte surgery on the signed file:
an incremental update appended by hand (objects + a classic xref section + a trailer with
``/Prev`` + ``%%EOF``), or bytes rewritten in place at the same length. Nothing signed is ever
re-saved by a PDF library. ``CORPUS.md`` beside this file describes every case (it is
generated from :data:`CASES`: ``python -m tests.verify.corpus`` rewrites it).

The contract other code relies on: :class:`Case` and :func:`build_corpus`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import subprocess
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from io import BytesIO
from pathlib import Path

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.general import as_signing_certificate_v2, simple_cms_attribute
from pyhanko.sign.signers.cms_embedder import PdfCMSEmbedder, SigIOSetup, SigObjSetup
from pyhanko.sign.signers.pdf_byterange import SignatureObject

from kyso.api.services import Services
from kyso.certs import identity
from kyso.certs.keys import KeyHandle
from kyso.signer.register import fill_register_fields, prepare_register_fields
from kyso.signer.sign import Level, SignOptions
from kyso.signer.verify import model

# -- the contract ---------------------------------------------------------------------------

EXPECTATIONS = frozenset({"pass", "fail", "not_pass"})

CHANGE_KINDS = frozenset(model.CHANGE_KINDS)

#: ETSI EN 319 102-1 sub-indications (TOTAL_FAILED and INDETERMINATE ones).
SUB_INDICATIONS = frozenset(
    {
        "FORMAT_FAILURE",
        "HASH_FAILURE",
        "SIG_CRYPTO_FAILURE",
        "REVOKED",
        "SIG_CONSTRAINTS_FAILURE",
        "CHAIN_CONSTRAINTS_FAILURE",
        "CERTIFICATE_CHAIN_GENERAL_FAILURE",
        "CRYPTO_CONSTRAINTS_FAILURE",
        "EXPIRED",
        "NOT_YET_VALID",
        "POLICY_PROCESSING_ERROR",
        "SIGNATURE_POLICY_NOT_AVAILABLE",
        "TIMESTAMP_ORDER_FAILURE",
        "NO_SIGNING_CERTIFICATE_FOUND",
        "NO_CERTIFICATE_CHAIN_FOUND",
        "REVOKED_NO_POE",
        "REVOKED_CA_NO_POE",
        "OUT_OF_BOUNDS_NO_POE",
        "OUT_OF_BOUNDS_NOT_REVOKED",
        "CRYPTO_CONSTRAINTS_FAILURE_NO_POE",
        "NO_POE",
        "TRY_LATER",
        "SIGNED_DATA_NOT_FOUND",
    }
)

PDFSIG_VERDICTS = frozenset({"valid", "mismatch", "undecided"})


@dataclass(frozen=True)
class Case:
    name: str
    """Short slug, e.g. ``isa_page_content_appended``."""
    path: Path
    how: str
    """One paragraph: how the file was made (also in CORPUS.md)."""
    expect: str
    """``pass`` (must be TOTAL_PASSED), ``fail`` (must be TOTAL_FAILED), ``not_pass``
    (TOTAL_FAILED or INDETERMINATE)."""
    sub_indications: frozenset[str] = frozenset()
    """Acceptable document-level sub-indications when not passing; empty: any."""
    change_kinds: frozenset[str] = frozenset()
    """Change kinds the verifier's report must list."""
    pdfsig_integrity: str | None = None
    """What poppler's pdfsig says about integrity (measured, see :func:`pdfsig_integrity`):
    ``valid``, ``mismatch`` or ``undecided``."""


# -- the cases -------------------------------------------------------------------------------

INTEGRITY = frozenset({"HASH_FAILURE", "SIG_CRYPTO_FAILURE", "FORMAT_FAILURE"})
WEAK = frozenset({"CRYPTO_CONSTRAINTS_FAILURE", "CRYPTO_CONSTRAINTS_FAILURE_NO_POE"})


@dataclass(frozen=True)
class _Spec:
    name: str
    expect: str
    how: str
    build: Callable[[_Workshop], bytes]
    sub_indications: frozenset[str] = frozenset()
    change_kinds: frozenset[str] = frozenset()
    pdfsig: str | None = None
    pyhanko: str = "reject"
    group: str = ""


_SPECS: list[_Spec] = []
_GROUP = [""]


def _group(title: str) -> None:
    _GROUP[0] = title


def _case(
    name: str,
    expect: str,
    how: str,
    *,
    pdfsig: str,
    pyhanko: str = "reject",
    subs: Iterable[str] = (),
    kinds: Iterable[str] = (),
) -> Callable[[Callable[[_Workshop], bytes]], Callable[[_Workshop], bytes]]:
    def register(build: Callable[[_Workshop], bytes]) -> Callable[[_Workshop], bytes]:
        _SPECS.append(
            _Spec(
                name=name,
                expect=expect,
                how=" ".join(how.split()),
                build=build,
                sub_indications=frozenset(subs),
                change_kinds=frozenset(kinds),
                pdfsig=pdfsig,
                pyhanko=pyhanko,
                group=_GROUP[0],
            )
        )
        return build

    return register


# -- PDF byte surgery ------------------------------------------------------------------------

A4 = b"[0 0 595 842]"
AMOUNT = b"1.000.000"
FORGED_AMOUNT = b"9.000.000"
PERSON = "corpus-person"
AGENCY = "corpus-agency"
SPOOFED_M = b"(D:20190101190000+07'00')"  # 12:00 UTC: 1 January 2019 in most time zones


def _stream(data: bytes, entries: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n%s\nendstream" % (len(data), entries, data)


def _ser(obj: generic.PdfObject) -> bytes:
    buf = BytesIO()
    obj.write_to_stream(buf, None)
    return buf.getvalue()


def _reader(data: bytes) -> PdfFileReader:
    return PdfFileReader(BytesIO(data), strict=False)


def _ref(obj: object) -> int:
    assert isinstance(obj, generic.IndirectObject), obj
    return int(obj.idnum)


def _indirect(num: int) -> generic.IndirectObject:
    """A reference to object ``num`` (written as ``num 0 R``)."""
    return generic.IndirectObject(num, 0, None)


def _refs(obj: generic.DictionaryObject, key: str) -> list[generic.PdfObject]:
    """The items of the direct array ``obj[key]`` as written (references not followed)."""
    if key not in obj:
        return []
    array = obj.raw_get(key)
    assert isinstance(array, generic.ArrayObject), array
    return [array.raw_get(i) for i in range(len(array))]


def _current(data: bytes, num: int) -> generic.DictionaryObject:
    """A shallow copy of the latest version of dictionary object ``num``."""
    obj = _reader(data).get_object(generic.Reference(num, 0))
    assert isinstance(obj, generic.DictionaryObject), obj
    return generic.DictionaryObject(dict(obj))


def _last_startxref(data: bytes) -> int:
    found = re.findall(rb"startxref\s+(\d+)", data)
    return int(found[-1])


def _xref_section(offsets: Mapping[int, int]) -> bytes:
    out = bytearray(b"xref\n")
    nums = sorted(offsets)
    start = 0
    while start < len(nums):
        end = start
        while end + 1 < len(nums) and nums[end + 1] == nums[end] + 1:
            end += 1
        out += b"%d %d\n" % (nums[start], end - start + 1)
        for n in nums[start : end + 1]:
            out += b"%010d 00000 n\r\n" % offsets[n]
        start = end + 1
    return bytes(out)


def _trailer(data: bytes, *, size: int, prev: int, root: int | None = None) -> bytes:
    reader = _reader(data)
    view = reader.trailer_view
    root_num = root if root is not None else reader.root_ref.idnum
    info = view.raw_get("/Info")
    first, second = reader.document_id
    entries = b"/Size %d /Root %d 0 R" % (size, root_num)
    if isinstance(info, generic.IndirectObject):
        entries += b" /Info %d 0 R" % info.idnum
    entries += b" /ID [<%s> <%s>] /Prev %d" % (first.hex().encode(), second.hex().encode(), prev)
    return b"trailer\n<< " + entries + b" >>\n"


def append_revision(
    data: bytes, objects: Mapping[int, bytes | generic.PdfObject], *, root: int | None = None
) -> bytes:
    """``data`` plus an incremental update written by hand: ``objects`` (object number → body,
    raw bytes or a pyhanko object), a classic xref section and a trailer with ``/Prev``."""
    reader = _reader(data)
    size = max(int(reader.trailer_view["/Size"]), max(objects) + 1)
    out = bytearray(data)
    if not out.endswith(b"\n"):
        out += b"\n"
    offsets: dict[int, int] = {}
    for num in sorted(objects):
        body = objects[num]
        offsets[num] = len(out)
        raw = body if isinstance(body, bytes) else _ser(body)
        out += b"%d 0 obj\n%s\nendobj\n" % (num, raw)
    xref_at = len(out)
    out += _xref_section(offsets)
    out += _trailer(data, size=size, prev=_last_startxref(data), root=root)
    out += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)


def next_free(data: bytes, count: int = 1) -> list[int]:
    size = int(_reader(data).trailer_view["/Size"])
    return list(range(size, size + count))


@dataclass(frozen=True)
class SigSpan:
    """Where one signature's ``/ByteRange`` array and ``/Contents`` value sit in the file."""

    br_key: int
    """Offset of ``/ByteRange``."""
    br_end: int
    """Offset just after the array's ``]`` and the blanks pyhanko pads it with."""
    b: int
    c: int
    d: int

    @property
    def signed_end(self) -> int:
        return self.c + self.d

    def signed_bytes(self, data: bytes) -> bytes:
        return data[: self.b] + data[self.c : self.c + self.d]

    def contents_key(self, data: bytes) -> int:
        return data.rindex(b"/Contents", 0, self.b)

    def cms(self, data: bytes) -> bytes:
        return bytes.fromhex(data[self.b + 1 : self.c - 1].decode())


_BR = re.compile(rb"/ByteRange\s*\[\s*0\s+(\d+)\s+(\d+)\s+(\d+)\s*\]( *)")


def signature_spans(data: bytes) -> list[SigSpan]:
    """Every ``/ByteRange [0 b c d]`` whose gap holds a hex string, in file order."""
    spans = []
    for m in _BR.finditer(data):
        b, c, d = (int(x) for x in m.groups()[:3])
        if c <= len(data) and data[b : b + 1] == b"<" and data[c - 1 : c] == b">":
            spans.append(SigSpan(m.start(), m.end(), b, c, d))
    return spans


def _replace(data: bytes, start: int, end: int, new: bytes) -> bytes:
    """Rewrite ``data[start:end]`` in place, padding ``new`` with blanks to the same length."""
    assert len(new) <= end - start, (new, end - start)
    return data[:start] + new.ljust(end - start) + data[end:]


def forge_amount(data: bytes) -> bytes:
    """Change the approved amount printed on page 1 in place (same length)."""
    at = data.index(AMOUNT)
    return data[:at] + FORGED_AMOUNT + data[at + len(AMOUNT) :]


def _object_span(data: bytes, num: int, before: int) -> tuple[int, int]:
    """Offsets of ``num 0 obj`` … ``endobj`` for the definition that starts before ``before``."""
    starts = [m.start() for m in re.finditer(rb"(?<![0-9])%d 0 obj" % num, data[:before])]
    start = starts[-1]
    end = data.index(b"endobj", before) + len(b"endobj")
    return start, end


def _sig_dict_body(data: bytes, span: SigSpan, num: int) -> bytes:
    """The text of signature dictionary ``num`` (between ``num 0 obj`` and ``endobj``)."""
    start, end = _object_span(data, num, span.b)
    head = data.index(b"obj", start) + 3
    return data[head : end - len(b"endobj")].strip()


def _pdf_text(text: str) -> bytes:
    return b"<FEFF" + text.encode("utf-16-be").hex().upper().encode() + b">"


# -- the unsigned sources --------------------------------------------------------------------

PAGE1 = b"""/H1 <</MCID 0>> BDC
BT /F1 15 Tf 72 780 Td (UY BAN NHAN DAN QUAN LONG BIEN) Tj ET
EMC
BT /F1 14 Tf 72 650 Td (QUYET DINH) Tj ET
BT /F1 12 Tf 72 625 Td (Ve viec chi tra kinh phi hoat dong nam 2024) Tj ET
BT /F1 12 Tf 72 560 Td (So tien duoc duyet: 1.000.000 dong) Tj ET
BT /F1 12 Tf 72 530 Td (Don vi nhan: Phong Tai chinh - Ke hoach) Tj ET"""
PAGE2 = b"BT /F1 12 Tf 72 760 Td (Noi nhan: Nhu Dieu 3; Luu VT) Tj ET"
HIDDEN_BY_XOBJECT = b"VAN BAN NAY DA BI THU HOI"
HIDDEN_BY_ANNOT = b"Ghi chu: khoan chi nay KHONG duoc phe duyet"
SHADOW_EXTRA = b"""
BT /F1 12 Tf 72 400 Td (%s) Tj ET
q 1 0 0 1 66 392 cm /Cover Do Q
BT /F1 12 Tf 72 350 Td (%s) Tj ET""" % (HIDDEN_BY_XOBJECT, HIDDEN_BY_ANNOT)


def _write_pdf(objects: Mapping[int, bytes]) -> bytes:
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (num, objects[num])
    size = max(objects) + 1
    assert sorted(objects) == list(range(1, size))
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f\r\n" % size
    for n in range(1, size):
        out += b"%010d 00000 n\r\n" % offsets[n]
    doc_id = hashlib.sha256(bytes(out)).hexdigest()[:32].encode()
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 8 0 R /ID [<%s> <%s>] >>\n" % (
        size,
        doc_id,
        doc_id,
    )
    out += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)


def source_pdf(*, shadow: bool) -> bytes:
    """The unsigned two-page decision (tagged, Helvetica, uncompressed content streams).

    ``shadow`` adds what a shadow attacker prepares before the document is signed: a white
    form XObject (``/Cover``, object 13) over one line, a white Square annotation (object 14)
    over another, an unused content stream (15) showing another amount, and an unused page
    tree (16, 17) whose only page draws that stream."""
    resources = b"<< /Font << /F1 5 0 R >> >>"
    page1_extra = b""
    content1 = PAGE1
    if shadow:
        resources = b"<< /Font << /F1 5 0 R >> /XObject << /Cover 13 0 R >> >>"
        page1_extra = b" /Annots [14 0 R]"
        content1 = PAGE1 + SHADOW_EXTRA
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R /MarkInfo << /Marked true >> "
        b"/StructTreeRoot 9 0 R /Lang (vi-VN) >>",
        2: b"<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox %s /Resources %s /Contents 6 0 R "
        b"/StructParents 0%s >>" % (A4, resources, page1_extra),
        4: b"<< /Type /Page /Parent 2 0 R /MediaBox %s /Resources << /Font << /F1 5 0 R >> >> "
        b"/Contents 7 0 R >>" % A4,
        5: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        6: _stream(content1),
        7: _stream(PAGE2),
        8: b"<< /Title (Quyet dinh chi tra kinh phi) /Producer (kyso test corpus) >>",
        9: b"<< /Type /StructTreeRoot /K 10 0 R /ParentTree 12 0 R /ParentTreeNextKey 1 >>",
        10: b"<< /Type /StructElem /S /Document /P 9 0 R /K [11 0 R] >>",
        11: b"<< /Type /StructElem /S /H1 /P 10 0 R /Pg 3 0 R /K 0 >>",
        12: b"<< /Nums [0 [11 0 R]] >>",
    }
    if shadow:
        objects.update(
            {
                13: _stream(
                    b"1 g 0 0 320 26 re f",
                    b"/Type /XObject /Subtype /Form /BBox [0 0 320 26] ",
                ),
                14: b"<< /Type /Annot /Subtype /Square /Rect [66 342 400 368] /F 4 /C [1 1 1] "
                b"/IC [1 1 1] /BS << /W 0 >> /AP << /N 18 0 R >> >>",
                15: _stream(PAGE1.replace(AMOUNT, FORGED_AMOUNT)),
                16: b"<< /Type /Pages /Kids [17 0 R] /Count 1 >>",
                17: b"<< /Type /Page /Parent 16 0 R /MediaBox %s "
                b"/Resources << /Font << /F1 5 0 R >> >> /Contents 15 0 R >>" % A4,
                18: _stream(
                    b"1 g 0 0 334 26 re f",
                    b"/Type /XObject /Subtype /Form /BBox [0 0 334 26] ",
                ),
            }
        )
    return _write_pdf(objects)


# -- CMS built by hand -----------------------------------------------------------------------

UNKNOWN_DIGEST_OID = "1.3.6.1.4.1.55555.7.7"


def _asn1_cert(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _split_tlv(der: bytes) -> tuple[int, bytes]:
    """(tag byte, contents) of one definite-length DER element."""
    first = der[1]
    if first < 0x80:
        return der[0], der[2 : 2 + first]
    n = first & 0x7F
    length = int.from_bytes(der[2 : 2 + n], "big")
    return der[0], der[2 + n : 2 + n + length]


def non_der_set(der: bytes) -> bytes:
    """The same SET OF with its first element's length in non-minimal long form (BER, not
    DER): ``30 18 …`` becomes ``30 81 18 …``."""
    tag, contents = _split_tlv(der)
    assert tag == 0x31 and contents[0] == 0x30 and contents[1] < 0x80
    contents = contents[:1] + b"\x81" + contents[1:]
    return bytes([tag]) + _der_length(len(contents)) + contents


@dataclass(frozen=True)
class Forger:
    """Someone outside kyso's PKI: an EC key and a self-signed certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls) -> Forger:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, "Kẻ Giả Mạo"),
                x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)


def _sid(cert: asn1_x509.Certificate) -> cms.SignerIdentifier:
    return cms.SignerIdentifier(
        {
            "issuer_and_serial_number": cms.IssuerAndSerialNumber(
                {"issuer": cert.issuer, "serial_number": cert.serial_number}
            )
        }
    )


def _rsa_sign(key: KeyHandle, data: bytes, digest: str) -> bytes:
    if digest == "sha1":
        private = key.private_key()
        assert isinstance(private, rsa.RSAPrivateKey)
        return private.sign(data, padding.PKCS1v15(), hashes.SHA1())
    return key.sign(data, digest)


def build_cms(
    signed_range: bytes,
    key: KeyHandle,
    *,
    digest: str = "sha256",
    digest_oid: str | None = None,
    econtent: bytes | None = None,
    digest_of: bytes | None = None,
    signed_attrs: str = "der",
    signing_time: bool = False,
    forger: Forger | None = None,
) -> bytes:
    """A CMS SignedData (PAdES B-B attributes: content type, message digest, ESS
    signing-certificate-v2) over ``signed_range`` by the RSA ``key``.

    ``digest_oid``: the OID written as the digest algorithm instead of ``digest``'s;
    ``econtent``: encapsulated content to embed (detached otherwise); ``digest_of``: what the
    message digest is computed over instead of ``signed_range``; ``signed_attrs``: ``der``,
    ``ber-raw`` (BER in the file, signature over those BER bytes) or ``ber-der`` (BER in the
    file, signature over their DER form); ``forger``: add a second SignerInfo by someone else
    over the same attributes."""
    cert = _asn1_cert(key.certificate)
    chain = [_asn1_cert(c) for c in key.chain]
    message = digest_of if digest_of is not None else signed_range
    attrs = [
        simple_cms_attribute("content_type", "data"),
        simple_cms_attribute("message_digest", hashlib.new(digest, message).digest()),
        simple_cms_attribute("signing_certificate_v2", as_signing_certificate_v2(cert)),
    ]
    if signing_time:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        attrs.append(simple_cms_attribute("signing_time", cms.Time({"utc_time": now})))
    der = cms.CMSAttributes(attrs).dump()
    tbs = der
    attr_value = cms.CMSAttributes.load(der)
    if signed_attrs != "der":
        ber = non_der_set(der)
        attr_value = cms.CMSAttributes.load(ber)
        tbs = ber if signed_attrs == "ber-raw" else der
    digest_algorithm = algos.DigestAlgorithm({"algorithm": digest_oid or digest})
    infos = [
        cms.SignerInfo(
            {
                "version": "v1",
                "sid": _sid(cert),
                "digest_algorithm": digest_algorithm,
                "signed_attrs": attr_value,
                "signature_algorithm": algos.SignedDigestAlgorithm(
                    {"algorithm": "rsassa_pkcs1v15"}
                ),
                "signature": _rsa_sign(key, tbs, digest),
            }
        )
    ]
    certificates = [cert, *chain]
    if forger is not None:
        fcert = _asn1_cert(forger.cert)
        certificates.append(fcert)
        infos.append(
            cms.SignerInfo(
                {
                    "version": "v1",
                    "sid": _sid(fcert),
                    "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
                    "signed_attrs": cms.CMSAttributes.load(der),
                    "signature_algorithm": algos.SignedDigestAlgorithm(
                        {"algorithm": "sha256_ecdsa"}
                    ),
                    "signature": forger.key.sign(der, ec.ECDSA(hashes.SHA256())),
                }
            )
        )
    encap: dict[str, object] = {"content_type": "data"}
    if econtent is not None:
        encap["content"] = core.OctetString(econtent)
    signed_data = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [digest_algorithm],
            "encap_content_info": encap,
            "certificates": certificates,
            "signer_infos": infos,
        }
    )
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump())


def sign_by_hand(
    source: bytes,
    make_cms: Callable[[bytes], bytes],
    *,
    md_algorithm: str = "sha256",
    subfilter: str = "/ETSI.CAdES.detached",
    reason: str | None = "Ký ban hành",
    field_name: str = "Signature1",
) -> bytes:
    """Sign ``source`` with a CMS built by ``make_cms(signed byte range)``, embedded with
    pyhanko's low-level PdfCMSEmbedder (an invisible field, an incremental update)."""
    writer = IncrementalPdfFileWriter(BytesIO(source), strict=False)
    embedder = PdfCMSEmbedder(fields.SigFieldSpec(sig_field_name=field_name))
    flow = embedder.write_cms(field_name=field_name, writer=writer)
    next(flow)
    placeholder = SignatureObject(
        timestamp=dt.datetime.now(dt.UTC), reason=reason, bytes_reserved=24 * 1024
    )
    placeholder[pdf_name("/SubFilter")] = pdf_name(subfilter)
    flow.send(SigObjSetup(sig_placeholder=placeholder))
    prepared, output = flow.send(SigIOSetup(md_algorithm=md_algorithm, in_place=False))
    written = output.getvalue()
    signed_range = (
        written[: prepared.reserved_region_start] + written[prepared.reserved_region_end :]
    )
    flow.send(make_cms(signed_range))
    return bytes(output.getvalue())


# -- the workshop: bases signed once, variants derived from them ------------------------------


@dataclass
class _Workshop:
    services: Services
    out_dir: Path
    _files: dict[str, bytes] = field(default_factory=dict)
    plain: bytes = field(init=False)
    shadow: bytes = field(init=False)

    @property
    def bases_dir(self) -> Path:
        path = self.out_dir / "bases"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _save(self, name: str, data: bytes) -> bytes:
        (self.bases_dir / f"{name}.pdf").write_bytes(data)
        self._files[name] = data
        return data

    def _key(self, label: str, *, agency: bool = False) -> KeyHandle:
        if not self.services.file_keys.has(label):
            if agency:
                self.services.pki.issue(
                    kind="org",
                    subject=identity.organisation_subject(
                        "UBND Quận Long Biên", ids=["MST:0101234567"]
                    ),
                    label=label,
                )
            else:
                self.services.pki.issue(
                    kind="person",
                    subject=identity.person_subject(
                        "Nguyễn Văn An",
                        ids=["CCCD:001090000001"],
                        title="Chủ tịch",
                        organisation="UBND Quận Long Biên",
                    ),
                    label=label,
                )
        return self.services.keys.resolve(label)

    @cached_property
    def person(self) -> KeyHandle:
        return self._key(PERSON)

    @cached_property
    def agency(self) -> KeyHandle:
        return self._key(AGENCY, agency=True)

    @cached_property
    def forger(self) -> Forger:
        return Forger.create()

    def __post_init__(self) -> None:
        self.plain = self._save("plain", source_pdf(shadow=False))
        self.shadow = self._save("shadow", source_pdf(shadow=True))

    @cached_property
    def plain_fields(self) -> bytes:
        prepare_register_fields(self.base_path("plain"), self.base_path("plain_fields"))
        return self._load("plain_fields")

    def _load(self, name: str) -> bytes:
        data = (self.bases_dir / f"{name}.pdf").read_bytes()
        self._files[name] = data
        return data

    def base_path(self, name: str) -> Path:
        return self.bases_dir / f"{name}.pdf"

    def _kyso_sign(
        self, source: str, name: str, key: KeyHandle, level: Level, **options: object
    ) -> bytes:
        signer = self.services.document_signer(key.label)
        signer.sign(
            self.base_path(source),
            self.base_path(name),
            SignOptions(level=level, reason="Ký ban hành", **options),  # type: ignore[arg-type]
        )
        return self._load(name)

    # signed bases
    @cached_property
    def person_bb(self) -> bytes:
        return self._kyso_sign("plain", "person_bb", self.person, Level.B_B, register_fields=True)

    def person_at(self, level: Level) -> bytes:
        name = f"person_{level.lower().replace('-', '')}"
        if name not in self._files:
            self._kyso_sign("plain", name, self.person, level)
        return self._files[name]

    @cached_property
    def shadow_bb(self) -> bytes:
        return self._kyso_sign("shadow", "shadow_bb", self.person, Level.B_B, register_fields=True)

    @cached_property
    def filled(self) -> bytes:
        _ = self.person_bb
        fill_register_fields(
            self.base_path("person_bb"),
            self.base_path("filled"),
            number=15,
            symbol="QĐ-UBND",
            place="Hà Nội",
        )
        return self._load("filled")

    @cached_property
    def sealed(self) -> bytes:
        _ = self.filled
        return self._kyso_sign("filled", "sealed", self.agency, Level.B_B)

    def certified(self, perm: fields.MDPPerm) -> bytes:
        name = f"certified_p{perm.value}"
        if name not in self._files:
            meta = signers.PdfSignatureMetadata(
                field_name="Signature1",
                certify=True,
                docmdp_permissions=perm,
                subfilter=fields.SigSeedSubFilter.PADES,
                md_algorithm="sha256",
                reason="Chứng thực văn bản",
            )
            writer = IncrementalPdfFileWriter(BytesIO(self.plain_fields), strict=False)
            out = BytesIO()
            signer = self.person.pyhanko_signer()
            asyncio.run(signers.PdfSigner(meta, signer=signer).async_sign_pdf(writer, output=out))
            self._save(name, out.getvalue())
        return self._files[name]

    def hand(self, **kw: object) -> bytes:
        key = self.person
        return sign_by_hand(self.plain, lambda rng: build_cms(rng, key, **kw))  # type: ignore[arg-type]

    # helpers for variants
    def field_refs(self, data: bytes) -> dict[str, int]:
        root = _reader(data).root
        found = {}
        form_fields = root["/AcroForm"]["/Fields"]
        for i in range(len(form_fields)):
            item = form_fields.raw_get(i)
            found[str(item.get_object()["/T"])] = _ref(item)
        return found

    def page_ref(self, data: bytes, index: int) -> int:
        reader = _reader(data)
        return _ref(reader.root["/Pages"]["/Kids"].raw_get(index))

    def sig_dict_ref(self, data: bytes, field_name: str = "Signature1") -> int:
        field_obj = _reader(data).get_object(generic.Reference(self.field_refs(data)[field_name]))
        return _ref(field_obj.raw_get("/V"))


def _note(data: bytes, page: int, text: str) -> bytes:
    """A sticky note (/Text annotation, no appearance stream) in page ``page``'s top right."""
    page_num = _ref(_reader(data).root["/Pages"]["/Kids"].raw_get(page))
    return (
        b"<< /Type /Annot /Subtype /Text /Rect [540 800 560 820] /P %d 0 R /Contents %s "
        b"/T %s /Name /Comment /F 28 /M (D:20250105090000+07'00') >>"
        % (page_num, _pdf_text(text), _pdf_text("Văn thư"))
    )


def _add_annotation(data: bytes, page: int, annot: bytes, *extra: bytes) -> bytes:
    """An update adding ``annot`` (and ``extra`` objects numbered after it) to ``page``."""
    page_num = _ref(_reader(data).root["/Pages"]["/Kids"].raw_get(page))
    page_obj = _current(data, page_num)
    num, *more = next_free(data, 1 + len(extra))
    annots = _refs(page_obj, "/Annots")
    page_obj[pdf_name("/Annots")] = generic.ArrayObject([*annots, _indirect(num)])
    objects: dict[int, bytes | generic.PdfObject] = {page_num: page_obj, num: annot}
    objects.update(zip(more, extra, strict=True))
    return append_revision(data, objects)


def _text_appearance(width: float, height: float, text: bytes, *, opaque: bool = False) -> bytes:
    background = b"1 g 0 0 %g %g re f " % (width, height) if opaque else b""
    ops = b"/Tx BMC q %sBT 0 g /Helv 12 Tf 2 5 Td (%s) Tj ET Q EMC" % (background, text)
    return _stream(
        ops,
        b"/Type /XObject /Subtype /Form /BBox [0 0 %g %g] "
        b"/Resources << /Font << /Helv 5 0 R >> >> " % (width, height),
    )


def _rect(obj: generic.DictionaryObject) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in obj["/Rect"])
    return x1, y1, x2, y2


# -- clean files (must pass) -----------------------------------------------------------------

_group("Clean files (must pass)")


@_case(
    "clean_b_b",
    "pass",
    """A two-page decision (tagged, Helvetica text) signed by kyso (DocumentSigner, RSA-2048
    person certificate of the built-in dev PKI) at PAdES B-B with the empty register fields
    so_hieu and ngay_ban_hanh added in the same revision. The base of most attacks below.""",
    pdfsig="valid",
    pyhanko="pass",
)
def _clean_b_b(w: _Workshop) -> bytes:
    return w.person_bb


@_case(
    "clean_b_t",
    "pass",
    "The same decision signed by kyso at PAdES B-T (signature timestamp from the built-in TSA).",
    pdfsig="valid",
    pyhanko="pass",
)
def _clean_b_t(w: _Workshop) -> bytes:
    return w.person_at(Level.B_T)


@_case(
    "clean_b_lt",
    "pass",
    """The same decision signed by kyso at PAdES B-LT: the signature revision, then a DSS
    revision with the chain's certificates, OCSP responses and CRLs.""",
    pdfsig="valid",
    pyhanko="pass",
    kinds={"ltv_data_added"},
)
def _clean_b_lt(w: _Workshop) -> bytes:
    return w.person_at(Level.B_LT)


@_case(
    "clean_b_lta",
    "pass",
    """The same decision signed by kyso at PAdES B-LTA: signature, DSS, document timestamp, DSS
    for the timestamp (4 revisions). pdfsig does not verify the document timestamp.""",
    pdfsig="valid",
    pyhanko="pass",
    kinds={"ltv_data_added", "doc_timestamp_added"},
)
def _clean_b_lta(w: _Workshop) -> bytes:
    return w.person_at(Level.B_LTA)


@_case(
    "clean_handmade_cms",
    "pass",
    """The control for every CMS-level case: the unsigned decision signed with a CMS built by
    hand (asn1crypto + cryptography: content-type, message-digest and ESS
    signing-certificate-v2 signed attributes, DER, RSA PKCS#1 v1.5 SHA-256 by the person's
    key, signer + chain certificates, detached) and embedded with pyhanko's PdfCMSEmbedder. If
    this one does not pass, the CMS-level cases prove nothing.""",
    pdfsig="valid",
    pyhanko="pass",
)
def _clean_handmade(w: _Workshop) -> bytes:
    return w.hand()


# -- permitted changes (must not fail) -------------------------------------------------------

_group("Permitted changes (must pass)")


@_case(
    "permitted_form_fill",
    "pass",
    """clean_b_b, then the clerk's number and date written into the prepared so_hieu and
    ngay_ban_hanh fields with kyso's fill_register_fields (an incremental update: /V, a new
    appearance and the read-only flag on the two widgets).""",
    pdfsig="valid",
    pyhanko="pass",
    kinds={"form_filled"},
)
def _permitted_form_fill(w: _Workshop) -> bytes:
    return w.filled


@_case(
    "permitted_fill_then_seal",
    "pass",
    """permitted_form_fill, then the agency's seal signature by kyso at B-B (organisation
    certificate, a second signature field): the Decree 30 chain person → number → seal.""",
    pdfsig="valid",
    pyhanko="pass",
    kinds={"form_filled", "signature_added"},
)
def _permitted_fill_then_seal(w: _Workshop) -> bytes:
    return w.sealed


@_case(
    "permitted_docmdp_p2_form_fill",
    "pass",
    """The decision with prepared register fields, certified by the person with pyhanko
    (PdfSignatureMetadata(certify=True, docmdp_permissions=FILL_FORMS), kyso's key handle's
    pyhanko signer, B-B), then filled with kyso's fill_register_fields: form filling is what
    DocMDP P=2 allows.""",
    pdfsig="valid",
    pyhanko="pass",
    kinds={"form_filled"},
)
def _permitted_p2_fill(w: _Workshop) -> bytes:
    w.certified(fields.MDPPerm.FILL_FORMS)
    fill_register_fields(
        w.base_path("certified_p2"),
        w.base_path("certified_p2_filled"),
        number=16,
        symbol="QĐ-UBND",
    )
    return w._load("certified_p2_filled")


@_case(
    "permitted_docmdp_p3_annotation",
    "pass",
    """The decision certified with DocMDP P=3 (ANNOTATE, pyhanko as above), then a sticky note
    (/Text annotation, top-right corner, no appearance stream) added to page 1 in an update
    written by hand (new annotation object + page 1 with the extended /Annots).""",
    pdfsig="valid",
    kinds={"annotation_added"},
)
def _permitted_p3_note(w: _Workshop) -> bytes:
    data = w.certified(fields.MDPPerm.ANNOTATE)
    return _add_annotation(data, 0, _note(data, 0, "Đã xem"))


@_case(
    "permitted_ltv_extend",
    "pass",
    """The decision signed by kyso at B-T, then raised to B-LTA with kyso's
    DocumentSigner.extend (DSS revision, document timestamp, DSS for the timestamp).""",
    pdfsig="valid",
    pyhanko="pass",
    kinds={"ltv_data_added", "doc_timestamp_added"},
)
def _permitted_extend(w: _Workshop) -> bytes:
    w.person_at(Level.B_T)
    w.services.document_signer(None).extend(
        w.base_path("person_bt"), w.base_path("person_bt_extended"), Level.B_LTA
    )
    return w._load("person_bt_extended")


@_case(
    "permitted_struct_tree",
    "pass",
    """clean_b_b, then an accessibility fix in an update written by hand: the structure
    elements Document (object 10, adds /Lang and /T) and H1 (object 11, adds /Alt) of the
    StructTreeRoot are redefined. Nothing a reader sees changes.""",
    pdfsig="valid",
    kinds={"struct_tree_changed"},
)
def _permitted_struct_tree(w: _Workshop) -> bytes:
    data = w.person_bb
    document = _current(data, 10)
    document[pdf_name("/Lang")] = generic.TextStringObject("vi-VN")
    document[pdf_name("/T")] = generic.TextStringObject("Quyết định chi trả kinh phí")
    heading = _current(data, 11)
    heading[pdf_name("/Alt")] = generic.TextStringObject("Ủy ban nhân dân quận Long Biên")
    return append_revision(data, {10: document, 11: heading})


# -- weak algorithm (reported, not skipped) --------------------------------------------------

_group("Weak algorithm (must be reported, not skipped)")


@_case(
    "weak_sha1_pkcs7",
    "pass",
    """The unsigned decision signed by hand with /SubFilter /adbe.pkcs7.sha1, the legacy Adobe
    format: the CMS (asn1crypto + cryptography) encapsulates the SHA-1 digest of the byte range
    as its content, its signed attributes (content type, message digest = SHA-1 of that
    content, signing time, ESS signing-certificate-v2) are signed with RSA PKCS#1 v1.5 SHA-1 by
    the trusted person key. Cryptographically valid; SHA-1 is the weakness. Expected: reported
    with its sub-filter (pyhanko does not even list it), never an integrity failure, flagged as
    a weak algorithm: TOTAL_PASSED with the flag under the default policy (weak algorithms
    warn), or INDETERMINATE/TOTAL_FAILED with CRYPTO_CONSTRAINTS_FAILURE(_NO_POE) under a
    stricter one.""",
    pdfsig="valid",
    pyhanko="unseen",
)
def _weak_sha1(w: _Workshop) -> bytes:
    key = w.person

    def make(signed_range: bytes) -> bytes:
        content = hashlib.sha1(signed_range).digest()  # that is the point
        return build_cms(
            signed_range,
            key,
            digest="sha1",
            econtent=content,
            digest_of=content,
            signing_time=True,
        )

    return sign_by_hand(w.plain, make, md_algorithm="sha1", subfilter="/adbe.pkcs7.sha1")


# -- byte tampering --------------------------------------------------------------------------

_group("Signed bytes changed in place")


@_case(
    "tamper_signed_byte",
    "fail",
    """clean_b_b with the amount on page 1 rewritten in place inside the signed byte range
    ("1.000.000" → "9.000.000" in the uncompressed content stream, same length, xref still
    right).""",
    pdfsig="mismatch",
    subs={"HASH_FAILURE"},
)
def _tamper_byte(w: _Workshop) -> bytes:
    return forge_amount(w.person_bb)


@_case(
    "tamper_signature_value",
    "fail",
    """clean_b_b with one hexadecimal digit in the middle of the SignerInfo's signature value
    changed inside /Contents (outside the byte range: the signed bytes are intact, the
    signature value is not).""",
    pdfsig="mismatch",
    subs={"SIG_CRYPTO_FAILURE", "FORMAT_FAILURE"},
)
def _tamper_sigvalue(w: _Workshop) -> bytes:
    data = w.person_bb
    [span] = signature_spans(data)
    info = cms.ContentInfo.load(span.cms(data))["content"]["signer_infos"][0]
    value = bytes(info["signature"].native).hex().upper().encode()
    at = data.index(value, span.b, span.c) + len(value) // 2
    flipped = b"0" if data[at : at + 1] != b"0" else b"1"
    return data[:at] + flipped + data[at + 1 :]


@_case(
    "tamper_truncated",
    "not_pass",
    """clean_b_b cut in the middle of the second signed range: the end of the signed revision
    (its xref stream, startxref and %%EOF) is missing, so readers must reconstruct the file.""",
    pdfsig="undecided",
    pyhanko="error",
)
def _tamper_truncated(w: _Workshop) -> bytes:
    data = w.person_bb
    [span] = signature_spans(data)
    return data[: span.c + span.d // 2]


# -- incremental saving attacks --------------------------------------------------------------

_group("Incremental saving attacks")


@_case(
    "isa_page_content_appended",
    "not_pass",
    """clean_b_b plus an update written by hand: a new content stream drawing a red
    "DA HUY - VOID" over page 1, and page 1 redefined with /Contents [old new].""",
    pdfsig="valid",
    kinds={"page_content_changed"},
)
def _isa_append(w: _Workshop) -> bytes:
    data = w.person_bb
    page_num = w.page_ref(data, 0)
    page = _current(data, page_num)
    [num] = next_free(data)
    old = page.raw_get("/Contents")
    page[pdf_name("/Contents")] = generic.ArrayObject([old, _indirect(num)])
    overlay = b"BT /F1 40 Tf 1 0 0 rg 150 450 Td (DA HUY - VOID) Tj ET"
    return append_revision(data, {page_num: page, num: _stream(overlay)})


@_case(
    "isa_content_stream_overridden",
    "not_pass",
    """clean_b_b plus an update written by hand that redefines page 1's content stream
    (object 6, same number) with the amount "9.000.000".""",
    pdfsig="valid",
    kinds={"page_content_changed"},
)
def _isa_override(w: _Workshop) -> bytes:
    return append_revision(w.person_bb, {6: _stream(PAGE1.replace(AMOUNT, FORGED_AMOUNT))})


@_case(
    "isa_page_added",
    "not_pass",
    """clean_b_b plus an update written by hand: a third page (new page object and content
    stream) appended to the page tree (/Kids and /Count of the Pages object).""",
    pdfsig="valid",
    kinds={"page_added"},
)
def _isa_page_added(w: _Workshop) -> bytes:
    data = w.person_bb
    pages = _current(data, 2)
    page_num, content_num = next_free(data, 2)
    kids = pages["/Kids"]
    pages[pdf_name("/Kids")] = generic.ArrayObject(
        [*(kids.raw_get(i) for i in range(len(kids))), _indirect(page_num)]
    )
    pages[pdf_name("/Count")] = generic.NumberObject(3)
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox %s /Resources << /Font << /F1 5 0 R >> >> "
        b"/Contents %d 0 R >>" % (A4, content_num)
    )
    text = b"BT /F1 12 Tf 72 760 Td (Phu luc: chi them 500.000.000 dong) Tj ET"
    return append_revision(data, {2: pages, page_num: page, content_num: _stream(text)})


@_case(
    "isa_page_removed",
    "not_pass",
    """clean_b_b plus an update written by hand redefining the Pages object with page 2 taken
    out of /Kids (/Count 1).""",
    pdfsig="valid",
    kinds={"page_removed"},
)
def _isa_page_removed(w: _Workshop) -> bytes:
    data = w.person_bb
    pages = _current(data, 2)
    pages[pdf_name("/Kids")] = generic.ArrayObject([_indirect(w.page_ref(data, 0))])
    pages[pdf_name("/Count")] = generic.NumberObject(1)
    return append_revision(data, {2: pages})


@_case(
    "isa_annotation_overlay",
    "not_pass",
    """Replace via overlay on an approval signature (no DocMDP): clean_b_b plus an update
    adding a FreeText annotation whose appearance is an opaque white box with "So tien duoc
    duyet: 9.000.000 dong" exactly over the signed amount line.""",
    pdfsig="valid",
    kinds={"annotation_added"},
)
def _isa_overlay(w: _Workshop) -> bytes:
    data = w.person_bb
    [num] = next_free(data)
    ap = num + 1
    annot = (
        b"<< /Type /Annot /Subtype /FreeText /Rect [66 552 400 576] /F 4 "
        b"/DA (/Helv 12 Tf 0 g) /Contents (So tien duoc duyet: 9.000.000 dong) "
        b"/AP << /N %d 0 R >> >>" % ap
    )
    appearance = _text_appearance(334, 24, b"So tien duoc duyet: 9.000.000 dong", opaque=True)
    return _add_annotation(data, 0, annot, appearance)


@_case(
    "isa_docmdp_p2_annotation",
    "not_pass",
    """The decision certified with DocMDP P=2 (FILL_FORMS) by pyhanko, then a sticky note added
    to page 1 by hand: annotations are beyond what P=2 allows.""",
    pdfsig="valid",
    kinds={"annotation_added"},
)
def _isa_p2_note(w: _Workshop) -> bytes:
    data = w.certified(fields.MDPPerm.FILL_FORMS)
    return _add_annotation(data, 0, _note(data, 0, "Đã xem"))


@_case(
    "isa_docmdp_p1_form_fill",
    "not_pass",
    """The decision with prepared register fields certified with DocMDP P=1 (NO_CHANGES) by
    pyhanko, then so_hieu filled by hand (/V and a new appearance stream): P=1 allows no
    change at all (kyso's own fill refuses this file).""",
    pdfsig="valid",
    kinds={"form_filled"},
)
def _isa_p1_fill(w: _Workshop) -> bytes:
    data = w.certified(fields.MDPPerm.NO_CHANGES)
    return _fill_by_hand(w, data, "so_hieu", "Số: 17/QĐ-UBND", b"So: 17/QD-UBND")


def _fill_by_hand(
    w: _Workshop,
    data: bytes,
    name: str,
    value: str,
    shown: bytes,
    *,
    rect: tuple[float, float, float, float] | None = None,
    opaque: bool = False,
) -> bytes:
    num = w.field_refs(data)[name]
    widget = _current(data, num)
    x1, y1, x2, y2 = rect or _rect(widget)
    [ap] = next_free(data)
    widget[pdf_name("/V")] = generic.TextStringObject(value)
    widget[pdf_name("/AP")] = generic.DictionaryObject({pdf_name("/N"): _indirect(ap)})
    if rect is not None:
        widget[pdf_name("/Rect")] = generic.ArrayObject([generic.FloatObject(v) for v in rect])
    appearance = _text_appearance(x2 - x1, y2 - y1, shown, opaque=opaque)
    return append_revision(data, {num: widget, ap: appearance})


@_case(
    "isa_catalog_javascript",
    "not_pass",
    """clean_b_b plus an update redefining the catalog with an /OpenAction running JavaScript
    (app.alert) when the file is opened.""",
    pdfsig="valid",
    kinds={"catalog_changed"},
)
def _isa_js(w: _Workshop) -> bytes:
    data = w.person_bb
    root_num = _reader(data).root_ref.idnum
    catalog = _current(data, root_num)
    catalog[pdf_name("/OpenAction")] = generic.DictionaryObject(
        {
            pdf_name("/S"): pdf_name("/JavaScript"),
            pdf_name("/JS"): generic.TextStringObject("app.alert('kyso: opened');"),
        }
    )
    return append_revision(data, {root_num: catalog})


@_case(
    "tail_data_after_eof",
    "not_pass",
    """clean_b_b with bytes appended after the final %%EOF: a redefinition of page 1's content
    stream (object 6, amount "9.000.000") with no xref section or startxref, which only a reader
    that rebuilds the xref by scanning would pick up.""",
    pdfsig="valid",
    pyhanko="pass",
    kinds={"trailing_data"},
)
def _tail(w: _Workshop) -> bytes:
    forged = _stream(PAGE1.replace(AMOUNT, FORGED_AMOUNT))
    return w.person_bb + b"6 0 obj\n" + forged + b"\nendobj\n"


# -- /Reason and /M spoofing -----------------------------------------------------------------

_group("Signature dictionary spoofing")


@_case(
    "spoof_reason_and_time",
    "not_pass",
    """clean_b_b plus an update that redefines the signature dictionary (same object number,
    same /Contents and /ByteRange text) with /M moved back to 2019-01-01 and /Reason changed
    to "Đã thu hồi" (revoked): what viewers show as the signing time and reason, outside the
    signed bytes.""",
    pdfsig="valid",
    kinds={"signature_dict_changed"},
)
def _spoof(w: _Workshop) -> bytes:
    data = w.person_bb
    [span] = signature_spans(data)
    num = w.sig_dict_ref(data)
    body = _sig_dict_body(data, span, num)
    body = re.sub(rb"/M \((?:\\.|[^)\\])*\)", b"/M " + SPOOFED_M, body)
    body = re.sub(rb"/Reason \((?:\\.|[^)\\])*\)", b"/Reason " + _pdf_text("Đã thu hồi"), body)
    return append_revision(data, {num: body})


# -- signature wrapping ----------------------------------------------------------------------

_group("Signature wrapping")


@_case(
    "wrap_relocated_signed_part",
    "not_pass",
    """The signature wrapping attack (Mladenov et al., CCS 2019) on clean_b_b: the second
    signed part (which begins with the signature dictionary's own /ByteRange) is moved to the
    end of the file and a block is inserted before it, inside the gap the /ByteRange leaves
    out: a new "/ByteRange [0 b c' d] … >> endobj" that closes the signature dictionary, page 1
    content with "9.000.000", padding, and a classic xref section placed exactly at the offset
    the moved original startxref points to (so that one is what readers follow). The hashed
    bytes are the original signed bytes and the new /ByteRange ends at the end of the file.""",
    pdfsig="valid",
)
def _swa(w: _Workshop) -> bytes:
    return relocate_signed_part(w.person_bb)


def relocate_signed_part(data: bytes) -> bytes:
    """The signature wrapping attack on a file whose only signature covers it all (see the
    case ``wrap_relocated_signed_part``)."""
    reader = _reader(data)
    [span] = signature_spans(data)
    b, c, d = span.b, span.c, span.d
    assert c + d == len(data)
    rev = reader.xrefs.total_revisions - 1
    xref_at = reader.xrefs.get_startxref_for_revision(rev)
    prev = reader.xrefs.get_startxref_for_revision(rev - 1)
    offsets: dict[int, int] = {}
    for ref in reader.xrefs.explicit_refs_in_revision(rev):
        where = reader.xrefs.get_historical_ref(ref, rev)
        assert isinstance(where, int), where
        offsets[ref.idnum] = where
    # the rest of the signature dictionary after /ByteRange, as signed
    tail = data[span.br_end : data.index(b"endobj", c) + len(b"endobj")]
    width = 12
    placeholder = b"[0 %d %s %d]" % (b, b"#" * width, d)
    head = b"\n/ByteRange " + placeholder + tail + b"\n"
    content_at = c + len(head)
    content = b"6 0 obj\n" + _stream(PAGE1.replace(AMOUNT, FORGED_AMOUNT)) + b"\nendobj\n"
    pad1 = xref_at - (content_at + len(content))
    assert pad1 > 0, "the signed revision is too short for this construction"
    size = int(reader.trailer_view["/Size"])
    insert_len_guess = 0
    for _ in range(3):  # offsets of moved objects depend on the length of the insert
        moved = {n: (o if o < c else o + insert_len_guess) for n, o in offsets.items()}
        moved[6] = content_at
        section = _xref_section(moved) + _trailer(data, size=size, prev=prev)
        block = head + content + b"%" + b" " * (pad1 - 2) + b"\n" + section + b"%%pad\n"
        if len(block) == insert_len_guess:
            break
        insert_len_guess = len(block)
    else:
        raise AssertionError("the inserted block did not settle")
    new_c = c + len(block)
    block = block.replace(b"#" * width, str(new_c).encode().ljust(width))
    out = data[:c] + block + data[c:]
    assert out[xref_at : xref_at + 4] == b"xref"
    return out


@_case(
    "wrap_moved_sigdict",
    "not_pass",
    """clean_b_b plus an update in which the signature field's /V points to a new signature
    dictionary (a new object, outside the signed bytes) carrying the original /Contents and
    /ByteRange values and a new /Reason, while page 1's content stream is redefined with
    "9.000.000". The byte range still hashes to the signed value; the dictionary it came from
    is not the one it describes.""",
    pdfsig="valid",
)
def _wrap_moved(w: _Workshop) -> bytes:
    data = w.person_bb
    [span] = signature_spans(data)
    old = w.sig_dict_ref(data)
    body = _sig_dict_body(data, span, old)
    body = re.sub(rb"/Reason \((?:\\.|[^)\\])*\)", b"/Reason " + _pdf_text("Đã duyệt chi"), body)
    field_num = w.field_refs(data)["Signature1"]
    sig_field = _current(data, field_num)
    [new] = next_free(data)
    sig_field[pdf_name("/V")] = _indirect(new)
    forged = _stream(PAGE1.replace(AMOUNT, FORGED_AMOUNT))
    return append_revision(data, {6: forged, field_num: sig_field, new: body})


@_case(
    "wrap_duplicated_keys",
    "not_pass",
    """clean_b_b plus an update that redefines page 1's content ("9.000.000") and the
    signature dictionary with /ByteRange and /Contents each written twice: first the original
    pair (hashes to the signed value but covers only the first revision), then a pair whose
    /ByteRange covers the whole new file around the second /Contents (which holds the same
    CMS, so it does not hash). A reader taking the first keys and one taking the last disagree.""",
    pdfsig="mismatch",
)
def _wrap_dup(w: _Workshop) -> bytes:
    data = w.person_bb
    [span] = signature_spans(data)
    num = w.sig_dict_ref(data)
    body = _sig_dict_body(data, span, num)
    hex_contents = data[span.b : span.c]
    placeholder = b"[0 ########## ########## ##########]"
    body = body[:-2].rstrip() + b"\n/ByteRange " + placeholder + b"\n/Contents " + hex_contents
    body += b"\n>>"
    forged = _stream(PAGE1.replace(AMOUNT, FORGED_AMOUNT))
    out = append_revision(data, {6: forged, num: body})
    at = out.index(placeholder)
    b = out.index(b"/Contents " + hex_contents, at) + len(b"/Contents ")
    c = b + len(hex_contents)
    filled = b"[0 %d %d %d]" % (b, c, len(out) - c)
    return out[:at] + filled.ljust(len(placeholder)) + out[at + len(placeholder) :]


@_case(
    "wrap_byterange_shifted",
    "fail",
    """clean_b_b with the last /ByteRange number lowered by 7 in place (padded to the same
    width): the byte range no longer reaches the end of the file, and since the /ByteRange text
    is itself signed, the hash no longer matches either.""",
    pdfsig="mismatch",
    subs=INTEGRITY,
)
def _wrap_shift(w: _Workshop) -> bytes:
    data = w.person_bb
    [span] = signature_spans(data)
    new = b"/ByteRange [0 %d %d %d]" % (span.b, span.c, span.d - 7)
    return _replace(data, span.br_key, span.br_end, new)


# -- universal signature forgery -------------------------------------------------------------

_group("Universal signature forgery (the amount is also changed in place)")

_USF_HOW = """clean_b_b with the amount on page 1 changed in place ("9.000.000") and the signature
dictionary rewritten in place at the same length (blank padding): {}."""


def _usf(w: _Workshop, edit: Callable[[bytes, SigSpan], bytes]) -> bytes:
    data = w.person_bb
    [span] = signature_spans(data)
    return forge_amount(edit(data, span))


@_case(
    "usf_contents_missing",
    "fail",
    _USF_HOW.format("the /Contents key and its value are blanked out"),
    pdfsig="undecided",
    pyhanko="error",
    subs=INTEGRITY,
)
def _usf_contents_missing(w: _Workshop) -> bytes:
    return _usf(w, lambda data, s: _replace(data, s.contents_key(data), s.c, b""))


@_case(
    "usf_contents_empty",
    "fail",
    _USF_HOW.format("/Contents <> (an empty string)"),
    pdfsig="undecided",
    pyhanko="error",
    subs=INTEGRITY,
)
def _usf_contents_empty(w: _Workshop) -> bytes:
    return _usf(w, lambda data, s: _replace(data, s.contents_key(data), s.c, b"/Contents <>"))


@_case(
    "usf_contents_null",
    "fail",
    _USF_HOW.format("/Contents null"),
    pdfsig="undecided",
    pyhanko="error",
    subs=INTEGRITY,
)
def _usf_contents_null(w: _Workshop) -> bytes:
    return _usf(w, lambda data, s: _replace(data, s.contents_key(data), s.c, b"/Contents null"))


@_case(
    "usf_contents_zero",
    "fail",
    _USF_HOW.format("/Contents <000…000> (the reserved size, all zero)"),
    pdfsig="undecided",
    pyhanko="error",
    subs=INTEGRITY,
)
def _usf_contents_zero(w: _Workshop) -> bytes:
    return _usf(w, lambda data, s: data[: s.b + 1] + b"0" * (s.c - s.b - 2) + data[s.c - 1 :])


@_case(
    "usf_byterange_missing",
    "fail",
    _USF_HOW.format("the /ByteRange key and its array are blanked out"),
    pdfsig="undecided",
    pyhanko="error",
    subs=INTEGRITY,
)
def _usf_br_missing(w: _Workshop) -> bytes:
    return _usf(w, lambda data, s: _replace(data, s.br_key, s.br_end, b""))


@_case(
    "usf_byterange_null",
    "fail",
    _USF_HOW.format("/ByteRange null"),
    pdfsig="undecided",
    pyhanko="error",
    subs=INTEGRITY,
)
def _usf_br_null(w: _Workshop) -> bytes:
    return _usf(w, lambda data, s: _replace(data, s.br_key, s.br_end, b"/ByteRange null"))


@_case(
    "usf_byterange_short",
    "fail",
    _USF_HOW.format("/ByteRange [0 b] (only the first range)"),
    pdfsig="mismatch",
    subs=INTEGRITY,
)
def _usf_br_short(w: _Workshop) -> bytes:
    return _usf(w, lambda data, s: _replace(data, s.br_key, s.br_end, b"/ByteRange [0 %d]" % s.b))


# -- CMS-level cases (hand-made CMS, see clean_handmade_cms) ---------------------------------

_group("CMS structure (hand-made CMS; clean_handmade_cms is the control)")


@_case(
    "cms_two_signer_infos",
    "not_pass",
    """As clean_handmade_cms, plus a second SignerInfo over the same signed attributes by a
    forger's EC P-256 key with a self-signed certificate (added to the certificates). Both
    signatures are mathematically valid; kyso's signer is trusted, the forger is not; PAdES
    allows exactly one SignerInfo. In DER order (SignerInfos is a SET OF) the forger's comes
    first: pdfsig reports the forger as the signer.""",
    pdfsig="valid",
    pyhanko="error",
)
def _cms_two(w: _Workshop) -> bytes:
    return w.hand(forger=w.forger)


@_case(
    "cms_embedded_content",
    "not_pass",
    """As clean_handmade_cms, but the ETSI.CAdES.detached CMS carries encapsulated content
    (eContent = a short text that is not the document); the message digest is still over the
    byte range. A CMS-faithful verifier hashes the eContent and fails; one that only hashes the
    byte range passes a malformed signature.""",
    pdfsig="mismatch",
    pyhanko="error",
)
def _cms_embedded(w: _Workshop) -> bytes:
    return w.hand(econtent=b"kyso corpus: this content is not the document")


@_case(
    "cms_embedded_content_substituted",
    "fail",
    """As clean_handmade_cms, but the CMS embeds other content (a short text) and its message
    digest is over that content, not over the byte range: a valid CMS signature by the trusted
    key, over something else. Verifying the embedded content instead of the byte range would
    pass it.""",
    pdfsig="mismatch",
    pyhanko="error",
    subs=INTEGRITY,
)
def _cms_substituted(w: _Workshop) -> bytes:
    other = b"kyso corpus: the signer signed this text, not the PDF"
    return w.hand(econtent=other, digest_of=other)


@_case(
    "cms_unknown_digest_oid",
    "not_pass",
    f"""As clean_handmade_cms, but the digest algorithm OID in SignedData.digestAlgorithms and
    in the SignerInfo is {UNKNOWN_DIGEST_OID} (unknown); the digest and signature are
    SHA-256.""",
    pdfsig="undecided",
    pyhanko="error",
)
def _cms_unknown(w: _Workshop) -> bytes:
    return w.hand(digest_oid=UNKNOWN_DIGEST_OID)


@_case(
    "cms_signed_attrs_ber_raw",
    "not_pass",
    """As clean_handmade_cms, but the signed attributes in the file are BER, not DER (the first
    attribute's length in non-minimal long form, 30 81 xx), and the signature is over exactly
    those BER bytes. CMS requires the signature over the DER encoding; a verifier that
    re-encodes to DER fails it, one that uses the bytes as found passes a non-DER
    signature.""",
    pdfsig="mismatch",
    pyhanko="pass",
)
def _cms_ber_raw(w: _Workshop) -> bytes:
    return w.hand(signed_attrs="ber-raw")


@_case(
    "cms_signed_attrs_ber_der",
    "not_pass",
    """As cms_signed_attrs_ber_raw, but the signature is over the DER form of the attributes
    while the file holds the BER form: valid only for a verifier that re-encodes.""",
    pdfsig="valid",
)
def _cms_ber_der(w: _Workshop) -> bytes:
    return w.hand(signed_attrs="ber-der")


# -- shadow attacks --------------------------------------------------------------------------

_group("Shadow attacks (on the shadow base unless said otherwise)")

_COVERED = HIDDEN_BY_XOBJECT.decode()
_UNDER_ANNOT = HIDDEN_BY_ANNOT.decode()
_SHADOW_BASE = f"""The shadow base is the decision with what the attacker prepared before signing
(a white /Cover form XObject over "{_COVERED}", a white Square annotation over "{_UNDER_ANNOT}",
an unused content stream with the amount 9.000.000 and an unused page tree drawing it), signed
by kyso at B-B with register fields."""


@_case(
    "shadow_hide_overlay_removed",
    "not_pass",
    f"""Hide: {_SHADOW_BASE} The update redefines page 1 with the Square annotation taken out
    of /Annots, uncovering the line under it.""",
    pdfsig="valid",
    kinds={"annotation_removed"},
)
def _shadow_annot(w: _Workshop) -> bytes:
    data = w.shadow_bb
    page_num = w.page_ref(data, 0)
    page = _current(data, page_num)
    annots = [a for a in _refs(page, "/Annots") if _ref(a) != 14]
    assert len(annots) == len(_refs(page, "/Annots")) - 1
    page[pdf_name("/Annots")] = generic.ArrayObject(annots)
    return append_revision(data, {page_num: page})


@_case(
    "shadow_hide_xobject_overridden",
    "not_pass",
    f"""Hide via an overridden object: {_SHADOW_BASE} The update redefines the /Cover form
    XObject (object 13, same number) as an empty form, uncovering the line under it.""",
    pdfsig="valid",
    kinds={"object_overridden"},
)
def _shadow_xobject(w: _Workshop) -> bytes:
    empty = _stream(b"", b"/Type /XObject /Subtype /Form /BBox [0 0 320 26] ")
    return append_revision(w.shadow_bb, {13: empty})


@_case(
    "shadow_replace_font_overridden",
    "not_pass",
    f"""Replace via an overridden font: {_SHADOW_BASE} The update redefines the page font
    (object 5, Helvetica) with an /Encoding whose /Differences map the code of "1" to the
    glyph "nine": the signed text now shows and extracts as "9.000.000".""",
    pdfsig="valid",
    kinds={"object_overridden"},
)
def _shadow_font(w: _Workshop) -> bytes:
    font = (
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding << /Type /Encoding "
        b"/BaseEncoding /WinAnsiEncoding /Differences [49 /nine] >> >>"
    )
    return append_revision(w.shadow_bb, {5: font})


@_case(
    "shadow_hide_replace_contents",
    "not_pass",
    f"""Hide-and-replace: {_SHADOW_BASE} The update only redefines page 1 so that its
    /Contents is the unused (but signed) stream 15 with the amount 9.000.000: no new content
    object at all.""",
    pdfsig="valid",
    kinds={"page_content_changed"},
)
def _shadow_contents(w: _Workshop) -> bytes:
    data = w.shadow_bb
    page_num = w.page_ref(data, 0)
    page = _current(data, page_num)
    assert _ref(page.raw_get("/Contents")) == 6
    page[pdf_name("/Contents")] = _indirect(15)
    return append_revision(data, {page_num: page})


@_case(
    "shadow_hide_replace_page_tree",
    "not_pass",
    f"""Hide-and-replace of the whole document: {_SHADOW_BASE} The update only redefines the
    catalog so that /Pages is the unused (but signed) page tree 16, one page showing
    9.000.000.""",
    pdfsig="valid",
)
def _shadow_tree(w: _Workshop) -> bytes:
    data = w.shadow_bb
    root_num = _reader(data).root_ref.idnum
    catalog = _current(data, root_num)
    assert _ref(catalog.raw_get("/Pages")) == 2
    catalog[pdf_name("/Pages")] = _indirect(16)
    return append_revision(data, {root_num: catalog})


@_case(
    "shadow_field_appearance_swap",
    "not_pass",
    """Form-field appearance swap on permitted_fill_then_seal (person, number, seal): an update
    redefines the so_hieu widget with a new appearance stream showing "So: 99/QD-UBND" while its
    /V, covered by the seal, still says 15.""",
    pdfsig="valid",
    pyhanko="pass",
    kinds={"annotation_modified"},
)
def _shadow_swap(w: _Workshop) -> bytes:
    data = w.sealed
    num = w.field_refs(data)["so_hieu"]
    widget = _current(data, num)
    x1, y1, x2, y2 = _rect(widget)
    [ap] = next_free(data)
    widget[pdf_name("/AP")] = generic.DictionaryObject({pdf_name("/N"): _indirect(ap)})
    appearance = _text_appearance(x2 - x1, y2 - y1, b"So: 99/QD-UBND", opaque=True)
    return append_revision(data, {num: widget, ap: appearance})


@_case(
    "shadow_fill_moves_field",
    "not_pass",
    """Replace via overlay with a form field on clean_b_b: the so_hieu field is "filled" with
    "So tien duoc duyet: 9.000.000 dong" by hand, its widget's /Rect moved from the number box
    onto the signed amount line and given an opaque white appearance.""",
    pdfsig="valid",
)
def _shadow_fill_move(w: _Workshop) -> bytes:
    return _fill_by_hand(
        w,
        w.person_bb,
        "so_hieu",
        "So tien duoc duyet: 9.000.000 dong",
        b"So tien duoc duyet: 9.000.000 dong",
        rect=(66, 552, 400, 576),
        opaque=True,
    )


# -- building --------------------------------------------------------------------------------


def case_names() -> list[str]:
    return [spec.name for spec in _SPECS]


PYHANKO_VERDICTS = frozenset({"pass", "reject", "error", "unseen"})


def pyhanko_verdicts() -> dict[str, str]:
    """What pyhanko 0.38's validator makes of each case (measured; see CORPUS.md)."""
    return {spec.name: spec.pyhanko for spec in _SPECS}


def build_corpus(out_dir: Path, services: Services) -> list[Case]:
    """Build every case into ``out_dir`` (bases in ``out_dir/bases``) with ``services``'
    built-in PKI (two signer certificates are issued there the first time)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shop = _Workshop(services, out_dir)
    cases = []
    for spec in _SPECS:
        path = out_dir / f"{spec.name}.pdf"
        path.write_bytes(spec.build(shop))
        cases.append(
            Case(
                name=spec.name,
                path=path,
                how=spec.how,
                expect=spec.expect,
                sub_indications=spec.sub_indications,
                change_kinds=spec.change_kinds,
                pdfsig_integrity=spec.pdfsig,
            )
        )
    return cases


def base_path(case_or_dir: Case | Path, name: str) -> Path:
    """A base file of the corpus (``plain``, ``shadow``, ``person_bb``, ``shadow_bb``,
    ``filled``, ``sealed``, ``certified_p1``…) next to ``case_or_dir``."""
    folder = case_or_dir.path.parent if isinstance(case_or_dir, Case) else case_or_dir
    return folder / "bases" / f"{name}.pdf"


# -- pdfsig ----------------------------------------------------------------------------------


def pdfsig_report(path: Path, nss_dir: Path | None = None, timeout: float = 60) -> str:
    """pdfsig's text output (stdout + stderr). Run without ``-no-ocsp``: it exits 0 even
    on a digest mismatch, so only its text tells."""
    args = ["pdfsig"]
    if nss_dir is not None:
        args += ["-nssdir", f"sql:{nss_dir}"]
    proc = subprocess.run(
        [*args, str(path)], capture_output=True, text=True, timeout=timeout, check=False
    )
    return proc.stdout + proc.stderr


def pdfsig_integrity(report: str) -> str:
    """pdfsig's integrity verdict over the signatures it verifies.

    Signatures pdfsig leaves "not yet verified" (document timestamps) are ignored. ``mismatch``
    when any verified signature is a "Digest Mismatch." or "Signature is Invalid."; ``valid`` when
    there is at least one and all say "Signature is Valid."; ``undecided`` otherwise (no
    signature found, decoding errors, "Unknown Validation Failure", a crash). pdfsig says
    "Signature is Invalid." when NSS rejects the signature value over the signed attributes."""
    verdicts = re.findall(r"Signature Validation: (.*)", report)
    verdicts = [v.strip() for v in verdicts if "not yet been verified" not in v]
    if any(v in ("Digest Mismatch.", "Signature is Invalid.") for v in verdicts):
        return "mismatch"
    if verdicts and all(v == "Signature is Valid." for v in verdicts):
        return "valid"
    return "undecided"


# -- CORPUS.md ---------------------------------------------------------------------------------

_EXPECT_TEXT = {
    "pass": "TOTAL_PASSED",
    "fail": "TOTAL_FAILED",
    "not_pass": "TOTAL_FAILED or INDETERMINATE",
}

_MD_HEAD = """# The verifier's corpus of hostile and tricky signed PDFs

Built by `tests/verify/corpus.py` (`build_corpus(out_dir, services)`) into a temporary folder
at every test session, from documents kyso signs with the session's built-in dev PKI; nothing is
checked in. This page is generated from the same table (`python -m tests.verify.corpus`
rewrites it; `tests/verify/test_corpus.py` fails when it is out of date).

How variants are made: the signed base is never re-saved by a PDF library. An *update* is an
incremental update written by hand after the last `%%EOF` (objects, a classic xref section, a
trailer with `/Prev`, `startxref`, `%%EOF`); *in place* means bytes rewritten at the same
length, so every offset stays right. The base documents are in `bases/` next to the cases.

Expected verdicts (document level, kyso.signer.verify): **pass** = TOTAL_PASSED; **fail** =
TOTAL_FAILED; **not pass** = TOTAL_FAILED or INDETERMINATE. No attack may ever be
TOTAL_PASSED; no permitted change may be TOTAL_FAILED. *Changes* are the change kinds the
report must list. *pdfsig* is what poppler's `pdfsig` (22.12, NSS, run without `-no-ocsp`)
says about integrity, measured: `valid` (every signature it verifies: "Signature is Valid."),
`mismatch` ("Digest Mismatch." or "Signature is Invalid."), `undecided` (no signature found,
decoding error, unknown failure). Document timestamps are left out: pdfsig does not verify
them. A `valid` on an attack is pdfsig being fooled or not looking past the byte range.
*pyhanko* is what pyhanko 0.38's validator (`validate_pdf_signature`, default difference
policy, trusting the dev root, revocation soft-fail) makes of it, measured: `pass` (bottom line
true for every signature), `reject`, `error` (it raises), `unseen` (it lists no signature).
A `pass` on an attack is a gap a verifier built on pyhanko has to close itself.
"""


def corpus_markdown() -> str:
    lines = [_MD_HEAD]
    group = None
    for spec in _SPECS:
        if spec.group != group:
            group = spec.group
            lines.append(f"\n## {group}\n")
        lines.append(f"### `{spec.name}`\n")
        lines.append(textwrap.fill(spec.how, width=96) + "\n")
        verdict = _EXPECT_TEXT[spec.expect]
        facts = [f"Expected: **{spec.expect.replace('_', ' ')}** ({verdict})"]
        if spec.sub_indications:
            facts.append("sub-indication: " + ", ".join(sorted(spec.sub_indications)))
        if spec.change_kinds:
            facts.append("changes: " + ", ".join(sorted(spec.change_kinds)))
        facts.append(f"pdfsig: {spec.pdfsig}")
        facts.append(f"pyhanko: {spec.pyhanko}")
        lines.append(textwrap.fill("; ".join(facts) + ".", width=96) + "\n")
    lines.append(_md_summary())
    return "\n".join(lines)


def _md_summary() -> str:
    attacks = [spec for spec in _SPECS if spec.expect != "pass"]
    fooled = [f"`{s.name}`" for s in attacks if s.pdfsig == "valid"]
    gaps = [f"`{s.name}`" for s in attacks if s.pyhanko == "pass"]
    missed = [f"`{s.name}`" for s in _SPECS if s.expect == "pass" and s.pyhanko != "pass"]
    text = [
        "\n## What the independent tools make of it\n",
        textwrap.fill(
            f'pdfsig says "Signature is Valid." on {len(fooled)} of the {len(attacks)} attack '
            'files: it checks the bytes the /ByteRange names (and says "Not total document '
            'signed" when revisions follow) but judges neither what later revisions do nor the '
            "CMS structure: " + ", ".join(fooled) + ".",
            width=96,
        ),
        "",
        textwrap.fill(
            "pyhanko passes these attacks, so a verifier built on it must close them itself: "
            + ", ".join(gaps)
            + ". It does not pass these files that must pass (no rule for DocMDP P=3 "
            "annotations or structure-tree updates; adbe.pkcs7.sha1 not listed at all): "
            + ", ".join(missed)
            + ".",
            width=96,
        ),
        "",
    ]
    return "\n".join(text)


CORPUS_MD = Path(__file__).with_name("CORPUS.md")

if __name__ == "__main__":
    CORPUS_MD.write_text(corpus_markdown(), encoding="utf-8")
    print(f"wrote {CORPUS_MD}")
