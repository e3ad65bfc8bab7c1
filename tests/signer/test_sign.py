"""PAdES signing at every level, checked by pyhanko and by poppler's pdfsig (NSS).

The signing keys come from the built-in PKI of a real `kyso serve` (tests/conftest.py), so the
certificates' OCSP and CRL URLs answer while pdfsig and pyhanko check them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from io import BytesIO
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter

from kyso.certs import builders, identity
from kyso.certs.keys import PKCS11KeyStore
from kyso.certs.tsa_client import FailoverTimeStamper
from kyso.signer.errors import BadInputError, CertificateRefusedError, TimestampUnavailableError
from kyso.signer.sign import DocumentSigner, Level, SignOptions
from tests.conftest import LiveServer, require_tool, run
from tests.signer.helpers import (
    A4,
    make_pdf,
    nss_db,
    signer_for,
    source,
    token,
)
from tests.signer.helpers import issue as _issue
from tests.signer.helpers import level_of as _level_of
from tests.signer.helpers import pdfsig as _pdfsig
from tests.signer.helpers import validate as _validate

__all__ = ["nss_db", "source", "token"]  # fixtures, imported for this module's tests


@pytest.mark.parametrize("level", list(Level))
@pytest.mark.parametrize("key_type", ["rsa-2048", "ec-p256"])
def test_every_level_is_accepted_by_pyhanko_pdfsig_and_qpdf(
    live_server: LiveServer,
    nss_db: Path,
    source: Path,
    tmp_path: Path,
    level: Level,
    key_type: str,
) -> None:
    label = f"sign-{key_type}-{level.lower()}"
    _issue(live_server, label, key_type)
    signer = signer_for(live_server, live_server.services.keys.resolve(label))
    target = tmp_path / "signed.pdf"
    before = source.read_bytes()
    result = signer.sign(source, target, SignOptions(level=level, reason="Ký ban hành"))
    assert result.level_reached is level and not result.warnings
    assert source.read_bytes() == before  # the input is never modified
    signed = target.read_bytes()
    assert signed.startswith(before)  # an incremental update of the original
    assert _level_of(signed) is level
    asyncio.run(_validate(live_server, signed))
    report = _pdfsig(nss_db, target)
    assert "Signature Validation: Signature is Valid." in report, report
    assert "Certificate Validation: Certificate is Trusted." in report, report
    assert "Digest Mismatch" not in report
    require_tool("qpdf")
    assert run("qpdf", "--check", target).returncode == 0


@pytest.mark.parametrize("level", [Level.B_T, Level.B_LTA])
def test_a_key_on_a_pkcs11_token_signs(
    live_server: LiveServer,
    nss_db: Path,
    source: Path,
    tmp_path: Path,
    token: PKCS11KeyStore,
    level: Level,
) -> None:
    label = f"hsm-{level.lower()}"
    _issue(live_server, label, "ec-p256", token=token)
    signer = signer_for(live_server, token.load(label))
    target = tmp_path / "signed.pdf"
    signer.sign(source, target, SignOptions(level=level))
    asyncio.run(_validate(live_server, target.read_bytes()))
    report = _pdfsig(nss_db, target)
    assert "Signature is Valid." in report and "Certificate is Trusted." in report, report


def test_person_then_agency_both_stay_valid(
    live_server: LiveServer, nss_db: Path, source: Path, tmp_path: Path
) -> None:
    _issue(live_server, "chain-person")
    live_server.services.pki.issue(
        kind="org",
        subject=identity.organisation_subject("UBND Quận Long Biên", ids=["MST:0101234567"]),
        label="chain-agency",
    )
    person, agency = (
        signer_for(live_server, live_server.services.keys.resolve(lbl))
        for lbl in ("chain-person", "chain-agency")
    )
    first, second = tmp_path / "person.pdf", tmp_path / "sealed.pdf"
    person.sign(source, first, SignOptions(level=Level.B_T))
    agency.sign(first, second, SignOptions(level=Level.B_LTA))
    statuses = asyncio.run(_validate(live_server, second.read_bytes()))
    assert len(statuses) == 3  # person, agency, document timestamp
    report = _pdfsig(nss_db, second)
    assert report.count("Signature is Valid.") == 2, report
    assert report.count("Certificate is Trusted.") == 2, report
    names = [
        f
        for f, _, _ in __import__("pyhanko.sign.fields", fromlist=["x"]).enumerate_sig_fields(
            PdfFileReader(BytesIO(second.read_bytes()))
        )
    ]
    assert names[:2] == ["Signature1", "Signature2"]


def test_extend_raises_a_b_b_file_to_lt_and_lta(
    live_server: LiveServer, nss_db: Path, source: Path, tmp_path: Path
) -> None:
    _issue(live_server, "extend-me")
    signer = signer_for(live_server, live_server.services.keys.resolve("extend-me"))
    bb, lt, lta = tmp_path / "bb.pdf", tmp_path / "lt.pdf", tmp_path / "lta.pdf"
    signer.sign(source, bb, SignOptions(level=Level.B_B))
    assert _level_of(bb.read_bytes()) is Level.B_B
    tsa_only = signer_for(live_server, None)
    tsa_only.extend(bb, lt, Level.B_LT)
    assert _level_of(lt.read_bytes()) is Level.B_LT
    tsa_only.extend(lt, lta, Level.B_LTA)
    assert _level_of(lta.read_bytes()) is Level.B_LTA
    asyncio.run(_validate(live_server, lta.read_bytes()))
    assert "Signature is Valid." in _pdfsig(nss_db, lta)
    stamped = tmp_path / "ts.pdf"
    tsa_only.timestamp(bb, stamped)
    reader = PdfFileReader(BytesIO(stamped.read_bytes()))
    assert [s.sig_object_type for s in reader.embedded_signatures] == ["/Sig", "/DocTimeStamp"]
    with pytest.raises(BadInputError):
        tsa_only.extend(source, tmp_path / "x.pdf", Level.B_LT)  # nothing signed
    assert not (tmp_path / "x.pdf").exists()


# -- refusals --------------------------------------------------------------------------------


def _no_output_left(directory: Path) -> None:
    assert not [p for p in directory.iterdir() if p.name != "in.pdf"], list(directory.iterdir())


def test_a_revoked_certificate_is_refused(
    live_server: LiveServer, source: Path, tmp_path: Path
) -> None:
    issued = _issue(live_server, "revoked-signer")
    live_server.services.pki.revoke(
        issued.certificate.serial_number, reason=x509.ReasonFlags.key_compromise
    )
    signer = signer_for(live_server, live_server.services.keys.resolve("revoked-signer"))
    for level in (Level.B_B, Level.B_LT):
        with pytest.raises(CertificateRefusedError) as caught:
            signer.sign(source, tmp_path / "out.pdf", SignOptions(level=level))
        assert caught.value.code == "signer.cert.revoked"
    assert not list(tmp_path.iterdir())


def test_expired_and_not_yet_valid_certificates_are_refused(
    live_server: LiveServer, source: Path, tmp_path: Path
) -> None:
    _issue(live_server, "time-bound", days=30)
    key = live_server.services.keys.resolve("time-bound")
    later = signer_for(
        live_server, key, clock=lambda: dt.datetime.now(dt.UTC) + dt.timedelta(days=31)
    )
    with pytest.raises(CertificateRefusedError) as caught:
        later.sign(source, tmp_path / "out.pdf", SignOptions(level=Level.B_B))
    assert caught.value.code == "signer.cert.expired"
    earlier = signer_for(
        live_server, key, clock=lambda: dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    )
    with pytest.raises(CertificateRefusedError) as caught:
        earlier.sign(source, tmp_path / "out.pdf", SignOptions(level=Level.B_B))
    assert caught.value.code == "signer.cert.not_yet_valid"
    assert not list(tmp_path.iterdir())


def test_a_certificate_without_signing_usage_or_trust_is_refused(
    live_server: LiveServer, source: Path, tmp_path: Path
) -> None:
    services = live_server.services
    pki = services.pki
    now = dt.datetime.now(dt.UTC)
    # an encipherment-only certificate from our issuing CA
    key = builders.new_private_key("rsa-2048")
    cert = (
        x509.CertificateBuilder()
        .subject_name(identity.person_subject("Lê Văn Cường", ids=["CCCD:001090000005"]))
        .issuer_name(pki.issuing_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.KeyUsage(False, False, True, False, False, False, False, False, False), True
        )
        .sign(
            services.file_keys.load("kyso-issuing-ca").private_key(), builders.signature_hash(key)
        )  # type: ignore[arg-type]
    )
    handle = services.file_keys.save(
        "no-signing-usage", key, cert, (pki.issuing_cert, pki.root_cert)
    )
    with pytest.raises(CertificateRefusedError) as caught:
        signer_for(live_server, handle).sign(
            source, tmp_path / "o.pdf", SignOptions(level=Level.B_B)
        )
    assert caught.value.code == "signer.cert.key_usage"
    # a certificate from a PKI nobody trusts (names of its own: a CA named like ours would
    # make the chain builder try our issuing CA, and the verdict would be "invalid")
    foreign_root_key = builders.new_private_key("ec-p256")
    foreign_root = builders.build_root_ca(
        foreign_root_key, builders.dev_name("Foreign Root CA", "Nowhere"), now=now
    )
    foreign_key = builders.new_private_key("ec-p256")
    foreign_issuing = builders.build_issuing_ca(
        foreign_key.public_key(),
        builders.dev_name("Foreign Issuing CA", "Nowhere"),
        issuer_cert=foreign_root,
        issuer_key=foreign_root_key,
        now=now,
    )
    fkey = builders.new_private_key("ec-p256")
    fcert = builders.build_signer_certificate(
        fkey.public_key(),
        identity.person_subject("Giả Mạo", ids=["CCCD:001090000006"]),
        issuer_cert=foreign_issuing,
        issuer_key=foreign_key,
        now=now,
    )
    fhandle = services.file_keys.save("foreign-signer", fkey, fcert, (foreign_issuing,))
    with pytest.raises(CertificateRefusedError) as caught:
        signer_for(live_server, fhandle).sign(
            source, tmp_path / "o.pdf", SignOptions(level=Level.B_B)
        )
    assert caught.value.code == "signer.cert.untrusted"
    assert not list(tmp_path.iterdir())


def test_no_tsa_is_a_failure_unless_b_b_is_asked_for(
    live_server: LiveServer, source: Path, tmp_path: Path
) -> None:
    _issue(live_server, "tsa-down")
    dead = FailoverTimeStamper(["http://127.0.0.1:9/tsa"], timeout=0.5, retries=0, backoff=0.01)
    signer = DocumentSigner(
        key=live_server.services.keys.resolve("tsa-down"),
        revocation=live_server.services.revocation_context(),
        timestamper=dead,
    )
    with pytest.raises(TimestampUnavailableError):
        signer.sign(source, tmp_path / "out.pdf", SignOptions(level=Level.B_T))
    assert not list(tmp_path.iterdir())
    result = signer.sign(
        source, tmp_path / "out.pdf", SignOptions(level=Level.B_T, fallback_to_b_b=True)
    )
    assert result.level_requested is Level.B_T and result.level_reached is Level.B_B
    assert result.warnings and "B-B" in result.warnings[0]
    assert _level_of((tmp_path / "out.pdf").read_bytes()) is Level.B_B


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "signer.input.not_pdf"),
        (b"hello, not a pdf", "signer.input.not_pdf"),
        (make_pdf()[:200], "signer.input.damaged"),
    ],
    ids=["empty", "text", "truncated"],
)
def test_bad_input_is_refused_and_nothing_is_written(
    live_server: LiveServer, tmp_path: Path, content: bytes, code: str
) -> None:
    _issue(live_server, f"bad-input-{code.rsplit('.', 1)[1]}-{len(content)}")
    signer = signer_for(
        live_server,
        live_server.services.keys.resolve(f"bad-input-{code.rsplit('.', 1)[1]}-{len(content)}"),
    )
    src = tmp_path / "in.pdf"
    src.write_bytes(content)
    with pytest.raises(BadInputError) as caught:
        signer.sign(src, tmp_path / "out.pdf", SignOptions(level=Level.B_B))
    assert caught.value.code == code
    assert src.read_bytes() == content
    _no_output_left(tmp_path)


def test_encrypted_missing_and_same_file_are_refused(
    live_server: LiveServer, source: Path, tmp_path: Path
) -> None:
    from pyhanko.pdf_utils.crypt import StandardSecurityHandler

    _issue(live_server, "misc-refusals")
    signer = signer_for(live_server, live_server.services.keys.resolve("misc-refusals"))
    writer = PdfFileWriter()
    writer.insert_page(
        PageObject(contents=writer.add_object(generic.StreamObject(stream_data=b"")), media_box=A4)
    )
    writer.security_handler = StandardSecurityHandler.build_from_pw("owner", "user")
    writer._assign_security_handler(writer.security_handler)
    encrypted = tmp_path / "in.pdf"
    out = BytesIO()
    writer.write(out)
    encrypted.write_bytes(out.getvalue())
    with pytest.raises(BadInputError) as caught:
        signer.sign(encrypted, tmp_path / "out.pdf", SignOptions(level=Level.B_B))
    assert caught.value.code == "signer.input.encrypted"
    with pytest.raises(BadInputError) as caught:
        signer.sign(tmp_path / "nope.pdf", tmp_path / "out.pdf", SignOptions(level=Level.B_B))
    assert caught.value.code == "signer.input.missing"
    copy = tmp_path / "in.pdf"
    with pytest.raises(BadInputError) as caught:
        signer.sign(copy, copy, SignOptions(level=Level.B_B))
    assert caught.value.code == "signer.output.is_input"
    with pytest.raises(BadInputError) as caught:
        signer.sign(source, tmp_path / "no-such-dir" / "out.pdf", SignOptions(level=Level.B_B))
    assert caught.value.code == "signer.output.no_dir"
    huge = tmp_path / "huge.pdf"
    with huge.open("wb") as f:  # a sparse 200 MB file: refused by its size, never read
        f.write(b"%PDF-1.7\n")
        f.truncate(200 * 1024 * 1024)
    with pytest.raises(BadInputError) as caught:
        signer.sign(huge, tmp_path / "out.pdf", SignOptions(level=Level.B_B))
    assert caught.value.code == "signer.input.too_large"
    huge.unlink()
    _no_output_left(tmp_path)


# -- the command line ------------------------------------------------------------------------


def _kyso(live_server: LiveServer, *args: object, env: dict[str, str] | None = None):
    from tests.conftest import kyso_cli

    return kyso_cli(
        live_server.services.settings.data_dir,
        *args,
        env={"KYSO_PUBLIC_URL": live_server.url, **(env or {})},
    )


def test_cli_sign_extend_timestamp_and_exit_codes(
    live_server: LiveServer, nss_db: Path, source: Path, tmp_path: Path
) -> None:
    from kyso.signer.appearance import demo_signature_png

    _issue(live_server, "cli-signer")
    image = tmp_path / "chu-ky.png"
    image.write_bytes(demo_signature_png("Nguyễn Văn An"))
    proc = _kyso(live_server, "keys", "image", "cli-signer", image)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "signed.pdf"
    proc = _kyso(live_server, "sign", source, out, "--key", "cli-signer", "--level", "B-LT")
    assert proc.returncode == 0, proc.stderr
    assert "at B-LT" in proc.stdout and "Nguyễn Văn An" in proc.stdout
    assert _level_of(out.read_bytes()) is Level.B_LT
    lta = tmp_path / "lta.pdf"
    proc = _kyso(live_server, "extend", out, lta, "--level", "B-LTA")
    assert proc.returncode == 0, proc.stderr
    assert _level_of(lta.read_bytes()) is Level.B_LTA
    stamped = tmp_path / "stamped.pdf"
    assert _kyso(live_server, "timestamp", source, stamped).returncode == 0
    assert "Signature is Valid." in _pdfsig(nss_db, out)

    # exit codes: 3 bad input, 4 certificate refused, 5 no TSA, 1 unknown key
    junk = tmp_path / "junk.pdf"
    junk.write_text("not a pdf")
    proc = _kyso(live_server, "sign", junk, tmp_path / "x.pdf", "--key", "cli-signer")
    assert proc.returncode == 3 and "is not a PDF" in proc.stderr
    issued = _issue(live_server, "cli-revoked")
    live_server.services.pki.revoke(
        issued.certificate.serial_number, reason=x509.ReasonFlags.superseded
    )
    proc = _kyso(
        live_server, "sign", source, tmp_path / "x.pdf", "--key", "cli-revoked", "--invisible"
    )
    assert proc.returncode == 4 and "revoked" in proc.stderr
    dead = {
        "KYSO_TSA_URLS": '["http://127.0.0.1:9/tsa"]',
        "KYSO_TSA_TIMEOUT": "0.5",
        "KYSO_TSA_RETRIES": "0",
    }
    proc = _kyso(live_server, "sign", source, tmp_path / "x.pdf", "--key", "cli-signer", env=dead)
    assert proc.returncode == 5 and "--fallback-b-b" in proc.stderr
    proc = _kyso(
        live_server,
        "sign",
        source,
        tmp_path / "x.pdf",
        "--key",
        "cli-signer",
        "--fallback-b-b",
        env=dead,
    )
    assert proc.returncode == 0 and "B-B" in proc.stdout + proc.stderr
    (tmp_path / "x.pdf").unlink()
    proc = _kyso(
        live_server, "sign", source, tmp_path / "x.pdf", "--key", "no-such-key", "--invisible"
    )
    assert proc.returncode == 1 and "no-such-key" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.pdf").exists()


def test_cli_batch_signs_every_file_with_one_key_and_reports_failures(
    live_server: LiveServer, source: Path, tmp_path: Path
) -> None:
    _issue(live_server, "batch-signer", "ec-p256")
    inputs = []
    for n in range(4):
        path = tmp_path / f"doc-{n}.pdf"
        path.write_bytes(make_pdf(n + 1))
        inputs.append(path)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7 broken")
    out_dir = tmp_path / "signed"
    out_dir.mkdir()
    proc = _kyso(
        live_server,
        "sign",
        "--out-dir",
        out_dir,
        "--key",
        "batch-signer",
        "--invisible",
        *inputs,
        broken,
    )
    assert proc.returncode == 3, proc.stderr  # the worst outcome of the batch
    assert "Signed 4 of 5 files" in proc.stdout
    assert "broken.pdf" in proc.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == [f"doc-{n}.pdf" for n in range(4)]
    for n in range(4):
        assert _level_of((out_dir / f"doc-{n}.pdf").read_bytes()) is Level.B_T


def test_cli_person_then_agency_seal_look_as_decree_30_says(
    live_server: LiveServer, nss_db: Path, source: Path, tmp_path: Path
) -> None:
    """The official's blue signature, then the agency's red seal over its left third: both
    signatures valid for pyhanko and pdfsig, and the seal really drawn where it should be."""
    services = live_server.services
    _issue(live_server, "cli-official")
    services.pki.issue(
        kind="org",
        subject=identity.organisation_subject("UBND Quận Long Biên", ids=["MST:0101234568"]),
        label="cli-agency",
    )
    from kyso.signer.appearance import demo_seal_png, demo_signature_png

    services.image_path("cli-official").parent.mkdir(parents=True, exist_ok=True)
    services.image_path("cli-official").write_bytes(demo_signature_png("Nguyễn Văn An"))
    services.image_path("cli-agency").write_bytes(demo_seal_png("UBND QUẬN LONG BIÊN"))
    person, numbered = tmp_path / "person.pdf", tmp_path / "numbered.pdf"
    sealed = tmp_path / "sealed.pdf"
    proc = _kyso(live_server, "sign", source, person, "--key", "cli-official")
    assert proc.returncode == 0, proc.stderr
    proc = _kyso(
        live_server,
        "register",
        person,
        numbered,
        "--number",
        "15",
        "--symbol",
        "QĐ-UBND",
        "--date",
        "2026-11-20",
        "--place",
        "Hà Nội",
    )
    assert proc.returncode == 0, proc.stderr
    assert "Số: 15/QĐ-UBND" in proc.stdout
    proc = _kyso(
        live_server, "register", person, tmp_path / "x.pdf", "--number", "15", "--symbol", "QĐ UBND"
    )
    assert proc.returncode != 0 and not (tmp_path / "x.pdf").exists()
    proc = _kyso(live_server, "sign", numbered, sealed, "--key", "cli-agency", "--level", "B-LTA")
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr  # numbered before the seal, as Decree 30 wants
    text = run("pdftotext", "-f", "1", "-l", "1", sealed, "-").stdout
    assert "Số: 15/QĐ-UBND" in text and "Hà Nội, ngày 20 tháng 11 năm 2026" in text
    statuses = asyncio.run(_validate(live_server, sealed.read_bytes()))
    from pyhanko.sign.diff_analysis import ModificationLevel

    person_status = statuses[0]
    assert person_status.modification_level == ModificationLevel.FORM_FILLING  # type: ignore[attr-defined]
    assert person_status.docmdp_ok  # type: ignore[attr-defined]
    report = _pdfsig(nss_db, sealed)
    assert report.count("Signature is Valid.") == 2 and report.count("Certificate is Trusted.") == 2
    # render the last page: blue signature pixels, red seal pixels overlapping on the left
    require_tool("pdftoppm")
    run("pdftoppm", "-r", "50", "-png", "-f", "2", "-l", "2", sealed, tmp_path / "page")
    from PIL import Image

    [png] = list(tmp_path.glob("page*.png"))
    img = Image.open(png).convert("RGB")
    blue = [
        (x, y)
        for x in range(img.width)
        for y in range(img.height)
        if (lambda p: p[2] > 120 and p[0] < 90 and p[1] < 140)(img.getpixel((x, y)))
    ]
    red = [
        (x, y)
        for x in range(img.width)
        for y in range(img.height)
        if (lambda p: p[0] > 150 and p[1] < 90 and p[2] < 90)(img.getpixel((x, y)))
    ]
    assert blue and red
    blue_left = min(x for x, _ in blue)
    blue_right = max(x for x, _ in blue)
    red_left = min(x for x, _ in red)
    red_right = max(x for x, _ in red)
    assert red_left < blue_left < red_right < blue_right  # the seal overlaps the left part


def test_cli_two_phase_signing_with_a_separate_key_holder(
    live_server: LiveServer, nss_db: Path, source: Path, tmp_path: Path
) -> None:
    """kyso prepare → a separate program holding the key signs → kyso complete."""
    import json
    import subprocess
    import sys

    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    issued = _issue(live_server, "usb-token-user", "ec-p256")
    key_pem = tmp_path / "token-key.pem"
    key = live_server.services.keys.resolve("usb-token-user").private_key()
    key_pem.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    cert_pem = tmp_path / "cert.pem"
    cert_pem.write_bytes(
        b"".join(c.public_bytes(Encoding.PEM) for c in (issued.certificate, *issued.chain))
    )
    proc = _kyso(live_server, "prepare", source, "--cert", cert_pem, "--level", "B-LT")
    assert proc.returncode == 0, proc.stderr
    prepared = json.loads(proc.stdout)
    client = Path(__file__).with_name("external_client.py")
    signed = subprocess.run(
        [
            sys.executable,
            str(client),
            "--key",
            str(key_pem),
            "--signed-attrs",
            prepared["signed_attributes"],
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    signature = tmp_path / "signature.bin"
    import base64

    signature.write_bytes(base64.b64decode(signed))
    out = tmp_path / "signed.pdf"
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00" * 64)
    proc = _kyso(
        live_server, "complete", prepared["handle"], out, "--cert", cert_pem, "--signature", bad
    )
    assert proc.returncode != 0 and not out.exists()
    proc = _kyso(
        live_server,
        "complete",
        prepared["handle"],
        out,
        "--cert",
        cert_pem,
        "--signature",
        signature,
    )
    assert proc.returncode == 0, proc.stderr
    assert _level_of(out.read_bytes()) is Level.B_LT
    report = _pdfsig(nss_db, out)
    assert "Signature is Valid." in report and "Certificate is Trusted." in report
