"""The trust-service endpoints of a real ``kyso serve``, checked with openssl and pyhanko."""

from __future__ import annotations

import base64
import urllib.parse
from pathlib import Path

import httpx
import pytest
from asn1crypto import core, tsp
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from kyso.certs import identity
from tests.api.conftest import LiveServer
from tests.conftest import require_tool, run


def _pem(path: Path, *certs: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certs))
    return path


@pytest.fixture(scope="module")
def chain_files(
    live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("chain")
    pki = live_server.services.pki
    return {
        "root": _pem(d / "root.pem", pki.root_cert),
        "issuing": _pem(d / "issuing.pem", pki.issuing_cert),
    }


def _person(live_server: LiveServer, label: str) -> x509.Certificate:
    return live_server.services.pki.issue(
        kind="person",
        subject=identity.person_subject("Trần Thị Bình", ids=["CCCD:001190000002"]),
        label=label,
    ).certificate


def test_healthz(live_server: LiveServer) -> None:
    body = httpx.get(f"{live_server.url}/healthz").json()
    assert body["status"] == "ok" and body["pki"] is True
    assert body["tsa"]["clock_synchronised"] is True
    pki = live_server.services.pki
    assert body["tsa"]["certificate"]["serial"] == format(pki.tsa_cert.serial_number, "X")
    assert body["ocsp"]["certificate"]["days_left"] >= 364
    assert body["ca"]["root"]["days_left"] > body["ca"]["issuing"]["days_left"] > 1000


@pytest.mark.parametrize("digest", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("with_nonce", [True, False])
def test_tsa_tokens_verify_with_openssl(
    live_server: LiveServer,
    chain_files: dict[str, Path],
    tmp_path: Path,
    digest: str,
    with_nonce: bool,
) -> None:
    require_tool("openssl")
    data = tmp_path / "document.pdf"
    data.write_bytes(b"%PDF-1.7 pretend document " * 100)
    query = tmp_path / "req.tsq"
    args = ["openssl", "ts", "-query", "-data", data, f"-{digest}", "-cert", "-out", query]
    if not with_nonce:
        args.insert(-2, "-no_nonce")
    run(*args)
    resp = httpx.post(
        f"{live_server.url}/tsa",
        content=query.read_bytes(),
        headers={"Content-Type": "application/timestamp-query"},
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/timestamp-reply"
    reply = tmp_path / "resp.tsr"
    reply.write_bytes(resp.content)
    proc = run(
        "openssl",
        "ts",
        "-verify",
        "-in",
        reply,
        "-queryfile",
        query,
        "-CAfile",
        chain_files["root"],
        "-untrusted",
        chain_files["issuing"],
    )
    assert "Verification: OK" in proc.stdout
    # and against the data itself, not only the query
    proc = run(
        "openssl",
        "ts",
        "-verify",
        "-in",
        reply,
        "-data",
        data,
        "-CAfile",
        chain_files["root"],
        "-untrusted",
        chain_files["issuing"],
    )
    assert "Verification: OK" in proc.stdout


def test_tsa_serials_increase_across_requests(live_server: LiveServer, tmp_path: Path) -> None:
    serials = []
    for i in range(5):
        req = tsp.TimeStampReq(
            {
                "version": 1,
                "message_imprint": {
                    "hash_algorithm": {"algorithm": "sha256"},
                    "hashed_message": bytes([i]) * 32,
                },
                "cert_req": False,
            }
        )
        resp = httpx.post(
            f"{live_server.url}/tsa",
            content=req.dump(),
            headers={"Content-Type": "application/timestamp-query"},
        )
        parsed = tsp.TimeStampResp.load(resp.content)
        assert parsed["status"]["status"].native == "granted"
        info = parsed["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed
        serials.append(info["serial_number"].native)
    assert serials == sorted(serials) and len(set(serials)) == 5


def test_tsa_rejections_are_proper_replies_not_errors(live_server: LiveServer) -> None:
    headers = {"Content-Type": "application/timestamp-query"}
    resp = httpx.post(f"{live_server.url}/tsa", content=b"\x30\x03garbage", headers=headers)
    assert resp.status_code == 200
    # asn1crypto's TimeStampResp wrongly makes the token mandatory: read the status alone
    status = tsp.PKIStatusInfo.load(core.Sequence.load(resp.content)[0].dump())
    assert status["status"].native == "rejection"
    assert "bad_data_format" in status["fail_info"].native


@pytest.mark.parametrize(
    ("content", "headers", "status", "slug"),
    [
        (b"x", {"Content-Type": "text/plain"}, 415, "unsupported-media-type"),
        (b"", {"Content-Type": "application/timestamp-query"}, 400, "empty-request"),
        (b"x" * 70_000, {"Content-Type": "application/timestamp-query"}, 413, "too-large"),
    ],
)
def test_tsa_http_errors_are_problem_json(
    live_server: LiveServer, content: bytes, headers: dict[str, str], status: int, slug: str
) -> None:
    resp = httpx.post(f"{live_server.url}/tsa", content=content, headers=headers)
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["type"].endswith(slug) and body["status"] == status and body["title"]


def test_unknown_paths_are_problem_json(live_server: LiveServer) -> None:
    for path in ("/nope", "/ca/evil.crt", "/crl/other.crl"):
        resp = httpx.get(live_server.url + path)
        assert resp.status_code == 404, path
        assert resp.headers["content-type"] == "application/problem+json"


def test_ocsp_with_openssl_as_the_http_client(
    live_server: LiveServer, chain_files: dict[str, Path], tmp_path: Path
) -> None:
    require_tool("openssl")
    good = _pem(tmp_path / "good.pem", _person(live_server, "ocsp-good"))
    bad_cert = _person(live_server, "ocsp-bad")
    bad = _pem(tmp_path / "bad.pem", bad_cert)
    live_server.services.pki.revoke(bad_cert.serial_number, reason=x509.ReasonFlags.key_compromise)
    base = [
        "openssl",
        "ocsp",
        "-url",
        f"{live_server.url}/ocsp",
        "-issuer",
        chain_files["issuing"],
        "-CAfile",
        chain_files["root"],
        "-resp_text",
    ]
    proc = run(*base, "-cert", good)
    assert "Response verify OK" in proc.stderr + proc.stdout
    assert f"{good}: good" in proc.stdout
    proc = run(*base, "-cert", bad)
    assert "Response verify OK" in proc.stderr + proc.stdout
    assert f"{bad}: revoked" in proc.stdout
    assert "Reason: keyCompromise" in proc.stdout
    assert "WARNING" not in proc.stderr  # nonce echoed


def test_ocsp_get_form(
    live_server: LiveServer, chain_files: dict[str, Path], tmp_path: Path
) -> None:
    leaf = _person(live_server, "ocsp-get")
    issuing = live_server.services.pki.issuing_cert
    from cryptography.hazmat.primitives import hashes

    req = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuing, hashes.SHA1()).build()
    encoded = urllib.parse.quote(base64.b64encode(req.public_bytes(Encoding.DER)).decode(), safe="")
    resp = httpx.get(f"{live_server.url}/ocsp/{encoded}")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/ocsp-response"
    parsed = ocsp.load_der_ocsp_response(resp.content)
    assert parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert parsed.serial_number == leaf.serial_number


def test_ocsp_garbage_gets_malformed_request(live_server: LiveServer) -> None:
    resp = httpx.post(
        f"{live_server.url}/ocsp",
        content=b"not der",
        headers={"Content-Type": "application/ocsp-request"},
    )
    assert resp.status_code == 200
    parsed = ocsp.load_der_ocsp_response(resp.content)
    assert parsed.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_crls_and_ca_certificates_download_and_verify(
    live_server: LiveServer, chain_files: dict[str, Path], tmp_path: Path
) -> None:
    pki = live_server.services.pki
    for name, cert in (
        ("root", pki.root_cert),
        ("issuing", pki.issuing_cert),
        ("tsa", pki.tsa_cert),
    ):
        resp = httpx.get(f"{live_server.url}/ca/{name}.crt")
        assert resp.headers["content-type"] == "application/pkix-cert"
        assert x509.load_der_x509_certificate(resp.content) == cert
    chain = httpx.get(f"{live_server.url}/ca/chain.pem").content
    assert x509.load_pem_x509_certificates(chain) == [pki.issuing_cert, pki.root_cert]
    for issuer, ca in (("issuing", chain_files["issuing"]), ("root", chain_files["root"])):
        resp = httpx.get(f"{live_server.url}/crl/{issuer}.crl")
        assert resp.headers["content-type"] == "application/pkix-crl"
        crl_file = tmp_path / f"{issuer}.crl"
        crl_file.write_bytes(resp.content)
        proc = run("openssl", "crl", "-inform", "DER", "-in", crl_file, "-CAfile", ca, "-noout")
        assert "verify OK" in proc.stdout + proc.stderr


async def test_revocation_is_fetched_by_pyhanko_certvalidator(live_server: LiveServer) -> None:
    """A relying party that follows the certificate's AIA and CRL DP reaches our responders:
    the same certificate validates, then fails as revoked once it is revoked."""
    from asn1crypto import x509 as asn1_x509
    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator.errors import RevokedError
    from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend

    def conv(c: x509.Certificate) -> asn1_x509.Certificate:
        return asn1_x509.Certificate.load(c.public_bytes(Encoding.DER))

    pki = live_server.services.pki
    leaf = _person(live_server, "certvalidator")

    async def validate() -> None:
        backend = AIOHttpFetcherBackend()
        try:
            ctx = ValidationContext(
                trust_roots=[conv(pki.root_cert)],
                other_certs=[conv(pki.issuing_cert)],
                allow_fetching=True,
                revocation_mode="require",
                fetcher_backend=backend,
            )
            await CertificateValidator(conv(leaf), validation_context=ctx).async_validate_usage(
                {"digital_signature", "non_repudiation"}
            )
        finally:
            await backend.close()

    await validate()
    pki.revoke(leaf.serial_number, reason=x509.ReasonFlags.superseded)
    with pytest.raises(RevokedError):
        await validate()


def test_server_log_reveals_no_secret(live_server: LiveServer) -> None:
    """Even after hostile and failing requests, the log holds no passphrase and no key."""
    from tests.conftest import PASSPHRASE

    for path, ctype in (
        ("/tsa", "application/timestamp-query"),
        ("/ocsp", "application/ocsp-request"),
    ):
        for body in (b"\x30\x82\xff\xff", b"\x00" * 50, b"\x30\x03\x02\x01\x05"):
            httpx.post(live_server.url + path, content=body, headers={"Content-Type": ctype})
        httpx.post(live_server.url + path, content=b"x", headers={"Content-Type": "text/plain"})
    httpx.get(f"{live_server.url}/ocsp/%%%")
    httpx.get(f"{live_server.url}/ca/../../keys/kyso-tsa.p12")
    log = live_server.log.read_bytes()
    assert PASSPHRASE.encode() not in log
    assert b"PRIVATE KEY" not in log
    assert b"Traceback" not in log  # bad input is never an unhandled error


def _tiny_pdf() -> bytes:
    from io import BytesIO

    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter

    writer = PdfFileWriter()
    content = writer.add_object(generic.StreamObject(stream_data=b"0 0 m 100 100 l S"))
    writer.insert_page(PageObject(contents=content, media_box=[0, 0, 200, 200]))
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


async def test_pyhanko_and_pdfsig_accept_our_tsa_ocsp_and_crl(
    live_server: LiveServer, chain_files: dict[str, Path], tmp_path: Path
) -> None:
    """A signer key of the built-in PKI, a timestamp from /tsa: pyhanko validates signature,
    timestamp and revocation (fetched from /ocsp and /crl), and poppler's pdfsig (NSS) says
    the signature is valid and the certificate trusted."""
    from io import BytesIO

    from asn1crypto import x509 as asn1_x509
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign import signers
    from pyhanko.sign.timestamps import HTTPTimeStamper
    from pyhanko.sign.validation import async_validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext
    from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend

    pki = live_server.services.pki
    _person(live_server, "pdf-signer")
    handle = live_server.services.keys.resolve("pdf-signer")
    out = await signers.async_sign_pdf(
        IncrementalPdfFileWriter(BytesIO(_tiny_pdf())),
        signers.PdfSignatureMetadata(field_name="Signature1", md_algorithm="sha256"),
        signer=handle.pyhanko_signer(),
        timestamper=HTTPTimeStamper(f"{live_server.url}/tsa"),
    )
    signed = out.getvalue()

    root = asn1_x509.Certificate.load(pki.root_cert.public_bytes(Encoding.DER))
    backend = AIOHttpFetcherBackend()
    try:
        context = ValidationContext(
            trust_roots=[root],
            allow_fetching=True,
            revocation_mode="require",
            fetcher_backend=backend,
        )
        (embedded,) = PdfFileReader(BytesIO(signed)).embedded_signatures
        status = await async_validate_pdf_signature(
            embedded, signer_validation_context=context, ts_validation_context=context
        )
    finally:
        await backend.close()
    assert status.intact and status.valid and status.trusted, status.pretty_print_details()
    assert status.bottom_line
    ts = status.timestamp_validity
    assert ts is not None and ts.intact and ts.valid and ts.trusted

    # poppler's pdfsig with an NSS database that trusts our root (it asks /ocsp itself)
    require_tool("pdfsig")
    db = tmp_path / "nss"
    db.mkdir()
    run("certutil", "-N", "-d", f"sql:{db}", "--empty-password")
    run(
        "certutil",
        "-A",
        "-d",
        f"sql:{db}",
        "-n",
        "kyso-root",
        "-t",
        "C,C,C",
        "-i",
        chain_files["root"],
    )
    pdf = tmp_path / "signed.pdf"
    pdf.write_bytes(signed)
    report = run("pdfsig", "-nssdir", f"sql:{db}", pdf, check=False)
    text = report.stdout + report.stderr
    assert "Signature Validation: Signature is Valid." in text, text
    assert "Certificate Validation: Certificate is Trusted." in text, text
    assert "Trần Thị Bình" in text
