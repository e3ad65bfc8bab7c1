"""Trust stores: loading, presets, pinning, and use with pyhanko-certvalidator."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import NameOID
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import PathBuildingError

import kyso.certs.trust as trust_module
from kyso.certs import builders
from kyso.certs.errors import TrustStoreError
from kyso.certs.trust import (
    PRESETS,
    TrustStore,
    fingerprint,
    format_fingerprint,
    is_ca,
    load_certificates,
)

REAL = Path(__file__).parent / "data" / "real-vn"
ROOT_G2 = REAL / "vn-gov-root-g2.pem"
VNPT = REAL / "vnpt-ca-sha2-intermediate.pem"
AGENCY = REAL / "sample-agency-cert-tong-cuc-thue.pem"

# Published with http://ca.gov.vn/pki/pub/crt/rootcag2.crt; hard-coded on purpose.
VN_GOV_ROOT_G2 = (
    "F0:4B:A4:B4:59:A7:C9:A1:B9:71:AD:9B:1C:B8:33:E6:"
    "95:A8:0C:79:AE:A6:3B:17:4B:66:A7:0E:DF:E2:FD:B8"
)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


# --------------------------------------------------------------------------- presets


def test_packaged_vn_gov_root_fingerprint() -> None:
    store = TrustStore.preset("vn-gov")
    assert len(store) == 1
    (root,) = store.certificates
    digest = hashlib.sha256(root.public_bytes(Encoding.DER)).hexdigest()
    assert format_fingerprint(digest) == VN_GOV_ROOT_G2
    assert format_fingerprint(store.fingerprints()[0]) == VN_GOV_ROOT_G2
    assert root.subject.rfc4514_string() == (
        "CN=RootCA chuyên dùng Chính phủ G2,O=Ban Cơ yếu Chính phủ,C=VN"
    )
    assert is_ca(root)
    assert store.anchors()[0].is_ca
    assert store.anchors()[0].not_after.startswith("2048-08-14")


def test_packaged_root_is_the_published_one() -> None:
    assert TrustStore.preset("vn-gov") == TrustStore.from_pem_bundle(ROOT_G2)


def test_packaged_root_is_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(trust_module._PACKAGED, "vn-gov", ("vn-gov-root-g2.pem", "00" * 32))
    with pytest.raises(TrustStoreError) as info:
        TrustStore.preset("vn-gov")
    assert info.value.code == "certs.trust.fingerprint_mismatch"
    assert VN_GOV_ROOT_G2 in info.value.params["detail"]


def test_dev_preset_reads_the_given_root(tmp_path: Path) -> None:
    root = make_ca("kyso dev root")[1]
    path = tmp_path / "root.pem"
    path.write_bytes(root.public_bytes(Encoding.PEM))
    store = TrustStore.preset("dev", dev_root=path)
    assert store.certificates == (root,)


def test_dev_preset_needs_a_root() -> None:
    with pytest.raises(TrustStoreError) as info:
        TrustStore.preset("dev")
    assert "dev_root" in info.value.params["detail"]


def test_unknown_preset_lists_known_ones() -> None:
    with pytest.raises(TrustStoreError) as info:
        TrustStore.preset("vnpt")
    for name in PRESETS:
        assert name in info.value.params["detail"]
        assert name in info.value.message("vi")
    assert "vnpt" in str(info.value)


# --------------------------------------------------------------------------- loading


def test_pem_bundle_is_deduplicated_in_order(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(
        VNPT.read_bytes() + b"\n" + ROOT_G2.read_bytes() + VNPT.read_bytes() + AGENCY.read_bytes()
    )
    store = TrustStore.from_pem_bundle(bundle)
    assert len(store) == 3
    assert store.certificates == (load(VNPT), load(ROOT_G2), load(AGENCY))
    assert store.fingerprints()[0] == (
        "7d6ba5245317f9ed5d8bc765a4634d26ac6340d36b9f584df3b52d9c4a81a306"
    )


def test_directory_reads_pem_der_and_pkcs7(tmp_path: Path) -> None:
    (tmp_path / "a-root.pem").write_bytes(ROOT_G2.read_bytes())
    (tmp_path / "b-vnpt.CER").write_bytes(load(VNPT).public_bytes(Encoding.DER))
    (tmp_path / "c-agency.crt").write_bytes(AGENCY.read_bytes())
    (tmp_path / "notes.txt").write_text("not a certificate")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ignored.pem").write_text("garbage, but in a subdirectory")
    store = TrustStore.from_directory(tmp_path)
    assert store.certificates == (load(ROOT_G2), load(VNPT), load(AGENCY))

    p7 = tmp_path / "d-chain.p7b"
    p7.write_bytes(pkcs7.serialize_certificates([load(VNPT), load(ROOT_G2)], Encoding.DER))
    assert len(TrustStore.from_directory(tmp_path)) == 3  # all duplicates
    # a PKCS#7 "certificates" field is a DER SET OF: order is not kept
    assert TrustStore.from_file(p7) == TrustStore.from_certificates([load(VNPT), load(ROOT_G2)])


def test_is_ca_is_exposed_for_non_ca_anchors() -> None:
    store = TrustStore.from_certificates([load(ROOT_G2), load(AGENCY), load(VNPT)])
    assert [a.is_ca for a in store.anchors()] == [True, False, True]
    assert store.non_ca() == (load(AGENCY),)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("broken.pem", b"-----BEGIN CERTIFICATE-----\nnot base64!!\n-----END CERTIFICATE-----\n"),
        ("random.der", b"\x30\x03\x02\x01\x01"),
        ("text.crt", b"hello"),
        ("empty.pem", b"\n"),
    ],
)
def test_bad_files_raise_trust_store_error_with_path(
    tmp_path: Path, name: str, content: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TrustStoreError) as info:
        TrustStore.from_file(path)
    assert str(path) in info.value.params["detail"]
    assert str(path) in info.value.message("vi")
    # and a directory containing it fails the same way
    with pytest.raises(TrustStoreError) as info:
        TrustStore.from_directory(tmp_path)
    assert str(path) in info.value.params["detail"]


def test_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(TrustStoreError) as info:
        load_certificates(tmp_path / "nope.pem")
    assert info.value.code == "certs.trust.not_found"
    assert "nope.pem" in info.value.params["detail"]
    with pytest.raises(TrustStoreError):
        TrustStore.from_directory(tmp_path / "missing")
    with pytest.raises(TrustStoreError) as info:
        TrustStore.from_directory(tmp_path)  # exists, but holds no certificate file
    assert info.value.code == "certs.trust.empty"


def test_from_certificates_refuses_non_certificates() -> None:
    with pytest.raises(TrustStoreError):
        TrustStore.from_certificates([ROOT_G2.read_bytes()])  # type: ignore[list-item]


# --------------------------------------------------------------------------- the collection


def test_merge_find_contains_and_pem() -> None:
    gov = TrustStore.preset("vn-gov")
    public = TrustStore.from_pem_bundle(VNPT)
    both = gov + public
    assert len(both) == 2
    assert both == gov.merged(public) == public.merged(gov)  # equality ignores order
    assert both.certificates == (load(ROOT_G2), load(VNPT))
    assert len(both + gov) == 2
    assert len(gov.merged([load(AGENCY)])) == 2
    assert len(gov) == 1  # operands untouched

    assert both.find(VN_GOV_ROOT_G2) == load(ROOT_G2)
    assert both.find(VN_GOV_ROOT_G2.lower().replace(":", " ")) == load(ROOT_G2)
    assert both.find("00" * 32) is None
    assert load(VNPT) in both and load(AGENCY) not in both
    assert VN_GOV_ROOT_G2 in both

    reloaded = x509.load_pem_x509_certificates(both.to_pem())
    assert reloaded == list(both)
    assert [fingerprint(c) for c in both] == list(both.fingerprints())


def test_store_is_immutable() -> None:
    store = TrustStore.preset("vn-gov")
    with pytest.raises(AttributeError):
        store._by_fingerprint = {}  # type: ignore[misc]
    assert isinstance(store.certificates, tuple)
    assert hash(store) == hash(TrustStore.preset("vn-gov"))


def test_empty_store() -> None:
    store = TrustStore()
    assert len(store) == 0
    assert store.to_pem() == b""
    assert store.to_validation_context_kwargs() == {"trust_roots": []}


# --------------------------------------------------------------------------- path validation

NOW = dt.datetime.now(dt.UTC)


def make_ca(
    name: str,
    issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None,
    *,
    ca: bool = True,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A key and certificate (CA or leaf), self-signed unless ``issuer`` is given."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    if issuer is None:
        return key, builders.build_root_ca(key, subject, now=NOW, days=30)
    issuer_key, issuer_cert = issuer
    build = builders.build_issuing_ca if ca else builders.build_signer_certificate
    cert = build(
        key.public_key(), subject, issuer_cert=issuer_cert, issuer_key=issuer_key, now=NOW, days=30
    )
    return key, cert


@pytest.fixture(scope="module")
def chain() -> tuple[x509.Certificate, x509.Certificate, x509.Certificate]:
    root = make_ca("Test Root CA")
    intermediate = make_ca("Test Issuing CA", root)
    leaf = make_ca("Nguyễn Văn An", intermediate, ca=False)
    return root[1], intermediate[1], leaf[1]


def _validator(
    store: TrustStore, chain: tuple[x509.Certificate, x509.Certificate, x509.Certificate]
) -> CertificateValidator:
    _root, intermediate, leaf = chain
    as_asn1 = TrustStore.from_certificates([intermediate, leaf]).asn1_certificates()
    context = ValidationContext(**store.to_validation_context_kwargs(), other_certs=[as_asn1[0]])
    return CertificateValidator(as_asn1[1], validation_context=context)


async def test_chain_validates_with_the_root_in_the_store(chain) -> None:
    root, intermediate, leaf = chain
    store = TrustStore.preset("vn-gov") + TrustStore.from_certificates([root])
    path = await _validator(store, chain).async_validate_usage({"digital_signature"})
    assert [c.dump() for c in path] == [
        c.public_bytes(Encoding.DER) for c in (root, intermediate, leaf)
    ]


async def test_chain_fails_without_the_root(chain) -> None:
    _root, intermediate, _leaf = chain
    # even the intermediate as an anchor is fine; but a store of unrelated roots is not
    with pytest.raises(PathBuildingError):
        await _validator(TrustStore.preset("vn-gov"), chain).async_validate_usage(
            {"digital_signature"}
        )
    path = await _validator(
        TrustStore.from_certificates([intermediate]), chain
    ).async_validate_usage({"digital_signature"})
    assert path.leaf.dump() == chain[2].public_bytes(Encoding.DER)
