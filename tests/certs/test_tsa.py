"""The RFC 3161 TSA core, checked independently with ``openssl ts`` and pyhanko."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import itertools
import json
import logging
import multiprocessing
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.sign.validation.generic_cms import validate_tst_signed_data
from pyhanko.sign.validation.status import TimestampSignatureStatus
from pyhanko_certvalidator import ValidationContext

from kyso.certs.builders import PKIMaterial, build_dev_pki
from kyso.certs.errors import TSAError
from kyso.certs.tsa import (
    DEV_TSA_POLICY_OID,
    FailureInfo,
    MemorySerialSource,
    SQLiteSerialSource,
    TimeStampAuthority,
    TimeStampResponse,
    TSAPolicy,
    TSAResponseStatus,
    TSASigningKey,
    response_status,
)

NOW = dt.datetime(2026, 3, 14, 1, 2, 3, 456789, tzinfo=dt.UTC)
OTHER_POLICY = "1.3.6.1.4.1.55555.2.2"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl CLI")


# ---------------------------------------------------------------------------------------------
# Helpers shared with test_tsa_client.py


@dataclass(frozen=True)
class SoftKey:
    """A tiny :class:`TSASigningKey` around a cryptography private key."""

    private_key: CertificateIssuerPrivateKeyTypes
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]

    @property
    def key_algorithm(self) -> str:
        return "ec" if isinstance(self.private_key, ec.EllipticCurvePrivateKey) else "rsa"

    def sign(self, data: bytes, hash_name: str = "sha256") -> bytes:
        algorithm: hashes.HashAlgorithm = {
            "sha256": hashes.SHA256(),
            "sha384": hashes.SHA384(),
            "sha512": hashes.SHA512(),
        }[hash_name]
        if isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            return self.private_key.sign(data, ec.ECDSA(algorithm))
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            return self.private_key.sign(data, padding.PKCS1v15(), algorithm)
        raise TypeError(f"unsupported key {type(self.private_key).__name__}")


def tsa_key(pki: PKIMaterial) -> SoftKey:
    return SoftKey(pki.tsa_key, pki.tsa_cert, (pki.issuing_cert, pki.root_cert))


def make_tsa(pki: PKIMaterial, **policy: object) -> TimeStampAuthority:
    return TimeStampAuthority(
        key=tsa_key(pki),
        policy=TSAPolicy(**policy),  # type: ignore[arg-type]
        serials=MemorySerialSource(),
        clock=lambda: NOW,
    )


def make_request(
    digest: bytes,
    hash_name: str = "sha256",
    *,
    nonce: int | None = 42,
    cert_req: bool = True,
    policy: str | None = None,
) -> bytes:
    fields: dict[str, object] = {
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": hash_name}, "hashed_message": digest},
        "cert_req": cert_req,
    }
    if nonce is not None:
        fields["nonce"] = nonce
    if policy is not None:
        fields["req_policy"] = policy
    return tsp.TimeStampReq(fields).dump()


def pem(path: Path, *certs: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certs))
    return path


def openssl(*args: str | Path) -> str:
    proc = subprocess.run(
        ["openssl", "ts", *map(str, args)], capture_output=True, text=True, timeout=30
    )
    return proc.stdout + proc.stderr


def tst_info(resp_der: bytes) -> tsp.TSTInfo:
    resp = tsp.TimeStampResp.load(resp_der)
    return resp["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def pki() -> PKIMaterial:
    return build_dev_pki(now=NOW, ca_key_type="ec-p256", service_key_type="ec-p256")


@pytest.fixture(scope="module")
def tsa(pki: PKIMaterial) -> TimeStampAuthority:
    return make_tsa(pki, accepted_policies=frozenset({DEV_TSA_POLICY_OID, OTHER_POLICY}))


@pytest.fixture(scope="module")
def ca_files(pki: PKIMaterial, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ca")
    return pem(folder / "root.pem", pki.root_cert), pem(folder / "issuing.pem", pki.issuing_cert)


@pytest.fixture()
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(b"C\xf4ng v\xe4n s\xf4 7816/VPCP-TT\xd0\xd0\n" * 100)
    return path


# ---------------------------------------------------------------------------------------------
# Granted tokens, checked by openssl


@pytest.mark.parametrize("hash_flag", ["-sha256", "-sha384", "-sha512"])
@pytest.mark.parametrize("nonce", [True, False])
def test_openssl_query_verifies(
    tsa: TimeStampAuthority,
    ca_files: tuple[Path, Path],
    data_file: Path,
    tmp_path: Path,
    hash_flag: str,
    nonce: bool,
) -> None:
    root, issuing = ca_files
    tsq, tsr = tmp_path / "req.tsq", tmp_path / "resp.tsr"
    args: list[str | Path] = ["-query", "-data", data_file, hash_flag, "-cert", "-out", tsq]
    if not nonce:
        args.append("-no_nonce")
    openssl(*args)
    tsr.write_bytes(tsa.respond(tsq.read_bytes()))

    out = openssl("-verify", "-in", tsr, "-queryfile", tsq, "-CAfile", root, "-untrusted", issuing)
    assert "Verification: OK" in out, out

    text = openssl("-reply", "-in", tsr, "-text")
    assert "Status: Granted." in text
    assert f"Policy OID: {DEV_TSA_POLICY_OID}" in text
    assert f"Hash Algorithm: {hash_flag[1:]}" in text
    assert "Accuracy: 0x01 seconds" in text
    assert "Time stamp: Mar 14 01:02:03 2026 GMT" in text
    assert "TSA: DirName:" in text and "CN=kyso Dev TSA" in text
    query_text = openssl("-query", "-in", tsq, "-text")
    if nonce:
        query_nonce = next(ln for ln in query_text.splitlines() if ln.startswith("Nonce:"))
        assert query_nonce in text
    else:
        assert "Nonce: unspecified" in text
    serial = tst_info(tsr.read_bytes())["serial_number"].native
    assert f"Serial number: {serial:#04x}" in text


def test_requested_policy_is_used(
    tsa: TimeStampAuthority, ca_files: tuple[Path, Path], data_file: Path, tmp_path: Path
) -> None:
    root, issuing = ca_files
    tsq, tsr = tmp_path / "req.tsq", tmp_path / "resp.tsr"
    openssl(
        "-query", "-data", data_file, "-sha256", "-cert", "-tspolicy", OTHER_POLICY, "-out", tsq
    )
    tsr.write_bytes(tsa.respond(tsq.read_bytes()))
    assert f"Policy OID: {OTHER_POLICY}" in openssl("-reply", "-in", tsr, "-text")
    out = openssl("-verify", "-in", tsr, "-queryfile", tsq, "-CAfile", root, "-untrusted", issuing)
    assert "Verification: OK" in out, out


def test_without_cert_req_no_certificates_embedded(
    tsa: TimeStampAuthority,
    pki: PKIMaterial,
    ca_files: tuple[Path, Path],
    data_file: Path,
    tmp_path: Path,
) -> None:
    root, issuing = ca_files
    tsq, tsr = tmp_path / "req.tsq", tmp_path / "resp.tsr"
    openssl("-query", "-data", data_file, "-sha256", "-out", tsq)  # no -cert
    tsr.write_bytes(tsa.respond(tsq.read_bytes()))
    token = tsp.TimeStampResp.load(tsr.read_bytes())["time_stamp_token"]
    assert not token["content"]["certificates"]

    # Without the TSA certificate, openssl cannot find the signer...
    out = openssl("-verify", "-in", tsr, "-queryfile", tsq, "-CAfile", root, "-untrusted", issuing)
    assert "Verification: OK" not in out
    # ...with it (and the issuing CA) as untrusted certificates, it verifies.
    untrusted = pem(tmp_path / "untrusted.pem", pki.tsa_cert, pki.issuing_cert)
    out = openssl(
        "-verify", "-in", tsr, "-queryfile", tsq, "-CAfile", root, "-untrusted", untrusted
    )
    assert "Verification: OK" in out, out


def test_cert_req_embeds_tsa_certificate_and_chain(
    tsa: TimeStampAuthority, pki: PKIMaterial
) -> None:
    resp = tsa.respond(make_request(b"\x01" * 32))
    certs = tsp.TimeStampResp.load(resp)["time_stamp_token"]["content"]["certificates"]
    embedded_list = [c.chosen.dump() for c in certs]
    assert embedded_list == sorted(embedded_list)  # DER SET OF order
    embedded = set(embedded_list)
    expected = {
        c.public_bytes(Encoding.DER) for c in (pki.tsa_cert, pki.issuing_cert, pki.root_cert)
    }
    assert embedded == expected


@pytest.mark.parametrize(
    ("ca_key_type", "service_key_type", "digest_alg", "sig_alg"),
    [
        ("rsa-2048", "rsa-2048", "sha256", "rsassa_pkcs1v15"),
        ("ec-p256", "ec-p384", "sha384", "sha384_ecdsa"),
    ],
)
def test_other_key_types(
    tmp_path: Path,
    data_file: Path,
    ca_key_type: str,
    service_key_type: str,
    digest_alg: str,
    sig_alg: str,
) -> None:
    other = build_dev_pki(now=NOW, ca_key_type=ca_key_type, service_key_type=service_key_type)
    authority = make_tsa(other)
    tsq, tsr = tmp_path / "req.tsq", tmp_path / "resp.tsr"
    openssl("-query", "-data", data_file, "-sha512", "-cert", "-out", tsq)
    tsr.write_bytes(authority.respond(tsq.read_bytes()))
    root = pem(tmp_path / "root.pem", other.root_cert)
    issuing = pem(tmp_path / "issuing.pem", other.issuing_cert)
    out = openssl("-verify", "-in", tsr, "-queryfile", tsq, "-CAfile", root, "-untrusted", issuing)
    assert "Verification: OK" in out, out
    signer_info = tsp.TimeStampResp.load(tsr.read_bytes())["time_stamp_token"]["content"][
        "signer_infos"
    ][0]
    assert signer_info["digest_algorithm"]["algorithm"].native == digest_alg
    assert signer_info["signature_algorithm"]["algorithm"].native == sig_alg


# ---------------------------------------------------------------------------------------------
# Structure


def test_token_structure_is_strict_der(tsa: TimeStampAuthority, pki: PKIMaterial) -> None:
    nonce = 2**70 + 12345  # larger than 64 bits: echoed exactly
    # No certReq: asn1crypto's forced re-encoding of certificates takes a second each.
    request = make_request(hashlib.sha256(b"x").digest(), nonce=nonce, cert_req=False)
    der = tsa.respond(request)
    resp = tsp.TimeStampResp.load(der, strict=True)
    resp.native  # parses every nested value
    assert resp.dump(force=True) == der  # re-encoding changes nothing: our DER is canonical
    assert response_status(der) is TSAResponseStatus.GRANTED

    token = resp["time_stamp_token"]
    assert token["content_type"].native == "signed_data"
    signed_data = token["content"]
    assert signed_data["version"].native == "v3"
    assert signed_data["encap_content_info"]["content_type"].native == "tst_info"
    info = signed_data["encap_content_info"]["content"].parsed
    assert info["version"].native == "v1"
    assert info["nonce"].native == nonce
    assert (
        info["message_imprint"].dump() == tsp.TimeStampReq.load(request)["message_imprint"].dump()
    )
    assert info["accuracy"].native == {"seconds": 1, "millis": None, "micros": None}
    assert info["ordering"].native is False
    assert info["tsa"].name == "directory_name"
    tsa_subject = asn1_x509.Certificate.load(pki.tsa_cert.public_bytes(Encoding.DER)).subject
    assert info["tsa"].chosen.native == tsa_subject.native

    signer_info = signed_data["signer_infos"][0]
    assert signer_info["version"].native == "v1"
    attrs = {a["type"].native: a["values"][0] for a in signer_info["signed_attrs"]}
    assert set(attrs) == {"content_type", "message_digest", "signing_certificate_v2"}
    assert attrs["content_type"].native == "tst_info"
    tst_bytes = signed_data["encap_content_info"]["content"].contents
    assert attrs["message_digest"].native == hashlib.sha256(tst_bytes).digest()
    ess = attrs["signing_certificate_v2"]["certs"][0]
    tsa_der = pki.tsa_cert.public_bytes(Encoding.DER)
    assert ess["hash_algorithm"]["algorithm"].native == "sha256"
    assert ess["cert_hash"].native == hashlib.sha256(tsa_der).digest()
    assert ess["issuer_serial"]["serial_number"].native == pki.tsa_cert.serial_number


def test_policy_options(pki: PKIMaterial) -> None:
    authority = make_tsa(
        pki,
        accuracy=dt.timedelta(seconds=2, milliseconds=5, microseconds=7),
        ordering=True,
        include_tsa_name=False,
    )
    der = authority.respond(make_request(b"\x02" * 32, nonce=None, cert_req=False))
    assert tsp.TimeStampResp.load(der, strict=True).dump(force=True) == der
    info = tst_info(der)
    assert info["accuracy"].native == {"seconds": 2, "millis": 5, "micros": 7}
    assert info["ordering"].native is True
    assert info["nonce"].native is None
    assert info["tsa"].native is None


def test_gen_time_from_injected_clock(pki: PKIMaterial) -> None:
    # Accuracy of a second or more: whole seconds.
    info = tst_info(make_tsa(pki).respond(make_request(b"\x03" * 32)))
    assert info["gen_time"].native == NOW.replace(microsecond=0)
    assert info["gen_time"].contents == b"20260314010203Z"
    # Sub-second accuracy: the fraction, without trailing zeros (RFC 3161 §2.4.2).
    fine = make_tsa(pki, accuracy=dt.timedelta(milliseconds=10))
    info = tst_info(fine.respond(make_request(b"\x03" * 32)))
    assert info["gen_time"].contents == b"20260314010203.456789Z"
    assert info["gen_time"].native == NOW
    # A clock in another time zone is converted to UTC.
    ict = dt.timezone(dt.timedelta(hours=7))
    authority = TimeStampAuthority(
        key=tsa_key(pki),
        policy=TSAPolicy(),
        serials=MemorySerialSource(),
        clock=lambda: dt.datetime(2026, 3, 14, 8, 2, 3, tzinfo=ict),
    )
    info = tst_info(authority.respond(make_request(b"\x03" * 32)))
    assert info["gen_time"].contents == b"20260314010203Z"


def test_serials_increase(tsa: TimeStampAuthority) -> None:
    serials = [
        tst_info(tsa.respond(make_request(b"\x04" * 32)))["serial_number"].native for _ in range(20)
    ]
    assert serials == sorted(set(serials))


# ---------------------------------------------------------------------------------------------
# pyhanko


def _pyhanko_status(der: bytes, pki: PKIMaterial, digest: bytes) -> TimestampSignatureStatus:
    root = asn1_x509.Certificate.load(pki.root_cert.public_bytes(Encoding.DER))
    context = ValidationContext(trust_roots=[root], allow_fetching=False, moment=NOW)
    signed_data = tsp.TimeStampResp.load(der)["time_stamp_token"]["content"]
    kwargs = asyncio.run(validate_tst_signed_data(signed_data, context, lambda _alg: digest))
    return TimestampSignatureStatus(**kwargs)


def test_pyhanko_validates_token(tsa: TimeStampAuthority, pki: PKIMaterial) -> None:
    digest = hashlib.sha256(b"document").digest()
    der = tsa.respond(make_request(digest))
    status = _pyhanko_status(der, pki, digest)
    assert status.intact and status.valid and status.trusted, status
    assert status.timestamp == NOW.replace(microsecond=0)
    # The same token does not vouch for another document.
    other = _pyhanko_status(der, pki, hashlib.sha256(b"other").digest())
    assert not other.intact


# ---------------------------------------------------------------------------------------------
# Rejections


def _rejected(der: bytes) -> tuple[set[str], list[str]]:
    resp = TimeStampResponse.load(der, strict=True)
    assert resp.dump(force=True) == der
    status = resp["status"]
    assert status["status"].native == "rejection"
    assert resp["time_stamp_token"].native is None
    assert response_status(der) is TSAResponseStatus.REJECTION
    return set(status["fail_info"].native), status["status_string"].native


def test_sha1_rejected_with_bad_alg(
    tsa: TimeStampAuthority, data_file: Path, tmp_path: Path
) -> None:
    tsq, tsr = tmp_path / "req.tsq", tmp_path / "resp.tsr"
    openssl("-query", "-data", data_file, "-sha1", "-cert", "-out", tsq)
    tsr.write_bytes(tsa.respond(tsq.read_bytes()))
    text = openssl("-reply", "-in", tsr, "-text")
    assert "Status: Rejected." in text
    assert "unrecognized or unsupported algorithm identifier" in text
    assert "sha1" in text  # statusString
    assert _rejected(tsr.read_bytes())[0] == {"bad_alg"}


def test_garbage_rejected_with_bad_data_format(tsa: TimeStampAuthority, tmp_path: Path) -> None:
    for garbage in (b"", b"\x00", b"not a request", b"\x30\x03\x02\x01", b"\xff" * 100):
        failures, texts = _rejected(tsa.respond(garbage))
        assert failures == {"bad_data_format"} and texts
    # trailing bytes after a valid request are refused too
    assert _rejected(tsa.respond(make_request(b"\x05" * 32) + b"\x00"))[0] == {"bad_data_format"}
    tsr = tmp_path / "resp.tsr"
    tsr.write_bytes(tsa.respond(b"garbage"))
    text = openssl("-reply", "-in", tsr, "-text")
    assert "Status: Rejected." in text and "wrong format" in text


def test_wrong_version_and_imprint_length(tsa: TimeStampAuthority) -> None:
    req = tsp.TimeStampReq.load(make_request(b"\x06" * 32))
    req["version"] = 2
    assert _rejected(tsa.respond(req.dump(force=True)))[0] == {"bad_data_format"}
    assert _rejected(tsa.respond(make_request(b"\x06" * 31)))[0] == {"bad_data_format"}
    assert _rejected(tsa.respond(make_request(b"\x06" * 64, "sha384")))[0] == {"bad_data_format"}
    assert _rejected(tsa.respond(make_request(b"\x06" * 16, "md5")))[0] == {"bad_alg"}
    assert _rejected(tsa.respond(make_request(b"\x06" * 32, "sha3_256")))[0] == {"bad_alg"}


def test_malformed_hash_parameters_are_refused_not_echoed(tsa: TimeStampAuthority) -> None:
    """The imprint is copied into the token byte for byte, so it must be valid DER first."""
    good = make_request(b"\x08" * 32)
    sha256_oid = bytes.fromhex("0609608648016503040201")
    assert sha256_oid in good
    # parameters present as a constructed NULL (invalid DER), found by the endpoint fuzz test
    for params in (b"\x25\x00", b"\x04\x01\x00"):
        algo = b"\x30" + bytes([len(sha256_oid) + len(params)]) + sha256_oid + params
        start = good.index(sha256_oid) - 2
        old_algo = good[start : start + 2 + good[start + 1]]
        body = good.replace(old_algo, algo)
        # fix up the two enclosing lengths (MessageImprint and TimeStampReq)
        delta = len(algo) - len(old_algo)
        body = bytearray(body)
        body[1] += delta
        body[body.index(b"\x30", 2) + 1] += delta
        assert _rejected(tsa.respond(bytes(body)))[0] == {"bad_data_format"}


def test_request_extensions_rejected(tsa: TimeStampAuthority) -> None:
    req = tsp.TimeStampReq.load(make_request(b"\x07" * 32))
    req["extensions"] = [{"extn_id": "1.2.3.4", "critical": False, "extn_value": b"\x05\x00"}]
    assert _rejected(tsa.respond(req.dump(force=True)))[0] == {"unaccepted_extensions"}


def test_unaccepted_policy(tsa: TimeStampAuthority, data_file: Path, tmp_path: Path) -> None:
    tsq, tsr = tmp_path / "req.tsq", tmp_path / "resp.tsr"
    openssl("-query", "-data", data_file, "-sha256", "-tspolicy", "1.2.3.4.5", "-out", tsq)
    tsr.write_bytes(tsa.respond(tsq.read_bytes()))
    text = openssl("-reply", "-in", tsr, "-text")
    assert "Status: Rejected." in text and "requested TSA policy is not supported" in text
    failures, texts = _rejected(tsr.read_bytes())
    assert failures == {"unaccepted_policy"} and "1.2.3.4.5" in texts[0]


def test_unsynchronised_clock(pki: PKIMaterial, data_file: Path, tmp_path: Path) -> None:
    authority = make_tsa(pki, clock_synchronised=False)
    tsq, tsr = tmp_path / "req.tsq", tmp_path / "resp.tsr"
    openssl("-query", "-data", data_file, "-sha256", "-cert", "-out", tsq)
    tsr.write_bytes(authority.respond(tsq.read_bytes()))
    text = openssl("-reply", "-in", tsr, "-text")
    assert "Status: Rejected." in text and "time source is not available" in text
    assert _rejected(tsr.read_bytes())[0] == {"time_not_available"}


def test_internal_failure_is_system_failure(
    pki: PKIMaterial, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenKey(SoftKey):
        def sign(self, data: bytes, hash_name: str = "sha256") -> bytes:
            raise RuntimeError("HSM unreachable")

    key = BrokenKey(pki.tsa_key, pki.tsa_cert, ())
    authority = TimeStampAuthority(
        key=key, policy=TSAPolicy(), serials=MemorySerialSource(), clock=lambda: NOW
    )
    with caplog.at_level(logging.ERROR, logger="kyso.certs.tsa"):
        der = authority.respond(make_request(b"\x08" * 32))
    assert _rejected(der)[0] == {"system_failure"}
    assert "HSM unreachable" in caplog.text

    # A naive clock, or a time outside the TSA certificate's validity, is a system failure too.
    naive = TimeStampAuthority(
        key=tsa_key(pki),
        policy=TSAPolicy(),
        serials=MemorySerialSource(),
        clock=lambda: NOW.replace(tzinfo=None),
    )
    assert _rejected(naive.respond(make_request(b"\x08" * 32)))[0] == {"system_failure"}
    late = TimeStampAuthority(
        key=tsa_key(pki),
        policy=TSAPolicy(),
        serials=MemorySerialSource(),
        clock=lambda: NOW + dt.timedelta(days=5000),
    )
    assert _rejected(late.respond(make_request(b"\x08" * 32)))[0] == {"system_failure"}


def test_failure_info_names_match_asn1crypto() -> None:
    for failure in FailureInfo:
        assert failure.value in tsp.PKIFailureInfo._map.values()


# ---------------------------------------------------------------------------------------------
# Construction checks


def test_rejects_certificate_without_timestamping_eku(pki: PKIMaterial) -> None:
    key = SoftKey(pki.ocsp_key, pki.ocsp_cert, (pki.issuing_cert,))
    with pytest.raises(TSAError):
        TimeStampAuthority(key=key, policy=TSAPolicy(), serials=MemorySerialSource())


def test_soft_key_matches_protocol(pki: PKIMaterial) -> None:
    assert isinstance(tsa_key(pki), TSASigningKey)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"policy_oid": "not an oid"},
        {"accepted_policies": frozenset({OTHER_POLICY})},
        {"hash_algorithms": frozenset({"sha1"})},
        {"hash_algorithms": frozenset()},
        {"accuracy": dt.timedelta(0)},
    ],
)
def test_policy_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TSAPolicy(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Serial numbers


def test_sqlite_serials_survive_restart(tmp_path: Path) -> None:
    db = tmp_path / "serials.db"
    first = SQLiteSerialSource(db, block_size=10)
    a = [first.next_serial() for _ in range(25)]
    assert a == list(range(1, 26))
    first.close()
    second = SQLiteSerialSource(db, block_size=10)  # "restart": the rest of block 3 is skipped
    b = [second.next_serial() for _ in range(5)]
    assert b == list(range(31, 36))
    # A second instance on the same file (another worker) gets its own blocks.
    third = SQLiteSerialSource(db, block_size=10)
    c = [third.next_serial() for _ in range(15)] + [second.next_serial() for _ in range(15)]
    assert len(set(a + b + c)) == len(a + b + c)
    assert min(c) > max(a)


def test_sqlite_serial_in_hand_tells_when_io_is_needed(tmp_path: Path) -> None:
    source = SQLiteSerialSource(tmp_path / "serials.sqlite3", block_size=3)
    assert not source.in_hand()  # nothing reserved yet: the next serial needs the database
    assert source.next_serial() == 1
    assert source.in_hand()
    source.next_serial()
    source.next_serial()
    assert not source.in_hand()  # block used up
    source.close()


def test_sqlite_serials_threads(tmp_path: Path) -> None:
    source = SQLiteSerialSource(tmp_path / "serials.db", block_size=7)
    results: list[list[int]] = [[] for _ in range(8)]

    def work(out: list[int]) -> None:
        for _ in range(200):
            out.append(source.next_serial())

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    everything = [s for out in results for s in out]
    assert len(set(everything)) == 1600
    for out in results:
        assert out == sorted(out)


_WORKER = """
import json, sys
from kyso.certs.tsa import SQLiteSerialSource
source = SQLiteSerialSource(sys.argv[1], block_size=5)
print(json.dumps([source.next_serial() for _ in range(int(sys.argv[2]))]))
"""


def test_sqlite_serials_across_processes(tmp_path: Path) -> None:
    db = str(tmp_path / "serials.db")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, db, "300"], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    local = SQLiteSerialSource(db, block_size=5)
    mine = [local.next_serial() for _ in range(300)]
    lists = [json.loads(p.communicate(timeout=60)[0]) for p in procs] + [mine]
    assert all(p.returncode == 0 for p in procs)
    everything = [s for lst in lists for s in lst]
    assert len(everything) == 1200 and len(set(everything)) == 1200
    for lst in lists:
        assert all(x < y for x, y in itertools.pairwise(lst))
    # After every process is gone, a restart starts past all of them.
    assert SQLiteSerialSource(db, block_size=5).next_serial() > max(everything)


def test_sqlite_serials_after_fork(tmp_path: Path) -> None:
    source = SQLiteSerialSource(tmp_path / "serials.db", block_size=100)
    parent_first = source.next_serial()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=lambda: queue.put([source.next_serial() for _ in range(3)]))
    proc.start()
    child = queue.get(timeout=30)
    proc.join(timeout=30)
    parent = [source.next_serial() for _ in range(3)]
    assert parent == [parent_first + 1, parent_first + 2, parent_first + 3]
    assert not set(child) & {parent_first, *parent}
    assert min(child) > parent_first + 99  # the child reserved its own block
