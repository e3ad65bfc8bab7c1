"""Key stores: signing keys in encrypted PKCS#12 files or on PKCS#11 tokens.

Whichever store holds a key, callers see one interface, :class:`KeyHandle`: the certificate
and its issuers, a ``sign()`` over raw data, and a ready pyhanko signer.  A key is named by a
*label* (``[a-z0-9][a-z0-9._-]{0,63}``) or by a URI: ``file:<label>`` for a file store,
RFC 7512 ``pkcs11:token=<token>;object=<label>`` for a token.  :class:`KeyRegistry` resolves
either form across several stores.

Nothing here reads settings: directories, module paths, token labels and secrets (as
callables, asked for lazily) are passed in.

Performance notes (see MEASURED.md item 7): a key is parsed once per process and store (the
handles are cached), and the pyhanko signers built here sign with that parsed key or with the
store's one open PKCS#11 session instead of re-parsing key material on every signature.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import threading
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, unquote

import pkcs11
from asn1crypto import keys as asn1_keys
from asn1crypto import pkcs12 as asn1_pkcs12
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.hazmat.primitives.serialization import pkcs12
from pkcs11 import exceptions as p11_errors
from pkcs11.constants import Attribute, MechanismFlag, ObjectClass
from pkcs11.mechanisms import KeyType, Mechanism
from pkcs11.util.ec import (
    encode_ec_public_key,
    encode_ecdsa_signature,
    encode_named_curve_parameters,
)
from pkcs11.util.x509 import decode_x509_certificate, decode_x509_public_key
from pyhanko.sign.pkcs11 import PKCS11Signer
from pyhanko.sign.signers import Signer, SimpleSigner
from pyhanko_certvalidator.registry import SimpleCertificateStore

from kyso.certs.errors import (
    KeyExistsError,
    KeyNotFoundError,
    KeyStoreError,
    WrongPassphraseError,
)

__all__ = [
    "DEFAULT_KDF_ROUNDS",
    "HASH_NAMES",
    "PKCS11_KEY_TYPES",
    "FileKeyHandle",
    "FileKeyStore",
    "KeyHandle",
    "KeyRegistry",
    "PKCS11KeyHandle",
    "PKCS11KeyStore",
    "file_uri",
    "parse_pkcs11_uri",
    "pkcs11_uri",
    "slug_label",
    "validate_label",
]

#: PBKDF2-HMAC-SHA256 rounds protecting PKCS#12 files (OWASP 2023 figure; ~0.15 s per pass).
DEFAULT_KDF_ROUNDS: Final = 600_000

#: Hash functions :meth:`KeyHandle.sign` accepts.
HASH_NAMES: Final = ("sha256", "sha384", "sha512")

#: Key types :meth:`PKCS11KeyStore.generate` can create.
PKCS11_KEY_TYPES: Final = ("ec-p256", "rsa-2048", "rsa-3072")

_LABEL_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_LABEL_MAX: Final = 64

_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

# DER DigestInfo prefixes of RFC 8017 §9.2 note 1 (with the NULL parameters OpenSSL expects).
_DIGEST_INFO_PREFIX: Final[dict[str, bytes]] = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}

# RFC 7512 pk11-pchar: unreserved characters plus these stay unencoded in path values.
_PK11_SAFE: Final = ":[]@!$'()*+,=&"


# --------------------------------------------------------------------------------------------
# Labels and URIs
# --------------------------------------------------------------------------------------------


def validate_label(label: str) -> str:
    """Return ``label`` if it is a valid key label, else raise :class:`KeyStoreError`."""
    if not isinstance(label, str) or not _LABEL_RE.fullmatch(label):
        raise KeyStoreError("certs.keys.invalid_label", label=str(label))
    return label


def slug_label(name: str) -> str:
    """Derive a key label from a (Vietnamese) name.

    Diacritics are dropped (``đ``/``Đ`` become ``d``), letters lowercased, and every run of
    other characters becomes one ``-``: ``"Nguyễn Văn An"`` → ``"nguyen-van-an"``.
    """
    text = name.replace("đ", "d").replace("Đ", "D")
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    slug = slug[:_LABEL_MAX].rstrip("-")
    if not slug:
        raise KeyStoreError("certs.keys.empty_name", name=name)
    return validate_label(slug)


def file_uri(label: str) -> str:
    """The URI of a key in a file store."""
    return f"file:{label}"


def pkcs11_uri(token: str, label: str) -> str:
    """The RFC 7512 URI of the key ``label`` on ``token``."""
    return f"pkcs11:token={quote(token, safe=_PK11_SAFE)};object={quote(label, safe=_PK11_SAFE)}"


def parse_pkcs11_uri(uri: str) -> dict[str, str]:
    """The percent-decoded path attributes of an RFC 7512 URI (query attributes are ignored).

    ``"pkcs11:token=My%20Token;object=k1"`` → ``{"token": "My Token", "object": "k1"}``.
    """
    if not uri.startswith("pkcs11:"):
        raise KeyStoreError("certs.keys.bad_uri", uri=uri)
    path = uri[len("pkcs11:") :].split("?", 1)[0]
    attrs: dict[str, str] = {}
    for part in filter(None, path.split(";")):
        name, sep, value = part.partition("=")
        if not sep or not name or name in attrs:
            raise KeyStoreError("certs.keys.bad_uri", uri=uri)
        attrs[name] = unquote(value, errors="strict")
    return attrs


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _hash_algorithm(hash_name: str) -> hashes.HashAlgorithm:
    """The cryptography hash object for ``hash_name`` (sha256/sha384/sha512)."""
    factory = _HASHES.get(hash_name.lower())
    if factory is None:
        raise KeyStoreError(
            "certs.keys.unsupported_hash", hash=hash_name, choices=", ".join(HASH_NAMES)
        )
    return factory()


def _digest(data: bytes, hash_name: str) -> bytes:
    """Hash ``data`` with ``hash_name``."""
    h = hashes.Hash(_hash_algorithm(hash_name))
    h.update(data)
    return h.finalize()


def _key_algorithm(public_key: PublicKeyTypes) -> str:
    """``"rsa"`` or ``"ec"`` for a supported public key, else :class:`KeyStoreError`."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return "rsa"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "ec"
    raise KeyStoreError("certs.keys.unsupported_key", kind=type(public_key).__name__)


def _spki(public_key: PublicKeyTypes) -> bytes:
    """DER SubjectPublicKeyInfo of ``public_key``, for comparisons."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_matches(label: str, public_key: PublicKeyTypes, certificate: x509.Certificate) -> None:
    """Raise unless ``certificate`` certifies ``public_key``."""
    if _spki(public_key) != _spki(certificate.public_key()):
        raise KeyStoreError("certs.keys.cert_mismatch", label=label)


def _to_asn1(certificate: x509.Certificate) -> asn1_x509.Certificate:
    """The asn1crypto form of a cryptography certificate (what pyhanko wants), parsed in full
    now: asn1crypto parses lazily and not thread-safely, and a handle's certificate is shared
    by every thread signing with it (a half-parsed field once showed as "No field numbered 1
    is present in this PublicKeyInfo" under four signing threads)."""
    cert = asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
    _ = cert.native
    return cert


# --------------------------------------------------------------------------------------------
# Key handles
# --------------------------------------------------------------------------------------------


class KeyHandle(ABC):
    """A signing key with its certificate, wherever it is kept.

    Attributes: ``label``, ``uri``, ``certificate`` (cryptography), ``chain`` (issuers of the
    certificate, leaf excluded, maybe empty) and ``key_algorithm`` (``"rsa"`` or ``"ec"``).
    Handles are immutable; re-issuing a certificate yields a new handle from the store.
    """

    def __init__(
        self,
        label: str,
        uri: str,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
    ) -> None:
        self.label = label
        self.uri = uri
        self.certificate = certificate
        self.chain: tuple[x509.Certificate, ...] = tuple(chain)
        self.key_algorithm = _key_algorithm(certificate.public_key())

    @abstractmethod
    def sign(self, data: bytes, hash_name: str = "sha256") -> bytes:
        """Sign ``data`` (hashed here with ``hash_name``): RSA PKCS#1 v1.5, or DER ECDSA."""

    @abstractmethod
    def private_key(self) -> PrivateKeyTypes:
        """The cryptography private key (file keys only)."""

    @abstractmethod
    def pyhanko_signer(self, *, embed_roots: bool = True) -> Signer:
        """A pyhanko signer using this key, with :attr:`chain` as the CA chain."""

    @cached_property
    def asn1_certificate(self) -> asn1_x509.Certificate:
        """The certificate in asn1crypto form."""
        return _to_asn1(self.certificate)

    @cached_property
    def asn1_chain(self) -> tuple[asn1_x509.Certificate, ...]:
        """The chain in asn1crypto form."""
        return tuple(_to_asn1(c) for c in self.chain)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.uri} ({self.key_algorithm})>"


class _HandleSimpleSigner(SimpleSigner):
    """A SimpleSigner that signs with a handle's already-parsed key.

    Stock ``SimpleSigner.sign_raw`` re-parses the DER key on every signature (~60 ms for
    RSA-2048); PKCS#1 v1.5 and ECDSA go through :meth:`FileKeyHandle.sign` instead.
    """

    def __init__(self, handle: FileKeyHandle, *, embed_roots: bool) -> None:
        super().__init__(
            signing_cert=handle.asn1_certificate,
            signing_key=handle.private_key_info,
            cert_registry=SimpleCertificateStore.from_certs(handle.asn1_chain),
            embed_roots=embed_roots,
        )
        self._kyso_handle = handle

    def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
        mechanism = self.get_signature_mechanism_for_digest(digest_algorithm)
        try:
            algo = mechanism.signature_algo
        except ValueError:
            algo = mechanism["algorithm"].native
        if algo in ("rsassa_pkcs1v15", "ecdsa") and digest_algorithm.lower() in _HASHES:
            return self._kyso_handle.sign(data, digest_algorithm.lower())
        return bytes(super().sign_raw(data, digest_algorithm))


class FileKeyHandle(KeyHandle):
    """A key read from (or written to) a PKCS#12 file; holds the parsed key in memory.

    Signing is thread-safe: cryptography key objects are immutable.
    """

    def __init__(
        self,
        label: str,
        key: PrivateKeyTypes,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
    ) -> None:
        super().__init__(label, file_uri(label), certificate, chain)
        _check_matches(label, key.public_key(), certificate)
        self._key = key

    def sign(self, data: bytes, hash_name: str = "sha256") -> bytes:
        """Sign ``data``: RSA PKCS#1 v1.5 or DER-encoded ECDSA over ``hash_name``."""
        algorithm = _hash_algorithm(hash_name)
        key = self._key
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), algorithm)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(algorithm))
        raise KeyStoreError("certs.keys.unsupported_key", kind=type(key).__name__)

    def private_key(self) -> PrivateKeyTypes:
        """The parsed cryptography private key."""
        return self._key

    @cached_property
    def private_key_info(self) -> asn1_keys.PrivateKeyInfo:
        """The key as asn1crypto PrivateKeyInfo (SimpleSigner's constructor wants one)."""
        der = self._key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return asn1_keys.PrivateKeyInfo.load(der)

    def pyhanko_signer(self, *, embed_roots: bool = True) -> Signer:
        """A ``SimpleSigner`` over the parsed key (no re-parsing per signature)."""
        return _HandleSimpleSigner(self, embed_roots=embed_roots)


class _LockedKey:
    """A PKCS#11 key object whose ``sign`` holds the store's session lock."""

    def __init__(self, key: Any, lock: threading.RLock) -> None:
        self._key = key
        self._lock = lock

    def sign(self, data: bytes, **kwargs: Any) -> bytes:
        with self._lock:
            return bytes(self._key.sign(data, **kwargs))


class _LockedPKCS11Signer(PKCS11Signer):
    """PKCS11Signer on the store's shared session, signing under the session lock.

    The certificate and chain are passed in, so pyhanko makes no object searches of its own;
    the key object comes from the handle (wrapped so that signing is serialised).
    """

    def __init__(self, handle: PKCS11KeyHandle, *, embed_roots: bool) -> None:
        super().__init__(
            handle.store.session,
            signing_cert=handle.asn1_certificate,
            ca_chain=list(handle.asn1_chain),
            key_label=handle.label,
            embed_roots=embed_roots,
            other_certs_to_pull=(),
            # Hash on the host: SoftHSM2 2.6 has no CKM_ECDSA_SHA256, and USB tokens are slow.
            use_raw_mechanism=True,
        )
        self._kyso_handle = handle

    def _pull_signing_key_handle(self) -> _LockedKey:
        return _LockedKey(self._kyso_handle.key_object, self._kyso_handle.store.lock)


class PKCS11KeyHandle(KeyHandle):
    """A non-extractable key on a PKCS#11 token, used through its store's session."""

    def __init__(
        self,
        store: PKCS11KeyStore,
        label: str,
        key_object: Any,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
    ) -> None:
        super().__init__(label, pkcs11_uri(store.token_label, label), certificate, chain)
        self.store = store
        self.key_object = key_object

    def sign(self, data: bytes, hash_name: str = "sha256") -> bytes:
        """Hash ``data`` here, then sign the digest on the token (CKM_RSA_PKCS / CKM_ECDSA)."""
        name = hash_name.lower()
        digest = _digest(data, name)
        if self.key_algorithm == "rsa":
            payload, mechanism = _DIGEST_INFO_PREFIX[name] + digest, Mechanism.RSA_PKCS
        else:
            payload, mechanism = self._ec_digest(digest), Mechanism.ECDSA
        with self.store.lock, self.store.token_errors():
            raw = bytes(self.key_object.sign(payload, mechanism=mechanism))
        return encode_ecdsa_signature(raw) if self.key_algorithm == "ec" else raw

    def _ec_digest(self, digest: bytes) -> bytes:
        """Truncate a digest longer than the curve order (ECDSA takes the leftmost bits)."""
        public_key = self.certificate.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        size = public_key.curve.key_size
        if size % 8 == 0 and len(digest) * 8 > size:
            return digest[: size // 8]
        return digest

    def private_key(self) -> PrivateKeyTypes:
        """Always raises: token keys are non-extractable."""
        raise KeyStoreError("certs.keys.not_extractable", label=self.label)

    def pyhanko_signer(self, *, embed_roots: bool = True) -> Signer:
        """A ``PKCS11Signer`` on the store's session, thread-safe through the store lock."""
        return _LockedPKCS11Signer(self, embed_roots=embed_roots)


# --------------------------------------------------------------------------------------------
# File store
# --------------------------------------------------------------------------------------------


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write ``data`` to ``path`` (mode 0600) through a synced temporary file in the same
    directory.  Without ``overwrite`` an existing file is never replaced (KeyExistsError)."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
        _fsync_directory(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _publish_new(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists (atomic no-clobber via a hard link)."""
    label = path.stem
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise KeyExistsError(label=label) from None
    except OSError:  # no hard links on this file system: check, then rename
        if path.exists():
            raise KeyExistsError(label=label) from None
        os.rename(tmp, path)


class FileKeyStore:
    """Keys in a directory, one passphrase-encrypted PKCS#12 file per key (``<label>.p12``).

    The passphrase callable is asked lazily (first write or read) and at most once; the bytes
    are kept in this object and never appear in its repr, logs or errors.  Each key file is
    parsed at most once per store: :meth:`load` returns the same handle every time.
    """

    def __init__(
        self,
        directory: Path,
        passphrase: Callable[[], bytes],
        *,
        kdf_rounds: int = DEFAULT_KDF_ROUNDS,
    ) -> None:
        self.directory = Path(directory)
        self._passphrase_source = passphrase
        self._passphrase: bytes | None = None
        self._kdf_rounds = kdf_rounds
        self._lock = threading.RLock()
        self._handles: dict[str, FileKeyHandle] = {}

    def __repr__(self) -> str:
        return f"<FileKeyStore {str(self.directory)!r}>"

    def path(self, label: str) -> Path:
        """The file holding ``label``."""
        return self.directory / f"{validate_label(label)}.p12"

    def uri(self, label: str) -> str:
        """The URI naming ``label`` in this store."""
        return file_uri(label)

    def _secret(self) -> bytes:
        """The passphrase, asked for on first use only."""
        with self._lock:
            if self._passphrase is None:
                value: bytes | str = self._passphrase_source()
                secret = value.encode("utf-8") if isinstance(value, str) else bytes(value)
                if not secret:
                    raise KeyStoreError("certs.keys.empty_passphrase")
                try:  # PKCS#12 (PBES2) passwords are text: cryptography wants UTF-8
                    secret.decode("utf-8")
                except UnicodeDecodeError:
                    raise KeyStoreError("certs.keys.passphrase_not_utf8") from None
                self._passphrase = secret
            return self._passphrase

    def has(self, label: str) -> bool:
        """Whether a key file for ``label`` exists (no passphrase needed)."""
        return self.path(label).is_file()

    def labels(self) -> list[str]:
        """Labels of the keys in this store, sorted."""
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.p12") if _LABEL_RE.fullmatch(p.stem))

    def save(
        self,
        label: str,
        private_key: PrivateKeyTypes,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
    ) -> KeyHandle:
        """Write a new key file; refuses to overwrite one (:class:`KeyExistsError`)."""
        handle = FileKeyHandle(validate_label(label), private_key, certificate, chain)
        with self._lock:
            if self.has(label):
                raise KeyExistsError(label=label)
            self._write(handle, overwrite=False)
            self._handles[label] = handle
        return handle

    def replace_certificate(
        self,
        label: str,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
    ) -> KeyHandle:
        """Keep the key of ``label`` with a re-issued certificate; returns the new handle."""
        with self._lock:
            old = self._load(label)
            handle = FileKeyHandle(label, old.private_key(), certificate, chain)
            self._write(handle, overwrite=True)
            self._handles[label] = handle
        return handle

    def replace_key(
        self,
        label: str,
        private_key: PrivateKeyTypes,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
        *,
        retire_as: str,
    ) -> KeyHandle:
        """Put a new key under ``label`` (re-keying); the old file is kept, still encrypted, as
        ``<label>.p12.<retire_as>.retired`` (no longer a key of this store)."""
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", retire_as):
            raise KeyStoreError(detail=f"bad retirement suffix {retire_as!r}")
        handle = FileKeyHandle(validate_label(label), private_key, certificate, chain)
        with self._lock:
            old = self.path(label)
            if not old.is_file():
                raise KeyNotFoundError(label=label)
            os.replace(old, old.with_name(f"{old.name}.{retire_as}.retired"))
            self._write(handle, overwrite=False)
            self._handles[label] = handle
        return handle

    def load(self, label: str) -> KeyHandle:
        """The handle of ``label`` (the file is parsed once per store)."""
        return self._load(label)

    def _load(self, label: str) -> FileKeyHandle:
        validate_label(label)
        with self._lock:
            handle = self._handles.get(label)
            if handle is None:
                handle = self._read(label)
                self._handles[label] = handle
            return handle

    def _encryption(self) -> serialization.KeySerializationEncryption:
        """PBES2 (PBKDF2-SHA256, AES-256-CBC) for key and certificates, HMAC-SHA256 MAC."""
        return (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(self._kdf_rounds)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(self._secret())
        )

    def _write(self, handle: FileKeyHandle, *, overwrite: bool) -> None:
        key = handle.private_key()
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise KeyStoreError("certs.keys.unsupported_key", kind=type(key).__name__)
        data = pkcs12.serialize_key_and_certificates(
            handle.label.encode("utf-8"),
            key,
            handle.certificate,
            list(handle.chain) or None,
            self._encryption(),
        )
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            _atomic_write(self.path(handle.label), data, overwrite=overwrite)
        except KeyExistsError:
            raise
        except OSError as exc:
            raise KeyStoreError(
                "certs.keys.io_error", label=handle.label, detail=exc.strerror or str(exc)
            ) from exc

    def _read(self, label: str) -> FileKeyHandle:
        try:
            data = self.path(label).read_bytes()
        except FileNotFoundError:
            raise KeyNotFoundError(label=label) from None
        except OSError as exc:
            raise KeyStoreError(
                "certs.keys.io_error", label=label, detail=exc.strerror or str(exc)
            ) from exc
        if not _looks_like_pkcs12(data):
            raise KeyStoreError("certs.keys.corrupt", label=label)
        secret = self._secret()
        try:
            bundle = pkcs12.load_pkcs12(data, secret)
        except ValueError:
            # cryptography says "Invalid password or PKCS12 data"; the structure parsed above.
            raise WrongPassphraseError(label=label) from None
        if bundle.key is None or bundle.cert is None:
            raise KeyStoreError("certs.keys.corrupt", label=label)
        chain = [c.certificate for c in bundle.additional_certs]
        return FileKeyHandle(label, bundle.key, bundle.cert.certificate, chain)


def _looks_like_pkcs12(data: bytes) -> bool:
    """Whether ``data`` parses as a PKCS#12 PFX structure (tells corruption from a bad
    passphrase, which cryptography reports with the same error)."""
    try:
        pfx = asn1_pkcs12.Pfx.load(data, strict=True)
        return pfx["version"].native == "v3" and pfx["auth_safe"]["content_type"].native in (
            "data",
            "signed_data",
        )
    except (ValueError, TypeError, KeyError):
        return False


# --------------------------------------------------------------------------------------------
# PKCS#11 store
# --------------------------------------------------------------------------------------------


def _key_id(label: str) -> bytes:
    """CKA_ID of a key (and its certificate): 16 bytes derived from the label."""
    return hashlib.sha256(b"kyso-key:" + label.encode("utf-8")).digest()[:16]


def _chain_label(label: str, index: int) -> str:
    """CKA_LABEL of the ``index``-th issuer certificate of ``label`` (never a valid key label)."""
    return f"{label}/chain/{index}"


_PRIVATE_TEMPLATE: Final[dict[Attribute, Any]] = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.SIGN: True,
    Attribute.DECRYPT: False,
    Attribute.UNWRAP: False,
    Attribute.DERIVE: False,
}

_PUBLIC_TEMPLATE: Final[dict[Attribute, Any]] = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: False,
    Attribute.VERIFY: True,
    Attribute.ENCRYPT: False,
    Attribute.WRAP: False,
}


def _int_bytes(value: int) -> bytes:
    """A PKCS#11 big integer (unsigned big-endian, minimal length)."""
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def _private_key_attributes(private_key: PrivateKeyTypes) -> dict[Attribute, Any]:
    """CKA_* values describing ``private_key`` for C_CreateObject."""
    if isinstance(private_key, rsa.RSAPrivateKey):
        n = private_key.private_numbers()
        return {
            Attribute.KEY_TYPE: KeyType.RSA,
            Attribute.MODULUS: _int_bytes(n.public_numbers.n),
            Attribute.PUBLIC_EXPONENT: _int_bytes(n.public_numbers.e),
            Attribute.PRIVATE_EXPONENT: _int_bytes(n.d),
            Attribute.PRIME_1: _int_bytes(n.p),
            Attribute.PRIME_2: _int_bytes(n.q),
            Attribute.EXPONENT_1: _int_bytes(n.dmp1),
            Attribute.EXPONENT_2: _int_bytes(n.dmq1),
            Attribute.COEFFICIENT: _int_bytes(n.iqmp),
        }
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        size = (private_key.curve.key_size + 7) // 8
        value = private_key.private_numbers().private_value
        return {
            Attribute.KEY_TYPE: KeyType.EC,
            Attribute.EC_PARAMS: encode_named_curve_parameters(private_key.curve.name),
            Attribute.VALUE: value.to_bytes(size, "big"),
        }
    raise KeyStoreError("certs.keys.unsupported_key", kind=type(private_key).__name__)


def _public_key_from_object(public_object: Any) -> PublicKeyTypes:
    """The cryptography public key of a PKCS#11 public key object."""
    if public_object.key_type == KeyType.RSA:
        n = int.from_bytes(public_object[Attribute.MODULUS], "big")
        e = int.from_bytes(public_object[Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if public_object.key_type == KeyType.EC:
        return serialization.load_der_public_key(encode_ec_public_key(public_object))
    raise KeyStoreError("certs.keys.unsupported_key", kind=str(public_object.key_type))


class PKCS11KeyStore:
    """Keys on one PKCS#11 token, reached through one lazily opened, logged-in session.

    PKCS#11 sessions are not thread-safe: every use of the session (searches, key generation,
    signing, also by the pyhanko signers built here) holds :attr:`lock`.

    Traps: SoftHSM2 reads its configuration and token list at ``C_Initialize`` (once per
    process); login state is per application, so a second store on the same token reuses the
    login, and :meth:`close` (C_Logout) logs every session of the process out of the token.
    """

    def __init__(self, module_path: str, token_label: str, user_pin: Callable[[], str]) -> None:
        self.module_path = module_path
        self.token_label = token_label
        self._user_pin = user_pin
        self.lock = threading.RLock()
        self._session: Any = None
        self._handles: dict[str, PKCS11KeyHandle] = {}

    def __repr__(self) -> str:
        return f"<PKCS11KeyStore {self.token_label!r} via {self.module_path!r}>"

    def uri(self, label: str) -> str:
        """The RFC 7512 URI naming ``label`` on this token."""
        return pkcs11_uri(self.token_label, label)

    @contextlib.contextmanager
    def token_errors(self) -> Iterator[None]:
        """Turn python-pkcs11 errors into :class:`KeyStoreError`."""
        try:
            yield
        except p11_errors.PKCS11Error as exc:
            detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
            raise KeyStoreError(
                "certs.keys.token_error", token=self.token_label, detail=detail
            ) from exc

    @property
    def session(self) -> Any:
        """The store's session, opened (and logged in) on first use."""
        with self.lock:
            if self._session is None:
                self._session = self._open()
            return self._session

    def _open(self) -> Any:
        with self.token_errors():
            library = pkcs11.lib(self.module_path)
            try:
                token = library.get_token(token_label=self.token_label)
            except p11_errors.NoSuchToken:
                raise KeyStoreError("certs.keys.token_not_found", token=self.token_label) from None
            try:
                return token.open(rw=True, user_pin=self._user_pin())
            except p11_errors.PinIncorrect:
                raise WrongPassphraseError("certs.keys.wrong_pin", token=self.token_label) from None
            except p11_errors.UserAlreadyLoggedIn:
                # Another session of this process is logged in: the login is shared.
                return token.open(rw=True)

    def close(self) -> None:
        """Close the session (logs this process out of the token) and forget the handles."""
        with self.lock:
            session, self._session = self._session, None
            self._handles.clear()
            if session is not None:
                with self.token_errors():
                    session.close()

    def _find(self, object_class: ObjectClass, label: str | None = None) -> list[Any]:
        """Objects of ``object_class`` (labelled ``label``), the search run to completion."""
        template: dict[Attribute, Any] = {Attribute.CLASS: object_class}
        if label is not None:
            template[Attribute.LABEL] = label
        with self.lock, self.token_errors():
            return list(self.session.get_objects(template))

    def _private_key_object(self, label: str) -> Any:
        objects = self._find(ObjectClass.PRIVATE_KEY, label=label)
        if not objects:
            raise KeyNotFoundError(label=label)
        if len(objects) > 1:
            raise KeyStoreError("certs.keys.duplicate_object", token=self.token_label, label=label)
        return objects[0]

    def has(self, label: str) -> bool:
        """Whether the token holds a private key labelled ``label``."""
        return bool(self._find(ObjectClass.PRIVATE_KEY, label=validate_label(label)))

    def labels(self) -> list[str]:
        """Labels of the private keys on the token (valid kyso labels only), sorted."""
        with self.lock, self.token_errors():
            found = {obj[Attribute.LABEL] for obj in self._find(ObjectClass.PRIVATE_KEY)}
        return sorted(label for label in found if _LABEL_RE.fullmatch(label))

    def generate(self, label: str, key_type: str = "ec-p256") -> PublicKeyTypes:
        """Generate a sensitive, non-extractable key pair on the token; return the public key.

        The certificate is added later with :meth:`store_certificate`.
        """
        validate_label(label)
        if key_type not in PKCS11_KEY_TYPES:
            raise KeyStoreError(
                "certs.keys.unsupported_key_type",
                key_type=key_type,
                choices=", ".join(PKCS11_KEY_TYPES),
            )
        common: dict[str, Any] = {
            "id": _key_id(label),
            "label": label,
            "store": True,
            "capabilities": MechanismFlag.SIGN | MechanismFlag.VERIFY,
            "public_template": dict(_PUBLIC_TEMPLATE),
            "private_template": dict(_PRIVATE_TEMPLATE),
        }
        with self.lock:
            if self.has(label):
                raise KeyExistsError(label=label)
            with self.token_errors():
                if key_type == "ec-p256":
                    params = self.session.create_domain_parameters(
                        KeyType.EC,
                        {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
                        local=True,
                    )
                    public, _ = params.generate_keypair(**common)
                else:
                    bits = int(key_type.split("-")[1])
                    public, _ = self.session.generate_keypair(KeyType.RSA, bits, **common)
                return _public_key_from_object(public)

    def import_key(
        self,
        label: str,
        private_key: PrivateKeyTypes,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
    ) -> KeyHandle:
        """Copy an existing key onto the token as sensitive and non-extractable, with its
        certificate (and chain); returns the handle."""
        validate_label(label)
        _check_matches(label, private_key.public_key(), certificate)
        attrs = _private_key_attributes(private_key)
        attrs.update(_PRIVATE_TEMPLATE)
        attrs.update(
            {
                Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                Attribute.ID: _key_id(label),
                Attribute.LABEL: label,
            }
        )
        cert_der = certificate.public_bytes(serialization.Encoding.DER)
        public = decode_x509_public_key(cert_der)
        public.update(_PUBLIC_TEMPLATE)
        public.update({Attribute.ID: _key_id(label), Attribute.LABEL: label})
        with self.lock:
            if self.has(label):
                raise KeyExistsError(label=label)
            with self.token_errors():
                public_object = self.session.create_object(public)
                try:
                    self.session.create_object(attrs)
                except BaseException:
                    public_object.destroy()
                    raise
            self.store_certificate(label, certificate, chain)
            return self.load(label)

    def store_certificate(
        self,
        label: str,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
    ) -> None:
        """Write (or replace) the certificate of ``label`` and its issuers onto the token.

        The certificate gets the key's label and CKA_ID; issuer ``i`` is stored with the label
        ``<label>/chain/<i>``.  The certificate must match the key.
        """
        validate_label(label)
        with self.lock:
            key_object = self._private_key_object(label)
            self._check_token_key(label, key_object, certificate)
            old = self._certificate_objects(label)
            with self.token_errors():
                self._create_certificate(certificate, label, _key_id(label))
                for index, issuer in enumerate(chain):
                    self._create_certificate(issuer, _chain_label(label, index), None)
                for obj in old:
                    obj.destroy()
            self._handles.pop(label, None)

    def _check_token_key(self, label: str, key_object: Any, certificate: x509.Certificate) -> None:
        """Raise unless ``certificate`` matches the key on the token."""
        publics = self._find(ObjectClass.PUBLIC_KEY, label=label)
        if len(publics) == 1:
            with self.token_errors():
                _check_matches(label, _public_key_from_object(publics[0]), certificate)
        elif key_object.key_type == KeyType.RSA:  # the modulus of a private key is public
            with self.token_errors():
                _check_matches(label, _public_key_from_object(key_object), certificate)

    def _certificate_objects(self, label: str) -> list[Any]:
        """The certificate objects of ``label``: its own and its chain's."""
        prefix = _chain_label(label, 0)[:-1]
        with self.lock, self.token_errors():
            return [
                obj
                for obj in self._find(ObjectClass.CERTIFICATE)
                if obj[Attribute.LABEL] == label or obj[Attribute.LABEL].startswith(prefix)
            ]

    def _create_certificate(
        self, certificate: x509.Certificate, label: str, key_id: bytes | None
    ) -> None:
        attrs = decode_x509_certificate(certificate.public_bytes(serialization.Encoding.DER))
        attrs.update({Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.LABEL: label})
        if key_id is not None:
            attrs[Attribute.ID] = key_id
        self.session.create_object(attrs)

    def load(self, label: str) -> KeyHandle:
        """The handle of ``label`` (cached: the same object on every call)."""
        validate_label(label)
        with self.lock:
            handle = self._handles.get(label)
            if handle is None:
                handle = self._read(label)
                self._handles[label] = handle
            return handle

    def _read(self, label: str) -> PKCS11KeyHandle:
        key_object = self._private_key_object(label)
        certificate: x509.Certificate | None = None
        chain: dict[int, x509.Certificate] = {}
        prefix = _chain_label(label, 0)[:-1]
        with self.token_errors():
            for obj in self._certificate_objects(label):
                cert = x509.load_der_x509_certificate(bytes(obj[Attribute.VALUE]))
                obj_label = obj[Attribute.LABEL]
                if obj_label == label:
                    certificate = cert
                elif obj_label[len(prefix) :].isdigit():
                    chain[int(obj_label[len(prefix) :])] = cert
        if certificate is None:
            raise KeyStoreError("certs.keys.no_certificate", label=label)
        ordered = [chain[i] for i in sorted(chain)]
        return PKCS11KeyHandle(self, label, key_object, certificate, ordered)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

KeyStore = FileKeyStore | PKCS11KeyStore


class KeyRegistry:
    """One label or URI names a key, whichever of ``stores`` holds it.

    Accepted references: a bare label (searched in every store; held by two stores it is
    ambiguous), ``file:<label>``, or RFC 7512 ``pkcs11:token=<token>;object=<label>``.
    Handles come from the stores' caches, so resolving a key twice gives the same object.
    """

    def __init__(self, stores: Sequence[KeyStore]) -> None:
        self.stores: tuple[KeyStore, ...] = tuple(stores)

    def resolve(self, ref: str) -> KeyHandle:
        """The handle named by ``ref`` (label or URI)."""
        if ref.startswith("file:"):
            label = validate_label(ref[len("file:") :])
            files = [s for s in self.stores if isinstance(s, FileKeyStore)]
            if not files:
                raise KeyNotFoundError("certs.keys.no_store", uri=ref)
            return self._pick(label, files)
        if ref.startswith("pkcs11:"):
            return self._resolve_pkcs11(ref)
        if ":" in ref:
            raise KeyStoreError("certs.keys.bad_uri", uri=ref)
        return self._pick(validate_label(ref), list(self.stores))

    def _resolve_pkcs11(self, ref: str) -> KeyHandle:
        attrs = parse_pkcs11_uri(ref)
        label = attrs.get("object")
        if label is None or attrs.get("type", "private") not in ("private", "cert"):
            raise KeyStoreError("certs.keys.bad_uri", uri=ref)
        validate_label(label)
        token = attrs.get("token")
        tokens = [
            s
            for s in self.stores
            if isinstance(s, PKCS11KeyStore) and (token is None or s.token_label == token)
        ]
        if not tokens:
            raise KeyNotFoundError("certs.keys.no_store", uri=ref)
        return self._pick(label, tokens)

    @staticmethod
    def _pick(label: str, stores: Sequence[KeyStore]) -> KeyHandle:
        """Load ``label`` from the one store among ``stores`` that holds it."""
        holders = [s for s in stores if s.has(label)]
        if not holders:
            raise KeyNotFoundError(label=label)
        if len(holders) > 1:
            uris = ", ".join(s.uri(label) for s in holders)
            raise KeyStoreError("certs.keys.ambiguous", label=label, uris=uris)
        return holders[0].load(label)

    def labels(self) -> list[tuple[str, str]]:
        """Every key of every store as ``(label, uri)``, in store order."""
        return [(label, store.uri(label)) for store in self.stores for label in store.labels()]
