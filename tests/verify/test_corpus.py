"""Each corpus file is what CORPUS.md says it is, checked without kyso's verifier.

Independent witnesses: poppler (pdfsig's integrity verdict, pdftotext, pdftoppm, pdfinfo), qpdf,
pyhanko's validator, and asn1crypto + cryptography for the CMS-level claims.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from io import BytesIO
from pathlib import Path

import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import async_validate_pdf_signature, async_validate_pdf_timestamp
from pyhanko_certvalidator import ValidationContext

from kyso.api.services import Services
from tests.conftest import require_tool, run
from tests.verify.corpus import (
    AMOUNT,
    CHANGE_KINDS,
    CORPUS_MD,
    EXPECTATIONS,
    FORGED_AMOUNT,
    HIDDEN_BY_ANNOT,
    PDFSIG_VERDICTS,
    PYHANKO_VERDICTS,
    SUB_INDICATIONS,
    UNKNOWN_DIGEST_OID,
    Case,
    SigSpan,
    base_path,
    case_names,
    corpus_markdown,
    pdfsig_integrity,
    pdfsig_report,
    pyhanko_verdicts,
    signature_spans,
)

NAMES = case_names()

#: case → the base it appends an incremental update to (the base is a byte prefix of it)
UPDATE_OF = {
    "clean_b_lt": "plain",
    "clean_b_lta": "plain",
    "permitted_form_fill": "person_bb",
    "permitted_fill_then_seal": "filled",
    "permitted_docmdp_p2_form_fill": "certified_p2",
    "permitted_docmdp_p3_annotation": "certified_p3",
    "permitted_ltv_extend": "person_bt",
    "permitted_struct_tree": "person_bb",
    "isa_page_content_appended": "person_bb",
    "isa_content_stream_overridden": "person_bb",
    "isa_page_added": "person_bb",
    "isa_page_removed": "person_bb",
    "isa_annotation_overlay": "person_bb",
    "isa_docmdp_p2_annotation": "certified_p2",
    "isa_docmdp_p1_form_fill": "certified_p1",
    "isa_catalog_javascript": "person_bb",
    "tail_data_after_eof": "person_bb",
    "spoof_reason_and_time": "person_bb",
    "wrap_moved_sigdict": "person_bb",
    "wrap_duplicated_keys": "person_bb",
    "shadow_hide_overlay_removed": "shadow_bb",
    "shadow_hide_xobject_overridden": "shadow_bb",
    "shadow_replace_font_overridden": "shadow_bb",
    "shadow_hide_replace_contents": "shadow_bb",
    "shadow_hide_replace_page_tree": "shadow_bb",
    "shadow_field_appearance_swap": "sealed",
    "shadow_fill_moves_field": "person_bb",
}

#: case → the base it was rewritten from in place (same length)
IN_PLACE_OF = {
    "tamper_signed_byte": "person_bb",
    "tamper_signature_value": "person_bb",
    "wrap_byterange_shifted": "person_bb",
    **{name: "person_bb" for name in NAMES if name.startswith("usf_")},
}

#: page 1 text (pdftotext) shows the forged amount where the base shows the real one
TEXT_FORGED = {
    "tamper_signed_byte",
    "isa_content_stream_overridden",
    "wrap_relocated_signed_part",
    "wrap_moved_sigdict",
    "wrap_duplicated_keys",
    "shadow_replace_font_overridden",
    "shadow_hide_replace_contents",
    "shadow_hide_replace_page_tree",
    *(name for name in NAMES if name.startswith("usf_")),
}

#: page 1 renders differently from the base (overlays, hidden content uncovered, swaps)
RENDER_CHANGED = {
    "isa_page_content_appended",
    "isa_annotation_overlay",
    "shadow_hide_overlay_removed",
    "shadow_hide_xobject_overridden",
    "shadow_replace_font_overridden",
    "shadow_field_appearance_swap",
    "shadow_fill_moves_field",
}

#: page 1 renders exactly like the base (the change is invisible)
RENDER_SAME = {"permitted_struct_tree", "spoof_reason_and_time", "tail_data_after_eof"}

PAGE_COUNT = {"isa_page_added": 3, "isa_page_removed": 1, "shadow_hide_replace_page_tree": 1}

# -- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def nss_db(corpus_services: Services, tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("certutil")
    db = tmp_path_factory.mktemp("corpus-nss")
    root = db / "root.pem"
    root.write_bytes(corpus_services.pki.root_cert.public_bytes(Encoding.PEM))
    run("certutil", "-N", "-d", f"sql:{db}", "--empty-password")
    run("certutil", "-A", "-d", f"sql:{db}", "-n", "kyso-root", "-t", "C,C,C", "-i", root)
    return db


def _case(corpus_by_name: dict[str, Case], name: str) -> Case:
    return corpus_by_name[name]


def _base(case: Case, name: str) -> bytes:
    return base_path(case, name).read_bytes()


def _text(path: Path, page: int = 1) -> str:
    require_tool("pdftotext")
    proc = run("pdftotext", "-f", str(page), "-l", str(page), "-layout", path, "-", check=False)
    return proc.stdout


def _render(path: Path, out: Path, page: int = 1) -> bytes:
    require_tool("pdftoppm")
    run("pdftoppm", "-r", "40", "-gray", "-singlefile", "-f", str(page), "-l", str(page), path, out)
    return out.with_suffix(".pgm").read_bytes()


def _pages(path: Path) -> int:
    require_tool("pdfinfo")
    found = re.search(r"^Pages:\s+(\d+)", run("pdfinfo", path).stdout, re.M)
    assert found is not None
    return int(found.group(1))


def _reader(data: bytes) -> PdfFileReader:
    return PdfFileReader(BytesIO(data), strict=False)


def _only_span(data: bytes) -> SigSpan:
    spans = signature_spans(data)
    assert len(spans) == 1, spans
    return spans[0]


def _signed_data(data: bytes) -> cms.SignedData:
    return cms.ContentInfo.load(_only_span(data).cms(data))["content"]


def _verify_rsa(cert: asn1_x509.Certificate, signature: bytes, data: bytes, algo: str) -> bool:
    key = x509.load_der_x509_certificate(cert.dump()).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    digest: hashes.HashAlgorithm = hashes.SHA1() if algo == "sha1" else hashes.SHA256()
    try:
        key.verify(signature, data, padding.PKCS1v15(), digest)
    except InvalidSignature:
        return False
    return True


def _signer_cert(signed_data: cms.SignedData, info: cms.SignerInfo) -> asn1_x509.Certificate:
    sid = info["sid"].chosen
    for choice in signed_data["certificates"]:
        cert = choice.chosen
        if cert.issuer == sid["issuer"] and cert.serial_number == sid["serial_number"].native:
            return cert
    raise AssertionError("signer certificate not embedded")


def _attr(info: cms.SignerInfo, name: str) -> object:
    for attr in info["signed_attrs"]:
        if attr["type"].native == name:
            return attr["values"][0].native
    raise KeyError(name)


def _signed_attrs_tbs(info: cms.SignerInfo, *, der: bool) -> bytes:
    """The bytes a signature over the signed attributes covers: as found in the file, or
    re-encoded to DER (on a copy: ``dump(force=True)`` rewrites the object it is called on),
    with the universal SET tag in place of [0]."""
    as_found = b"\x31" + info["signed_attrs"].dump()[1:]
    return cms.CMSAttributes.load(as_found).dump(force=True) if der else as_found


# -- the table itself ------------------------------------------------------------------------


def test_every_case_is_described_consistently(corpus: list[Case]) -> None:
    assert [c.name for c in corpus] == NAMES
    assert len(set(NAMES)) == len(NAMES)
    for case in corpus:
        assert re.fullmatch(r"[a-z0-9_]+", case.name), case.name
        assert case.path.is_file() and case.path.stat().st_size > 0, case.name
        assert case.expect in EXPECTATIONS, case.name
        assert case.sub_indications <= SUB_INDICATIONS, case.name
        assert case.change_kinds <= CHANGE_KINDS, case.name
        assert case.pdfsig_integrity in PDFSIG_VERDICTS, case.name
        assert len(case.how) > 40, case.name
        if case.expect == "pass":
            assert not case.sub_indications, case.name
    # the brief's catalogue is covered
    for prefix in ("clean_", "permitted_", "weak_", "isa_", "wrap_", "usf_", "cms_", "shadow_"):
        assert any(n.startswith(prefix) for n in NAMES), prefix
    passing = {c.name for c in corpus if c.expect == "pass"}
    assert passing == {n for n in NAMES if n.startswith(("clean_", "permitted_", "weak_"))}


def test_corpus_md_is_up_to_date() -> None:
    assert CORPUS_MD.read_text(encoding="utf-8") == corpus_markdown(), (
        "tests/verify/CORPUS.md is stale: run python -m tests.verify.corpus"
    )


def test_the_tables_here_name_real_cases() -> None:
    assert set(pyhanko_verdicts().values()) <= PYHANKO_VERDICTS
    for table in (UPDATE_OF, IN_PLACE_OF, PAGE_COUNT):
        assert set(table) <= set(NAMES), set(table) - set(NAMES)
    for group in (TEXT_FORGED, RENDER_CHANGED, RENDER_SAME):
        assert group <= set(NAMES), group - set(NAMES)


# -- what the independent tools say ----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_pdfsig_integrity_is_as_recorded(
    corpus_by_name: dict[str, Case], nss_db: Path, name: str
) -> None:
    require_tool("pdfsig")
    case = _case(corpus_by_name, name)
    report = pdfsig_report(case.path, nss_db)
    assert pdfsig_integrity(report) == case.pdfsig_integrity, report


def _pyhanko_verdict(data: bytes, root: asn1_x509.Certificate) -> str:
    async def validate() -> str:
        try:
            signatures = _reader(data).embedded_signatures
        except Exception:
            return "error"
        if not signatures:
            return "unseen"
        for sig in signatures:
            context = ValidationContext(
                trust_roots=[root], allow_fetching=False, revocation_mode="soft-fail"
            )
            try:
                if sig.sig_object_type == "/DocTimeStamp":
                    ts = await async_validate_pdf_timestamp(sig, validation_context=context)
                    ok = ts.intact and ts.valid and ts.trusted
                else:
                    status = await async_validate_pdf_signature(
                        sig, signer_validation_context=context
                    )
                    ok = status.bottom_line
            except Exception:
                return "error"
            if not ok:
                return "reject"
        return "pass"

    return asyncio.run(validate())


@pytest.mark.parametrize("name", NAMES)
def test_pyhanko_verdict_is_as_recorded(
    corpus_by_name: dict[str, Case], corpus_services: Services, name: str
) -> None:
    root = asn1_x509.Certificate.load(corpus_services.pki.root_cert.public_bytes(Encoding.DER))
    logging.disable(logging.WARNING)  # pyhanko logs every rejected diff with a traceback
    try:
        verdict = _pyhanko_verdict(_case(corpus_by_name, name).path.read_bytes(), root)
    finally:
        logging.disable(logging.NOTSET)
    assert verdict == pyhanko_verdicts()[name]


@pytest.mark.parametrize("name", NAMES)
def test_qpdf_reads_every_file(corpus_by_name: dict[str, Case], name: str) -> None:
    """Attacks are well-formed PDFs, not garbage a parser would reject outright."""
    require_tool("qpdf")
    proc = run("qpdf", "--check", _case(corpus_by_name, name).path, check=False)
    if name == "tamper_truncated":
        assert proc.returncode != 0
    elif name == "wrap_duplicated_keys":
        assert proc.returncode == 3  # warnings: qpdf takes the last of the duplicated keys
        assert "duplicated key /ByteRange" in proc.stdout + proc.stderr
    else:
        assert proc.returncode == 0, proc.stdout + proc.stderr


# -- how each file was derived ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(UPDATE_OF))
def test_updates_keep_the_base_byte_for_byte(corpus_by_name: dict[str, Case], name: str) -> None:
    case = _case(corpus_by_name, name)
    base = _base(case, UPDATE_OF[name])
    data = case.path.read_bytes()
    assert data.startswith(base) and len(data) > len(base)
    tail = data[len(base) :]
    if name == "tail_data_after_eof":
        assert b"startxref" not in tail and b"%%EOF" not in tail and b" 0 obj" in tail
    else:
        assert tail.rstrip().endswith(b"%%EOF") and b"startxref" in tail


@pytest.mark.parametrize("name", sorted(IN_PLACE_OF))
def test_in_place_rewrites_keep_every_offset(corpus_by_name: dict[str, Case], name: str) -> None:
    case = _case(corpus_by_name, name)
    base = _base(case, IN_PLACE_OF[name])
    data = case.path.read_bytes()
    assert len(data) == len(base) and data != base
    assert _last_startxref(data) == _last_startxref(base)


def _last_startxref(data: bytes) -> int:
    return int(re.findall(rb"startxref\s+(\d+)", data)[-1])


def test_clean_b_b_is_the_base_of_the_attacks(corpus_by_name: dict[str, Case]) -> None:
    case = _case(corpus_by_name, "clean_b_b")
    assert case.path.read_bytes() == _base(case, "person_bb")


# -- what the reader sees --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TEXT_FORGED))
def test_page_text_is_forged(corpus_by_name: dict[str, Case], name: str) -> None:
    case = _case(corpus_by_name, name)
    base = base_path(case, "shadow_bb" if name.startswith("shadow_") else "person_bb")
    before, after = _text(base), _text(case.path)
    assert AMOUNT.decode() in before and FORGED_AMOUNT.decode() not in before
    assert FORGED_AMOUNT.decode() in after, after


@pytest.mark.parametrize("name", sorted(RENDER_CHANGED | RENDER_SAME))
def test_rendering_changes_only_where_claimed(
    corpus_by_name: dict[str, Case], tmp_path: Path, name: str
) -> None:
    case = _case(corpus_by_name, name)
    base = base_path(case, UPDATE_OF.get(name, "person_bb"))
    before = _render(base, tmp_path / "before")
    after = _render(case.path, tmp_path / "after")
    assert (before != after) is (name in RENDER_CHANGED)


def test_hide_attacks_uncover_signed_text(corpus_by_name: dict[str, Case]) -> None:
    """The hidden lines are in the signed content stream all along (text extraction sees them
    in the base); only the covering overlay goes away."""
    case = _case(corpus_by_name, "shadow_hide_overlay_removed")
    assert HIDDEN_BY_ANNOT.decode() in _text(base_path(case, "shadow_bb"))
    reader = _reader(case.path.read_bytes())
    annots = reader.root["/Pages"]["/Kids"][0].get("/Annots", [])
    assert all(a.get_object()["/Subtype"] != "/Square" for a in annots)
    xobj = _reader(
        _case(corpus_by_name, "shadow_hide_xobject_overridden").path.read_bytes()
    ).get_object(generic.Reference(13, 0))
    assert xobj.data == b""


@pytest.mark.parametrize(("name", "pages"), sorted(PAGE_COUNT.items()))
def test_page_count(corpus_by_name: dict[str, Case], name: str, pages: int) -> None:
    case = _case(corpus_by_name, name)
    assert _pages(base_path(case, "person_bb")) == 2
    assert _pages(case.path) == pages


def test_spoofed_time_is_what_pdfsig_shows(corpus_by_name: dict[str, Case], nss_db: Path) -> None:
    case = _case(corpus_by_name, "spoof_reason_and_time")
    shown = re.findall(r"Signing Time: (.*)", pdfsig_report(case.path, nss_db))
    assert len(shown) == 1 and " 2019 " in shown[0], shown
    assert " 2019 " not in pdfsig_report(base_path(case, "person_bb"), nss_db)
    sig = _reader(case.path.read_bytes()).embedded_signatures[0].sig_object
    assert str(sig["/Reason"]) == "Đã thu hồi"
    assert str(sig["/M"]).startswith("D:2019")


# -- levels, DocMDP, register fields ---------------------------------------------------------


def test_clean_levels(corpus_by_name: dict[str, Case]) -> None:
    def facts(name: str) -> tuple[bool, bool, bool]:
        reader = _reader(_case(corpus_by_name, name).path.read_bytes())
        sigs = reader.embedded_signatures
        unsigned = sigs[0].signer_info["unsigned_attrs"]
        has_ts = unsigned.native is not None and any(
            a["type"].native == "signature_time_stamp_token" for a in unsigned
        )
        return (
            has_ts,
            "/DSS" in reader.root,
            any(s.sig_object_type == "/DocTimeStamp" for s in sigs),
        )

    assert facts("clean_b_b") == (False, False, False)
    assert facts("clean_b_t") == (True, False, False)
    assert facts("clean_b_lt") == (True, True, False)
    assert facts("clean_b_lta") == (True, True, True)
    assert facts("permitted_ltv_extend") == (True, True, True)


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("permitted_docmdp_p2_form_fill", 2),
        ("permitted_docmdp_p3_annotation", 3),
        ("isa_docmdp_p2_annotation", 2),
        ("isa_docmdp_p1_form_fill", 1),
    ],
)
def test_certification_level(corpus_by_name: dict[str, Case], name: str, level: int) -> None:
    reader = _reader(_case(corpus_by_name, name).path.read_bytes())
    sig = reader.root["/Perms"]["/DocMDP"]
    assert int(sig["/Reference"][0]["/TransformParams"]["/P"]) == level
    assert reader.embedded_signatures[0].docmdp_level.value == level


def test_form_fills_touch_the_prepared_fields(corpus_by_name: dict[str, Case]) -> None:
    def value(name: str, field: str) -> object:
        root = _reader(_case(corpus_by_name, name).path.read_bytes()).root
        for ref in root["/AcroForm"]["/Fields"]:
            obj = ref.get_object()
            if obj["/T"] == field:
                return obj.get("/V")
        raise KeyError(field)

    assert value("clean_b_b", "so_hieu") is None
    assert str(value("permitted_form_fill", "so_hieu")) == "Số: 15/QĐ-UBND"
    assert str(value("isa_docmdp_p1_form_fill", "so_hieu")) == "Số: 17/QĐ-UBND"
    # the swap leaves the sealed value alone and changes only the appearance
    swapped = _case(corpus_by_name, "shadow_field_appearance_swap")
    assert str(value("shadow_field_appearance_swap", "so_hieu")) == "Số: 15/QĐ-UBND"
    assert b"So: 99/QD-UBND" in swapped.path.read_bytes()[len(_base(swapped, "sealed")) :]
    moved = _reader(_case(corpus_by_name, "shadow_fill_moves_field").path.read_bytes())
    for ref in moved.root["/AcroForm"]["/Fields"]:
        if ref.get_object()["/T"] == "so_hieu":
            assert [float(v) for v in ref.get_object()["/Rect"]] == [66, 552, 400, 576]


# -- signature wrapping and forgery ----------------------------------------------------------


def test_relocated_signed_part(corpus_by_name: dict[str, Case]) -> None:
    case = _case(corpus_by_name, "wrap_relocated_signed_part")
    data = case.path.read_bytes()
    base = _base(case, "person_bb")
    signed = _only_span(base)
    sig = _reader(data).embedded_signatures[0]
    _, b, c, d = sig.byte_range
    # what is hashed is exactly what was signed, and the range ends at the end of the file…
    assert data[:b] + data[c : c + d] == signed.signed_bytes(base)
    assert c + d == len(data) and (b, d) == (signed.b, signed.d)
    # …but the parsed /ByteRange is not the one inside the signed bytes, and the gap it leaves
    # out holds far more than the /Contents hex string
    assert c != signed.c
    assert b"/ByteRange [0 %d %d %d]" % (signed.b, signed.c, signed.d) in data[c:]
    gap = data[b:c]
    assert not re.fullmatch(rb"<[0-9A-Fa-f]*>", gap) and b"xref" in gap


def test_moved_signature_dictionary(corpus_by_name: dict[str, Case]) -> None:
    case = _case(corpus_by_name, "wrap_moved_sigdict")
    data = case.path.read_bytes()
    base = _base(case, "person_bb")
    signed = _only_span(base)
    sig = _reader(data).embedded_signatures[0]
    assert list(sig.byte_range) == [0, signed.b, signed.c, signed.d]
    assert signed.signed_end == len(base) < len(data)
    # the dictionary the field points to is written after the signed bytes
    sig_ref = sig.sig_field.raw_get("/V")
    offset = sig.reader.xrefs[sig_ref.reference]
    assert isinstance(offset, int) and offset > signed.signed_end
    assert str(sig.sig_object["/Reason"]) == "Đã duyệt chi"


def test_duplicated_keys(corpus_by_name: dict[str, Case]) -> None:
    case = _case(corpus_by_name, "wrap_duplicated_keys")
    data = case.path.read_bytes()
    base = _base(case, "person_bb")
    original = _only_span(base)
    last_dict = data[data.rindex(b" 0 obj", 0, data.rindex(b"/ByteRange")) :]
    last_dict = last_dict[: last_dict.index(b"endobj")]
    ranges = re.findall(rb"/ByteRange \[0 (\d+) (\d+) (\d+)\]", last_dict)
    assert len(ranges) == 2 and last_dict.count(b"/Contents <") == 2
    first, second = ([int(v) for v in r] for r in ranges)
    assert first == [original.b, original.c, original.d]  # hashes to the signed value
    b, c, d = second
    assert c + d == len(data) and data[b : b + 1] == b"<"  # covers the whole new file
    assert data[:b] + data[c:] != original.signed_bytes(base)


def test_byterange_shifted(corpus_by_name: dict[str, Case]) -> None:
    case = _case(corpus_by_name, "wrap_byterange_shifted")
    data = case.path.read_bytes()
    span = _only_span(data)
    assert span.signed_end == len(data) - 7


@pytest.mark.parametrize(
    ("name", "contents", "byte_range"),
    [
        ("usf_contents_missing", "missing", "ok"),
        ("usf_contents_empty", "empty", "ok"),
        ("usf_contents_null", "null", "ok"),
        ("usf_contents_zero", "zero", "ok"),
        ("usf_byterange_missing", "ok", "missing"),
        ("usf_byterange_null", "ok", "null"),
        ("usf_byterange_short", "ok", "short"),
    ],
)
def test_universal_forgery_dictionaries(
    corpus_by_name: dict[str, Case], name: str, contents: str, byte_range: str
) -> None:
    case = _case(corpus_by_name, name)
    data = case.path.read_bytes()
    base = _base(case, "person_bb")
    reader = _reader(data)
    field = reader.root["/AcroForm"]["/Fields"]
    sig_field = next(f.get_object() for f in field if f.get_object()["/T"] == "Signature1")
    sig = sig_field["/V"]
    value = sig.get("/Contents")
    if contents == "missing":
        assert "/Contents" not in sig
    elif contents == "null":
        assert isinstance(value, generic.NullObject)
    elif contents == "zero":
        assert isinstance(value, bytes) and not value.strip(b"\0")
    elif contents == "ok":
        assert value == _only_span(base).cms(base)
    else:
        assert isinstance(value, generic.ByteStringObject | generic.TextStringObject)
        assert len(value) == 0
    br = sig.get("/ByteRange")
    if byte_range == "missing":
        assert "/ByteRange" not in sig
    elif byte_range == "null":
        assert isinstance(br, generic.NullObject)
    elif byte_range == "short":
        assert len(br) == 2
    else:
        assert len(br) == 4
    assert FORGED_AMOUNT in data and FORGED_AMOUNT not in base


def test_tampered_signature_value_no_longer_verifies(corpus_by_name: dict[str, Case]) -> None:
    case = _case(corpus_by_name, "tamper_signature_value")
    data = case.path.read_bytes()
    base = _base(case, "person_bb")
    assert _only_span(data).signed_bytes(data) == _only_span(base).signed_bytes(base)
    for source, verifies in ((base, True), (data, False)):
        sd = _signed_data(source)
        info = sd["signer_infos"][0]
        tbs = _signed_attrs_tbs(info, der=False)
        assert _verify_rsa(_signer_cert(sd, info), info["signature"].native, tbs, "sha256") is (
            verifies
        )


def test_truncated_and_tail(corpus_by_name: dict[str, Case]) -> None:
    truncated = _case(corpus_by_name, "tamper_truncated")
    base = _base(truncated, "person_bb")
    data = truncated.path.read_bytes()
    span = _only_span(base)
    assert base.startswith(data) and span.c < len(data) < span.signed_end
    tail = _case(corpus_by_name, "tail_data_after_eof").path.read_bytes()
    assert tail[len(base) :].startswith(b"6 0 obj") and FORGED_AMOUNT in tail[len(base) :]


# -- CMS-level cases -------------------------------------------------------------------------


def _cms_facts(case: Case) -> tuple[bytes, cms.SignedData, cms.SignerInfo]:
    data = case.path.read_bytes()
    span = _only_span(data)
    sd = _signed_data(data)
    return span.signed_bytes(data), sd, sd["signer_infos"][0]


def test_handmade_control_is_a_correct_pades_cms(corpus_by_name: dict[str, Case]) -> None:
    signed, sd, info = _cms_facts(_case(corpus_by_name, "clean_handmade_cms"))
    assert len(sd["signer_infos"]) == 1
    assert sd["encap_content_info"]["content"].native is None
    assert info["digest_algorithm"]["algorithm"].native == "sha256"
    assert _attr(info, "message_digest") == hashlib.sha256(signed).digest()
    assert _attr(info, "content_type") == "data"
    assert _attr(info, "signing_certificate_v2")
    assert _signed_attrs_tbs(info, der=False) == _signed_attrs_tbs(info, der=True)  # DER
    tbs = _signed_attrs_tbs(info, der=True)
    assert _verify_rsa(_signer_cert(sd, info), info["signature"].native, tbs, "sha256")


def test_two_signer_infos(corpus_by_name: dict[str, Case]) -> None:
    _, sd, _ = _cms_facts(_case(corpus_by_name, "cms_two_signer_infos"))
    infos = list(sd["signer_infos"])
    assert len(infos) == 2
    # a SET OF in DER order: the forger's SignerInfo happens to sort first
    names = [_signer_cert(sd, info).subject.native["common_name"] for info in infos]
    assert names == ["Kẻ Giả Mạo", "Nguyễn Văn An"]
    forger = _signer_cert(sd, infos[0])
    assert forger.self_signed == "maybe"
    for info in infos:
        cert = _signer_cert(sd, info)
        tbs = _signed_attrs_tbs(info, der=True)
        if info["signature_algorithm"].signature_algo == "rsassa_pkcs1v15":
            assert _verify_rsa(cert, info["signature"].native, tbs, "sha256")


def test_embedded_content(corpus_by_name: dict[str, Case]) -> None:
    signed, sd, info = _cms_facts(_case(corpus_by_name, "cms_embedded_content"))
    content = sd["encap_content_info"]["content"].native
    assert content and content != signed
    assert _attr(info, "message_digest") == hashlib.sha256(signed).digest()
    signed, sd, info = _cms_facts(_case(corpus_by_name, "cms_embedded_content_substituted"))
    content = sd["encap_content_info"]["content"].native
    assert _attr(info, "message_digest") == hashlib.sha256(content).digest()
    assert _attr(info, "message_digest") != hashlib.sha256(signed).digest()
    tbs = _signed_attrs_tbs(info, der=True)
    assert _verify_rsa(_signer_cert(sd, info), info["signature"].native, tbs, "sha256")


def test_unknown_digest_oid(corpus_by_name: dict[str, Case]) -> None:
    signed, sd, info = _cms_facts(_case(corpus_by_name, "cms_unknown_digest_oid"))
    assert info["digest_algorithm"]["algorithm"].dotted == UNKNOWN_DIGEST_OID
    assert sd["digest_algorithms"][0]["algorithm"].dotted == UNKNOWN_DIGEST_OID
    assert _attr(info, "message_digest") == hashlib.sha256(signed).digest()


@pytest.mark.parametrize(("name", "signed_form"), [("raw", False), ("der", True)])
def test_non_der_signed_attributes(
    corpus_by_name: dict[str, Case], name: str, signed_form: bool
) -> None:
    signed, sd, info = _cms_facts(_case(corpus_by_name, f"cms_signed_attrs_ber_{name}"))
    as_found, as_der = _signed_attrs_tbs(info, der=False), _signed_attrs_tbs(info, der=True)
    assert as_found != as_der and b"\x30\x81" in as_found[:6]
    cert, value = _signer_cert(sd, info), info["signature"].native
    assert _verify_rsa(cert, value, _signed_attrs_tbs(info, der=signed_form), "sha256")
    assert not _verify_rsa(cert, value, _signed_attrs_tbs(info, der=not signed_form), "sha256")
    assert _attr(info, "message_digest") == hashlib.sha256(signed).digest()


def test_weak_sha1_is_a_valid_adbe_pkcs7_sha1_signature(corpus_by_name: dict[str, Case]) -> None:
    case = _case(corpus_by_name, "weak_sha1_pkcs7")
    signed, sd, info = _cms_facts(case)
    data = case.path.read_bytes()
    assert b"/SubFilter /adbe.pkcs7.sha1" in data
    content = sd["encap_content_info"]["content"].native
    assert content == hashlib.sha1(signed).digest()
    assert info["digest_algorithm"]["algorithm"].native == "sha1"
    assert _attr(info, "message_digest") == hashlib.sha1(content).digest()
    tbs = _signed_attrs_tbs(info, der=True)
    assert _verify_rsa(_signer_cert(sd, info), info["signature"].native, tbs, "sha1")
