"""Fixtures of the exchange tests: agency keys from the session's built-in PKI, an unrelated
CA nobody trusts, and helpers to build and tamper with messages."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from kyso.api.services import Services
from kyso.certs import identity
from kyso.certs.keys import FileKeyHandle, KeyHandle
from kyso.exchange.edxml import VN_TZ, MessageHeader, Organ, TraceHeader, document_id

_SERIAL = itertools.count(1)


@dataclass(frozen=True)
class Agencies:
    """Two agencies' seal keys (RSA and EC) from one PKI, and that PKI's root."""

    sender: KeyHandle
    sender_ec: KeyHandle
    receiver: KeyHandle
    root: x509.Certificate
    root_pem: Path


def _issue(services: Services, label: str, name: str, key_type: str) -> KeyHandle:
    issued = services.pki.issue(
        kind="org",
        subject=identity.organisation_subject(name, ids=[f"MST:02{next(_SERIAL):08d}"]),
        label=label,
        key_type=key_type,
    )
    return services.file_keys.load(issued.label)


@pytest.fixture(scope="session")
def agencies(dev_services: Services, tmp_path_factory: pytest.TempPathFactory) -> Agencies:
    root_pem = tmp_path_factory.mktemp("exchange-root") / "root.pem"
    root_pem.write_bytes(dev_services.pki.root_cert.public_bytes(Encoding.PEM))
    return Agencies(
        sender=_issue(dev_services, "exch-vpcp-rsa", "Văn phòng Chính phủ", "rsa-2048"),
        sender_ec=_issue(dev_services, "exch-vpcp-ec", "Văn phòng Chính phủ", "ec-p256"),
        receiver=_issue(dev_services, "exch-bo-tc", "Bộ Tài chính", "ec-p256"),
        root=dev_services.pki.root_cert,
        root_pem=root_pem,
    )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="session")
def stranger() -> FileKeyHandle:
    """A key certified by a CA of its own (nobody trusts it), with the same agency name."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Stranger CA"))
        .issuer_name(_name("Stranger CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(65537, 2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Văn phòng Chính phủ"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return FileKeyHandle("stranger", key, cert, [ca])


SENDER = Organ(
    organ_id="000.00.00.G22",
    organ_name="Văn phòng Chính phủ",
    organization_in_charge="Cổng Thông tin điện tử Chính phủ",
    address="16 Lê Hồng Phong, Ba Đình, Hà Nội",
    email="vpcp@chinhphu.vn",
    telephone="080 43162",
)
RECEIVER = Organ(organ_id="G06.01", organ_name="Bộ Tài chính")


def sample_header(**changes: object) -> MessageHeader:
    """The header of Công văn 7816/VPCP-TTĐT (the DocumentId example of DOMAIN.md)."""
    values: dict[str, object] = {
        "from_organ": SENDER,
        "to": (RECEIVER, Organ(organ_id="H37.02.02", organ_name="UBND huyện Thử")),
        "code_number": "7816",
        "code_notation": "VPCP-TTĐT",
        "promulgation_date": dt.date(2018, 9, 20),
        "document_type": 18,
        "type_name": "Công văn",
        "subject": "Về việc triển khai trục liên thông văn bản quốc gia",
        "document_id": document_id("000.00.00.G22", dt.date(2018, 9, 20), "7816", "VPCP-TTĐT"),
        "promulgation_place": "Hà Nội",
        "content": "Nội dung: các cơ quan kết nối trước ngày 30/9 & báo cáo <kết quả>.",
        "signer_competence": "KT. BỘ TRƯỞNG, CHỦ NHIỆM",
        "signer_position": "Phó Chủ nhiệm",
        "signer_full_name": "Nguyễn Văn An",
        "due_date": dt.date(2018, 9, 30),
        "to_places": ("Như trên", "Lưu: VT, TTĐT"),
        "priority": 1,
        "sphere_of_promulgation": "Toàn quốc",
        "typer_notation": "TVC",
        "promulgation_amount": 3,
        "page_amount": 2,
        "appendixes": ("Phụ lục I", "Phụ lục II"),
        "steering_type": 1,
    }
    values.update(changes)
    return MessageHeader(**values)  # type: ignore[arg-type]


def sample_trace() -> list[TraceHeader]:
    return [TraceHeader("000.00.00.G22", dt.datetime(2018, 9, 20, 15, 4, 5, tzinfo=VN_TZ))]
