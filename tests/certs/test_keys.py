"""Key stores: PKCS#12 files and SoftHSM2 tokens, the registry, pyhanko signers."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pkcs11
import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import NameOID
from pkcs11.constants import Attribute, ObjectClass
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import PdfFileWriter
from pyhanko.sign import signers
from pyhanko.sign.fields import SigSeedSubFilter
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext

from kyso.certs import builders
from kyso.certs.errors import (
    KeyExistsError,
    KeyNotFoundError,
    KeyStoreError,
    WrongPassphraseError,
)
from kyso.certs.keys import (
    FileKeyStore,
    KeyHandle,
    KeyRegistry,
    PKCS11KeyStore,
    parse_pkcs11_uri,
    pkcs11_uri,
    slug_label,
    validate_label,
)
from tests.softhsm import SoftHSMToken, init_token

PASSPHRASE = "mật-khẩu 2024!".encode()
HASH_NAMES = ("sha256", "sha384", "sha512")
OPENSSL_INFO = ("openssl", "pkcs12", "-info", "-nokeys", "-in")
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}


# --------------------------------------------------------------------------------------------
# A small PKI: root CA → intermediate CA → leaves (RSA-2048 and ECDSA P-256)
# --------------------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "UBND Quận Long Biên"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@dataclass
class PKI:
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    sub: x509.Certificate
    sub_key: ec.EllipticCurvePrivateKey
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        return (self.sub, self.root)

    def leaf(self, cn: str, public_key: PublicKeyTypes) -> x509.Certificate:
        return builders.build_signer_certificate(
            public_key,  # type: ignore[arg-type]
            _name(cn),
            issuer_cert=self.sub,
            issuer_key=self.sub_key,
            now=dt.datetime.now(dt.UTC),
        )

    def key(self, kind: str) -> PrivateKeyTypes:
        return self.rsa_key if kind == "rsa" else self.ec_key

    def new_key(self, kind: str) -> PrivateKeyTypes:
        if kind == "rsa":
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def pki() -> PKI:
    root_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    root = builders.build_root_ca(root_key, _name("Kyso Test Root CA"), now=now)
    sub_key = ec.generate_private_key(ec.SECP256R1())
    sub = builders.build_issuing_ca(
        sub_key.public_key(),
        _name("Kyso Test Sub CA"),
        issuer_cert=root,
        issuer_key=root_key,
        now=now,
    )
    return PKI(
        root=root,
        root_key=root_key,
        sub=sub,
        sub_key=sub_key,
        rsa_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec_key=ec.generate_private_key(ec.SECP256R1()),
    )


def verify(public_key: PublicKeyTypes, signature: bytes, data: bytes, hash_name: str) -> None:
    """Raise InvalidSignature unless ``signature`` is over ``data`` (independent check)."""
    algorithm = _HASHES[hash_name]
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
    else:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        public_key.verify(signature, data, ec.ECDSA(algorithm))


class CountingPassphrase:
    """A passphrase callable that counts its calls."""

    def __init__(self, value: bytes = PASSPHRASE) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.value


def file_store(directory: Path, passphrase: bytes = PASSPHRASE) -> FileKeyStore:
    return FileKeyStore(directory, lambda: passphrase)


# --------------------------------------------------------------------------------------------
# Labels and URIs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("Nguyễn Văn An", "nguyen-van-an"),
        ("UBND Quận Long Biên", "ubnd-quan-long-bien"),
        ("Đặng Thị Đào", "dang-thi-dao"),
        ("  Sở Tài chính — Hà Nội (2024)  ", "so-tai-chinh-ha-noi-2024"),
        ("Phòng Tư pháp, huyện Đông Anh", "phong-tu-phap-huyen-dong-anh"),
    ],
)
def test_slug_label(name: str, label: str) -> None:
    assert slug_label(name) == label
    assert validate_label(label) == label


def test_slug_label_is_truncated_to_a_valid_label() -> None:
    label = slug_label("Ủy ban nhân dân " * 10)
    assert len(label) <= 64
    assert validate_label(label) == label
    assert not label.endswith("-")


def test_slug_label_rejects_names_without_letters() -> None:
    with pytest.raises(KeyStoreError):
        slug_label("— ** —")


@pytest.mark.parametrize(
    "label", ["", "A", "-x", ".x", "a b", "a/b", "nguyễn", "x" * 65, "file:x", "a\n"]
)
def test_invalid_labels_are_rejected(label: str, tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError) as info:
        validate_label(label)
    assert info.value.code == "certs.keys.invalid_label"
    store = file_store(tmp_path)
    with pytest.raises(KeyStoreError):
        store.load(label)


def test_valid_labels() -> None:
    for label in ("a", "0", "nguyen-van-an", "k1.2024_rsa", "x" * 64):
        assert validate_label(label) == label


def test_messages_exist_in_both_languages() -> None:
    import re

    import kyso.certs.keys as keys_module
    from kyso.i18n import catalogue

    source = Path(keys_module.__file__).read_text(encoding="utf-8")
    codes = set(re.findall(r'"(certs\.keys\.[a-z0-9_]+)"', source))
    assert len(codes) > 10
    for code in codes:
        assert set(catalogue()[code]) >= {"vi", "en"}, code
    error = KeyStoreError("certs.keys.ambiguous", label="k", uris="file:k, pkcs11:…")
    assert error.message("vi").startswith("Nhãn “k” có ở nhiều kho khóa")
    assert str(error).startswith("The label “k” is held by several key stores")


def test_pkcs11_uri_round_trip() -> None:
    uri = pkcs11_uri("Sở Tư pháp; HN", "k1")
    assert uri.startswith("pkcs11:token=S%E1%BB%9F%20T")
    assert ";" not in uri.split("token=", 1)[1].split(";object=")[0]
    assert parse_pkcs11_uri(uri) == {"token": "Sở Tư pháp; HN", "object": "k1"}
    assert parse_pkcs11_uri("pkcs11:token=a%2Db;object=k;type=private?pin-value=1") == {
        "token": "a-b",
        "object": "k",
        "type": "private",
    }


# --------------------------------------------------------------------------------------------
# File store
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_file_round_trip(kind: str, pki: PKI, tmp_path: Path) -> None:
    key = pki.key(kind)
    cert = pki.leaf(f"Signer {kind}", key.public_key())
    handle = file_store(tmp_path).save("signer", key, cert, pki.chain)
    assert handle.uri == "file:signer"
    assert handle.key_algorithm == kind

    loaded = file_store(tmp_path).load("signer")  # a fresh store: really read from disk
    assert loaded is not handle
    assert loaded.label == "signer"
    assert loaded.uri == "file:signer"
    assert loaded.key_algorithm == kind
    assert loaded.certificate == cert
    assert loaded.chain == pki.chain
    der = serialization.Encoding.DER
    pkcs8 = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    assert loaded.private_key().private_bytes(der, pkcs8, none) == key.private_bytes(
        der, pkcs8, none
    )


def test_file_without_chain(pki: PKI, tmp_path: Path) -> None:
    cert = pki.leaf("No chain", pki.ec_key.public_key())
    file_store(tmp_path).save("solo", pki.ec_key, cert)
    assert file_store(tmp_path).load("solo").chain == ()


def test_file_mode_and_no_leftovers(pki: PKI, tmp_path: Path) -> None:
    directory = tmp_path / "keys"  # created on first write
    store = file_store(directory)
    store.save("k1", pki.ec_key, pki.leaf("K1", pki.ec_key.public_key()), pki.chain)
    path = directory / "k1.p12"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) & 0o077 == 0
    assert sorted(p.name for p in directory.iterdir()) == ["k1.p12"]


def _secret_encodings(key: PrivateKeyTypes) -> list[bytes]:
    """Byte strings that would betray the private key if found in a file."""
    der = serialization.Encoding.DER
    none = serialization.NoEncryption()
    found = [
        key.private_bytes(der, serialization.PrivateFormat.PKCS8, none),
        key.private_bytes(der, serialization.PrivateFormat.TraditionalOpenSSL, none),
    ]
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()
        found += [numbers.d.to_bytes(256, "big"), numbers.p.to_bytes(128, "big")]
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        found.append(key.private_numbers().private_value.to_bytes(32, "big"))
    return found


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_p12_is_encrypted_and_openssl_reads_it(kind: str, pki: PKI, tmp_path: Path) -> None:
    key = pki.key(kind)
    cert = pki.leaf("OpenSSL check", key.public_key())
    store = FileKeyStore(tmp_path, lambda: b"correct horse")
    store.save("ossl", key, cert, pki.chain)
    data = (tmp_path / "ossl.p12").read_bytes()
    for secret in _secret_encodings(key):
        assert secret not in data

    ok = subprocess.run(
        [*OPENSSL_INFO, str(tmp_path / "ossl.p12"), "-passin", "pass:correct horse"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    report = ok.stdout + ok.stderr
    assert "CN = OpenSSL check" in report or "CN=OpenSSL check" in report
    assert "PBES2" in report and "AES-256-CBC" in report
    assert "MAC: sha256" in report
    assert "PRIVATE KEY" not in ok.stdout

    bad = subprocess.run(
        [*OPENSSL_INFO, str(tmp_path / "ossl.p12"), "-passin", "pass:wrong horse"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0
    assert "BEGIN CERTIFICATE" not in bad.stdout


def test_wrong_passphrase(pki: PKI, tmp_path: Path) -> None:
    file_store(tmp_path).save("k", pki.ec_key, pki.leaf("K", pki.ec_key.public_key()))
    secret = b"definitely-not-it"
    store = FileKeyStore(tmp_path, lambda: secret)
    with pytest.raises(WrongPassphraseError) as info:
        store.load("k")
    assert info.value.params == {"label": "k"}
    assert info.value.code == "certs.keystore.wrong_passphrase"
    for text in (str(info.value), info.value.message("vi"), repr(info.value), repr(store)):
        assert secret.decode() not in text
    assert PASSPHRASE.decode() not in repr(file_store(tmp_path))


def test_passphrase_asked_lazily_and_once(pki: PKI, tmp_path: Path) -> None:
    passphrase = CountingPassphrase()
    store = FileKeyStore(tmp_path, passphrase)
    assert passphrase.calls == 0
    assert store.labels() == []
    assert not store.has("a")
    assert passphrase.calls == 0
    store.save("a", pki.ec_key, pki.leaf("A", pki.ec_key.public_key()))
    store.save("b", pki.rsa_key, pki.leaf("B", pki.rsa_key.public_key()), pki.chain)
    assert passphrase.calls == 1

    reader_pass = CountingPassphrase()
    reader = FileKeyStore(tmp_path, reader_pass)
    assert reader.labels() == ["a", "b"]
    assert reader.has("a") and reader.has("b") and not reader.has("c")
    assert reader_pass.calls == 0
    reader.load("a")
    reader.load("b")
    reader.load("a")
    assert reader_pass.calls == 1


def test_load_is_cached(pki: PKI, tmp_path: Path) -> None:
    store = file_store(tmp_path)
    saved = store.save("k", pki.ec_key, pki.leaf("K", pki.ec_key.public_key()))
    assert store.load("k") is saved
    other = file_store(tmp_path)
    assert other.load("k") is other.load("k")


def test_save_refuses_to_overwrite(pki: PKI, tmp_path: Path) -> None:
    store = file_store(tmp_path)
    cert = pki.leaf("K", pki.ec_key.public_key())
    store.save("k", pki.ec_key, cert)
    before = (tmp_path / "k.p12").read_bytes()
    with pytest.raises(KeyExistsError) as info:
        file_store(tmp_path).save("k", pki.rsa_key, pki.leaf("K2", pki.rsa_key.public_key()))
    assert info.value.params == {"label": "k"}
    assert (tmp_path / "k.p12").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.p12"]


def test_missing_and_corrupt_keys(pki: PKI, tmp_path: Path) -> None:
    store = file_store(tmp_path)
    with pytest.raises(KeyNotFoundError) as info:
        store.load("nobody")
    assert info.value.params == {"label": "nobody"}
    (tmp_path / "junk.p12").write_bytes(b"not a pkcs12 file")
    with pytest.raises(KeyStoreError) as corrupt:
        store.load("junk")
    assert not isinstance(corrupt.value, WrongPassphraseError)
    assert corrupt.value.code == "certs.keys.corrupt"


def test_certificate_must_match_key(pki: PKI, tmp_path: Path) -> None:
    store = file_store(tmp_path)
    with pytest.raises(KeyStoreError) as info:
        store.save("k", pki.ec_key, pki.leaf("Other", pki.rsa_key.public_key()))
    assert info.value.code == "certs.keys.cert_mismatch"
    assert not (tmp_path / "k.p12").exists()


def test_replace_certificate_keeps_key(pki: PKI, tmp_path: Path) -> None:
    store = file_store(tmp_path)
    old = store.save("k", pki.rsa_key, pki.leaf("Old", pki.rsa_key.public_key()), pki.chain)
    new_cert = pki.leaf("Renewed", pki.rsa_key.public_key())
    new = store.replace_certificate("k", new_cert, (pki.sub,))
    assert new is not old
    assert store.load("k") is new
    assert stat.S_IMODE((tmp_path / "k.p12").stat().st_mode) == 0o600
    fresh = file_store(tmp_path).load("k")
    assert fresh.certificate == new_cert
    assert fresh.chain == (pki.sub,)
    verify(new_cert.public_key(), fresh.sign(b"x"), b"x", "sha256")
    with pytest.raises(KeyStoreError):
        store.replace_certificate("k", pki.leaf("Wrong", pki.ec_key.public_key()))
    with pytest.raises(KeyNotFoundError):
        store.replace_certificate("missing", new_cert)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
@pytest.mark.parametrize("hash_name", HASH_NAMES)
def test_file_sign_verifies(kind: str, hash_name: str, pki: PKI, tmp_path: Path) -> None:
    key = pki.key(kind)
    cert = pki.leaf("Signer", key.public_key())
    file_store(tmp_path).save("s", key, cert)
    handle = file_store(tmp_path).load("s")
    data = "Quyết định số 12/QĐ-UBND".encode() * 100
    signature = handle.sign(data, hash_name)
    verify(cert.public_key(), signature, data, hash_name)
    with pytest.raises(InvalidSignature):
        verify(cert.public_key(), signature, data + b"!", hash_name)


def test_unsupported_hash(pki: PKI, tmp_path: Path) -> None:
    handle = file_store(tmp_path).save("s", pki.ec_key, pki.leaf("S", pki.ec_key.public_key()))
    with pytest.raises(KeyStoreError) as info:
        handle.sign(b"x", "md5")
    assert info.value.code == "certs.keys.unsupported_hash"


# --------------------------------------------------------------------------------------------
# SoftHSM2
# --------------------------------------------------------------------------------------------


@dataclass
class Tokens:
    main: SoftHSMToken
    other: SoftHSMToken
    pin_check: SoftHSMToken


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Tokens:
    # One token directory for the whole module: SoftHSM2 only sees tokens that exist when the
    # library is (re)initialised, and re-initialising invalidates every open session.
    directory = tmp_path_factory.mktemp("softhsm")
    main = init_token(directory, label="kyso-test", pin="1234", so_pin="5678")
    other = init_token(directory, label="kyso-other", pin="4321", so_pin="8765")
    pin_check = init_token(directory, label="kyso-pin", pin="2468", so_pin="1357")
    return Tokens(main=main, other=other, pin_check=pin_check)


def token_store(token: SoftHSMToken) -> PKCS11KeyStore:
    return PKCS11KeyStore(token.module, token.label, lambda: token.pin)


@pytest.fixture
def hsm(tokens: Tokens) -> PKCS11KeyStore:
    return token_store(tokens.main)


@contextlib.contextmanager
def independent_session(token: SoftHSMToken) -> Iterator[pkcs11.Session]:
    """A separate python-pkcs11 session (no login of its own: the store's login is shared
    by the process, so it sees private objects; closing it logs nobody out)."""
    lib = pkcs11.lib(token.module)
    session = lib.get_token(token_label=token.label).open()
    try:
        yield session
    finally:
        session.close()


def certify(store: PKCS11KeyStore, pki: PKI, label: str, key_type: str) -> x509.Certificate:
    """Generate ``label`` on the token, issue its certificate, store it with the chain."""
    public_key = store.generate(label, key_type)
    cert = pki.leaf(f"Token {label}", public_key)
    store.store_certificate(label, cert, pki.chain)
    return cert


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048", "rsa-3072"])
def test_generate_non_extractable(
    key_type: str, hsm: PKCS11KeyStore, tokens: Tokens, pki: PKI
) -> None:
    label = f"gen-{key_type}"
    public_key = hsm.generate(label, key_type)
    if key_type == "ec-p256":
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert public_key.curve.name == "secp256r1"
    else:
        assert isinstance(public_key, rsa.RSAPublicKey)
        assert public_key.key_size == int(key_type.split("-")[1])
    assert hsm.has(label)
    with pytest.raises(KeyStoreError) as no_cert:
        hsm.load(label)
    assert no_cert.value.code == "certs.keys.no_certificate"

    cert = pki.leaf("Token signer", public_key)
    hsm.store_certificate(label, cert, pki.chain)
    handle = hsm.load(label)
    assert handle.certificate == cert
    assert handle.chain == pki.chain
    assert handle.key_algorithm == ("ec" if key_type == "ec-p256" else "rsa")
    assert handle.uri == f"pkcs11:token=kyso-test;object={label}"
    with pytest.raises(KeyStoreError) as info:
        handle.private_key()
    assert info.value.code == "certs.keys.not_extractable"

    with independent_session(tokens.main) as session:
        (key,) = session.get_objects(
            {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label}
        )
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.TOKEN] is True
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        assert key[Attribute.ALWAYS_SENSITIVE] is True
        assert key[Attribute.SIGN] is True
        secret = Attribute.PRIVATE_EXPONENT if key_type != "ec-p256" else Attribute.VALUE
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[secret]
        (cert_obj,) = session.get_objects(
            {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: label}
        )
        assert cert_obj[Attribute.ID] == key[Attribute.ID]
        assert bytes(cert_obj[Attribute.VALUE]) == cert.public_bytes(serialization.Encoding.DER)


def test_pkcs11_tool_sees_a_sensitive_never_extractable_key(
    hsm: PKCS11KeyStore, tokens: Tokens, pki: PKI
) -> None:
    certify(hsm, pki, "tool-check", "ec-p256")
    token = tokens.main
    listing = subprocess.run(
        [
            *("pkcs11-tool", "--module", token.module, "--token-label", token.label),
            *("--login", "--pin", token.pin, "--list-objects", "--type", "privkey"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "SOFTHSM2_CONF": str(token.conf)},
        check=True,
    )
    block = listing.stdout.split("label:      tool-check", 1)[1].split("Private Key Object", 1)[0]
    assert "never extractable" in block
    assert "always sensitive" in block


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048"])
@pytest.mark.parametrize("hash_name", HASH_NAMES)
def test_token_sign_verifies(key_type: str, hash_name: str, tokens: Tokens, pki: PKI) -> None:
    store = token_store(tokens.main)
    label = f"sign-{key_type}"
    if not store.has(label):
        certify(store, pki, label, key_type)
    handle = store.load(label)
    data = "Công văn số 45/CV-STP".encode() * 50
    signature = handle.sign(data, hash_name)
    verify(handle.certificate.public_key(), signature, data, hash_name)
    with pytest.raises(InvalidSignature):
        verify(handle.certificate.public_key(), signature, data + b"!", hash_name)


def test_token_signing_is_thread_safe(hsm: PKCS11KeyStore, pki: PKI) -> None:
    ec_cert = certify(hsm, pki, "threads-ec", "ec-p256")
    rsa_cert = certify(hsm, pki, "threads-rsa", "rsa-2048")
    handles = [(hsm.load("threads-ec"), ec_cert), (hsm.load("threads-rsa"), rsa_cert)]

    def work(i: int) -> None:
        handle, cert = handles[i % 2]
        data = f"document {i}".encode()
        verify(cert.public_key(), handle.sign(data), data, "sha256")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(80)))


def test_token_store_errors(hsm: PKCS11KeyStore, pki: PKI) -> None:
    certify(hsm, pki, "dup", "ec-p256")
    with pytest.raises(KeyExistsError):
        hsm.generate("dup")
    with pytest.raises(KeyStoreError) as bad_type:
        hsm.generate("new-key", "dsa-1024")
    assert bad_type.value.code == "certs.keys.unsupported_key_type"
    with pytest.raises(KeyStoreError):
        hsm.generate("Bad Label")
    with pytest.raises(KeyNotFoundError):
        hsm.load("nobody")
    with pytest.raises(KeyNotFoundError):
        hsm.store_certificate("nobody", pki.leaf("X", pki.ec_key.public_key()))
    with pytest.raises(KeyStoreError) as mismatch:
        hsm.store_certificate("dup", pki.leaf("Wrong", pki.ec_key.public_key()))
    assert mismatch.value.code == "certs.keys.cert_mismatch"
    assert hsm.load("dup").certificate.subject == _name("Token dup")


def test_token_labels_and_cache(hsm: PKCS11KeyStore, pki: PKI) -> None:
    certify(hsm, pki, "listed", "ec-p256")
    assert "listed" in hsm.labels()
    assert all(validate_label(label) for label in hsm.labels())
    assert hsm.load("listed") is hsm.load("listed")


def test_store_certificate_replaces(hsm: PKCS11KeyStore, tokens: Tokens, pki: PKI) -> None:
    first = certify(hsm, pki, "reissue", "ec-p256")
    old_handle = hsm.load("reissue")
    renewed = pki.leaf("Renewed", first.public_key())
    hsm.store_certificate("reissue", renewed, (pki.sub,))
    handle = hsm.load("reissue")
    assert handle is not old_handle
    assert handle.certificate == renewed
    assert handle.chain == (pki.sub,)
    with independent_session(tokens.main) as session:
        labels = [
            obj[Attribute.LABEL]
            for obj in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE})
            if obj[Attribute.LABEL].startswith("reissue")
        ]
    assert sorted(labels) == ["reissue", "reissue/chain/0"]


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_import_key(kind: str, hsm: PKCS11KeyStore, tokens: Tokens, pki: PKI) -> None:
    key = pki.new_key(kind)
    cert = pki.leaf(f"Imported {kind}", key.public_key())
    label = f"imported-{kind}"
    handle = hsm.import_key(label, key, cert, pki.chain)
    assert handle is hsm.load(label)
    assert handle.uri == f"pkcs11:token=kyso-test;object={label}"
    assert handle.chain == pki.chain
    assert handle.key_algorithm == kind
    for hash_name in HASH_NAMES:
        verify(cert.public_key(), handle.sign(b"imported", hash_name), b"imported", hash_name)
    with pytest.raises(KeyStoreError):
        handle.private_key()
    with independent_session(tokens.main) as session:
        (obj,) = session.get_objects(
            {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label}
        )
        assert obj[Attribute.EXTRACTABLE] is False
        assert obj[Attribute.SENSITIVE] is True
        assert obj[Attribute.TOKEN] is True
    with pytest.raises(KeyExistsError):
        hsm.import_key(label, key, cert)
    with pytest.raises(KeyStoreError):
        hsm.import_key("mismatch", key, pki.leaf("Other", pki.new_key(kind).public_key()))
    assert not hsm.has("mismatch")


def test_wrong_pin_and_missing_token(tokens: Tokens) -> None:
    wrong = PKCS11KeyStore(tokens.pin_check.module, tokens.pin_check.label, lambda: "0000")
    with pytest.raises(WrongPassphraseError) as info:
        wrong.labels()
    assert info.value.code == "certs.keys.wrong_pin"
    assert "0000" not in str(info.value)
    missing = PKCS11KeyStore(tokens.main.module, "no-such-token", lambda: "1234")
    with pytest.raises(KeyStoreError) as absent:
        missing.has("x")
    assert absent.value.code == "certs.keys.token_not_found"


def test_pin_asked_lazily(tokens: Tokens) -> None:
    calls: list[int] = []

    def pin() -> str:
        calls.append(1)
        return tokens.main.pin

    store = PKCS11KeyStore(tokens.main.module, tokens.main.label, pin)
    assert calls == []
    store.labels()
    store.labels()
    assert len(calls) == 1


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@pytest.fixture
def registry_parts(
    tokens: Tokens, pki: PKI, tmp_path: Path
) -> tuple[KeyRegistry, FileKeyStore, PKCS11KeyStore, PKCS11KeyStore]:
    files = file_store(tmp_path)
    files.save("on-file", pki.ec_key, pki.leaf("File", pki.ec_key.public_key()), pki.chain)
    files.save("shared", pki.rsa_key, pki.leaf("Shared", pki.rsa_key.public_key()))
    main = token_store(tokens.main)
    other = token_store(tokens.other)
    for store, label in ((main, "reg-on-token"), (main, "shared"), (other, "reg-other")):
        if not store.has(label):
            certify(store, pki, label, "ec-p256")
    return KeyRegistry([files, main, other]), files, main, other


def test_registry_resolves_labels_and_uris(
    registry_parts: tuple[KeyRegistry, FileKeyStore, PKCS11KeyStore, PKCS11KeyStore],
) -> None:
    registry, files, _, other = registry_parts
    on_file = registry.resolve("on-file")
    assert on_file.uri == "file:on-file"
    assert on_file is registry.resolve("file:on-file") is files.load("on-file")

    on_token = registry.resolve("reg-on-token")
    assert on_token.uri == "pkcs11:token=kyso-test;object=reg-on-token"
    assert on_token is registry.resolve("pkcs11:token=kyso-test;object=reg-on-token")
    assert on_token is registry.resolve("pkcs11:token=kyso%2Dtest;object=reg%2Don%2Dtoken")
    assert on_token is registry.resolve("pkcs11:object=reg-on-token;token=kyso-test;type=private")
    assert registry.resolve("reg-other") is other.load("reg-other")
    assert registry.resolve("pkcs11:token=kyso-other;object=reg-other").uri == (
        "pkcs11:token=kyso-other;object=reg-other"
    )

    pairs = registry.labels()
    assert ("on-file", "file:on-file") in pairs
    assert ("reg-on-token", "pkcs11:token=kyso-test;object=reg-on-token") in pairs
    assert ("reg-other", "pkcs11:token=kyso-other;object=reg-other") in pairs
    assert pairs[:2] == [("on-file", "file:on-file"), ("shared", "file:shared")]


def test_registry_ambiguous_missing_and_bad(
    registry_parts: tuple[KeyRegistry, FileKeyStore, PKCS11KeyStore, PKCS11KeyStore],
) -> None:
    registry, _, main, _ = registry_parts
    with pytest.raises(KeyStoreError) as ambiguous:
        registry.resolve("shared")
    assert ambiguous.value.code == "certs.keys.ambiguous"
    assert "file:shared" in str(ambiguous.value)
    assert "pkcs11:token=kyso-test;object=shared" in str(ambiguous.value)
    assert registry.resolve("file:shared").key_algorithm == "rsa"
    assert registry.resolve("pkcs11:token=kyso-test;object=shared").key_algorithm == "ec"

    for ref in ("nobody", "file:nobody", "pkcs11:token=kyso-test;object=nobody"):
        with pytest.raises(KeyNotFoundError):
            registry.resolve(ref)
    with pytest.raises(KeyNotFoundError):
        registry.resolve("pkcs11:token=unknown;object=reg-on-token")
    with pytest.raises(KeyNotFoundError):
        KeyRegistry([main]).resolve("file:on-file")
    for bad in ("pkcs11:token=kyso-test", "pkcs11:object", "http://x", "Bad Label", "file:A"):
        with pytest.raises(KeyStoreError):
            registry.resolve(bad)


# --------------------------------------------------------------------------------------------
# pyhanko signers
# --------------------------------------------------------------------------------------------


def minimal_pdf() -> bytes:
    """A one-page PDF written by pyhanko."""
    writer = PdfFileWriter()
    page = generic.DictionaryObject(
        {
            generic.NameObject("/Type"): generic.NameObject("/Page"),
            generic.NameObject("/MediaBox"): generic.ArrayObject(
                [generic.NumberObject(n) for n in (0, 0, 595, 842)]
            ),
        }
    )
    writer.insert_page(page)
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def sign_and_validate(handle: KeyHandle, root: x509.Certificate) -> None:
    """Sign a PDF (PAdES B-B) with ``handle.pyhanko_signer()`` and validate it."""
    signer = handle.pyhanko_signer()
    meta = signers.PdfSignatureMetadata(field_name="Sig1", subfilter=SigSeedSubFilter.PADES)
    signed = signers.sign_pdf(IncrementalPdfFileWriter(BytesIO(minimal_pdf())), meta, signer=signer)
    reader = PdfFileReader(signed)
    (embedded,) = reader.embedded_signatures
    trust = asn1_x509.Certificate.load(root.public_bytes(serialization.Encoding.DER))
    status = validate_pdf_signature(embedded, ValidationContext(trust_roots=[trust]))
    assert status.intact, status.pretty_print_details()
    assert status.valid, status.pretty_print_details()
    assert status.bottom_line, status.pretty_print_details()
    assert status.trusted
    assert embedded.signer_cert.dump() == handle.certificate.public_bytes(
        serialization.Encoding.DER
    )


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_file_pyhanko_signer(
    kind: str, pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = pki.key(kind)
    file_store(tmp_path).save("pdf", key, pki.leaf("PDF signer", key.public_key()), pki.chain)
    handle = file_store(tmp_path).load("pdf")

    def no_reparse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the private key was parsed again")

    from pyhanko.sign.signers import pdf_cms

    monkeypatch.setattr(pdf_cms.serialization, "load_der_private_key", no_reparse)
    sign_and_validate(handle, pki.root)


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048"])
def test_token_pyhanko_signer(key_type: str, tokens: Tokens, pki: PKI) -> None:
    store = token_store(tokens.main)
    label = f"pdf-{key_type}"
    certify(store, pki, label, key_type)
    sign_and_validate(store.load(label), pki.root)


def test_token_pyhanko_signer_concurrently(hsm: PKCS11KeyStore, pki: PKI) -> None:
    certify(hsm, pki, "pdf-threads", "ec-p256")
    handle = hsm.load("pdf-threads")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            sign_and_validate(handle, pki.root)
            verify(handle.certificate.public_key(), handle.sign(b"x"), b"x", "sha256")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_passphrase_may_be_text(pki: PKI, tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path, lambda: "mật khẩu")  # type: ignore[arg-type,return-value]
    store.save("k", pki.ec_key, pki.leaf("K", pki.ec_key.public_key()))
    assert FileKeyStore(tmp_path, lambda: "mật khẩu".encode()).load("k").label == "k"
    with pytest.raises(KeyStoreError) as empty:
        FileKeyStore(tmp_path, lambda: b"").load("k")
    assert empty.value.code == "certs.keys.empty_passphrase"
    with pytest.raises(KeyStoreError) as latin1:
        FileKeyStore(tmp_path, lambda: b"m\xe1t").load("k")
    assert latin1.value.code == "certs.keys.passphrase_not_utf8"
