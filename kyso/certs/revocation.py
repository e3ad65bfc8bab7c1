"""Revocation data of the built-in PKI: signed CRLs (RFC 5280) and an OCSP responder (RFC 6960).

Everything here is pure: no settings, no files, no network.  The caller (the PKI state database,
the HTTP layer) supplies the revoked entries, a status lookup ``serial -> CertStatus`` and the
clock.

CRLs are built with :mod:`cryptography`.  OCSP responses are built with :mod:`cryptography` too,
with one gap it cannot fill: its ``OCSPResponseBuilder`` takes exactly one SingleResponse and
stamps ``producedAt`` with the system clock.  RFC 6960 §4.2.2.3 says a response MUST carry a
SingleResponse for each CertID of the request, and our clock is injected, so the responder
builds every SingleResponse with cryptography, then splices them into the first response with
:mod:`asn1crypto`, sets ``producedAt`` and signs the ``ResponseData`` again with the responder
key (same key, same signature algorithm, so the ``signatureAlgorithm`` cryptography chose
stays right).

Responder policy (RFC 6960 leaves these to the implementation):

* a CertID naming an issuer other than ours (issuerNameHash / issuerKeyHash mismatch) gets the
  status ``unknown``, as §2.2 describes for "an unrecognized issuer that is not served by this
  responder"; the rest of the request is still answered, so one foreign CertID does not spoil a
  batch;
* a CertID hashed with something other than SHA-1/224/256/384/512 gets ``unauthorized``
  (§2.3: the server "is not capable of responding authoritatively");
* unparsable DER, an empty or oversized request, a CertID hash of the wrong length, an unknown
  critical request extension, or a nonce of 0 or more than 32 octets (RFC 8954 §2.1) get
  ``malformedRequest``;
* any exception while answering (a failing lookup, an expired responder certificate...) is
  logged and answered with ``internalError``: :meth:`OCSPResponder.respond` never raises.
* request signatures are ignored (we do not require signed requests).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal
from urllib.parse import unquote

from asn1crypto import core as asn1_core
from asn1crypto import keys as asn1_keys
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, OCSPExtensionOID

from kyso.certs.errors import RevocationError

__all__ = [
    "MAX_CERT_IDS",
    "MAX_REQUEST_SIZE",
    "REASONS",
    "CertStatus",
    "OCSPResponder",
    "RevokedEntry",
    "StatusLookup",
    "build_crl",
    "parse_reason",
    "reason_name",
]

log = logging.getLogger(__name__)

#: RFC 5280 §5.3.1 reason names (as the CLI accepts them) → cryptography's flags.
REASONS: Mapping[str, x509.ReasonFlags] = MappingProxyType(
    {flag.value: flag for flag in x509.ReasonFlags}
)
_REASONS_FOLDED = {name.lower(): flag for name, flag in REASONS.items()}

#: Requests larger than this are refused (malformedRequest) before parsing.
MAX_REQUEST_SIZE = 64 * 1024
#: At most this many CertIDs are answered in one request (each costs a signature).
#: Each CertID costs one signature (cryptography signs every SingleResponse it encodes), so a
#: large batch from an unauthenticated client is a cheap way to burn CPU: keep it small.
MAX_CERT_IDS = 8
#: RFC 8954 §2.1: a nonce is 1 to 32 octets.
_MAX_NONCE = 32

# CertID hash algorithms cryptography can put in a response (asn1crypto name → hash).
_CERT_ID_HASHES: Mapping[str, Callable[[], hashes.HashAlgorithm]] = MappingProxyType(
    {
        "sha1": hashes.SHA1,
        "sha224": hashes.SHA224,
        "sha256": hashes.SHA256,
        "sha384": hashes.SHA384,
        "sha512": hashes.SHA512,
    }
)
# Request extensions we understand (a critical one we do not understand is refused).
_KNOWN_REQUEST_EXTENSIONS = frozenset(
    {"nonce", "acceptable_responses", "preferred_signature_algorithms"}
)


def parse_reason(name: str) -> x509.ReasonFlags:
    """The reason flag named ``name`` (RFC 5280 spelling, case-insensitive)."""
    flag = _REASONS_FOLDED.get(name.strip().lower())
    if flag is None:
        raise RevocationError(
            "certs.revocation.unknown_reason", name=name, choices=", ".join(REASONS)
        )
    return flag


def reason_name(reason: x509.ReasonFlags) -> str:
    """The RFC 5280 name of ``reason`` (e.g. ``keyCompromise``)."""
    return reason.value


def _utc(value: dt.datetime) -> dt.datetime:
    """``value`` as an aware UTC datetime, whole seconds (naive means UTC, as in cryptography)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).replace(microsecond=0)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class RevokedEntry:
    """One revoked certificate, as listed in a CRL."""

    serial: int
    revoked_at: dt.datetime
    reason: x509.ReasonFlags = x509.ReasonFlags.unspecified
    #: When the key is known or suspected to have been compromised (RFC 5280 §5.3.2).
    invalidity_date: dt.datetime | None = None


@dataclass(frozen=True)
class CertStatus:
    """What the PKI knows about one serial number."""

    kind: Literal["good", "revoked", "unknown"]
    revoked_at: dt.datetime | None = None
    reason: x509.ReasonFlags | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("good", "revoked", "unknown"):
            raise RevocationError(detail=f"unknown certificate status {self.kind!r}")
        if self.kind == "revoked" and self.revoked_at is None:
            raise RevocationError(detail="a revoked status needs its revocation time")
        if self.kind != "revoked" and (self.revoked_at is not None or self.reason is not None):
            raise RevocationError(detail=f"a {self.kind} status has no revocation time or reason")

    @classmethod
    def good(cls) -> CertStatus:
        return cls("good")

    @classmethod
    def unknown(cls) -> CertStatus:
        return cls("unknown")

    @classmethod
    def revoked(cls, revoked_at: dt.datetime, reason: x509.ReasonFlags | None = None) -> CertStatus:
        return cls("revoked", revoked_at, reason)


#: The caller's view of its certificate database: serial number → status.
StatusLookup = Callable[[int], CertStatus]


def _check_key_pair(
    cert: x509.Certificate, key: CertificateIssuerPrivateKeyTypes, what: str
) -> None:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
        raise RevocationError(detail=f"the {what} key does not belong to the {what} certificate")


def _authority_key_identifier(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        public_key = issuer_cert.public_key()
        if not isinstance(
            public_key,
            rsa.RSAPublicKey
            | ec.EllipticCurvePublicKey
            | ed25519.Ed25519PublicKey
            | ed448.Ed448PublicKey
            | dsa.DSAPublicKey,
        ):
            raise RevocationError(detail="the CRL issuer's key cannot sign") from None
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key)
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _hash_for(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | hashes.SHA384 | None:
    """The hash to pass to cryptography's ``sign`` for ``key``: None for EdDSA, otherwise the
    same rule as :func:`kyso.certs.builders.signature_hash` (typed narrowly for ``sign``)."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def build_crl(
    *,
    issuer_cert: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    revoked: Iterable[RevokedEntry],
    crl_number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
    delta_base: int | None = None,
) -> x509.CertificateRevocationList:
    """A CRL signed by ``issuer_cert``'s key.

    Carries the CRL number and the authority key identifier; each entry carries its reason
    code (omitted for ``unspecified``, as RFC 5280 §5.3.1 recommends) and, if known, its
    invalidity date.  With ``delta_base`` it is a delta CRL (RFC 5280 §5.2.4) over the complete
    CRL numbered ``delta_base``, and only then may entries use ``removeFromCRL``.  Entries are
    listed by serial number so the output is deterministic.
    """
    _check_key_pair(issuer_cert, issuer_key, "CRL issuer")
    try:
        usage = issuer_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.crl_sign:
        raise RevocationError(detail="the issuer certificate is not allowed to sign CRLs")
    if not 0 <= crl_number < 2**159:
        raise RevocationError(detail="the CRL number must be a non-negative 20-octet integer")
    if delta_base is not None and not 0 <= delta_base < crl_number:
        raise RevocationError(detail="a delta CRL's base number must be below its CRL number")
    this_update, next_update = _utc(this_update), _utc(next_update)
    if next_update <= this_update:
        raise RevocationError(detail="the CRL's next update must come after its this update")

    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(_authority_key_identifier(issuer_cert), critical=False)
    )
    if delta_base is not None:
        builder = builder.add_extension(x509.DeltaCRLIndicator(delta_base), critical=True)

    seen: set[int] = set()
    for entry in sorted(revoked, key=lambda e: e.serial):
        if entry.serial in seen:
            raise RevocationError(detail=f"serial {entry.serial:#x} is listed twice")
        seen.add(entry.serial)
        if entry.reason is x509.ReasonFlags.remove_from_crl and delta_base is None:
            raise RevocationError(detail="removeFromCRL may only appear in a delta CRL")
        revoked_builder = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(_utc(entry.revoked_at))
        )
        if entry.reason is not x509.ReasonFlags.unspecified:
            revoked_builder = revoked_builder.add_extension(
                x509.CRLReason(entry.reason), critical=False
            )
        if entry.invalidity_date is not None:
            revoked_builder = revoked_builder.add_extension(
                x509.InvalidityDate(_utc(entry.invalidity_date)), critical=False
            )
        builder = builder.add_revoked_certificate(revoked_builder.build())
    return builder.sign(issuer_key, _hash_for(issuer_key))


# --- OCSP -------------------------------------------------------------------------------------


class _Refuse(Exception):
    """Answer the request with an unsuccessful response status."""

    def __init__(self, status: ocsp.OCSPResponseStatus, why: str) -> None:
        super().__init__(why)
        self.status = status


@dataclass(frozen=True)
class _CertID:
    algorithm: str
    name_hash: bytes
    key_hash: bytes
    serial: int


@dataclass(frozen=True)
class _Request:
    cert_ids: list[_CertID]
    nonce: bytes | None  # the raw extnValue, echoed byte for byte


def _parse_request(der: bytes) -> _Request:
    """The CertIDs and nonce of a DER OCSPRequest, or :class:`_Refuse`."""
    malformed = ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    if len(der) > MAX_REQUEST_SIZE:
        raise _Refuse(malformed, f"request of {len(der)} bytes")
    try:
        request = asn1_ocsp.OCSPRequest.load(der, strict=True)
        request.native  # noqa: B018 - asn1crypto parses lazily; force it to find bad DER now
        tbs = request["tbs_request"]
        cert_ids = [
            _CertID(
                algorithm=item["req_cert"]["hash_algorithm"]["algorithm"].native,
                name_hash=item["req_cert"]["issuer_name_hash"].native,
                key_hash=item["req_cert"]["issuer_key_hash"].native,
                serial=item["req_cert"]["serial_number"].native,
            )
            for item in tbs["request_list"]
        ]
        extensions = [
            (ext["extn_id"].native, ext["critical"].native, ext["extn_value"].contents)
            for ext in tbs["request_extensions"]
        ]
    except Exception as exc:  # asn1crypto raises ValueError, TypeError, KeyError...
        raise _Refuse(malformed, f"unparsable request: {exc}") from exc
    if not cert_ids:
        raise _Refuse(malformed, "no CertID in the request")
    if len(cert_ids) > MAX_CERT_IDS:
        raise _Refuse(malformed, f"{len(cert_ids)} CertIDs in one request")
    if any(cert_id.serial < 0 for cert_id in cert_ids):
        raise _Refuse(malformed, "negative serial number in a CertID")

    nonce: bytes | None = None
    for name, critical, value in extensions:
        if name == "nonce":
            nonce = bytes(value)
            try:  # RFC 8954: an OCTET STRING inside extnValue; tolerate the legacy bare form
                length = len(asn1_core.OctetString.load(nonce, strict=True).native)
            except Exception:
                length = len(nonce)
            if not 0 < length <= _MAX_NONCE:
                raise _Refuse(malformed, f"nonce of {length} octets")
        elif critical and name not in _KNOWN_REQUEST_EXTENSIONS:
            raise _Refuse(malformed, f"unsupported critical request extension {name}")

    for cert_id in cert_ids:
        factory = _CERT_ID_HASHES.get(cert_id.algorithm)
        if factory is None:
            raise _Refuse(
                ocsp.OCSPResponseStatus.UNAUTHORIZED,
                f"CertID hash algorithm {cert_id.algorithm} not supported",
            )
        size = factory().digest_size
        if len(cert_id.name_hash) != size or len(cert_id.key_hash) != size:
            raise _Refuse(malformed, "CertID hash of the wrong length")
    return _Request(cert_ids, nonce)


def _decode_get(path_component: str) -> bytes:
    """The DER request of an RFC 6960 appendix A.1 GET URL path component.

    The component is base64 then URL-encoded; the HTTP layer may have decoded it already
    (raw ``/`` and ``+``), turned ``+`` into a space, or left a leading ``/``.  A DER request
    starts with 0x30, so its base64 starts with ``M`` and a leading ``/`` is never data.
    URL-safe base64 and missing padding are accepted too.
    """
    # a space is a "+" turned into one by form decoding, also at the end: only line breaks
    # and tabs are stripped there (stripping spaces lost a trailing "+", a request in ~1 of 64)
    text = unquote(path_component).lstrip().lstrip("/").rstrip("\r\n\t").replace(" ", "+")
    text = text.replace("-", "+").replace("_", "/").rstrip("=")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _Refuse(
            ocsp.OCSPResponseStatus.MALFORMED_REQUEST, f"bad GET encoding: {exc}"
        ) from exc


def _sign(
    key: CertificateIssuerPrivateKeyTypes, data: bytes, algorithm: hashes.HashAlgorithm | None
) -> bytes:
    """Sign ``data`` the way cryptography signs OCSP responses (PKCS#1 v1.5, ECDSA, EdDSA)."""
    if isinstance(key, rsa.RSAPrivateKey) and algorithm is not None:
        return key.sign(data, padding.PKCS1v15(), algorithm)
    if isinstance(key, ec.EllipticCurvePrivateKey) and algorithm is not None:
        return key.sign(data, ec.ECDSA(algorithm))
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return key.sign(data)
    raise RevocationError(detail=f"cannot sign OCSP responses with a {type(key).__name__}")


def _der(response: ocsp.OCSPResponse) -> bytes:
    return response.public_bytes(serialization.Encoding.DER)


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return _der(ocsp.OCSPResponseBuilder.build_unsuccessful(status))


class OCSPResponder:
    """An RFC 6960 OCSP responder for the certificates of one issuing CA.

    Responses are signed by ``responder_key``; ``responder_cert`` is either a delegated
    responder certificate issued by ``issuer_cert`` with id-kp-OCSPSigning, or ``issuer_cert``
    itself.  The responder is identified by key hash and, with ``include_responder_chain``,
    its certificate is embedded so that clients can check the delegation.
    """

    def __init__(
        self,
        *,
        issuer_cert: x509.Certificate,
        responder_cert: x509.Certificate,
        responder_key: CertificateIssuerPrivateKeyTypes,
        status: StatusLookup,
        clock: Callable[[], dt.datetime] = _utcnow,
        validity: dt.timedelta = dt.timedelta(days=1),
        include_responder_chain: bool = True,
    ) -> None:
        _check_key_pair(responder_cert, responder_key, "OCSP responder")
        if responder_cert != issuer_cert:
            _check_delegation(issuer_cert, responder_cert)
        if validity <= dt.timedelta(0):
            raise RevocationError(detail="the OCSP response validity must be positive")
        self._issuer_cert = issuer_cert
        self._responder_cert = responder_cert
        self._responder_key = responder_key
        self._hash = _hash_for(responder_key)
        _sign(responder_key, b"probe", self._hash)  # unsupported key types fail here, not later
        self._status = status
        self._clock = clock
        self._validity = validity
        self._include_certs = include_responder_chain
        self._issuer_hashes = _issuer_hashes(issuer_cert)

    def respond_get(self, path_component: str) -> bytes:
        """Answer an RFC 6960 appendix A.1 GET request (the URL path after the responder URL)."""
        try:
            der = _decode_get(path_component)
        except _Refuse as refusal:
            log.info("OCSP request refused: %s", refusal)
            return _unsuccessful(refusal.status)
        return self.respond(der)

    def respond(self, request_der: bytes) -> bytes:
        """The DER OCSPResponse to a DER OCSPRequest.  Never raises."""
        try:
            request = _parse_request(request_der)
            return self._answer(request)
        except _Refuse as refusal:
            log.info("OCSP request refused: %s", refusal)
            return _unsuccessful(refusal.status)
        except Exception:
            log.exception("OCSP responder failed")
            return _unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR)

    def _answer(self, request: _Request) -> bytes:
        now = _utc(self._clock())
        cert = self._responder_cert
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise RevocationError(detail="the OCSP responder certificate is not valid now")
        next_update = min(now + self._validity, _utc(cert.not_valid_after_utc))

        singles = []
        for index, cert_id in enumerate(request.cert_ids):
            builder = self._single(cert_id, now, next_update).responder_id(
                ocsp.OCSPResponderEncoding.HASH, cert
            )
            if index == 0:  # the first one is the template: certificates and nonce go there
                if self._include_certs:
                    builder = builder.certificates([cert])
                if request.nonce is not None:
                    builder = builder.add_extension(
                        x509.UnrecognizedExtension(OCSPExtensionOID.NONCE, request.nonce),
                        critical=False,
                    )
            singles.append(_der(builder.sign(self._responder_key, self._hash)))
        return self._assemble(singles, now)

    def _single(
        self, cert_id: _CertID, now: dt.datetime, next_update: dt.datetime
    ) -> ocsp.OCSPResponseBuilder:
        """A builder holding the SingleResponse for ``cert_id``."""
        algorithm = _CERT_ID_HASHES[cert_id.algorithm]()
        if self._issuer_hashes.get(cert_id.algorithm) == (cert_id.name_hash, cert_id.key_hash):
            status = self._status(cert_id.serial)
            if not isinstance(status, CertStatus):
                raise TypeError(f"the status lookup returned {status!r}")
        else:
            status = CertStatus.unknown()  # not our issuer: RFC 6960 §2.2
        revoked_at = reason = None
        match status.kind:
            case "good":
                cert_status = ocsp.OCSPCertStatus.GOOD
            case "revoked":
                cert_status = ocsp.OCSPCertStatus.REVOKED
                revoked_at = _utc(status.revoked_at) if status.revoked_at else now
                if status.reason is not x509.ReasonFlags.unspecified:
                    reason = status.reason
            case _:
                cert_status = ocsp.OCSPCertStatus.UNKNOWN
        return ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=cert_id.name_hash,
            issuer_key_hash=cert_id.key_hash,
            serial_number=cert_id.serial,
            algorithm=algorithm,
            cert_status=cert_status,
            this_update=now,
            next_update=next_update,
            revocation_time=revoked_at,
            revocation_reason=reason,
        )

    def _assemble(self, responses: list[bytes], produced_at: dt.datetime) -> bytes:
        """One response holding every SingleResponse of ``responses``, produced at
        ``produced_at``, signed again by the responder key."""
        template = asn1_ocsp.OCSPResponse.load(responses[0])
        basic = template["response_bytes"]["response"].parsed
        tbs = basic["tbs_response_data"]
        singles = []
        for der in responses:
            parsed = asn1_ocsp.OCSPResponse.load(der)["response_bytes"]["response"].parsed
            single = parsed["tbs_response_data"]["responses"][0]
            singles.append(asn1_ocsp.SingleResponse.load(single.dump()))
        tbs["produced_at"] = produced_at
        tbs["responses"] = singles
        basic["signature"] = _sign(self._responder_key, tbs.dump(), self._hash)
        result = asn1_ocsp.OCSPResponse(
            {
                "response_status": "successful",
                "response_bytes": {"response_type": "basic_ocsp_response", "response": basic},
            }
        ).dump()
        _self_check(result, self._responder_cert)
        return result


def _check_delegation(issuer_cert: x509.Certificate, responder_cert: x509.Certificate) -> None:
    """RFC 6960 §4.2.2.2: a delegated responder is issued by the CA and has id-kp-OCSPSigning."""
    try:
        responder_cert.verify_directly_issued_by(issuer_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise RevocationError(
            detail="the OCSP responder certificate is not issued by the issuing CA"
        ) from exc
    try:
        eku = responder_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is None or ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        raise RevocationError(detail="the OCSP responder certificate lacks id-kp-OCSPSigning")


def _issuer_hashes(issuer_cert: x509.Certificate) -> dict[str, tuple[bytes, bytes]]:
    """(issuerNameHash, issuerKeyHash) of ``issuer_cert`` for every supported CertID hash.

    RFC 6960 §4.1.1: the hash of the DER issuer name, and of the subjectPublicKey BIT STRING's
    value (without tag, length and unused-bits octet).
    """
    name = issuer_cert.subject.public_bytes()
    spki_der = issuer_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key = bytes(asn1_keys.PublicKeyInfo.load(spki_der)["public_key"].contents[1:])
    return {
        algorithm: (hashlib.new(algorithm, name).digest(), hashlib.new(algorithm, key).digest())
        for algorithm in _CERT_ID_HASHES
    }


def _self_check(der: bytes, responder_cert: x509.Certificate) -> None:
    """Reload the spliced response with cryptography and check its signature, so a splicing bug
    becomes an internalError rather than a response that no client accepts."""
    response = ocsp.load_der_ocsp_response(der)
    public_key = responder_cert.public_key()
    signature, data = response.signature, response.tbs_response_bytes
    algorithm = response.signature_hash_algorithm
    if isinstance(public_key, rsa.RSAPublicKey) and algorithm is not None:
        public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
    elif isinstance(public_key, ec.EllipticCurvePublicKey) and algorithm is not None:
        public_key.verify(signature, data, ec.ECDSA(algorithm))
    elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        public_key.verify(signature, data)
    else:
        raise RevocationError(detail="cannot check the OCSP response signature")
