"""Vietnamese identity in certificate subjects: building, validating, reading back."""

from __future__ import annotations

import datetime as dt
import json
import unicodedata
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from kyso.certs.errors import IdentityError
from kyso.certs.identity import (
    IdentityNumber,
    VNIdentity,
    identity_of,
    organisation_subject,
    parse_identity_number,
    person_subject,
)

REAL = Path(__file__).parent / "data" / "real-vn"
NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
KEY = ec.generate_private_key(ec.SECP256R1())


def real(name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((REAL / name).read_bytes())


def self_signed(subject: x509.Name) -> x509.Certificate:
    """A throw-away certificate carrying ``subject`` (issuer = subject)."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(KEY.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(KEY, hashes.SHA256())
    )


def values(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(oid)]


# --------------------------------------------------------------------------- identity numbers


@pytest.mark.parametrize(
    ("text", "scheme", "value", "branch"),
    [
        ("CCCD:001090000001", "CCCD", "001090000001", None),
        ("CMND:012345678", "CMND", "012345678", None),
        ("CMND:001090000001", "CMND", "001090000001", None),
        ("MST:0101234567", "MST", "0101234567", None),
        ("MST:0301519977-029", "MST", "0301519977", "029"),
        ("MST:001090000001", "MST", "001090000001", None),  # personal tax code = ID number
        ("HC:C1234567", "HC", "C1234567", None),
        ("HC:AB123456", "HC", "AB123456", None),
        ("MNS:1012345", "MNS", "1012345", None),
    ],
)
def test_parse_valid_numbers(text: str, scheme: str, value: str, branch: str | None) -> None:
    number = parse_identity_number(text)
    assert number == IdentityNumber(scheme, value, branch)
    assert str(number) == text
    assert number.is_valid


def test_parse_is_lenient_about_case_and_spaces() -> None:
    assert parse_identity_number(" mst : 0301519977-029 ") == IdentityNumber(
        "MST", "0301519977", "029"
    )
    assert parse_identity_number("hc:c1234567") == IdentityNumber("HC", "C1234567")
    # full-width digits typed by an IME are folded to ASCII
    assert parse_identity_number("CCCD:００１090000001").value == "001090000001"


@pytest.mark.parametrize(
    ("text", "scheme"),
    [
        ("CCCD:12345", "CCCD"),
        ("CCCD:00109000000A", "CCCD"),
        ("CMND:1234567890", "CMND"),
        ("MST:010123456", "MST"),
        ("MST:0301519977-29", "MST"),
        ("MST:0301519977029", "MST"),
        ("HC:1234567", "HC"),
        ("HC:ABC1234567", "HC"),
        ("MNS:101234", "MNS"),
    ],
)
def test_parse_rejects_malformed_numbers(text: str, scheme: str) -> None:
    with pytest.raises(IdentityError) as info:
        parse_identity_number(text)
    assert info.value.code == "certs.identity.bad_number"
    assert scheme in info.value.params["detail"]
    assert info.value.params["scheme"] == scheme


def test_parse_without_prefix() -> None:
    with pytest.raises(IdentityError) as info:
        parse_identity_number("0101234567")
    assert "prefix" in info.value.params["detail"]
    assert parse_identity_number("0101234567", strict=False) == IdentityNumber(
        "OTHER", "0101234567"
    )
    with pytest.raises(IdentityError):
        parse_identity_number("   ")


def test_unknown_prefix_is_kept_as_other() -> None:
    number = parse_identity_number("BHXH:0123456789")
    assert number.scheme == "OTHER"
    assert str(number) == "BHXH:0123456789"
    assert not number.is_valid


def test_lenient_parse_keeps_malformed_known_scheme() -> None:
    number = parse_identity_number("MST:12", strict=False)
    assert number == IdentityNumber("MST", "12")
    assert not number.is_valid


def test_identity_error_is_translated() -> None:
    with pytest.raises(IdentityError) as info:
        parse_identity_number("CCCD:123")
    assert "CCCD" in info.value.message("vi")
    assert "định dạng" in info.value.message("vi")
    assert "malformed" in str(info.value)
    assert isinstance(info.value, ValueError)


# --------------------------------------------------------------------------- building subjects


def test_person_subject_layout() -> None:
    name = person_subject(
        "Nguyễn Văn An",
        ids=["CCCD:001090000001"],
        title="Giám đốc",
        organisation="Sở Nội vụ",
        unit="Văn phòng Sở",
        locality="Long Biên",
        province="Hà Nội",
    )
    by_oid = [(a.oid, a.value) for a in name]
    assert by_oid == [
        (NameOID.COUNTRY_NAME, "VN"),
        (NameOID.STATE_OR_PROVINCE_NAME, "Hà Nội"),
        (NameOID.LOCALITY_NAME, "Long Biên"),
        (NameOID.ORGANIZATION_NAME, "Sở Nội vụ"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "Văn phòng Sở"),
        (NameOID.TITLE, "Giám đốc"),
        (NameOID.COMMON_NAME, "Nguyễn Văn An"),
        (NameOID.USER_ID, "CCCD:001090000001"),
    ]
    uid = name.get_attributes_for_oid(NameOID.USER_ID)[0]
    assert uid._type == _ASN1Type.UTF8String
    assert name.get_attributes_for_oid(NameOID.COMMON_NAME)[0]._type == _ASN1Type.UTF8String


def test_person_subject_normalises_names() -> None:
    decomposed = unicodedata.normalize("NFD", "Trần  Thị   Bích ")
    assert decomposed != unicodedata.normalize("NFC", decomposed)
    name = person_subject(decomposed, ids=["CMND:012345678"])
    assert values(name, NameOID.COMMON_NAME) == ["Trần Thị Bích"]
    assert unicodedata.is_normalized("NFC", values(name, NameOID.COMMON_NAME)[0])


@pytest.mark.parametrize("bad", ["", "   ", "Nguyễn\x00An"])
def test_person_subject_rejects_bad_names(bad: str) -> None:
    with pytest.raises(IdentityError) as info:
        person_subject(bad, ids=["CCCD:001090000001"])
    assert "common_name" in info.value.params["detail"]


def test_common_name_length_is_counted_in_characters() -> None:
    # 60 characters, 79 UTF-8 bytes: within X.520's 64 characters.
    long_name = "Ủy ban nhân dân phường Phúc Xá quận Ba Đình thành phố Hà Nội"
    assert len(long_name) == 60 and len(long_name.encode()) > 64
    subject = organisation_subject(long_name, ids=["MNS:1012345"])
    cert = self_signed(subject)
    assert identity_of(cert).common_name == long_name

    with pytest.raises(IdentityError) as info:
        person_subject("A" * 65, ids=["CCCD:001090000001"])
    assert info.value.code == "certs.identity.too_long"
    assert info.value.params["limit"] == 64


def test_other_fields_have_their_own_limits() -> None:
    with pytest.raises(IdentityError) as info:
        person_subject("An", ids=["CCCD:001090000001"], organisation="Ơ" * 65)
    assert "organisation" in info.value.params["detail"]
    # locality and province allow 128 characters
    person_subject("An", ids=["CCCD:001090000001"], province="Ơ" * 128)
    with pytest.raises(IdentityError):
        person_subject("An", ids=["CCCD:001090000001"], province="Ơ" * 129)


def test_person_needs_a_personal_id() -> None:
    with pytest.raises(IdentityError) as info:
        person_subject("Nguyễn Văn An", ids=["MST:0101234567"])
    assert info.value.code == "certs.identity.no_personal_id"
    with pytest.raises(IdentityError):
        person_subject("Nguyễn Văn An", ids=[])
    with pytest.raises(IdentityError):
        person_subject("Nguyễn Văn An", ids=["MNS:1012345"])


def test_person_with_a_personal_tax_code_only() -> None:
    # since 2025 an individual's tax code is the 12-digit personal ID number
    subject = person_subject("Nguyễn Văn An", ids=["MST:001090000001"])
    assert values(subject, NameOID.USER_ID) == ["MST:001090000001"]
    assert identity_of(self_signed(subject)).kind == "person"
    both = person_subject("Nguyễn Văn An", ids=["CCCD:001090000001", "MST:001090000001"])
    assert identity_of(self_signed(both)).kind == "person"


def test_building_refuses_unknown_schemes_and_duplicates() -> None:
    with pytest.raises(IdentityError) as info:
        person_subject("An", ids=["CCCD:001090000001", "BHXH:0123456789"])
    assert info.value.code == "certs.identity.unknown_scheme"
    with pytest.raises(IdentityError) as info:
        person_subject("An", ids=["CCCD:001090000001", "cccd: 001090000001"])
    assert info.value.code == "certs.identity.duplicate"
    with pytest.raises(IdentityError):
        person_subject("An", ids=["CCCD:1"])


def test_a_lone_string_is_one_id_not_characters() -> None:
    name = person_subject("An", ids="CCCD:001090000001")
    assert values(name, NameOID.USER_ID) == ["CCCD:001090000001"]


def test_organisation_subject_layout() -> None:
    name = organisation_subject(
        "TỔNG CỤC THUẾ", ids=["MST:0100231226"], parent="BỘ TÀI CHÍNH", locality="Hà Nội"
    )
    assert values(name, NameOID.COMMON_NAME) == ["TỔNG CỤC THUẾ"]
    assert values(name, NameOID.ORGANIZATION_NAME) == ["BỘ TÀI CHÍNH"]
    assert values(name, NameOID.LOCALITY_NAME) == ["Hà Nội"]
    assert values(name, NameOID.COUNTRY_NAME) == ["VN"]
    assert values(name, NameOID.USER_ID) == ["MST:0100231226"]
    assert values(name, NameOID.TITLE) == []


def test_organisation_subject_without_ids_and_refusing_personal_ids() -> None:
    name = organisation_subject("UBND phường Phúc Xá", ids=[])
    assert values(name, NameOID.USER_ID) == []
    with pytest.raises(IdentityError) as info:
        organisation_subject("Công ty A", ids=["CCCD:001090000001"])
    assert info.value.code == "certs.identity.personal_id_for_organisation"
    # a 12-digit tax code is an individual's: refused like a CCCD
    with pytest.raises(IdentityError) as info:
        organisation_subject("Công ty A", ids=["MST:0101234567", "MST:001090000001"])
    assert info.value.code == "certs.identity.personal_id_for_organisation"
    assert info.value.params["number"] == "MST:001090000001"
    # an agency without numbers can be built, but nothing says it is an organisation
    assert identity_of(self_signed(name)).kind == "unknown"


# --------------------------------------------------------------------------- round trips


def test_person_round_trip_with_two_uids() -> None:
    subject = person_subject(
        "Lê Thị Hồng Nhung",
        ids=["CCCD:001090000001", "MST:0301519977-029"],
        title="Phó Chủ tịch",
        organisation="UBND quận Long Biên",
        unit="Văn phòng HĐND và UBND",
        province="Hà Nội",
    )
    assert len(subject.get_attributes_for_oid(NameOID.USER_ID)) == 2
    identity = identity_of(self_signed(subject))
    assert identity == VNIdentity(
        common_name="Lê Thị Hồng Nhung",
        organisation="UBND quận Long Biên",
        unit="Văn phòng HĐND và UBND",
        title="Phó Chủ tịch",
        locality=None,
        province="Hà Nội",
        country="VN",
        ids=(
            IdentityNumber("CCCD", "001090000001"),
            IdentityNumber("MST", "0301519977", "029"),
        ),
        kind="person",
    )
    assert [str(n) for n in identity.ids] == ["CCCD:001090000001", "MST:0301519977-029"]
    assert identity.ids_of("mst") == (IdentityNumber("MST", "0301519977", "029"),)


def test_organisation_round_trip() -> None:
    subject = organisation_subject(
        "Sở Thông tin và Truyền thông",
        ids=["MST:0101234567", "MNS:1012345"],
        parent="UBND tỉnh Lạng Sơn",
        unit="Văn phòng Sở",
        locality="Thành phố Lạng Sơn",
        province="Lạng Sơn",
    )
    identity = identity_of(self_signed(subject))
    assert identity.kind == "organisation"
    assert identity.common_name == "Sở Thông tin và Truyền thông"
    assert identity.organisation == "UBND tỉnh Lạng Sơn"
    assert identity.unit == "Văn phòng Sở"
    assert identity.locality == "Thành phố Lạng Sơn"
    assert identity.province == "Lạng Sơn"
    assert [str(n) for n in identity.ids] == ["MST:0101234567", "MNS:1012345"]


def test_as_dict_is_json_ready() -> None:
    subject = person_subject("Phạm Văn Đức", ids=["HC:C1234567"], title="Chuyên viên")
    report = identity_of(self_signed(subject)).as_dict()
    again = json.loads(json.dumps(report, ensure_ascii=False))
    assert again["kind"] == "person"
    assert again["common_name"] == "Phạm Văn Đức"
    assert again["title"] == "Chuyên viên"
    assert again["ids"] == [
        {
            "scheme": "HC",
            "value": "C1234567",
            "branch": None,
            "text": "HC:C1234567",
            "valid": True,
            "source": "uid",
        }
    ]


# --------------------------------------------------------------------------- real certificates


def test_real_agency_certificate() -> None:
    identity = identity_of(real("sample-agency-cert-tong-cuc-thue.pem"))
    assert identity.common_name == "TỔNG CỤC THUẾ"
    assert identity.organisation == "BỘ TÀI CHÍNH"
    assert identity.locality == "Hà Nội"
    assert identity.country == "VN"
    assert identity.unit is None and identity.title is None and identity.province is None
    # The Government CA's agency certificates carry no UID at all.
    assert identity.ids == ()
    # ... and no other evidence of being an organisation: the honest answer is "unknown"
    assert identity.kind == "unknown"
    # exact code points (precomposed, as in the certificate)
    assert identity.common_name.encode() == b"T\xe1\xbb\x94NG C\xe1\xbb\xa4C THU\xe1\xba\xbe"
    assert identity.locality.encode() == b"H\xc3\xa0 N\xe1\xbb\x99i"


def test_real_government_root() -> None:
    identity = identity_of(real("vn-gov-root-g2.pem"))
    assert identity.common_name == "RootCA chuyên dùng Chính phủ G2"
    assert identity.organisation == "Ban Cơ yếu Chính phủ"
    assert identity.country == "VN"
    assert identity.kind == "unknown"  # no number, no personal attribute


def test_real_vnpt_ca_with_reversed_rdn_order() -> None:
    identity = identity_of(real("vnpt-ca-sha2-intermediate.pem"))
    assert identity.common_name == "VNPT-CA SHA2"
    assert identity.organisation == "VIETNAM POSTS AND TELECOMMUNICATIONS GROUP"
    assert identity.country == "VN"
    assert identity.ids == ()
    assert identity.kind == "unknown"


# --------------------------------------------------------------------------- robustness


@pytest.mark.parametrize(
    "string_type",
    [
        _ASN1Type.PrintableString,
        _ASN1Type.IA5String,
        _ASN1Type.BMPString,
        _ASN1Type.UniversalString,
        _ASN1Type.T61String,
        _ASN1Type.VisibleString,
    ],
)
def test_uid_in_other_string_types(string_type: _ASN1Type) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Nguyễn Văn An"),
            x509.NameAttribute(NameOID.USER_ID, "CMND:012345678", string_type),
        ]
    )
    identity = identity_of(self_signed(subject))
    assert identity.ids == (IdentityNumber("CMND", "012345678"),)
    assert identity.kind == "person"


def test_numbers_in_other_attributes() -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "MST:0101234567"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Phòng Kế toán"),
            x509.NameAttribute(NameOID.COMMON_NAME, "CÔNG TY TNHH ABC - MST:0301519977-029"),
            x509.NameAttribute(NameOID.USER_ID, "MST:0101234567"),
        ]
    )
    identity = identity_of(self_signed(subject))
    # the UID first, then the embedded one; the OU copy of the UID is not repeated
    assert [str(n) for n in identity.ids] == ["MST:0101234567", "MST:0301519977-029"]
    # an OU that is only a number is not a unit name
    assert identity.unit == "Phòng Kế toán"
    assert identity.common_name == "CÔNG TY TNHH ABC - MST:0301519977-029"
    assert identity.kind == "organisation"


def test_weird_uids_are_kept_not_fatal() -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Trần Văn Bình"),
            x509.NameAttribute(NameOID.USER_ID, "0101234567"),
            x509.NameAttribute(NameOID.USER_ID, "BHXH:0123456789"),
            x509.NameAttribute(NameOID.USER_ID, "CCCD:12"),
            x509.NameAttribute(NameOID.USER_ID, " "),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "HC: not-a-passport"),
        ]
    )
    identity = identity_of(self_signed(subject))
    assert identity.ids == (
        IdentityNumber("OTHER", "0101234567"),
        IdentityNumber("OTHER", "BHXH:0123456789"),
        IdentityNumber("CCCD", "12"),
    )
    assert [n.is_valid for n in identity.ids] == [False, False, False]
    # "HC: not…" is not a passport number: ignored as an id, kept as the unit it claims to be
    assert identity.unit == "HC: not-a-passport"
    # a malformed CCCD still says "this is a person"
    assert identity.kind == "person"


def _corrupt_uid(cert: x509.Certificate, tag: int, payload: bytes) -> x509.Certificate:
    """Re-encode the UID value ``MST:0101234567`` with another tag and bytes (same length)."""
    der = bytearray(cert.public_bytes(Encoding.DER))
    marker = b"MST:0101234567"
    assert len(payload) == len(marker)
    start = 0
    while (i := der.find(marker, start)) >= 0:
        der[i - 2] = tag
        der[i : i + len(marker)] = payload
        start = i + 1
    return x509.load_der_x509_certificate(bytes(der))


@pytest.mark.parametrize(
    ("tag", "payload", "expected"),
    [
        # UTF8String holding an invalid byte: cryptography refuses the whole subject
        (0x0C, b"MST:010123\xff567", "MST:010123\ufffd567"),
        # T61String with a high-bit byte: cryptography refuses it too
        (0x14, b"MST:01012345\xe07", "MST:01012345\xe07"),
    ],
)
def test_subject_that_cryptography_cannot_decode(tag: int, payload: bytes, expected: str) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Sở Tài chính"),
            x509.NameAttribute(NameOID.USER_ID, "MST:0101234567"),
        ]
    )
    cert = _corrupt_uid(self_signed(subject), tag, payload)
    with pytest.raises(ValueError):
        _ = cert.subject  # the situation the fallback exists for
    identity = identity_of(cert)
    assert identity.common_name == "Sở Tài chính"
    assert identity.country == "VN"
    assert [str(n) for n in identity.ids] == [expected]
    assert not identity.ids[0].is_valid


def test_empty_subject() -> None:
    identity = identity_of(self_signed(x509.Name([])))
    assert identity.common_name is None
    assert identity.ids == ()
    assert identity.kind == "unknown"  # never "organisation" by default


# --------------------------------------------------------------------------- person or organisation


@pytest.mark.parametrize(
    ("text", "personal", "organisational"),
    [
        ("CCCD:001090000001", True, False),
        ("CMND:012345678", True, False),
        ("HC:C1234567", True, False),
        ("MST:001090000001", True, False),  # 12 digits: an individual's tax code
        ("MST:0101234567", False, True),
        ("MST:0301519977-029", False, True),
        ("MNS:1012345", False, True),
    ],
)
def test_personal_and_organisational_numbers(
    text: str, personal: bool, organisational: bool
) -> None:
    number = parse_identity_number(text)
    assert number.is_personal is personal
    assert number.is_organisational is organisational


def test_malformed_and_unknown_numbers_say_nothing_but_a_personal_scheme() -> None:
    lenient = [parse_identity_number(t, strict=False) for t in ("MST:12", "BHXH:1", "0101234567")]
    assert [(n.is_personal, n.is_organisational) for n in lenient] == [(False, False)] * 3
    # a malformed CCCD is still a person's document
    assert parse_identity_number("CCCD:12", strict=False).is_personal


def _subject(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


def _kind_of(*attributes: tuple[x509.ObjectIdentifier, str]) -> str:
    return identity_of(self_signed(_subject(*attributes))).kind


def test_person_with_only_a_12_digit_tax_code_uid_is_a_person() -> None:
    # reported bug: this read back as "organisation"
    assert (
        _kind_of(
            (NameOID.COUNTRY_NAME, "VN"),
            (NameOID.COMMON_NAME, "Nguyễn Văn An"),
            (NameOID.USER_ID, "MST:001090000001"),
        )
        == "person"
    )


@pytest.mark.parametrize(
    "attribute",
    [
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "Phòng Kế toán - CCCD:001090000001"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "CCCD:001090000001"),
        (NameOID.EMAIL_ADDRESS, "hc=B1234567@example.vn"),
        (NameOID.COMMON_NAME, "Sở Tài chính - CMND:012345678"),
    ],
)
def test_organisation_uid_wins_over_personal_numbers_in_free_text(
    attribute: tuple[x509.ObjectIdentifier, str],
) -> None:
    # reported bug: a personal number in OU / e-mail turned the agency into a person
    cert = self_signed(
        _subject(
            (NameOID.COUNTRY_NAME, "VN"),
            (NameOID.COMMON_NAME, "Sở Tài chính"),
            attribute,
            (NameOID.USER_ID, "MST:0101234567"),
        )
    )
    identity = identity_of(cert)
    assert identity.kind == "organisation"
    # the embedded number is still reported, marked as such
    assert [n.source for n in identity.ids] == ["uid", "embedded"]
    assert identity.ids[1].is_personal


def test_personal_uid_wins_over_organisational_uid() -> None:
    assert (
        _kind_of(
            (NameOID.COMMON_NAME, "Lê Văn Cường"),
            (NameOID.USER_ID, "MST:0101234567"),
            (NameOID.USER_ID, "CCCD:001090000001"),
        )
        == "person"
    )
    assert (
        _kind_of(
            (NameOID.COMMON_NAME, "Lê Văn Cường"),
            (NameOID.USER_ID, "CCCD:001090000001"),
            (NameOID.USER_ID, "MST:001090000001"),
        )
        == "person"
    )


def test_organisation_uid_wins_over_a_title() -> None:
    assert (
        _kind_of(
            (NameOID.TITLE, "Văn thư"),
            (NameOID.COMMON_NAME, "Sở Tài chính"),
            (NameOID.USER_ID, "MNS:1012345"),
        )
        == "organisation"
    )


def test_without_uid_embedded_numbers_decide() -> None:
    assert _kind_of((NameOID.COMMON_NAME, "CÔNG TY ABC - MST:0101234567")) == "organisation"
    assert _kind_of((NameOID.ORGANIZATIONAL_UNIT_NAME, "MST:001090000001")) == "person"
    # same rule inside the tier: a personal number wins
    assert (
        _kind_of(
            (NameOID.ORGANIZATIONAL_UNIT_NAME, "MST:0101234567"),
            (NameOID.COMMON_NAME, "Trần Bình - CCCD:001090000001"),
        )
        == "person"
    )
    identity = identity_of(self_signed(_subject((NameOID.COMMON_NAME, "ABC - MNS:1012345"))))
    assert identity.ids == (IdentityNumber("MNS", "1012345"),)
    assert identity.ids[0].source == "embedded"


def test_uninformative_uids_leave_the_decision_to_weaker_evidence() -> None:
    # an unknown scheme or a malformed tax code says neither person nor organisation
    assert _kind_of((NameOID.USER_ID, "BHXH:0123456789")) == "unknown"
    assert _kind_of((NameOID.USER_ID, "MST:12")) == "unknown"
    assert (
        _kind_of(
            (NameOID.USER_ID, "BHXH:0123456789"),
            (NameOID.COMMON_NAME, "CÔNG TY ABC - MST:0101234567"),
        )
        == "organisation"
    )
    assert _kind_of((NameOID.USER_ID, "MST:12"), (NameOID.TITLE, "Chuyên viên")) == "person"


@pytest.mark.parametrize(
    "oid", [NameOID.TITLE, NameOID.GIVEN_NAME, NameOID.SURNAME, NameOID.PSEUDONYM]
)
def test_personal_attribute_without_numbers_makes_a_person(oid: x509.ObjectIdentifier) -> None:
    assert _kind_of((oid, "Chuyên viên")) == "person"


def test_title_only_is_a_person() -> None:
    identity = identity_of(self_signed(_subject((NameOID.TITLE, "Giám đốc"))))
    assert identity.kind == "person"
    assert identity.title == "Giám đốc"


def test_names_alone_are_unknown() -> None:
    assert (
        _kind_of(
            (NameOID.COUNTRY_NAME, "VN"),
            (NameOID.ORGANIZATION_NAME, "BỘ TÀI CHÍNH"),
            (NameOID.COMMON_NAME, "TỔNG CỤC THUẾ"),
        )
        == "unknown"
    )


def test_source_is_provenance_not_identity() -> None:
    uid = IdentityNumber("MST", "0101234567")
    embedded = IdentityNumber("MST", "0101234567", source="embedded")
    assert uid == embedded and hash(uid) == hash(embedded)
    assert embedded.is_valid
    assert embedded.as_dict()["source"] == "embedded"
