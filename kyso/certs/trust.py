"""Trust stores: the certificates a verifier starts certification paths from.

A :class:`TrustStore` is an immutable, ordered collection of trust-anchor certificates,
deduplicated by SHA-256 fingerprint.  It loads from PEM bundles, DER files, PKCS#7 bundles
(``.p7b``, as the Vietnam National Root CA publishes its chain) or a directory of them, and
has presets: ``"vn-gov"`` (the Government specialised CA root G2, shipped with kyso and pinned
by fingerprint) and ``"dev"`` (the built-in development PKI's root, whose path the caller
passes: this library reads no settings).

For path validation, :meth:`TrustStore.to_validation_context_kwargs` gives the
``trust_roots`` argument of :class:`pyhanko_certvalidator.ValidationContext`.

A non-CA certificate is accepted as an anchor (some deployments pin a leaf), but
:attr:`AnchorInfo.is_ca` tells them apart.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from kyso.certs.errors import TrustStoreError

__all__ = [
    "CERTIFICATE_SUFFIXES",
    "PRESETS",
    "VN_GOV_ROOT_G2_SHA256",
    "AnchorInfo",
    "TrustStore",
    "fingerprint",
    "format_fingerprint",
    "is_ca",
    "load_certificates",
]

#: SHA-256 of the Government specialised CA root G2 (``RootCA chuyên dùng Chính phủ G2``),
#: as published with http://ca.gov.vn/pki/pub/crt/rootcag2.crt.  The packaged copy must match.
VN_GOV_ROOT_G2_SHA256 = "f04ba4b459a7c9a1b971ad9b1cb833e695a80c79aea63b174b66a70edfe2fdb8"

#: The built-in presets.
PRESETS = ("vn-gov", "dev")

#: File name endings :meth:`TrustStore.from_directory` picks up (case-insensitive).
CERTIFICATE_SUFFIXES = (".pem", ".crt", ".cer", ".der", ".p7b", ".p7c")

_PACKAGED = {"vn-gov": ("vn-gov-root-g2.pem", VN_GOV_ROOT_G2_SHA256)}
_PEM_CERT = b"-----BEGIN CERTIFICATE-----"
_PEM_PKCS7 = b"-----BEGIN PKCS7-----"
_NOT_HEX = re.compile(r"[^0-9a-f]")


# --------------------------------------------------------------------------- helpers


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint of ``cert``'s DER encoding: 64 lowercase hex digits."""
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def format_fingerprint(hex_digest: str) -> str:
    """``"F0:4B:…"``: the colon-separated upper-case form certificate viewers show."""
    digits = _normalise_fingerprint(hex_digest).upper()
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def _normalise_fingerprint(text: str) -> str:
    """Lowercase hex without separators (accepts ``F0:4B…``, ``f0 4b…``, ``f04b…``)."""
    return _NOT_HEX.sub("", text.lower())


def is_ca(cert: x509.Certificate) -> bool:
    """True if ``cert`` has basicConstraints with ``cA`` set."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    except ValueError:  # malformed extensions: not a usable CA either
        return False
    return constraints.value.ca


def _unreadable(path: Path, reason: str) -> TrustStoreError:
    return TrustStoreError(
        "certs.trust.unreadable",
        path=str(path),
        reason=reason,
        detail=f"cannot read a certificate from {path}: {reason}",
    )


def _parse(data: bytes, path: Path) -> list[x509.Certificate]:
    """Certificates in ``data``: PEM (any number), PKCS#7 (PEM or DER) or one DER certificate."""
    try:
        if _PEM_CERT in data:
            return list(x509.load_pem_x509_certificates(data))
        if _PEM_PKCS7 in data:
            return list(pkcs7.load_pem_pkcs7_certificates(data))
        if path.suffix.lower() in (".p7b", ".p7c"):
            return list(pkcs7.load_der_pkcs7_certificates(data))
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise _unreadable(path, str(exc) or type(exc).__name__) from exc


def load_certificates(path: str | Path) -> list[x509.Certificate]:
    """Every certificate in the file ``path`` (PEM bundle, DER, or PKCS#7).

    Raises :class:`TrustStoreError` (with the path in its detail) if the file is missing,
    unreadable or holds no certificate.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise TrustStoreError(
            "certs.trust.not_found", path=str(path), detail=f"{path} does not exist"
        ) from exc
    except OSError as exc:
        raise _unreadable(path, exc.strerror or str(exc)) from exc
    if not data.strip():
        raise TrustStoreError(
            "certs.trust.empty", path=str(path), detail=f"no certificate found in {path}"
        )
    certs = _parse(data, path)
    if not certs:
        raise TrustStoreError(
            "certs.trust.empty", path=str(path), detail=f"no certificate found in {path}"
        )
    return certs


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True, slots=True)
class AnchorInfo:
    """What a listing of a trust store shows about one anchor."""

    fingerprint: str
    subject: str
    is_ca: bool
    not_before: str
    not_after: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "subject": self.subject,
            "is_ca": self.is_ca,
            "not_before": self.not_before,
            "not_after": self.not_after,
        }


class TrustStore:
    """An immutable, ordered set of trust anchors, deduplicated by SHA-256 fingerprint."""

    __slots__ = ("_by_fingerprint",)

    _by_fingerprint: dict[str, x509.Certificate]

    def __init__(self, certificates: Iterable[x509.Certificate] = ()) -> None:
        by_fingerprint: dict[str, x509.Certificate] = {}
        for cert in certificates:
            if not isinstance(cert, x509.Certificate):
                raise TrustStoreError(
                    "certs.trust.unreadable",
                    path="<memory>",
                    reason=f"not a certificate: {type(cert).__name__}",
                    detail=f"not a certificate: {type(cert).__name__}",
                )
            by_fingerprint.setdefault(fingerprint(cert), cert)
        object.__setattr__(self, "_by_fingerprint", by_fingerprint)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("TrustStore is immutable")

    # ---- constructors

    @classmethod
    def from_certificates(cls, certificates: Iterable[x509.Certificate]) -> TrustStore:
        """A store holding ``certificates`` (duplicates dropped, first occurrence kept)."""
        return cls(certificates)

    @classmethod
    def from_file(cls, path: str | Path) -> TrustStore:
        """A store from one file: PEM bundle, DER certificate or PKCS#7 bundle."""
        return cls(load_certificates(path))

    @classmethod
    def from_pem_bundle(cls, path: str | Path) -> TrustStore:
        """A store from a PEM bundle (one or more ``BEGIN CERTIFICATE`` blocks)."""
        return cls.from_file(path)

    @classmethod
    def from_directory(cls, path: str | Path) -> TrustStore:
        """A store from every certificate file directly in the directory ``path``.

        Files ending in :data:`CERTIFICATE_SUFFIXES` are read in name order, PEM or DER; other
        files are ignored.  A directory without any such file is an error: pointing a
        verifier at the wrong place must not silently trust nothing.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise TrustStoreError(
                "certs.trust.not_found",
                path=str(folder),
                detail=f"{folder} does not exist or is not a directory",
            )
        files = sorted(
            entry
            for entry in folder.iterdir()
            if entry.is_file() and entry.suffix.lower() in CERTIFICATE_SUFFIXES
        )
        if not files:
            raise TrustStoreError(
                "certs.trust.empty",
                path=str(folder),
                detail=f"no certificate file ({', '.join(CERTIFICATE_SUFFIXES)}) in {folder}",
            )
        certificates: list[x509.Certificate] = []
        for file in files:
            certificates.extend(load_certificates(file))
        return cls(certificates)

    @classmethod
    def preset(cls, name: str, *, dev_root: str | Path | None = None) -> TrustStore:
        """A built-in store: ``"vn-gov"`` (packaged Government root G2) or ``"dev"``.

        ``"dev"`` reads the development PKI's root from ``dev_root``, which the caller must
        give.  The packaged roots are checked against their pinned fingerprints.
        """
        if name == "dev":
            if dev_root is None:
                raise TrustStoreError(
                    "certs.trust.dev_root_missing",
                    detail="the 'dev' preset needs dev_root (path to the dev PKI root)",
                )
            return cls.from_file(dev_root)
        if name not in _PACKAGED:
            known = ", ".join(PRESETS)
            raise TrustStoreError(
                "certs.trust.unknown_preset",
                name=name,
                known=known,
                detail=f"unknown trust preset {name!r}; known presets: {known}",
            )
        return cls(_packaged(name))

    # ---- combining

    def merged(self, other: TrustStore | Iterable[x509.Certificate]) -> TrustStore:
        """A new store with this store's anchors, then ``other``'s new ones."""
        return TrustStore([*self, *other])

    def __add__(self, other: object) -> TrustStore:
        if not isinstance(other, TrustStore):
            return NotImplemented
        return self.merged(other)

    # ---- reading

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        """The anchors, in insertion order."""
        return tuple(self._by_fingerprint.values())

    def fingerprints(self) -> tuple[str, ...]:
        """SHA-256 fingerprints (lowercase hex), in insertion order."""
        return tuple(self._by_fingerprint)

    def find(self, fingerprint_text: str) -> x509.Certificate | None:
        """The anchor with this SHA-256 fingerprint (any case, colons or spaces), or None."""
        return self._by_fingerprint.get(_normalise_fingerprint(fingerprint_text))

    def anchors(self) -> tuple[AnchorInfo, ...]:
        """A description of each anchor (fingerprint, subject, CA flag, validity)."""
        return tuple(
            AnchorInfo(
                fingerprint=digest,
                subject=_subject_text(cert),
                is_ca=is_ca(cert),
                not_before=cert.not_valid_before_utc.isoformat(),
                not_after=cert.not_valid_after_utc.isoformat(),
            )
            for digest, cert in self._by_fingerprint.items()
        )

    def non_ca(self) -> tuple[x509.Certificate, ...]:
        """Anchors that are not CA certificates (accepted, but worth a warning)."""
        return tuple(cert for cert in self if not is_ca(cert))

    def __len__(self) -> int:
        return len(self._by_fingerprint)

    def __iter__(self) -> Iterator[x509.Certificate]:
        return iter(tuple(self._by_fingerprint.values()))

    def __contains__(self, item: object) -> bool:
        if isinstance(item, x509.Certificate):
            return fingerprint(item) in self._by_fingerprint
        if isinstance(item, str):
            return _normalise_fingerprint(item) in self._by_fingerprint
        return False

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrustStore):
            return NotImplemented
        return set(self._by_fingerprint) == set(other._by_fingerprint)

    def __hash__(self) -> int:
        return hash(frozenset(self._by_fingerprint))

    def __repr__(self) -> str:
        return f"TrustStore({len(self)} anchors)"

    # ---- exporting

    def to_pem(self) -> bytes:
        """All anchors as one PEM bundle."""
        return b"".join(cert.public_bytes(Encoding.PEM) for cert in self)

    def asn1_certificates(self) -> list[asn1_x509.Certificate]:
        """The anchors as asn1crypto certificates (what pyHanko works with)."""
        return [asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER)) for cert in self]

    def to_validation_context_kwargs(self) -> dict[str, Any]:
        """``{"trust_roots": [...]}`` for ``pyhanko_certvalidator.ValidationContext``.

        Usage: ``ValidationContext(**store.to_validation_context_kwargs(), other_certs=…)``.
        """
        return {"trust_roots": self.asn1_certificates()}


def _subject_text(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string()
    except ValueError:
        return "<undecodable subject>"


def _packaged(name: str) -> list[x509.Certificate]:
    """The packaged certificates of preset ``name``, checked against the pinned fingerprint."""
    filename, expected = _PACKAGED[name]
    resource = resources.files("kyso") / "data" / "trust" / filename
    path = Path(str(resource))
    try:
        data = resource.read_bytes()
    except OSError as exc:
        raise TrustStoreError(
            "certs.trust.not_found",
            path=str(path),
            detail=f"packaged trust anchor {filename} is missing from the installation",
        ) from exc
    certs = _parse(data, path)
    actual = [fingerprint(cert) for cert in certs]
    if actual != [expected]:
        shown = ", ".join(format_fingerprint(a) for a in actual) or "none"
        raise TrustStoreError(
            "certs.trust.fingerprint_mismatch",
            path=str(path),
            expected=format_fingerprint(expected),
            actual=shown,
            detail=f"packaged {filename} has fingerprint {shown}, "
            f"expected {format_fingerprint(expected)}",
        )
    return certs
