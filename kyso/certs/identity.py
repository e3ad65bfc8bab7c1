"""Vietnamese identity in X.509 subjects: building them, and reading them back.

Vietnamese CAs write subjects as UTF-8 strings with ``C=VN``, and put identity numbers in
``UID`` (OID 0.9.2342.19200300.100.1.1) as a prefixed string: ``CCCD:001090000001``,
``MST:0301519977-029``, ``CMND:…``, ``HC:…``, ``MNS:…``; a DN may hold two of them.

* Building (:func:`person_subject`, :func:`organisation_subject`) is strict: names are
  NFC-normalised and checked against the X.520 upper bounds, identity numbers must use a
  known scheme and be well formed.
* Reading (:func:`identity_of`) is lenient: it never raises on a certificate, keeps unknown
  prefixes as scheme ``OTHER``, reads UIDs whatever their string type, picks up numbers that
  some CAs tuck into other attributes (``OU=MST:0101234567``, ``CN=… - MST:…``) and falls back
  to a raw DER walk when *cryptography* refuses to decode the subject (old T61String or broken
  UTF-8 values).

Whether a subject names a person or an organisation (:attr:`VNIdentity.kind`) decides whether
a signature is an official's or the agency's seal, so it is never guessed: see
:func:`identity_of` for the rule; without evidence the answer is ``"unknown"``.
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from asn1crypto import core as asn1_core
from asn1crypto import parser as asn1_parser
from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from kyso.certs.errors import IdentityError

__all__ = [
    "KNOWN_SCHEMES",
    "ORGANISATION_SCHEMES",
    "PERSONAL_SCHEMES",
    "IdentityNumber",
    "Kind",
    "VNIdentity",
    "identity_of",
    "organisation_subject",
    "parse_identity_number",
    "person_subject",
]

#: Identity numbers of a natural person: citizen ID card, old ID card, passport.  (A 12-digit
#: ``MST`` is personal too: see :attr:`IdentityNumber.is_personal`.)
PERSONAL_SCHEMES = frozenset({"CCCD", "CMND", "HC"})
#: Identity numbers of an organisation: tax code (10 digits, optionally a branch), budget-unit
#: code.
ORGANISATION_SCHEMES = frozenset({"MST", "MNS"})
KNOWN_SCHEMES = PERSONAL_SCHEMES | ORGANISATION_SCHEMES
#: Scheme given to a number whose prefix is missing or unknown (reading only).
OTHER = "OTHER"

#: Who a subject names; ``"unknown"`` when the subject gives no evidence either way.
Kind = Literal["person", "organisation", "unknown"]
#: Where a number was read: a ``UID`` attribute, or free text in another attribute.
Source = Literal["uid", "embedded"]

# Upper bounds in characters (RFC 5280 Appendix A / X.520); UID per RFC 1274 (ub-user-id).
_LIMITS: dict[str, int] = {
    "common_name": 64,
    "organisation": 64,
    "unit": 64,
    "title": 64,
    "locality": 128,
    "province": 128,
    "identity number": 256,
}

_VALUE_PATTERNS: dict[str, re.Pattern[str]] = {
    "CCCD": re.compile(r"\d{12}"),
    "CMND": re.compile(r"\d{9}|\d{12}"),
    # 10 digits (+ 3-digit branch); individuals' tax code became the 12-digit personal ID
    # number from 1 July 2025 (Circular 86/2024/TT-BTC), so 12 digits are accepted too.
    "MST": re.compile(r"(?P<base>\d{10})(?:-(?P<branch>\d{3}))?|(?P<personal>\d{12})"),
    # Vietnamese passports are one letter + 7 digits; foreign ones vary: be lenient.
    "HC": re.compile(r"[A-Z]{1,2}\d{6,8}"),
    "MNS": re.compile(r"\d{7}"),
}

_EXPECTED: dict[str, str] = {
    "CCCD": "12 digits",
    "CMND": "9 or 12 digits",
    "MST": "10 digits, optionally followed by -NNN (branch), or 12 digits",
    "HC": "1–2 letters followed by 6–8 digits",
    "MNS": "7 digits",
}

# A known prefix embedded in another attribute value ("… - MST:0101234567").
_EMBEDDED = re.compile(
    r"(?<![A-Za-z])(CCCD|CMND|MST|MNS|HC)\s*[:=]\s*([A-Za-z0-9]+(?:-[0-9]+)?)",
    re.IGNORECASE,
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Tax-code values as stored in IdentityNumber.value (the branch is kept apart).
_PERSONAL_MST = re.compile(r"\d{12}")
_ORGANISATION_MST = re.compile(r"\d{10}")


# --------------------------------------------------------------------------- identity numbers


@dataclass(frozen=True, slots=True)
class IdentityNumber:
    """One identity number as written in a subject: ``MST:0301519977-029``.

    ``scheme`` is one of :data:`KNOWN_SCHEMES` or ``"OTHER"`` (then ``value`` holds the whole
    text as found, prefix included).  ``branch`` is the dependent-unit suffix of a tax code.
    ``source`` says where :func:`identity_of` found it: ``"uid"`` (a UID attribute, the
    default) or ``"embedded"`` (free text in another attribute, weaker evidence).  It is
    provenance, not part of the number: equality and hashing ignore it.
    """

    scheme: str
    value: str
    branch: str | None = None
    source: Source = field(default="uid", compare=False)

    def __str__(self) -> str:
        if self.scheme == OTHER:
            return self.value
        suffix = f"-{self.branch}" if self.branch else ""
        return f"{self.scheme}:{self.value}{suffix}"

    @property
    def is_personal(self) -> bool:
        """True for a natural person's number: CCCD, CMND, passport, or a 12-digit MST.

        Since 1 July 2025 an individual's tax code is their 12-digit personal ID number, so a
        12-digit ``MST`` (without branch) names a person.  A CCCD/CMND/HC number counts even
        when malformed: the scheme alone says "person".
        """
        if self.scheme == "MST":
            return self.branch is None and _PERSONAL_MST.fullmatch(self.value) is not None
        return self.scheme in PERSONAL_SCHEMES

    @property
    def is_organisational(self) -> bool:
        """True for an organisation's number: a 10-digit MST (± branch) or an MNS code.

        A malformed MST says nothing either way (it could be a person's or an agency's).
        """
        if self.scheme == "MST":
            return _ORGANISATION_MST.fullmatch(self.value) is not None
        return self.scheme == "MNS"

    @property
    def is_valid(self) -> bool:
        """True if the scheme is known and the number has that scheme's shape."""
        if self.scheme not in KNOWN_SCHEMES:
            return False
        try:
            return parse_identity_number(str(self)) == self
        except IdentityError:
            return False

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "scheme": self.scheme,
            "value": self.value,
            "branch": self.branch,
            "text": str(self),
            "valid": self.is_valid,
            "source": self.source,
        }


def _split_prefix(text: str) -> tuple[str, str] | None:
    """``("MST", "0101234567")`` from ``"mst : 0101234567"``; None without a prefix."""
    scheme, sep, value = text.partition(":")
    if not sep or not scheme.strip():
        return None
    return scheme.strip().upper(), re.sub(r"\s+", "", value)


def parse_identity_number(text: str, *, strict: bool = True) -> IdentityNumber:
    """Parse a prefixed identity number such as ``"MST:0301519977-029"``.

    Strict (the default): a known scheme with a malformed value, a missing prefix or an empty
    text raise :class:`IdentityError`; an unknown prefix gives scheme ``"OTHER"``.
    Lenient (``strict=False``, used when reading certificates) never raises: a malformed
    value keeps its scheme (see :attr:`IdentityNumber.is_valid`), a missing prefix gives
    ``"OTHER"``.
    """
    cleaned = unicodedata.normalize("NFKC", text or "").strip()
    if not cleaned:
        if strict:
            raise IdentityError(
                "certs.identity.empty",
                field="identity number",
                detail="identity number is empty",
            )
        return IdentityNumber(OTHER, "")
    split = _split_prefix(cleaned)
    if split is None:
        if strict:
            raise IdentityError(
                "certs.identity.no_scheme",
                text=cleaned,
                detail=f"identity number {cleaned!r} has no scheme prefix "
                f"(expected e.g. CCCD:…, MST:…)",
            )
        return IdentityNumber(OTHER, cleaned)
    scheme, value = split
    if scheme not in KNOWN_SCHEMES:
        return IdentityNumber(OTHER, cleaned)
    if scheme == "HC":
        value = value.upper()
    match = _VALUE_PATTERNS[scheme].fullmatch(value)
    if match is None:
        if strict:
            raise IdentityError(
                "certs.identity.bad_number",
                scheme=scheme,
                value=value,
                expected=_EXPECTED[scheme],
                detail=f"{scheme} number {value!r} is malformed: expected {_EXPECTED[scheme]}",
            )
        return IdentityNumber(scheme, value)
    if scheme == "MST" and match.group("base"):
        return IdentityNumber(scheme, match.group("base"), match.group("branch"))
    return IdentityNumber(scheme, value)


# --------------------------------------------------------------------------- building subjects


def _clean_name(field: str, value: str | None, *, required: bool = False) -> str | None:
    """NFC-normalise ``value``, collapse whitespace and check it against the X.520 bound."""
    if value is None:
        if required:
            raise IdentityError(
                "certs.identity.empty", field=field, detail=f"{field} must not be empty"
            )
        return None
    if not isinstance(value, str):
        raise IdentityError(
            "certs.identity.bad_character", field=field, detail=f"{field} must be a string"
        )
    text = " ".join(unicodedata.normalize("NFC", value).split())
    if not text:
        raise IdentityError(
            "certs.identity.empty", field=field, detail=f"{field} must not be empty"
        )
    if _CONTROL.search(text):
        raise IdentityError(
            "certs.identity.bad_character",
            field=field,
            detail=f"{field} contains control characters",
        )
    limit = _LIMITS[field]
    if len(text) > limit:
        raise IdentityError(
            "certs.identity.too_long",
            field=field,
            limit=limit,
            length=len(text),
            detail=f"{field} is {len(text)} characters long; X.520 allows at most {limit}",
        )
    return text


def _clean_ids(ids: Sequence[str]) -> list[IdentityNumber]:
    """Strictly parse ``ids``; refuse unknown schemes and duplicates."""
    if ids is None:  # tolerated: a CLI option left empty
        ids = []
    elif isinstance(ids, str):  # a lone string is a Sequence[str] too: a classic mistake
        ids = [ids]
    parsed: list[IdentityNumber] = []
    for text in ids:
        number = parse_identity_number(text)
        if number.scheme == OTHER:
            known = ", ".join(sorted(KNOWN_SCHEMES))
            raise IdentityError(
                "certs.identity.unknown_scheme",
                text=number.value,
                known=known,
                detail=f"identity number {number.value!r} has an unknown scheme; "
                f"use one of {known}",
            )
        if len(str(number)) > _LIMITS["identity number"]:
            raise IdentityError(
                "certs.identity.too_long",
                field="identity number",
                limit=_LIMITS["identity number"],
                length=len(str(number)),
                detail="identity number is too long",
            )
        if number in parsed:
            raise IdentityError(
                "certs.identity.duplicate",
                number=str(number),
                detail=f"identity number {number} is given twice",
            )
        parsed.append(number)
    return parsed


def _attribute(oid: ObjectIdentifier, value: str) -> x509.NameAttribute[str]:
    """A UTF8String attribute.

    X.520 bounds count characters, but *cryptography* checks the common name's length in
    UTF-8 bytes, so a 40-letter Vietnamese name with diacritics would be refused; the bound
    has already been checked in characters, so that byte check is relaxed here.
    """
    if oid == NameOID.COMMON_NAME and len(value.encode("utf-8")) > 64:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return x509.NameAttribute(oid, value, _validate=False)
    return x509.NameAttribute(oid, value)


def _build_name(
    *,
    common_name: str,
    ids: Sequence[IdentityNumber],
    title: str | None = None,
    organisation: str | None = None,
    unit: str | None = None,
    locality: str | None = None,
    province: str | None = None,
) -> x509.Name:
    """Assemble the DN in the order Vietnamese CAs use: C, ST, L, O, OU, title, CN, UID…"""
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, "VN")]
    for oid, value in (
        (NameOID.STATE_OR_PROVINCE_NAME, province),
        (NameOID.LOCALITY_NAME, locality),
        (NameOID.ORGANIZATION_NAME, organisation),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
        (NameOID.TITLE, title),
        (NameOID.COMMON_NAME, common_name),
    ):
        if value is not None:
            attributes.append(_attribute(oid, value))
    attributes.extend(x509.NameAttribute(NameOID.USER_ID, str(number)) for number in ids)
    return x509.Name(attributes)


def person_subject(
    full_name: str,
    *,
    ids: Sequence[str],
    title: str | None = None,
    organisation: str | None = None,
    unit: str | None = None,
    locality: str | None = None,
    province: str | None = None,
) -> x509.Name:
    """The subject of a natural person's certificate.

    ``ids`` needs at least one personal number: ``CCCD:``, ``CMND:``, ``HC:`` or a 12-digit
    ``MST:`` (since 1 July 2025 an individual's tax code is their personal ID number, so
    ``MST:001090000001`` alone is enough).  It may add others, e.g. an older 10-digit
    ``MST:``; each becomes a UID.  A subject built here always reads back as ``"person"``
    (:func:`identity_of`).  ``title`` is the person's position (Giám đốc…),
    ``organisation``/``unit`` their agency and department.
    """
    numbers = _clean_ids(ids)
    if not any(number.is_personal for number in numbers):
        raise IdentityError(
            "certs.identity.no_personal_id",
            detail="a person's subject needs a CCCD, CMND, HC or 12-digit MST number",
        )
    return _build_name(
        common_name=_clean_name("common_name", full_name, required=True) or "",
        ids=numbers,
        title=_clean_name("title", title),
        organisation=_clean_name("organisation", organisation),
        unit=_clean_name("unit", unit),
        locality=_clean_name("locality", locality),
        province=_clean_name("province", province),
    )


def organisation_subject(
    name: str,
    *,
    ids: Sequence[str],
    parent: str | None = None,
    unit: str | None = None,
    locality: str | None = None,
    province: str | None = None,
) -> x509.Name:
    """The subject of an agency's (organisation's) certificate: CN = ``name``, O = ``parent``.

    ``ids`` holds organisation numbers (10-digit ``MST:`` with an optional branch, ``MNS:``).
    A personal number (CCCD, CMND, HC, or a 12-digit MST, which is an individual's tax code)
    is refused: it would make the certificate read back as a person's.  ``ids`` may be empty,
    as on the Government CA's agency certificates, but such a subject carries no evidence of
    being an organisation and reads back with kind ``"unknown"``; give an MST or MNS so that
    :func:`identity_of` reads it as ``"organisation"``.
    """
    numbers = _clean_ids(ids)
    for number in numbers:
        if number.is_personal:
            raise IdentityError(
                "certs.identity.personal_id_for_organisation",
                number=str(number),
                detail=f"{number} identifies a person, not an organisation",
            )
    return _build_name(
        common_name=_clean_name("common_name", name, required=True) or "",
        ids=numbers,
        organisation=_clean_name("organisation", parent),
        unit=_clean_name("unit", unit),
        locality=_clean_name("locality", locality),
        province=_clean_name("province", province),
    )


# --------------------------------------------------------------------------- reading identity


@dataclass(frozen=True, slots=True)
class VNIdentity:
    """Who a certificate names, the Vietnamese way.

    ``kind`` is ``"person"``, ``"organisation"`` or ``"unknown"`` (see :func:`identity_of`);
    ``ids`` lists UID numbers first, then numbers found in other attributes (their
    :attr:`IdentityNumber.source` tells which).
    """

    common_name: str | None
    organisation: str | None
    unit: str | None
    title: str | None
    locality: str | None
    province: str | None
    country: str | None
    ids: tuple[IdentityNumber, ...]
    kind: Kind

    def ids_of(self, scheme: str) -> tuple[IdentityNumber, ...]:
        """The numbers of one scheme (``"MST"``, ``"CCCD"``…)."""
        return tuple(number for number in self.ids if number.scheme == scheme.upper())

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form, for reports."""
        return {
            "kind": self.kind,
            "common_name": self.common_name,
            "organisation": self.organisation,
            "unit": self.unit,
            "title": self.title,
            "locality": self.locality,
            "province": self.province,
            "country": self.country,
            "ids": [number.as_dict() for number in self.ids],
        }


_UID = NameOID.USER_ID.dotted_string
_FIELDS: dict[str, str] = {
    NameOID.COMMON_NAME.dotted_string: "common_name",
    NameOID.ORGANIZATION_NAME.dotted_string: "organisation",
    NameOID.ORGANIZATIONAL_UNIT_NAME.dotted_string: "unit",
    NameOID.TITLE.dotted_string: "title",
    NameOID.LOCALITY_NAME.dotted_string: "locality",
    NameOID.STATE_OR_PROVINCE_NAME.dotted_string: "province",
    NameOID.COUNTRY_NAME.dotted_string: "country",
}
# Attributes only a natural person's subject carries (weak evidence, used without numbers).
_PERSON_ATTRIBUTES = frozenset(
    oid.dotted_string
    for oid in (NameOID.TITLE, NameOID.GIVEN_NAME, NameOID.SURNAME, NameOID.PSEUDONYM)
)

# DER universal tags of string types, and how to decode them without ever failing.
_DECODERS: dict[int, str] = {
    12: "utf-8",  # UTF8String
    18: "latin-1",  # NumericString
    19: "latin-1",  # PrintableString
    20: "latin-1",  # T61String (approximation: real T.61 is rarely used beyond Latin-1)
    22: "latin-1",  # IA5String
    26: "latin-1",  # VisibleString
    28: "utf-32-be",  # UniversalString
    30: "utf-16-be",  # BMPString
    4: "utf-8",  # OCTET STRING (seen in broken encoders)
}


def _attributes_via_cryptography(cert: x509.Certificate) -> list[tuple[str, str]]:
    """``(dotted OID, text)`` of each subject attribute, in DER order."""
    with warnings.catch_warnings():
        # cryptography warns about common names over 64 UTF-8 bytes, which long Vietnamese
        # names legitimately are.
        warnings.simplefilter("ignore", UserWarning)
        subject = cert.subject
        return [
            (attr.oid.dotted_string, attr.value) for attr in subject if isinstance(attr.value, str)
        ]


def _children(content: bytes) -> list[tuple[int, int, bytes, bytes]]:
    """``(class, tag, whole element, content)`` of each DER element in ``content``."""
    items = []
    rest = content
    while rest:
        cls, _method, tag, header, body, _trailer = asn1_parser.parse(rest)
        items.append((cls, tag, header + body, body))
        rest = rest[len(header) + len(body) :]
    return items


def _attributes_via_der(cert: x509.Certificate) -> list[tuple[str, str]]:
    """The same as :func:`_attributes_via_cryptography`, decoding the raw TBS leniently."""
    ((_cls, _tag, _whole, tbs),) = _children(cert.tbs_certificate_bytes)
    fields = _children(tbs)
    if fields and fields[0][0] == 2 and fields[0][1] == 0:  # [0] EXPLICIT version
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject
    subject = fields[4][3]
    result: list[tuple[str, str]] = []
    for *_rdn_head, rdn in _children(subject):
        for *_atv_head, atv in _children(rdn):
            parts = _children(atv)
            if len(parts) != 2 or parts[0][:2] != (0, 6):
                continue
            try:
                dotted = asn1_core.ObjectIdentifier.load(parts[0][2]).dotted
            except ValueError:
                continue
            value_cls, value_tag, _value_whole, value = parts[1]
            codec = _DECODERS.get(value_tag) if value_cls == 0 else None
            if codec is not None:
                result.append((dotted, value.decode(codec, errors="replace")))
    return result


def _subject_attributes(cert: x509.Certificate) -> list[tuple[str, str]]:
    """Subject attributes as text, whatever the encoding; empty if all decoding fails."""
    try:
        return _attributes_via_cryptography(cert)
    except ValueError:
        pass
    try:
        return _attributes_via_der(cert)
    except (ValueError, TypeError, IndexError):
        return []


def _embedded_numbers(text: str) -> list[IdentityNumber]:
    """Well-formed known-scheme numbers written inside a free-text attribute."""
    found = []
    for match in _EMBEDDED.finditer(text):
        number = parse_identity_number(f"{match.group(1)}:{match.group(2)}", strict=False)
        if number.is_valid:
            found.append(
                IdentityNumber(number.scheme, number.value, number.branch, source="embedded")
            )
    return found


def _is_only_number(text: str) -> bool:
    """True if the whole attribute value is one identity number (``OU=MST:0101234567``)."""
    match = _EMBEDDED.fullmatch(text.strip())
    if match is None:
        return False
    return parse_identity_number(f"{match.group(1)}:{match.group(2)}", strict=False).is_valid


def _kind_from_numbers(numbers: Iterable[IdentityNumber]) -> Kind:
    """Personal numbers win over organisational ones; neither gives ``"unknown"``."""
    numbers = list(numbers)
    if any(number.is_personal for number in numbers):
        return "person"
    if any(number.is_organisational for number in numbers):
        return "organisation"
    return "unknown"


def _kind(
    uids: Sequence[IdentityNumber], embedded: Sequence[IdentityNumber], person_attribute: bool
) -> Kind:
    """The rule of :func:`identity_of`, evidence tier by tier, strongest first."""
    for tier in (uids, embedded):
        kind = _kind_from_numbers(tier)
        if kind != "unknown":
            return kind
    return "person" if person_attribute else "unknown"


def identity_of(cert: x509.Certificate) -> VNIdentity:
    """Read the Vietnamese identity of ``cert``'s subject.  Never raises on a certificate.

    Single-valued fields take the first value; several OUs are joined with ``", "``.  Text
    is NFC-normalised.

    ``kind`` is decided from the strongest evidence present, never by default:

    1. UID numbers, and only them if any says something: a personal number (CCCD, CMND, HC,
       or a 12-digit MST, an individual's tax code) makes a ``"person"``; otherwise an
       organisational one (10-digit MST ± branch, MNS) an ``"organisation"``.  So a person
       with a CCCD and a tax code is a person, and an agency whose UID is its MST stays an
       organisation whatever its OU or e-mail text says.
    2. Without an informative UID (none, or only unknown schemes and malformed tax codes),
       the numbers found in other attributes' text, by the same rule.
    3. Without numbers either, a ``title``, ``givenName``, ``surname`` or ``pseudonym``
       attribute makes a ``"person"``; otherwise the kind is ``"unknown"`` (e.g. the
       Government CA's agency certificates, which carry no number at all).
    """
    values: dict[str, list[str]] = {}
    uids: list[IdentityNumber] = []
    embedded: list[IdentityNumber] = []
    person_attribute = False
    for dotted, raw in _subject_attributes(cert):
        text = unicodedata.normalize("NFC", raw).strip()
        if not text:
            continue
        if dotted == _UID:
            uids.append(parse_identity_number(text, strict=False))
            continue
        person_attribute = person_attribute or dotted in _PERSON_ATTRIBUTES
        embedded.extend(_embedded_numbers(text))
        field = _FIELDS.get(dotted)
        if field is None:
            continue
        if field != "common_name" and _is_only_number(text):
            continue  # an identity number, not a unit or place name
        values.setdefault(field, []).append(text)

    ids: list[IdentityNumber] = []
    for number in (*uids, *embedded):
        if number not in ids:
            ids.append(number)

    def first(field: str) -> str | None:
        found = values.get(field)
        return found[0] if found else None

    units = values.get("unit")
    return VNIdentity(
        common_name=first("common_name"),
        organisation=first("organisation"),
        unit=", ".join(units) if units else None,
        title=first("title"),
        locality=first("locality"),
        province=first("province"),
        country=first("country"),
        ids=tuple(ids),
        kind=_kind(uids, embedded, person_attribute),
    )


def display_name(cert: x509.Certificate) -> str:
    """Who a certificate names, as a person reads it: name, title, organisation, identity
    numbers — ``Nguyễn Văn An, Chủ tịch, UBND Quận Long Biên (CCCD:001090000001)``."""
    who = identity_of(cert)
    parts = [p for p in (who.common_name, who.title, who.organisation) if p]
    try:
        fallback = cert.subject.rfc4514_string()
    except ValueError:  # an undecodable subject: identity_of coped, rfc4514 cannot
        fallback = "?"
    text = ", ".join(parts) or fallback
    if who.ids:
        text += " (" + ", ".join(str(i) for i in who.ids) + ")"
    return text
