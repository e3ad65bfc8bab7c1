"""Pure certificate builders for the built-in PKI (no files, no settings, injected clock).

Every function takes the time it should consider "now", so tests are deterministic without
mocks.  Profiles:

* root CA: self-signed, basicConstraints CA (critical), keyCertSign + cRLSign;
* issuing CA: pathLen 0, keyCertSign + cRLSign, CRL distribution point of the root;
* TSA: only EKU id-kp-timeStamping, marked critical (RFC 3161 §2.3), digitalSignature +
  nonRepudiation;
* OCSP responder: EKU id-kp-OCSPSigning and id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1);
* signer (person or organisation): digitalSignature + nonRepudiation, EKUs that PDF
  validators accept (emailProtection, documentSigning), CRL distribution point and an
  OCSP + caIssuers AIA pointing at the service.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from kyso.certs.errors import PKIError

KEY_TYPES = ("rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384")

#: id-kp-documentSigning (RFC 9336), accepted by current PDF validators.
DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")

#: Policy OID of our development PKI: the arc 1.3.6.1.4.1.55555 is a private-use placeholder
#: that says "not a real CA" (the Government CA uses 2.16.704.1.1.1.1.1).
DEV_POLICY_OID = ObjectIdentifier("1.3.6.1.4.1.55555.1.1")

# Clock skew allowance: certificates start a little in the past so that a freshly issued one is
# valid on a machine whose clock is slightly behind.
BACKDATE = dt.timedelta(minutes=5)


def new_private_key(key_type: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """A fresh software private key of ``key_type`` (one of :data:`KEY_TYPES`)."""
    match key_type:
        case "rsa-2048" | "rsa-3072" | "rsa-4096":
            return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
        case "ec-p256":
            return ec.generate_private_key(ec.SECP256R1())
        case "ec-p384":
            return ec.generate_private_key(ec.SECP384R1())
    raise PKIError(detail=f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")


def signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | hashes.SHA384:
    """The hash used when ``key`` signs a certificate, CRL or OCSP response."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


@dataclass(frozen=True)
class ServiceURLs:
    """Where relying parties fetch revocation data and issuer certificates."""

    ocsp: str | None = None
    crl: str | None = None
    ca_issuers: str | None = None

    @classmethod
    def for_public_url(cls, public_url: str, issuer: str) -> ServiceURLs:
        """URLs served by ``kyso serve`` at ``public_url`` for certificates issued by ``issuer``
        (``root`` or ``issuing``)."""
        base = public_url.rstrip("/")
        return cls(
            ocsp=f"{base}/ocsp",
            crl=f"{base}/crl/{issuer}.crl",
            ca_issuers=f"{base}/ca/{issuer}.crt",
        )


def dev_name(common_name: str, organisation: str = "kyso (phát triển / development)") -> x509.Name:
    """A name for an infrastructure certificate of the development PKI."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "KHÔNG DÙNG THẬT - DEMO ONLY"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _base(
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer: x509.Name,
    *,
    now: dt.datetime,
    days: float,
    serial: int | None,
    not_after_cap: dt.datetime | None,
) -> x509.CertificateBuilder:
    not_before = now - BACKDATE
    not_after = now + dt.timedelta(days=days)
    if not_after_cap is not None and not_after > not_after_cap:
        not_after = not_after_cap
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _issued(
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer_cert: x509.Certificate,
    *,
    now: dt.datetime,
    days: float,
    ca: bool = False,
) -> x509.CertificateBuilder:
    """What every certificate issued by one of our CAs has: validity capped by the issuer's,
    basic constraints and key usage (critical), subject and authority key identifiers."""
    return (
        _base(
            subject,
            public_key,
            issuer_cert.subject,
            now=now,
            days=days,
            serial=None,
            not_after_cap=issuer_cert.not_valid_after_utc,
        )
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(_key_usage(ca=ca, signing=not ca), critical=True)
        .add_extension(_aki(issuer_cert), critical=False)
    )


def _aki(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _with_urls(
    builder: x509.CertificateBuilder, urls: ServiceURLs | None
) -> x509.CertificateBuilder:
    if urls is None:
        return builder
    if urls.crl:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(urls.crl)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    access = []
    if urls.ocsp:
        access.append(
            x509.AccessDescription(
                x509.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(urls.ocsp)
            )
        )
    if urls.ca_issuers:
        access.append(
            x509.AccessDescription(
                x509.AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier(urls.ca_issuers),
            )
        )
    if access:
        builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
    return builder


def _key_usage(*, ca: bool = False, signing: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=signing,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _policies(policy_oid: ObjectIdentifier) -> x509.CertificatePolicies:
    return x509.CertificatePolicies([x509.PolicyInformation(policy_oid, None)])


def build_root_ca(
    key: CertificateIssuerPrivateKeyTypes,
    subject: x509.Name,
    *,
    now: dt.datetime,
    days: float = 3650,
) -> x509.Certificate:
    """A self-signed root CA certificate."""
    builder = (
        _base(
            subject, key.public_key(), subject, now=now, days=days, serial=None, not_after_cap=None
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
    )
    return builder.sign(key, signature_hash(key))


def build_issuing_ca(
    public_key: CertificatePublicKeyTypes,
    subject: x509.Name,
    *,
    issuer_cert: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    now: dt.datetime,
    days: float = 1825,
    urls: ServiceURLs | None = None,
) -> x509.Certificate:
    """An intermediate CA that issues end-entity, TSA and OCSP certificates (pathLen 0)."""
    builder = _issued(subject, public_key, issuer_cert, now=now, days=days, ca=True)
    builder = _with_urls(
        builder, ServiceURLs(crl=urls.crl, ca_issuers=urls.ca_issuers) if urls else None
    )
    return builder.sign(issuer_key, signature_hash(issuer_key))


def build_tsa_certificate(
    public_key: CertificatePublicKeyTypes,
    subject: x509.Name,
    *,
    issuer_cert: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    now: dt.datetime,
    days: float = 1095,
    urls: ServiceURLs | None = None,
    policy_oid: ObjectIdentifier = DEV_POLICY_OID,
) -> x509.Certificate:
    """A timestamping certificate: the only EKU is id-kp-timeStamping, critical."""
    builder = (
        _issued(subject, public_key, issuer_cert, now=now, days=days)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(_policies(policy_oid), critical=False)
    )
    return _with_urls(builder, urls).sign(issuer_key, signature_hash(issuer_key))


def build_ocsp_certificate(
    public_key: CertificatePublicKeyTypes,
    subject: x509.Name,
    *,
    issuer_cert: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    now: dt.datetime,
    days: float = 365,
) -> x509.Certificate:
    """A delegated OCSP responder certificate (id-kp-OCSPSigning + id-pkix-ocsp-nocheck)."""
    builder = (
        _issued(subject, public_key, issuer_cert, now=now, days=days)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
    )
    return builder.sign(issuer_key, signature_hash(issuer_key))


def build_signer_certificate(
    public_key: CertificatePublicKeyTypes,
    subject: x509.Name,
    *,
    issuer_cert: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    now: dt.datetime,
    days: float = 730,
    urls: ServiceURLs | None = None,
    policy_oid: ObjectIdentifier = DEV_POLICY_OID,
    emails: Sequence[str] = (),
) -> x509.Certificate:
    """A document-signing certificate for a person or an organisation."""
    builder = (
        _issued(subject, public_key, issuer_cert, now=now, days=days)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, DOCUMENT_SIGNING]),
            critical=False,
        )
        .add_extension(_policies(policy_oid), critical=False)
    )
    if emails:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(e) for e in emails]), critical=False
        )
    return _with_urls(builder, urls).sign(issuer_key, signature_hash(issuer_key))


@dataclass(frozen=True)
class PKIMaterial:
    """An in-memory built-in PKI: what ``kyso pki init`` creates, without the files."""

    root_key: CertificateIssuerPrivateKeyTypes
    root_cert: x509.Certificate
    issuing_key: CertificateIssuerPrivateKeyTypes
    issuing_cert: x509.Certificate
    tsa_key: CertificateIssuerPrivateKeyTypes
    tsa_cert: x509.Certificate
    ocsp_key: CertificateIssuerPrivateKeyTypes
    ocsp_cert: x509.Certificate


def build_dev_pki(
    *,
    now: dt.datetime,
    public_url: str = "http://127.0.0.1:8000",
    ca_key_type: str = "rsa-3072",
    service_key_type: str = "ec-p256",
) -> PKIMaterial:
    """Root CA → issuing CA → TSA and OCSP responder certificates, all fresh keys."""
    root_key = new_private_key(ca_key_type)
    root_cert = build_root_ca(root_key, dev_name("kyso Dev Root CA (KHÔNG DÙNG THẬT)"), now=now)
    issuing_key = new_private_key(ca_key_type)
    issuing_cert = build_issuing_ca(
        issuing_key.public_key(),
        dev_name("kyso Dev Issuing CA (KHÔNG DÙNG THẬT)"),
        issuer_cert=root_cert,
        issuer_key=root_key,
        now=now,
        urls=ServiceURLs.for_public_url(public_url, "root"),
    )
    issuing_urls = ServiceURLs.for_public_url(public_url, "issuing")
    tsa_key = new_private_key(service_key_type)
    tsa_cert = build_tsa_certificate(
        tsa_key.public_key(),
        dev_name("kyso Dev TSA (KHÔNG DÙNG THẬT)"),
        issuer_cert=issuing_cert,
        issuer_key=issuing_key,
        now=now,
        urls=issuing_urls,
    )
    ocsp_key = new_private_key(service_key_type)
    ocsp_cert = build_ocsp_certificate(
        ocsp_key.public_key(),
        dev_name("kyso Dev OCSP Responder (KHÔNG DÙNG THẬT)"),
        issuer_cert=issuing_cert,
        issuer_key=issuing_key,
        now=now,
    )
    return PKIMaterial(
        root_key=root_key,
        root_cert=root_cert,
        issuing_key=issuing_key,
        issuing_cert=issuing_cert,
        tsa_key=tsa_key,
        tsa_cert=tsa_cert,
        ocsp_key=ocsp_key,
        ocsp_cert=ocsp_cert,
    )
