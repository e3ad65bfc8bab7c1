"""CRLs and the OCSP responder, checked independently with the openssl CLI, cryptography's
parsers and pyhanko-certvalidator."""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import OCSPExtensionOID

from kyso.certs.builders import (
    PKIMaterial,
    ServiceURLs,
    build_dev_pki,
    build_signer_certificate,
    dev_name,
    new_private_key,
)
from kyso.certs.errors import RevocationError
from kyso.certs.revocation import (
    MAX_CERT_IDS,
    REASONS,
    CertStatus,
    OCSPResponder,
    RevokedEntry,
    build_crl,
    parse_reason,
    reason_name,
)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

Status = ocsp.OCSPResponseStatus


@dataclass
class World:
    pki: PKIMaterial
    now: dt.datetime
    good: x509.Certificate
    revoked: x509.Certificate
    held: x509.Certificate
    stranger: x509.Certificate  # issued by our CA, but the lookup does not know it
    foreign: x509.Certificate  # issued by another CA
    foreign_issuer: x509.Certificate
    db: dict[int, CertStatus]
    crl: x509.CertificateRevocationList
    root_crl: x509.CertificateRevocationList
    dir: Path

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def lookup(self, serial: int) -> CertStatus:
        return self.db.get(serial, CertStatus.unknown())

    def responder(self, **kwargs) -> OCSPResponder:
        args = dict(
            issuer_cert=self.pki.issuing_cert,
            responder_cert=self.pki.ocsp_cert,
            responder_key=self.pki.ocsp_key,
            status=self.lookup,
        )
        args.update(kwargs)
        return OCSPResponder(**args)


def _leaf(pki: PKIMaterial, name: str, now: dt.datetime) -> x509.Certificate:
    key = new_private_key("ec-p256")
    return build_signer_certificate(
        key.public_key(),
        dev_name(name),
        issuer_cert=pki.issuing_cert,
        issuer_key=pki.issuing_key,
        now=now,
        # pyhanko-certvalidator only consults OCSP responses for certificates with an OCSP AIA.
        urls=ServiceURLs.for_public_url("http://127.0.0.1:8000", "issuing"),
    )


def _write(path: Path, *certs: x509.Certificate) -> None:
    path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certs))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    # openssl checks against the real clock, so the PKI lives in the real present.
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    pki = build_dev_pki(now=now, ca_key_type="rsa-2048")
    other = build_dev_pki(now=now, ca_key_type="ec-p256")
    good, revoked, held, stranger = (
        _leaf(pki, n, now) for n in ("good", "revoked", "held", "stranger")
    )
    foreign = _leaf(other, "foreign", now)
    revoked_at = now - dt.timedelta(hours=1)
    db = {
        good.serial_number: CertStatus.good(),
        revoked.serial_number: CertStatus.revoked(revoked_at, x509.ReasonFlags.key_compromise),
        held.serial_number: CertStatus.revoked(revoked_at, x509.ReasonFlags.certificate_hold),
    }
    crl = build_crl(
        issuer_cert=pki.issuing_cert,
        issuer_key=pki.issuing_key,
        revoked=[
            RevokedEntry(
                revoked.serial_number,
                revoked_at,
                x509.ReasonFlags.key_compromise,
                invalidity_date=revoked_at - dt.timedelta(days=1),
            ),
            RevokedEntry(held.serial_number, revoked_at, x509.ReasonFlags.certificate_hold),
            RevokedEntry(12345, revoked_at),  # unspecified
        ],
        crl_number=7,
        this_update=now,
        next_update=now + dt.timedelta(days=7),
    )
    root_crl = build_crl(
        issuer_cert=pki.root_cert,
        issuer_key=pki.root_key,
        revoked=[],
        crl_number=1,
        this_update=now,
        next_update=now + dt.timedelta(days=30),
    )
    folder = tmp_path_factory.mktemp("revocation")
    w = World(
        pki,
        now,
        good,
        revoked,
        held,
        stranger,
        foreign,
        other.issuing_cert,
        db,
        crl,
        root_crl,
        folder,
    )
    _write(folder / "root.pem", pki.root_cert)
    _write(folder / "issuing.pem", pki.issuing_cert)
    _write(folder / "chain.pem", pki.root_cert, pki.issuing_cert)
    for name in ("good", "revoked", "held", "stranger", "foreign"):
        _write(folder / f"{name}.pem", getattr(w, name))
    _write(folder / "foreign_issuing.pem", other.issuing_cert)
    (folder / "crl.pem").write_bytes(crl.public_bytes(Encoding.PEM))
    return w


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *args], capture_output=True, text=True, timeout=30, check=False
    )


# --- reasons ----------------------------------------------------------------------------------


def test_reasons_cover_rfc5280() -> None:
    assert list(REASONS) == [
        "unspecified",
        "keyCompromise",
        "cACompromise",
        "affiliationChanged",
        "superseded",
        "cessationOfOperation",
        "certificateHold",
        "privilegeWithdrawn",
        "aACompromise",
        "removeFromCRL",
    ]
    for name, flag in REASONS.items():
        assert parse_reason(name) is flag
        assert reason_name(flag) == name


def test_parse_reason_is_case_insensitive() -> None:
    assert parse_reason("KEYCOMPROMISE") is x509.ReasonFlags.key_compromise
    assert parse_reason(" cacompromise ") is x509.ReasonFlags.ca_compromise


def test_parse_reason_rejects_unknown_names_listing_the_valid_ones() -> None:
    with pytest.raises(RevocationError) as info:
        parse_reason("stolen")
    assert "stolen" in info.value.message("en")
    assert "keyCompromise" in info.value.message("en")
    assert "Lý do thu hồi" in info.value.message("vi")


# --- CRL --------------------------------------------------------------------------------------


def test_crl_contents(world: World) -> None:
    crl = world.crl
    assert crl.is_signature_valid(world.pki.issuing_cert.public_key())
    assert crl.issuer == world.pki.issuing_cert.subject
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = world.pki.issuing_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki.key_identifier == ski.value.digest
    revoked = crl.get_revoked_certificate_by_serial_number(world.revoked.serial_number)
    assert revoked is not None
    assert revoked.revocation_date_utc == world.now - dt.timedelta(hours=1)
    reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    invalidity = revoked.extensions.get_extension_for_class(x509.InvalidityDate).value
    assert invalidity.invalidity_date_utc == world.now - dt.timedelta(hours=1, days=1)
    unspecified = crl.get_revoked_certificate_by_serial_number(12345)
    assert unspecified is not None
    with pytest.raises(x509.ExtensionNotFound):
        unspecified.extensions.get_extension_for_class(x509.CRLReason)
    assert [r.serial_number for r in crl] == sorted(r.serial_number for r in crl)


def test_openssl_verifies_the_crl_and_lists_reasons(world: World) -> None:
    result = openssl(
        "crl", "-in", world.path("crl.pem"), "-CAfile", world.path("issuing.pem"), "-noout"
    )
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stdout + result.stderr
    text = openssl("crl", "-in", world.path("crl.pem"), "-noout", "-text").stdout
    assert "X509v3 CRL Number" in text and "7" in text
    assert "X509v3 Authority Key Identifier" in text
    entries = text.split("Serial Number: ")[1:]
    by_serial = {int(e.split()[0], 16): e for e in entries}
    assert "Key Compromise" in by_serial[world.revoked.serial_number]
    assert "Invalidity Date" in by_serial[world.revoked.serial_number]
    assert "Certificate Hold" in by_serial[world.held.serial_number]
    assert "CRL Reason Code" not in by_serial[12345]


def test_openssl_rejects_a_tampered_crl(world: World) -> None:
    der = bytearray(world.crl.public_bytes(Encoding.DER))
    # Change one byte of the signed part (a letter of the issuer name): still parses, no longer
    # verifies.
    offset = der.index(b"Issuing CA")
    der[offset] ^= 0x20
    tampered = world.dir / "tampered.crl"
    tampered.write_bytes(bytes(der))
    result = openssl(
        "crl",
        "-inform",
        "DER",
        "-in",
        str(tampered),
        "-CAfile",
        world.path("issuing.pem"),
        "-noout",
    )
    # OpenSSL 3.0 `crl` exits 0 even when the signature does not verify: read its message.
    assert "verify failure" in result.stdout + result.stderr
    assert "verify OK" not in result.stdout + result.stderr


def test_openssl_verify_with_crl_check(world: World) -> None:
    common = [
        "verify",
        "-crl_check",
        "-CRLfile",
        world.path("crl.pem"),
        "-CAfile",
        world.path("root.pem"),
        "-untrusted",
        world.path("issuing.pem"),
    ]
    bad = openssl(*common, world.path("revoked.pem"))
    assert bad.returncode != 0
    assert "certificate revoked" in bad.stdout + bad.stderr
    ok = openssl(*common, world.path("good.pem"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK" in ok.stdout


def test_delta_crl(world: World) -> None:
    delta = build_crl(
        issuer_cert=world.pki.issuing_cert,
        issuer_key=world.pki.issuing_key,
        revoked=[
            RevokedEntry(world.held.serial_number, world.now, x509.ReasonFlags.remove_from_crl)
        ],
        crl_number=8,
        this_update=world.now,
        next_update=world.now + dt.timedelta(days=1),
        delta_base=7,
    )
    indicator = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert indicator.critical and indicator.value.crl_number == 7
    entry = delta.get_revoked_certificate_by_serial_number(world.held.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.remove_from_crl
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {
                "revoked": [
                    RevokedEntry(
                        1, dt.datetime(2024, 1, 1, tzinfo=dt.UTC), x509.ReasonFlags.remove_from_crl
                    )
                ]
            },
            "delta",
        ),
        ({"revoked": [RevokedEntry(1, dt.datetime(2024, 1, 1, tzinfo=dt.UTC))] * 2}, "twice"),
        ({"next_update": dt.datetime(2000, 1, 1, tzinfo=dt.UTC)}, "next update"),
        ({"crl_number": -1}, "CRL number"),
        ({"crl_number": 3, "delta_base": 3}, "base"),
    ],
)
def test_build_crl_rejects_bad_input(world: World, change: dict, match: str) -> None:
    args = dict(
        issuer_cert=world.pki.issuing_cert,
        issuer_key=world.pki.issuing_key,
        revoked=[],
        crl_number=3,
        this_update=world.now,
        next_update=world.now + dt.timedelta(days=1),
    )
    args.update(change)
    with pytest.raises(RevocationError, match=match):
        build_crl(**args)


def test_build_crl_rejects_a_foreign_key_and_a_non_ca(world: World) -> None:
    args = dict(
        revoked=[],
        crl_number=1,
        this_update=world.now,
        next_update=world.now + dt.timedelta(days=1),
    )
    with pytest.raises(RevocationError, match="does not belong"):
        build_crl(issuer_cert=world.pki.issuing_cert, issuer_key=world.pki.root_key, **args)
    with pytest.raises(RevocationError, match="not allowed to sign CRLs"):
        build_crl(issuer_cert=world.pki.ocsp_cert, issuer_key=world.pki.ocsp_key, **args)


async def test_pyhanko_certvalidator_accepts_the_crls(world: World) -> None:
    from asn1crypto import x509 as asn1_x509
    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator.errors import RevokedError

    def load(cert: x509.Certificate) -> asn1_x509.Certificate:
        return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))

    context = ValidationContext(
        trust_roots=[load(world.pki.root_cert)],
        other_certs=[load(world.pki.issuing_cert)],
        crls=[c.public_bytes(Encoding.DER) for c in (world.crl, world.root_crl)],
        revocation_mode="require",
        moment=world.now + dt.timedelta(minutes=1),
    )
    await CertificateValidator(load(world.good), validation_context=context).async_validate_path()
    with pytest.raises(RevokedError):
        await CertificateValidator(
            load(world.revoked), validation_context=context
        ).async_validate_path()


# --- OCSP: helpers ----------------------------------------------------------------------------


def openssl_request(world: World, *certs: str, nonce: bool = True, digest: str = "sha1") -> bytes:
    out = world.dir / "req.der"
    args = ["ocsp", f"-{digest}", "-issuer", world.path("issuing.pem")]
    for name in certs:
        args += ["-cert", world.path(f"{name}.pem")]
    args += ["-reqout", str(out)] + ([] if nonce else ["-no_nonce"])
    result = openssl(*args)
    assert result.returncode == 0, result.stderr
    return out.read_bytes()


def openssl_check(
    world: World, request: bytes, response: bytes, *certs: str, digest: str = "sha1"
) -> str:
    """Verify ``response`` with openssl, checking the nonce against ``request``, and return the
    per-certificate status summary."""
    (world.dir / "req.der").write_bytes(request)
    (world.dir / "resp.der").write_bytes(response)
    verify = openssl(
        "ocsp",
        "-reqin",
        world.path("req.der"),
        "-respin",
        world.path("resp.der"),
        "-CAfile",
        world.path("root.pem"),
        "-issuer",
        world.path("issuing.pem"),
    )
    output = verify.stdout + verify.stderr
    assert verify.returncode == 0, output
    assert "Response verify OK" in output
    assert "WARNING" not in output and "Nonce Verify error" not in output, output
    args = [
        "ocsp",
        f"-{digest}",
        "-respin",
        world.path("resp.der"),
        "-CAfile",
        world.path("root.pem"),
        "-issuer",
        world.path("issuing.pem"),
        "-no_nonce",
        "-resp_text",
    ]
    for name in certs:
        args += ["-cert", world.path(f"{name}.pem")]
    summary = openssl(*args)
    assert summary.returncode == 0, summary.stdout + summary.stderr
    assert "Response verify OK" in summary.stderr
    return summary.stdout


def crypto_request(
    cert: x509.Certificate, issuer: x509.Certificate, algorithm: hashes.HashAlgorithm | None = None
) -> bytes:
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA1())
    return req.build().public_bytes(Encoding.DER)


def status_of(response: bytes) -> Status:
    return ocsp.load_der_ocsp_response(response).response_status


# --- OCSP: against openssl --------------------------------------------------------------------


@pytest.mark.parametrize("nonce", [True, False], ids=["nonce", "no_nonce"])
def test_openssl_good(world: World, nonce: bool) -> None:
    request = openssl_request(world, "good", nonce=nonce)
    response = world.responder().respond(request)
    summary = openssl_check(world, request, response, "good")
    assert "good.pem: good" in summary
    parsed = ocsp.load_der_ocsp_response(response)
    assert parsed.response_status is Status.SUCCESSFUL
    assert parsed.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert parsed.serial_number == world.good.serial_number
    assert parsed.responder_key_hash is not None and parsed.responder_name is None
    assert parsed.certificates == [world.pki.ocsp_cert]
    request_ext = ocsp.load_der_ocsp_request(request).extensions
    if nonce:
        sent = request_ext.get_extension_for_oid(OCSPExtensionOID.NONCE).value
        echoed = parsed.extensions.get_extension_for_oid(OCSPExtensionOID.NONCE).value
        assert echoed == sent
    else:
        assert len(parsed.extensions) == 0


def test_openssl_revoked_with_reason_and_time(world: World) -> None:
    request = openssl_request(world, "revoked")
    response = world.responder().respond(request)
    summary = openssl_check(world, request, response, "revoked")
    assert "revoked.pem: revoked" in summary
    assert "Reason: keyCompromise" in summary
    revoked_at = world.now - dt.timedelta(hours=1)
    openssl_time = f"{revoked_at:%b} {revoked_at.day:2d} {revoked_at:%H:%M:%S %Y} GMT"
    assert f"Revocation Time: {openssl_time}" in summary
    parsed = ocsp.load_der_ocsp_response(response)
    assert parsed.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert parsed.revocation_time_utc == revoked_at
    assert parsed.revocation_reason is x509.ReasonFlags.key_compromise


def test_openssl_unknown_serial(world: World) -> None:
    request = openssl_request(world, "stranger")
    response = world.responder().respond(request)
    assert "stranger.pem: unknown" in openssl_check(world, request, response, "stranger")


def test_openssl_several_cert_ids_answered_in_one_response(world: World) -> None:
    names = ("good", "revoked", "held", "stranger")
    request = openssl_request(world, *names)
    response = world.responder().respond(request)
    summary = openssl_check(world, request, response, *names)
    assert "good.pem: good" in summary
    assert "revoked.pem: revoked" in summary
    assert "held.pem: revoked" in summary and "Reason: certificateHold" in summary
    assert "stranger.pem: unknown" in summary
    parsed = ocsp.load_der_ocsp_response(response)
    statuses = {r.serial_number: r.certificate_status for r in parsed.responses}
    assert statuses == {
        world.good.serial_number: ocsp.OCSPCertStatus.GOOD,
        world.revoked.serial_number: ocsp.OCSPCertStatus.REVOKED,
        world.held.serial_number: ocsp.OCSPCertStatus.REVOKED,
        world.stranger.serial_number: ocsp.OCSPCertStatus.UNKNOWN,
    }


def test_openssl_sha256_cert_id(world: World) -> None:
    request = openssl_request(world, "revoked", digest="sha256")
    assert isinstance(ocsp.load_der_ocsp_request(request).hash_algorithm, hashes.SHA256)
    response = world.responder().respond(request)
    assert "revoked.pem: revoked" in openssl_check(
        world, request, response, "revoked", digest="sha256"
    )
    parsed = ocsp.load_der_ocsp_response(response)
    assert isinstance(parsed.hash_algorithm, hashes.SHA256)


def test_openssl_notices_a_nonce_mismatch(world: World) -> None:
    """Control: openssl really checks the nonce, so the echo tests above mean something."""
    first = openssl_request(world, "good")
    response = world.responder().respond(first)
    second = openssl_request(world, "good")
    (world.dir / "req2.der").write_bytes(second)
    (world.dir / "resp2.der").write_bytes(response)
    result = openssl(
        "ocsp",
        "-reqin",
        world.path("req2.der"),
        "-respin",
        world.path("resp2.der"),
        "-CAfile",
        world.path("root.pem"),
    )
    assert "Nonce Verify error" in result.stdout + result.stderr


def test_openssl_issuer_signed_rsa_response(world: World) -> None:
    """The CA may answer itself (responder cert = issuer cert, here an RSA key)."""
    responder = world.responder(
        responder_cert=world.pki.issuing_cert,
        responder_key=world.pki.issuing_key,
        include_responder_chain=False,
    )
    request = openssl_request(world, "good", "revoked")
    response = responder.respond(request)
    summary = openssl_check(world, request, response, "good", "revoked")
    assert "good.pem: good" in summary and "revoked.pem: revoked" in summary
    assert ocsp.load_der_ocsp_response(response).certificates == []


# --- OCSP: protocol details -------------------------------------------------------------------


@pytest.mark.parametrize(
    "algorithm",
    [hashes.SHA1(), hashes.SHA224(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()],
    ids=lambda a: a.name,
)
def test_cert_id_hash_algorithms(world: World, algorithm: hashes.HashAlgorithm) -> None:
    request = crypto_request(world.good, world.pki.issuing_cert, algorithm)
    parsed = ocsp.load_der_ocsp_response(world.responder().respond(request))
    assert parsed.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert parsed.hash_algorithm.name == algorithm.name
    original = ocsp.load_der_ocsp_request(request)
    assert parsed.issuer_name_hash == original.issuer_name_hash
    assert parsed.issuer_key_hash == original.issuer_key_hash


def test_foreign_issuer_is_unknown_without_asking_the_lookup(world: World) -> None:
    asked: list[int] = []

    def lookup(serial: int) -> CertStatus:
        asked.append(serial)
        return CertStatus.good()

    request = crypto_request(world.foreign, world.foreign_issuer)
    parsed = ocsp.load_der_ocsp_response(world.responder(status=lookup).respond(request))
    assert parsed.response_status is Status.SUCCESSFUL
    assert parsed.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    assert asked == []


def test_clock_is_injected(world: World) -> None:
    fixed = world.now + dt.timedelta(days=3, microseconds=123)
    responder = world.responder(clock=lambda: fixed, validity=dt.timedelta(hours=6))
    parsed = ocsp.load_der_ocsp_response(
        responder.respond(crypto_request(world.good, world.pki.issuing_cert))
    )
    expected = fixed.replace(microsecond=0)
    assert parsed.produced_at_utc == expected
    assert parsed.this_update_utc == expected
    assert parsed.next_update_utc == expected + dt.timedelta(hours=6)


def test_next_update_never_outlives_the_responder_certificate(world: World) -> None:
    end = world.pki.ocsp_cert.not_valid_after_utc
    responder = world.responder(clock=lambda: end - dt.timedelta(hours=1))
    parsed = ocsp.load_der_ocsp_response(
        responder.respond(crypto_request(world.good, world.pki.issuing_cert))
    )
    assert parsed.next_update_utc == end


def test_expired_responder_certificate_is_an_internal_error(world: World) -> None:
    responder = world.responder(clock=lambda: dt.datetime(2100, 1, 1, tzinfo=dt.UTC))
    request = crypto_request(world.good, world.pki.issuing_cert)
    assert status_of(responder.respond(request)) is Status.INTERNAL_ERROR


@pytest.mark.parametrize(
    "garbage",
    [b"", b"not an OCSP request", b"\x30\x03\x02\x01", b"\x30\x00", b"\x00" * 100],
    ids=["empty", "text", "truncated", "empty-seq", "zeros"],
)
def test_garbage_is_malformed_request(world: World, garbage: bytes) -> None:
    response = world.responder().respond(garbage)
    assert status_of(response) is Status.MALFORMED_REQUEST
    assert ocsp.load_der_ocsp_response(response).response_status is Status.MALFORMED_REQUEST


def test_trailing_data_and_oversized_requests_are_malformed(world: World) -> None:
    request = crypto_request(world.good, world.pki.issuing_cert)
    assert status_of(world.responder().respond(request + b"\x00")) is Status.MALFORMED_REQUEST
    assert status_of(world.responder().respond(b"\x30" * 100_000)) is Status.MALFORMED_REQUEST


def test_oversized_nonce_is_malformed(world: World) -> None:
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        world.good, world.pki.issuing_cert, hashes.SHA1()
    )
    too_long = builder.add_extension(x509.OCSPNonce(b"n" * 33), critical=False).build()
    response = world.responder().respond(too_long.public_bytes(Encoding.DER))
    assert status_of(response) is Status.MALFORMED_REQUEST
    ok = builder.add_extension(x509.OCSPNonce(b"n" * 32), critical=False).build()
    assert status_of(world.responder().respond(ok.public_bytes(Encoding.DER))) is (
        Status.SUCCESSFUL
    )


def test_unsupported_cert_id_hash_is_unauthorized(world: World) -> None:
    request = asn1_ocsp.OCSPRequest.load(crypto_request(world.good, world.pki.issuing_cert))
    cert_id = request["tbs_request"]["request_list"][0]["req_cert"]
    cert_id["hash_algorithm"] = {"algorithm": "md5"}
    cert_id["issuer_name_hash"] = b"\x01" * 16
    cert_id["issuer_key_hash"] = b"\x02" * 16
    assert status_of(world.responder().respond(request.dump())) is Status.UNAUTHORIZED


def test_cert_id_hash_of_wrong_length_is_malformed(world: World) -> None:
    request = asn1_ocsp.OCSPRequest.load(crypto_request(world.good, world.pki.issuing_cert))
    request["tbs_request"]["request_list"][0]["req_cert"]["issuer_key_hash"] = b"\x02" * 5
    assert status_of(world.responder().respond(request.dump())) is Status.MALFORMED_REQUEST


def test_negative_serial_is_malformed_not_an_internal_error(world: World) -> None:
    request = asn1_ocsp.OCSPRequest.load(crypto_request(world.good, world.pki.issuing_cert))
    request["tbs_request"]["request_list"][0]["req_cert"]["serial_number"] = -5
    assert status_of(world.responder().respond(request.dump())) is Status.MALFORMED_REQUEST


def test_lookup_failure_is_internal_error(world: World) -> None:
    def broken(serial: int) -> CertStatus:
        raise RuntimeError("database is down")

    request = crypto_request(world.good, world.pki.issuing_cert)
    assert status_of(world.responder(status=broken).respond(request)) is Status.INTERNAL_ERROR
    nonsense = world.responder(status=lambda serial: "good")
    assert status_of(nonsense.respond(request)) is Status.INTERNAL_ERROR


def test_get_form(world: World) -> None:
    request = openssl_request(world, "revoked", nonce=False)
    encoded = base64.b64encode(request).decode()
    responder = world.responder()
    variants = [
        quote(encoded, safe=""),  # what a client puts in the URL (%2F, %2B, %3D)
        encoded,  # already URL-decoded by the HTTP layer, raw "/" and "+"
        "/" + encoded,  # with the separating slash
        base64.urlsafe_b64encode(request).decode().rstrip("="),
        encoded.replace("+", " "),  # "+" turned into a space by form decoding
    ]
    for variant in variants:
        parsed = ocsp.load_der_ocsp_response(responder.respond_get(variant))
        assert parsed.response_status is Status.SUCCESSFUL, variant
        assert parsed.certificate_status is ocsp.OCSPCertStatus.REVOKED
    # a request whose base64 ends with "+" (possible only when it has no padding, so the
    # nonce's length varies): form decoding leaves a trailing space there
    for attempt in range(2000):
        request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(world.good, world.pki.issuing_cert, hashes.SHA1())
            .add_extension(x509.OCSPNonce(os.urandom(16 + attempt % 3)), critical=False)
            .build()
            .public_bytes(Encoding.DER)
        )
        encoded = base64.b64encode(request).decode()
        if encoded.rstrip("=").endswith("+"):
            break
    else:
        raise AssertionError("no request ending with '+' in 2000 tries")
    parsed = ocsp.load_der_ocsp_response(responder.respond_get(encoded.replace("+", " ")))
    assert parsed.response_status is Status.SUCCESSFUL
    assert status_of(responder.respond_get("%%%not base64!")) is Status.MALFORMED_REQUEST
    assert status_of(responder.respond_get("")) is Status.MALFORMED_REQUEST


async def test_pyhanko_certvalidator_accepts_the_ocsp_responses(world: World) -> None:
    from asn1crypto import x509 as asn1_x509
    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator.errors import PathValidationError, RevokedError

    def load(cert: x509.Certificate) -> asn1_x509.Certificate:
        return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))

    responder = world.responder()

    def context(*ocsps: bytes) -> ValidationContext:
        return ValidationContext(
            trust_roots=[load(world.pki.root_cert)],
            other_certs=[load(world.pki.issuing_cert)],
            crls=[world.root_crl.public_bytes(Encoding.DER)],  # for the issuing CA itself
            ocsps=list(ocsps),
            revocation_mode="require",
            moment=world.now + dt.timedelta(minutes=1),
        )

    good = responder.respond(crypto_request(world.good, world.pki.issuing_cert))
    await CertificateValidator(
        load(world.good), validation_context=context(good)
    ).async_validate_path()
    with pytest.raises(PathValidationError):  # control: "require" without revocation data
        await CertificateValidator(
            load(world.good), validation_context=context()
        ).async_validate_path()
    revoked = responder.respond(crypto_request(world.revoked, world.pki.issuing_cert))
    with pytest.raises(RevokedError):
        await CertificateValidator(
            load(world.revoked), validation_context=context(revoked)
        ).async_validate_path()


# --- construction ------------------------------------------------------------------------------


def test_responder_rejects_a_key_that_is_not_the_certificates(world: World) -> None:
    with pytest.raises(RevocationError, match="does not belong"):
        world.responder(responder_key=world.pki.tsa_key)


def test_responder_rejects_a_certificate_without_ocsp_signing(world: World) -> None:
    with pytest.raises(RevocationError, match="OCSPSigning"):
        world.responder(responder_cert=world.pki.tsa_cert, responder_key=world.pki.tsa_key)


def test_responder_rejects_a_certificate_from_another_issuer(world: World) -> None:
    with pytest.raises(RevocationError, match="not issued by"):
        world.responder(issuer_cert=world.foreign_issuer)


def test_cert_status_invariants() -> None:
    with pytest.raises(RevocationError):
        CertStatus("revoked")
    with pytest.raises(RevocationError):
        CertStatus("good", reason=x509.ReasonFlags.superseded)
    with pytest.raises(RevocationError):
        CertStatus("maybe")  # type: ignore[arg-type]


def test_unknown_critical_extension_and_too_many_cert_ids_are_malformed(world: World) -> None:
    base = crypto_request(world.good, world.pki.issuing_cert)
    request = asn1_ocsp.OCSPRequest.load(base)
    request["tbs_request"]["request_extensions"] = [
        {"extn_id": "1.2.3.4", "critical": True, "extn_value": b"\x05\x00"}
    ]
    assert status_of(world.responder().respond(request.dump())) is Status.MALFORMED_REQUEST
    request["tbs_request"]["request_extensions"][0]["critical"] = False
    assert status_of(world.responder().respond(request.dump())) is Status.SUCCESSFUL

    many = asn1_ocsp.OCSPRequest.load(base)
    single = many["tbs_request"]["request_list"][0].dump()
    many["tbs_request"]["request_list"] = [asn1_ocsp.Request.load(single)] * (MAX_CERT_IDS + 1)
    assert status_of(world.responder().respond(many.dump())) is Status.MALFORMED_REQUEST
    many["tbs_request"]["request_list"] = []
    assert status_of(world.responder().respond(many.dump())) is Status.MALFORMED_REQUEST
