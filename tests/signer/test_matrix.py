"""The Decree 30 chain in every combination, checked by two independent verifiers.

Issue 3, §5: levels B-B/B-T/B-LT/B-LTA × visible/invisible × RSA/ECDSA × file key/SoftHSM2,
each as one flow: the competent person signs (with the empty number and date fields prepared
in the same revision) → the clerk fills number and date → the agency seals. The person-only
file and the final file must both be accepted by pyhanko trusting the live server's root and by
poppler's pdfsig with an NSS database holding that root (OCSP answered by the live server), and
the final file must pass ``qpdf --check``, show the change after the person's signature as
permitted form filling, and carry what its level promises: signature timestamps (B-T),
revocation data for both signers in the DSS, enough to validate offline (B-LT), a document
timestamp after each signature (B-LTA). pdfsig (poppler 22.12) cannot check document
timestamps; pyhanko checks those.

Keys are issued once per module (a person and an agency per key type and store); the built-in
TSA and revocation data are in-process, as in the service.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import ModificationLevel
from pyhanko.sign.validation import async_validate_pdf_signature, async_validate_pdf_timestamp
from pyhanko.sign.validation.dss import DocumentSecurityStore

from kyso.certs import identity
from kyso.certs.keys import FileKeyHandle, KeyHandle, PKCS11KeyHandle, PKCS11KeyStore
from kyso.signer.appearance import (
    PersonAppearance,
    SealAppearance,
    demo_seal_png,
    demo_signature_png,
)
from kyso.signer.register import fill_register_fields, read_register_fields
from kyso.signer.sign import DocumentSigner, Level, SignOptions
from tests.conftest import LiveServer, require_tool, run
from tests.signer.helpers import (
    dss_ocsp_serials,
    issue,
    nss_db,
    parse_pdfsig,
    root_of,
    signer_for,
    source,
    token,
    validate,
)

__all__ = ["nss_db", "source", "token"]  # fixtures, imported for this module's tests

KEY_TYPES = ("rsa-2048", "ec-p256")
STORES = ("file", "pkcs11")
ISSUED = dt.date(2026, 1, 5)
NUMBER_LINE = "Số: 07/QĐ-STP"
DATE_LINE = "Hà Nội, ngày 05 tháng 01 năm 2026"


@dataclass(frozen=True)
class Party:
    signer: DocumentSigner
    serial: int


@dataclass(frozen=True)
class Parties:
    person: Party
    agency: Party


@pytest.fixture(scope="module")
def parties(live_server: LiveServer, token: PKCS11KeyStore) -> dict[tuple[str, str], Parties]:
    """A person and an agency for every key type and store, each with one signer (built once,
    as a batch does)."""
    services = live_server.services
    found: dict[tuple[str, str], Parties] = {}
    for key_type in KEY_TYPES:
        for store in STORES:
            on_token: dict[str, Any] = {"token": token} if store == "pkcs11" else {}
            person_label = f"matrix-person-{store}-{key_type}"
            agency_label = f"matrix-agency-{store}-{key_type}"
            person = issue(live_server, person_label, key_type, **on_token)
            agency = services.pki.issue(
                kind="org",
                subject=identity.organisation_subject("Sở Tư pháp", ids=["MST:0101234560"]),
                label=agency_label,
                key_type=key_type,
                **on_token,
            )

            def key(label: str, store: str = store) -> KeyHandle:
                return token.load(label) if store == "pkcs11" else services.keys.resolve(label)

            person_key, agency_key = key(person_label), key(agency_label)
            expected = PKCS11KeyHandle if store == "pkcs11" else FileKeyHandle
            assert isinstance(person_key, expected) and isinstance(agency_key, expected)
            found[key_type, store] = Parties(
                person=Party(signer_for(live_server, person_key), person.certificate.serial_number),
                agency=Party(signer_for(live_server, agency_key), agency.certificate.serial_number),
            )
    return found


# -- what a file must show -------------------------------------------------------------------


def _has_signature_timestamp(embedded: Any) -> bool:
    unsigned = embedded.signer_info["unsigned_attrs"]
    return unsigned.native is not None and any(
        a["type"].native == "signature_time_stamp_token" for a in unsigned
    )


def check_level(data: bytes, level: Level, serials: list[int]) -> None:
    """The file carries exactly what ``level`` promises for the signatures of ``serials``
    (in signing order), and nothing of a higher level."""
    reader = PdfFileReader(BytesIO(data))
    kinds = [s.sig_object_type for s in reader.embedded_signatures]
    if level is Level.B_LTA:
        # a document timestamp after each signature (the person's B-LTA, then the agency's)
        assert kinds == ["/Sig", "/DocTimeStamp"] * len(serials), kinds
    else:
        assert kinds == ["/Sig"] * len(serials), kinds
    regular = [s for s in reader.embedded_signatures if s.sig_object_type == "/Sig"]
    signer_serials = [s.signer_cert.serial_number for s in regular]
    assert signer_serials == serials
    for embedded in regular:
        assert _has_signature_timestamp(embedded) is level.timestamped, embedded.field_name
    dss = reader.root.get("/DSS")
    if not level.long_term:
        assert dss is None
        return
    assert dss is not None
    assert set(serials) <= dss_ocsp_serials(data)


async def validate_offline(data: bytes, live_server: LiveServer) -> None:
    """B-LT and up: every signature and timestamp validates from the file's DSS alone, with
    revocation data required and nothing fetched."""
    reader = PdfFileReader(BytesIO(data))
    dss = DocumentSecurityStore.read_dss(reader)
    kwargs = {"trust_roots": [root_of(live_server)], "allow_fetching": False}
    for embedded in reader.embedded_signatures:
        context = dss.as_validation_context({**kwargs, "revocation_mode": "require"})
        if embedded.sig_object_type == "/DocTimeStamp":
            # the last document timestamp's own revocation data would need one more timestamp
            ts_status = await async_validate_pdf_timestamp(
                embedded,
                validation_context=dss.as_validation_context(
                    {**kwargs, "revocation_mode": "soft-fail"}
                ),
            )
            assert ts_status.intact and ts_status.valid and ts_status.trusted
            continue
        status = await async_validate_pdf_signature(
            embedded, signer_validation_context=context, ts_validation_context=context
        )
        assert status.bottom_line, status.pretty_print_details()
        assert status.timestamp_validity is not None and status.timestamp_validity.trusted


def check_pdfsig(report: str, data: bytes) -> None:
    """pdfsig lists every signature of ``data`` by field name; each regular signature must be
    valid with its certificate trusted.

    pdfsig (poppler 22.12) cannot check document timestamps ("Unimplemented Feature ... Unable
    to validate this type of signature", "Signature has not yet been verified."): for those
    only their presence is checked here; pyhanko validates them.
    """
    expected = {
        s.field_name: s.sig_object_type for s in PdfFileReader(BytesIO(data)).embedded_signatures
    }
    entries = {e.fields.get("Signature Field Name"): e for e in parse_pdfsig(report)}
    assert set(entries) == set(expected), report
    for name, kind in expected.items():
        entry = entries[name]
        if kind == "/Sig":
            assert entry.signature == "Signature is Valid.", report
            assert entry.certificate == "Certificate is Trusted.", report
        else:
            assert entry.signature == "Signature has not yet been verified.", report
    assert "Digest Mismatch" not in report, report


@pytest.fixture()
def start_pdfsig(nss_db: Path) -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    """Start pdfsig on a file in the background (it waits on OCSP round trips) and collect
    its report later with ``.communicate``; any still running at the end is stopped."""
    require_tool("pdfsig")
    started: list[subprocess.Popen[str]] = []

    def start(path: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["pdfsig", "-nssdir", f"sql:{nss_db}", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def widget_rects(data: bytes) -> dict[str, tuple[float, ...]]:
    """Rectangle of every signature field's widget, by field name."""
    reader = PdfFileReader(BytesIO(data))
    rects: dict[str, tuple[float, ...]] = {}
    for ref in reader.root["/AcroForm"]["/Fields"]:
        obj = ref.get_object()
        if obj.get("/FT") == "/Sig":
            rects[str(obj["/T"])] = tuple(float(v) for v in obj.get("/Rect", (0, 0, 0, 0)))
    return rects


# -- the matrix ------------------------------------------------------------------------------


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("key_type", KEY_TYPES)
@pytest.mark.parametrize("visible", [True, False], ids=["visible", "invisible"])
@pytest.mark.parametrize("level", list(Level), ids=[str(x) for x in Level])
def test_person_register_agency(
    live_server: LiveServer,
    source: Path,
    parties: dict[tuple[str, str], Parties],
    start_pdfsig: Callable[[Path], subprocess.Popen[str]],
    tmp_path: Path,
    level: Level,
    visible: bool,
    key_type: str,
    store: str,
) -> None:
    both = parties[key_type, store]
    original = source.read_bytes()
    person_pdf, numbered, sealed = (
        tmp_path / n for n in ("person.pdf", "numbered.pdf", "sealed.pdf")
    )

    # 1. the competent person signs, with the empty number and date fields
    result = both.person.signer.sign(
        source,
        person_pdf,
        SignOptions(
            level=level,
            reason="Ký ban hành",
            appearance=PersonAppearance(demo_signature_png("Nguyễn Văn An")) if visible else None,
            register_fields=True,
        ),
    )
    assert result.level_reached is level and not result.warnings
    assert source.read_bytes() == original  # the input is never modified
    person_bytes = person_pdf.read_bytes()
    assert person_bytes.startswith(original)  # an incremental update
    person_report = start_pdfsig(person_pdf)

    # 2. the clerk writes number and date; 3. the agency seals
    written = fill_register_fields(
        person_pdf, numbered, number=7, symbol="QĐ-STP", issued=ISSUED, place="Hà Nội"
    )
    assert written == (NUMBER_LINE, DATE_LINE)
    assert numbered.read_bytes().startswith(person_bytes)
    seal = SealAppearance(demo_seal_png("SỞ TƯ PHÁP")) if visible else None
    result = both.agency.signer.sign(numbered, sealed, SignOptions(level=level, appearance=seal))
    assert result.level_reached is level and not result.warnings
    final = sealed.read_bytes()
    assert final.startswith(numbered.read_bytes())
    final_report = start_pdfsig(sealed)

    # the person-only file
    statuses = asyncio.run(validate(live_server, person_bytes))
    assert len(statuses) == (2 if level is Level.B_LTA else 1)
    check_level(person_bytes, level, [both.person.serial])
    if level.long_term:
        asyncio.run(validate_offline(person_bytes, live_server))
    assert read_register_fields(person_pdf) == (None, None)

    # the final file: pyhanko
    statuses = asyncio.run(validate(live_server, final))
    embedded = PdfFileReader(BytesIO(final)).embedded_signatures
    kinds = [s.sig_object_type for s in embedded]
    regular = [s for s, kind in zip(statuses, kinds, strict=True) if kind == "/Sig"]
    person_field, agency_field = (s.field_name for s in embedded if s.sig_object_type == "/Sig")
    assert len(regular) == 2
    person_status, agency_status = regular
    assert person_status.modification_level is ModificationLevel.FORM_FILLING
    assert person_status.docmdp_ok
    assert agency_status.modification_level in (
        ModificationLevel.NONE,
        ModificationLevel.LTA_UPDATES,
    )
    check_level(final, level, [both.person.serial, both.agency.serial])
    if level.long_term:
        asyncio.run(validate_offline(final, live_server))
    assert read_register_fields(sealed) == (NUMBER_LINE, DATE_LINE)
    rects = widget_rects(final)
    person_rect, seal_rect = rects[person_field], rects[agency_field]
    if visible:
        # the seal over the left third of the signature image
        assert person_rect[2] > person_rect[0] and seal_rect[2] > seal_rect[0]
        third = person_rect[0] + (person_rect[2] - person_rect[0]) / 3
        assert seal_rect[0] < person_rect[0] and seal_rect[2] == pytest.approx(third, abs=0.1)
    else:
        assert person_rect == seal_rect == (0.0, 0.0, 0.0, 0.0)

    # poppler: both files, every signature valid and trusted; qpdf
    check_pdfsig(person_report.communicate(timeout=60)[0], person_bytes)
    check_pdfsig(final_report.communicate(timeout=60)[0], final)
    require_tool("qpdf")
    for path in (person_pdf, sealed):
        proc = run("qpdf", "--check", path, check=False)
        assert proc.returncode == 0 and "No syntax or stream encoding errors" in proc.stdout, (
            proc.stdout + proc.stderr
        )
