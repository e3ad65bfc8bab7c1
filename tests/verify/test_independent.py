"""kyso's integrity verdict against independent implementations: ``openssl cms -verify`` on
the CMS and the signed bytes, ``openssl ts -verify`` on the timestamp token, and poppler's
``pdfsig``.  A signature only we accept — or only we reject on integrity — is a bug."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives.serialization import Encoding

from kyso.api.services import Services
from kyso.certs import identity
from kyso.signer.sign import Level, SignOptions
from kyso.signer.verify import TOTAL_FAILED, TOTAL_PASSED, VerifyPolicy, verify
from tests.conftest import require_tool, run
from tests.verify.test_engine import make_pdf


def _byte_range(data: bytes) -> list[int]:
    match = re.findall(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]", data)
    return [int(v) for v in match[0]]


def _pieces(data: bytes, byte_range: list[int]) -> tuple[bytes, bytes]:
    start, length1, start2, length2 = byte_range
    signed = data[start : start + length1] + data[start2 : start2 + length2]
    contents = bytes.fromhex(data[start + length1 + 1 : start2 - 1].decode())
    der = cms.ContentInfo.load(contents).dump()  # drop the zero padding
    return signed, der


@pytest.fixture(scope="module")
def signed_file(dev_services: Services, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("independent")
    source = folder / "in.pdf"
    source.write_bytes(make_pdf())
    label = "independent-ec"
    if label not in {r.label for r in dev_services.pki.records()}:
        dev_services.pki.issue(
            kind="person",
            subject=identity.person_subject("Phạm Thị Dung", ids=["CCCD:001190000004"]),
            label=label,
            key_type="ec-p256",
        )
    target = folder / "signed.pdf"
    dev_services.document_signer(label).sign(source, target, SignOptions(level=Level.B_LT))
    return target


def _flip_inside_signed_range(data: bytes) -> bytes:
    """Change one byte of page content (inside the first covered range)."""
    index = data.index(b"(Trang 1)") + 1
    return data[:index] + b"X" + data[index + 1 :]


@pytest.mark.parametrize("tampered", [False, True])
def test_openssl_cms_agrees_on_integrity(
    dev_services: Services, signed_file: Path, tmp_path: Path, tampered: bool
) -> None:
    require_tool("openssl")
    data = signed_file.read_bytes()
    if tampered:
        data = _flip_inside_signed_range(data)
    path = tmp_path / "file.pdf"
    path.write_bytes(data)
    signed, der = _pieces(data, _byte_range(data))
    (tmp_path / "content.bin").write_bytes(signed)
    (tmp_path / "sig.der").write_bytes(der)
    (tmp_path / "root.pem").write_bytes(dev_services.pki.root_cert.public_bytes(Encoding.PEM))
    (tmp_path / "chain.pem").write_bytes(dev_services.pki.issuing_cert.public_bytes(Encoding.PEM))
    proc = run(
        "openssl", "cms", "-verify", "-binary", "-inform", "DER",
        "-in", tmp_path / "sig.der", "-content", tmp_path / "content.bin",
        "-CAfile", tmp_path / "root.pem", "-certfile", tmp_path / "chain.pem",
        "-purpose", "any", "-out", tmp_path / "out.bin",
        check=False,
    )  # fmt: skip
    openssl_ok = proc.returncode == 0 and "Verification successful" in proc.stderr
    report = verify(path, VerifyPolicy(trust_roots=(dev_services.pki.root_cert,), offline=True))
    sig = report.signatures[0]
    ours_ok = bool(sig.integrity.digest_ok and sig.integrity.signature_ok)
    assert ours_ok == openssl_ok == (not tampered), (proc.stderr, sig.to_dict("en"))
    if tampered:
        assert (report.indication, sig.sub_indication) == (TOTAL_FAILED, "HASH_FAILURE")
    else:
        assert report.indication == TOTAL_PASSED


def test_openssl_ts_agrees_on_the_signature_timestamp(
    dev_services: Services, signed_file: Path, tmp_path: Path
) -> None:
    require_tool("openssl")
    data = signed_file.read_bytes()
    _, der = _pieces(data, _byte_range(data))
    signer_info = cms.ContentInfo.load(der)["content"]["signer_infos"][0]
    token = next(
        a["values"][0]
        for a in signer_info["unsigned_attrs"]
        if a["type"].native == "signature_time_stamp_token"
    )
    (tmp_path / "token.der").write_bytes(token.dump())
    (tmp_path / "signature.bin").write_bytes(signer_info["signature"].native)
    chain = dev_services.pki.root_cert.public_bytes(Encoding.PEM)
    chain += dev_services.pki.issuing_cert.public_bytes(Encoding.PEM)
    (tmp_path / "chain.pem").write_bytes(chain)
    proc = run(
        "openssl", "ts", "-verify", "-token_in", "-in", tmp_path / "token.der",
        "-data", tmp_path / "signature.bin", "-CAfile", tmp_path / "chain.pem",
        check=False,
    )  # fmt: skip
    assert "Verification: OK" in proc.stdout, proc.stdout + proc.stderr
    report = verify(
        signed_file, VerifyPolicy(trust_roots=(dev_services.pki.root_cert,), offline=True)
    )
    stamp = report.signatures[0].timestamp
    assert stamp is not None and stamp.intact and stamp.trusted
    assert report.signatures[0].level == "B-LT"
