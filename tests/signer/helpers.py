"""Helpers shared by the signing tests: inputs, keys on the live server, and the two
independent verdicts every signed file must get (pyhanko trusting our root, poppler's pdfsig
with an NSS database holding it).

Fixtures defined here (``source``, ``nss_db``, ``token``) are imported by the test modules that
use them; each importing module gets its own module-scoped instance.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter
from pyhanko.sign.validation import async_validate_pdf_signature, async_validate_pdf_timestamp
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend

from kyso.certs import identity
from kyso.certs.keys import PKCS11KeyStore
from kyso.signer.sign import DocumentSigner, Level
from tests.conftest import LiveServer, require_tool, run

A4 = [0, 0, 595, 842]


def make_pdf(pages: int = 1) -> bytes:
    """A small unsigned PDF of ``pages`` A4 pages, each with one line drawn."""
    writer = PdfFileWriter()
    for n in range(pages):
        content = writer.add_object(
            generic.StreamObject(stream_data=f"0 0 m {100 + n} 100 l S".encode())
        )
        writer.insert_page(PageObject(contents=content, media_box=A4))
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


# -- fixtures (import them into the test module that uses them) -------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-page unsigned PDF."""
    path = tmp_path_factory.mktemp("in") / "cong-van.pdf"
    path.write_bytes(make_pdf(2))
    return path


@pytest.fixture(scope="module")
def nss_db(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An NSS database (for pdfsig) trusting the live server's root, and nothing else."""
    require_tool("certutil")
    db = tmp_path_factory.mktemp("nss")
    root = db / "root.pem"
    root.write_bytes(live_server.services.pki.root_cert.public_bytes(Encoding.PEM))
    run("certutil", "-N", "-d", f"sql:{db}", "--empty-password")
    run("certutil", "-A", "-d", f"sql:{db}", "-n", "kyso-root", "-t", "C,C,C", "-i", root)
    return db


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PKCS11KeyStore]:
    """A fresh SoftHSM2 token (one per module: see tests/softhsm.py for why)."""
    from tests.softhsm import init_token

    require_tool("softhsm2-util")
    info = init_token(tmp_path_factory.mktemp("hsm"))
    store = PKCS11KeyStore(info.module, info.label, user_pin=lambda: info.pin)
    yield store
    store.close()


# -- keys and signers ------------------------------------------------------------------------


def issue(live_server: LiveServer, label: str, key_type: str = "rsa-2048", **kw: object) -> Any:
    """A person's certificate (Nguyễn Văn An, Chủ tịch) from the live server's PKI."""
    return live_server.services.pki.issue(
        kind="person",
        subject=identity.person_subject(
            "Nguyễn Văn An", ids=["CCCD:001090000001"], title="Chủ tịch"
        ),
        label=label,
        key_type=key_type,
        **kw,  # type: ignore[arg-type]
    )


def signer_for(live_server: LiveServer, key: object, **kw: object) -> DocumentSigner:
    """A signer as the service builds one: the live PKI's revocation data and built-in TSA."""
    services = live_server.services
    return DocumentSigner(
        key=key,  # type: ignore[arg-type]
        revocation=services.revocation_context(),
        timestamper=services.timestamper(),
        **kw,  # type: ignore[arg-type]
    )


# -- the verdicts ----------------------------------------------------------------------------


def root_of(live_server: LiveServer) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(live_server.services.pki.root_cert.public_bytes(Encoding.DER))


async def validate(live_server: LiveServer, signed: bytes) -> list[Any]:
    """pyhanko's verdict on every signature and document timestamp, trusting our root and
    fetching revocation from the live server; every one must be intact, valid and trusted."""
    root = root_of(live_server)
    backend = AIOHttpFetcherBackend()
    statuses: list[Any] = []
    try:
        reader = PdfFileReader(BytesIO(signed))
        for embedded in reader.embedded_signatures:
            context = ValidationContext(
                trust_roots=[root], allow_fetching=True, fetcher_backend=backend
            )
            if embedded.sig_object_type == "/DocTimeStamp":
                status: Any = await async_validate_pdf_timestamp(
                    embedded, validation_context=context
                )
                assert status.intact and status.valid and status.trusted
            else:
                status = await async_validate_pdf_signature(
                    embedded, signer_validation_context=context, ts_validation_context=context
                )
                assert status.bottom_line, status.pretty_print_details()
            statuses.append(status)
    finally:
        await backend.close()
    return statuses


def pdfsig(nss_db: Path, path: Path) -> str:
    """pdfsig's whole report (it exits 0 even on a digest mismatch: read the text)."""
    require_tool("pdfsig")
    proc = run("pdfsig", "-nssdir", f"sql:{nss_db}", path, check=False)
    return proc.stdout + proc.stderr


@dataclass(frozen=True)
class PdfsigEntry:
    """One ``Signature #n`` block of pdfsig's report."""

    number: int
    fields: dict[str, str]

    @property
    def signature(self) -> str:
        return self.fields.get("Signature Validation", "")

    @property
    def certificate(self) -> str:
        return self.fields.get("Certificate Validation", "")

    @property
    def kind(self) -> str:
        return self.fields.get("Signature Type", "")


def parse_pdfsig(report: str) -> list[PdfsigEntry]:
    """The report as one entry per signature, keyed by the text before each ``:``."""
    entries: list[PdfsigEntry] = []
    current: dict[str, str] | None = None
    for line in report.splitlines():
        head = re.match(r"Signature #(\d+):", line)
        if head:
            current = {}
            entries.append(PdfsigEntry(int(head.group(1)), current))
            continue
        item = re.match(r"\s+- ([^:]+):\s*(.*)$", line)
        if item and current is not None:
            current[item.group(1).strip()] = item.group(2).strip()
    return entries


def level_of(signed: bytes) -> Level:
    """The level a file shows: signature timestamp, DSS with revocation data, doc timestamp."""
    reader = PdfFileReader(BytesIO(signed))
    sigs = reader.embedded_signatures
    regular = [s for s in sigs if s.sig_object_type == "/Sig"]
    doc_ts = [s for s in sigs if s.sig_object_type == "/DocTimeStamp"]
    unsigned = regular[0].signer_info["unsigned_attrs"]
    has_ts = unsigned.native is not None and any(
        a["type"].native == "signature_time_stamp_token" for a in unsigned
    )
    dss = reader.root.get("/DSS")
    dss = dss.get_object() if dss is not None else None
    has_revinfo = dss is not None and ("/OCSPs" in dss or "/CRLs" in dss)
    if doc_ts and has_revinfo:
        return Level.B_LTA
    if has_revinfo:
        return Level.B_LT
    return Level.B_T if has_ts else Level.B_B


def dss_ocsp_serials(signed: bytes) -> set[int]:
    """Serial numbers of the certificates the DSS's OCSP responses speak for."""
    reader = PdfFileReader(BytesIO(signed))
    dss = reader.root.get("/DSS")
    if dss is None:
        return set()
    serials: set[int] = set()
    for ref in dss.get_object().get("/OCSPs", ()):
        response = asn1_ocsp.OCSPResponse.load(ref.get_object().data)
        for single in response.basic_ocsp_response["tbs_response_data"]["responses"]:
            serials.add(single["cert_id"]["serial_number"].native)
    return serials
