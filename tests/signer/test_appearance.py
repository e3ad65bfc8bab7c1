"""Decree 30/2020 Appendix I appearances: real PDFs, real signatures, real rendering.

A two-page A4 document is written with pyHanko (Vietnamese text in the shipped serif font,
at known places), signed with pyHanko as the signing core will do, then rendered with poppler
(``pdftoppm``) and read back (``pdftotext``): blue pixels where the person's image goes, red
pixels of the seal over the left third of it, black text top right for the text stamp with
the signing time at +07:00.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from PIL import Image
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.font.opentype import GlyphAccumulatorFactory
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

from kyso.certs.builders import build_dev_pki, build_signer_certificate, new_private_key
from kyso.signer import fonts
from kyso.signer.appearance import (
    MM,
    PERSON_MAX_HEIGHT,
    PERSON_MAX_WIDTH,
    AppearanceError,
    PersonAppearance,
    Placement,
    SealAppearance,
    TextStampAppearance,
    VisibleSignature,
    demo_seal_png,
    demo_signature_png,
    find_text,
    prepare_visible_signature,
    vietnam_time,
)
from tests.conftest import require_tool, run

NOW = dt.datetime(2026, 3, 5, 3, 20, 30, tzinfo=dt.UTC)
A4 = (595.28, 841.89)
DPI = 100
SIGNER_NAME = "Nguyễn Văn An"
TITLE = "CHỦ TỊCH"
AGENCY = "ỦY BAN NHÂN DÂN TỈNH LẠNG SƠN"
# Where the test document prints things (page 2, the last): centred at x = COL_X.
COL_X = 420.0
TITLE_BASELINE = 300.0
NAME_BASELINE = 215.0
PLACEHOLDER = "{{chu_ky}}"
PLACEHOLDER_AT = (100.0, 400.0)  # baseline start, page 2


# --------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Signers:
    root: x509.Certificate
    person: signers.SimpleSigner
    agency: signers.SimpleSigner


def _simple_signer(pki, common_name: str, organisation: str) -> signers.SimpleSigner:
    key = new_private_key("ec-p256")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    cert = build_signer_certificate(
        key.public_key(),
        subject,
        issuer_cert=pki.issuing_cert,
        issuer_key=pki.issuing_key,
        now=NOW - dt.timedelta(days=1),
    )

    def der(c: x509.Certificate) -> asn1_x509.Certificate:
        return asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER))

    key_der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return signers.SimpleSigner(
        signing_cert=der(cert),
        signing_key=asn1_keys.PrivateKeyInfo.load(key_der),
        cert_registry=SimpleCertificateStore.from_certs(
            [der(pki.issuing_cert), der(pki.root_cert)]
        ),
    )


@pytest.fixture(scope="module")
def keys() -> Signers:
    pki = build_dev_pki(now=NOW - dt.timedelta(days=2), ca_key_type="ec-p256")
    return Signers(
        root=pki.root_cert,
        person=_simple_signer(pki, SIGNER_NAME, AGENCY),
        agency=_simple_signer(pki, AGENCY, AGENCY),
    )


def _text_ops(engine, text: str, x: float, y: float, size: int, shear: float = 0.0) -> bytes:
    shaped = engine.shape(text)
    return b"BT /F1 %d Tf 1 0 %g 1 %g %g Tm %s ET" % (size, shear, x, y, shaped.graphics_ops)


def layout_matrix(rotate: int, width: float, height: float, origin: tuple[float, float]) -> str:
    """``cm`` operands drawing a layout made upright in ``width`` × ``height`` points on a
    page shown ``rotate`` degrees clockwise, whose media box starts at ``origin``."""
    ox, oy = origin
    return {
        0: f"1 0 0 1 {ox:g} {oy:g}",
        90: f"0 1 -1 0 {ox + height:g} {oy:g}",
        180: f"-1 0 0 -1 {ox + width:g} {oy + height:g}",
        270: f"0 -1 1 0 {ox:g} {oy + width:g}",
    }[rotate]


def make_document(
    pages_text: list[list[tuple[Any, ...]]],
    *,
    rotate: int = 0,
    origin: tuple[float, float] = (0.0, 0.0),
) -> bytes:
    """An A4 PDF whose pages print ``(text, x, baseline y, size[, shear])`` in the shipped
    serif.  Coordinates are as the page is seen: with ``rotate`` the page carries ``/Rotate``
    and its content is drawn turned the other way, so that a viewer shows it upright; its
    media box starts at ``origin``."""
    writer = PdfFileWriter(stream_xrefs=False)
    font_path = str(fonts.serif_font_path())
    width, height = A4
    user = (width, height) if rotate in (0, 180) else (height, width)
    media = (origin[0], origin[1], origin[0] + user[0], origin[1] + user[1])
    for items in pages_text:
        ops = [f"q {layout_matrix(rotate, width, height, origin)} cm".encode()]
        engines = {}
        for text, x, y, size, *rest in items:
            engine = engines.get(size)
            if engine is None:
                engine = GlyphAccumulatorFactory(font_path, font_size=size).create_font_engine(
                    writer
                )
                engines[size] = engine
            # one font resource per size keeps the example simple
            shear = rest[0] if rest else 0.0
            ops.append(_text_ops(engine, text, x, y, size, shear).replace(b"/F1", b"/F%d" % size))
        ops.append(b"Q")
        resources = generic.DictionaryObject(
            {
                pdf_name("/Font"): generic.DictionaryObject(
                    {pdf_name(f"/F{size}"): e.as_resource() for size, e in engines.items()}
                )
            }
        )
        stream = writer.add_object(generic.StreamObject(stream_data=b"\n".join(ops)))
        page = PageObject(contents=stream, media_box=media, resources=resources)
        if rotate:
            page[pdf_name("/Rotate")] = generic.NumberObject(rotate)
        writer.insert_page(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def centred(text: str, cx: float, y: float, size: int) -> tuple[str, float, float, int]:
    return (text, cx - fonts.text_width(text, size) / 2, y, size)


def document_pages() -> list[list[tuple[Any, ...]]]:
    """What the test document prints, page by page, as a reader sees it."""
    page1 = [
        centred("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", 400, 772, 12),
        centred("Độc lập - Tự do - Hạnh phúc", 400, 756, 13),
        ("Số: 15/QĐ-UBND", 70, 752, 13),
        ("Về việc ban hành quy chế quản lý văn bản điện tử", 90, 650, 14),
    ]
    page2 = [
        ("Điều 2. Quyết định này có hiệu lực kể từ ngày ký.", 85, 600, 14),
        (PLACEHOLDER, *PLACEHOLDER_AT, 12),
        ("Nơi nhận:", 70, 320, 12),
        centred(TITLE, COL_X, TITLE_BASELINE, 14),
        centred(SIGNER_NAME, COL_X, NAME_BASELINE, 14),
    ]
    return [page1, page2]


@pytest.fixture(scope="module")
def document() -> bytes:
    return make_document(document_pages())


def sign(
    pdf: bytes, visible: VisibleSignature, signer: signers.SimpleSigner, **meta: object
) -> bytes:
    """Sign as the signing core does: PdfSigner with what prepare_visible_signature returned."""
    pdf_signer = signers.PdfSigner(
        signers.PdfSignatureMetadata(field_name=visible.field_name, **meta),  # type: ignore[arg-type]
        signer=signer,
        **visible.pdf_signer_kwargs(),
    )
    out = io.BytesIO()
    pdf_signer.sign_pdf(IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False), output=out)
    return out.getvalue()


@pytest.fixture(scope="module")
def person_signed(document: bytes, keys: Signers) -> tuple[bytes, VisibleSignature]:
    visible = prepare_visible_signature(
        document,
        PersonAppearance(demo_signature_png(SIGNER_NAME)),
        None,
        signer_name=SIGNER_NAME,
    )
    return sign(document, visible, keys.person), visible


@pytest.fixture(scope="module")
def seal_signed(
    person_signed: tuple[bytes, VisibleSignature], keys: Signers
) -> tuple[bytes, VisibleSignature]:
    pdf, _person = person_signed
    visible = prepare_visible_signature(pdf, SealAppearance(demo_seal_png(AGENCY)), None)
    return sign(pdf, visible, keys.agency), visible


# --------------------------------------------------------------------------- helpers


def render(pdf: bytes, page_index: int, tmp_path: Path) -> Image.Image:
    """The page rendered by poppler at :data:`DPI`."""
    require_tool("pdftoppm")
    src = tmp_path / "in.pdf"
    src.write_bytes(pdf)
    stem = tmp_path / f"page{page_index}"
    n = str(page_index + 1)
    run("pdftoppm", "-r", str(DPI), "-png", "-f", n, "-l", n, "-singlefile", src, stem)
    return Image.open(f"{stem}.png").convert("RGB")


def to_px(x: float, y: float, page_height: float = A4[1]) -> tuple[float, float]:
    return x * DPI / 72, (page_height - y) * DPI / 72


def pixels_where(
    img: Image.Image, test: Callable[[tuple[int, int, int]], bool]
) -> list[tuple[int, int]]:
    data = img.load()
    return [(x, y) for y in range(img.height) for x in range(img.width) if test(data[x, y])]


def is_blue(p: tuple[int, int, int]) -> bool:
    r, g, b = p
    return b > 120 and r < 110 and g < 130 and b - r > 60


def is_red(p: tuple[int, int, int]) -> bool:
    r, g, b = p
    return r > 150 and g < 110 and b < 110


def is_black(p: tuple[int, int, int]) -> bool:
    return max(p) < 90


def bbox_px(points: list[tuple[int, int]]) -> tuple[int, int, int, int]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def box_px(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """A PDF box as (left, top, right, bottom) pixels."""
    left, top = to_px(box[0], box[3])
    right, bottom = to_px(box[2], box[1])
    return left, top, right, bottom


def check_signatures(pdf: bytes, root: x509.Certificate, expected: int) -> None:
    """Every signature intact and valid, and no disallowed change after any of them."""
    context = ValidationContext(
        trust_roots=[asn1_x509.Certificate.load(root.public_bytes(serialization.Encoding.DER))],
        allow_fetching=False,
        revocation_mode="soft-fail",
    )
    reader = PdfFileReader(io.BytesIO(pdf))
    sigs = reader.embedded_signatures
    assert len(sigs) == expected
    for sig in sigs:
        status = validate_pdf_signature(sig, context)
        assert status.intact, sig.field_name
        assert status.valid, sig.field_name
        assert status.docmdp_ok is not False, sig.field_name
        assert status.coverage is not None
        assert status.modification_level is not None
        assert status.modification_level.name in ("NONE", "LTA_UPDATES", "FORM_FILLING"), (
            sig.field_name,
            status.modification_level,
        )


def qpdf_check(pdf: bytes, tmp_path: Path) -> None:
    require_tool("qpdf")
    path = tmp_path / "check.pdf"
    path.write_bytes(pdf)
    proc = run("qpdf", "--check", path, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No syntax or stream encoding errors" in proc.stdout


@dataclass(frozen=True)
class Word:
    text: str
    x0: float
    y0: float
    x1: float
    y1: float


def words(pdf: bytes, page_index: int, tmp_path: Path) -> list[list[Word]]:
    """Lines of words with their boxes (pixels at 72 dpi, top-left origin) from pdftotext."""
    require_tool("pdftotext")
    src = tmp_path / "words.pdf"
    src.write_bytes(pdf)
    n = str(page_index + 1)
    html = run("pdftotext", "-f", n, "-l", n, "-bbox-layout", src, "-").stdout
    lines = []
    for line in re.findall(r"<line[^>]*>(.*?)</line>", html, flags=re.S):
        found = re.findall(
            r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">(.*?)</word>',
            line,
        )
        lines.append(
            [Word(_unescape(t), float(a), float(b), float(c), float(d)) for a, b, c, d, t in found]
        )
    return lines


def _unescape(text: str) -> str:
    return (
        text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    )


def line_text(line: list[Word]) -> str:
    return " ".join(w.text for w in line)


# --------------------------------------------------------------------------- fonts


def test_the_font_has_every_vietnamese_letter() -> None:
    assert len(fonts.VIETNAMESE_LETTERS) == 2 * 67
    for bold in (False, True):
        assert fonts.missing_glyphs(fonts.VIETNAMESE_LETTERS, fonts.serif_font_path(bold)) == []
        assert fonts.missing_glyphs("Đđ Ơơ Ưư", fonts.shipped_font_path(bold)) == []
    assert fonts.missing_glyphs("An ★") == ["★"]


def test_the_font_is_rescaled_to_1000_units_and_cached_outside_the_package() -> None:
    from fontTools.ttLib import TTFont

    path = fonts.serif_font_path()
    assert path == fonts.serif_font_path()
    package = Path(fonts.__file__).resolve().parents[1]
    assert package not in path.resolve().parents
    with TTFont(str(path)) as rescaled, TTFont(str(fonts.shipped_font_path())) as shipped:
        assert shipped["head"].unitsPerEm == 2048
        assert rescaled["head"].unitsPerEm == 1000
        assert rescaled["name"].getDebugName(1) == fonts.FONT_FAMILY
        # Times New Roman metrics: "a" is 444/1000 em wide, "A" 722/1000
        cmap = rescaled.getBestCmap()
        assert rescaled["hmtx"][cmap[ord("a")]][0] == 444
        assert rescaled["hmtx"][cmap[ord("A")]][0] == 722
    assert fonts.text_width("A", 10) == pytest.approx(7.22)


def test_the_shipped_font_matches_its_readme() -> None:
    import hashlib

    folder = fonts.shipped_font_path().parent
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert (folder / "LICENSE").read_text(encoding="utf-8").count("SIL OPEN FONT LICENSE") == 1
    for bold in (False, True):
        path = fonts.shipped_font_path(bold)
        assert hashlib.sha256(path.read_bytes()).hexdigest() in readme, path.name


# --------------------------------------------------------------------------- text anchors


def test_find_text_locates_vietnamese_text_where_it_was_printed(document: bytes) -> None:
    found = find_text(document, SIGNER_NAME)
    assert found is not None
    page, box = found
    assert page == 1
    width = fonts.text_width(SIGNER_NAME, 14)
    assert box[0] == pytest.approx(COL_X - width / 2, abs=1.5)
    assert box[2] == pytest.approx(COL_X + width / 2, abs=1.5)
    assert box[1] < NAME_BASELINE < box[3]
    # case and spacing do not matter, diacritics do
    assert find_text(document, "nguyễn  văn AN") == found
    assert find_text(document, "Nguyen Van An") is None
    assert find_text(document, TITLE, page=0) is None
    assert find_text(document, "Số: 15/QĐ-UBND", page=0) is not None
    # a stream is read in place and its position given back
    stream = io.BytesIO(document)
    stream.seek(7)
    assert find_text(stream, PLACEHOLDER) is not None
    assert stream.tell() == 7


# --------------------------------------------------------------------------- the person


def test_person_signature_sits_between_title_and_name(
    person_signed: tuple[bytes, VisibleSignature], keys: Signers, tmp_path: Path
) -> None:
    pdf, visible = person_signed
    assert visible.kind == "person"
    assert visible.page_index == 1
    assert visible.new_field_spec is not None and visible.new_field_spec.on_page == 1
    assert visible.box is not None
    x0, y0, x1, y1 = visible.box
    # centred on the column, above the name's top, below the title's baseline
    assert (x0 + x1) / 2 == pytest.approx(COL_X, abs=1.0)
    assert y0 > NAME_BASELINE + 8
    assert y1 < TITLE_BASELINE
    assert x1 - x0 <= 160.5

    check_signatures(pdf, keys.root, 1)
    qpdf_check(pdf, tmp_path)

    img = render(pdf, 1, tmp_path)
    blue = pixels_where(img, is_blue)
    assert len(blue) > 300
    left, top, right, bottom = bbox_px(blue)
    bl, bt, br, bb = box_px(visible.box)
    assert bl - 2 <= left and right <= br + 2 and bt - 2 <= top and bottom <= bb + 2
    # the image fills its field (transparent margins were trimmed): it spans the box width
    assert right - left > 0.9 * (br - bl)
    # and the printed text is still there, untouched
    text = run_pdftotext(pdf, 1, tmp_path)
    assert TITLE in text and SIGNER_NAME in text


def run_pdftotext(pdf: bytes, page_index: int, tmp_path: Path) -> str:
    require_tool("pdftotext")
    src = tmp_path / "text.pdf"
    src.write_bytes(pdf)
    n = str(page_index + 1)
    return run("pdftotext", "-f", n, "-l", n, "-layout", src, "-").stdout


def test_person_without_a_printed_name_goes_bottom_right_of_the_last_page(
    document: bytes,
) -> None:
    visible = prepare_visible_signature(
        document, PersonAppearance(demo_signature_png("x")), None, signer_name="Trần Thị Bình"
    )
    assert visible.page_index == 1
    assert visible.box is not None
    x0, y0, x1, _y1 = visible.box
    assert (x0 + x1) / 2 > A4[0] / 2
    assert y0 == pytest.approx(50 * MM, abs=40)


def test_person_on_a_placeholder_and_in_an_explicit_box(document: bytes) -> None:
    png = demo_signature_png(SIGNER_NAME)
    over = prepare_visible_signature(
        document, PersonAppearance(png), Placement.near_text(PLACEHOLDER, mode="over")
    )
    assert over.page_index == 1 and over.box is not None
    cx, cy = (over.box[0] + over.box[2]) / 2, (over.box[1] + over.box[3]) / 2
    width = fonts.text_width(PLACEHOLDER, 12)
    assert cx == pytest.approx(PLACEHOLDER_AT[0] + width / 2, abs=1.5)
    assert cy == pytest.approx(PLACEHOLDER_AT[1] + 3, abs=4)

    boxed = prepare_visible_signature(
        document, PersonAppearance(png), Placement.at((300, 100, 500, 200), page=0)
    )
    assert boxed.page_index == 0 and boxed.box is not None
    bx0, by0, bx1, by1 = boxed.box
    assert 300 <= bx0 < bx1 <= 500 and 100 <= by0 < by1 <= 200
    assert bx1 - bx0 == pytest.approx(200, abs=0.1) or by1 - by0 == pytest.approx(100, abs=0.1)


def test_person_is_centred_in_a_tall_signature_block() -> None:
    doc = make_document([[centred(TITLE, 300, 500, 14), centred(SIGNER_NAME, 300, 300, 14)]])
    visible = prepare_visible_signature(
        doc,
        PersonAppearance(demo_signature_png(SIGNER_NAME)),
        Placement.near_text(SIGNER_NAME.upper()),
    )
    assert visible.box is not None
    x0, y0, x1, y1 = visible.box
    name_top, title_bottom = 300 + 14 * 0.9, 500 - 14 * 0.22
    assert (x0 + x1) / 2 == pytest.approx(300, abs=1)
    assert (y0 + y1) / 2 == pytest.approx((name_top + title_bottom) / 2, abs=4)
    assert y1 - y0 <= 70.01


# --------------------------------------------------------------------------- the seal


def test_seal_overlaps_the_left_third_of_the_signature_at_real_size(
    person_signed: tuple[bytes, VisibleSignature],
    seal_signed: tuple[bytes, VisibleSignature],
    keys: Signers,
    tmp_path: Path,
) -> None:
    _pdf, person = person_signed
    pdf, seal = seal_signed
    assert seal.kind == "seal" and seal.page_index == person.page_index == 1
    assert person.box is not None and seal.box is not None
    px0, py0, px1, py1 = person.box
    sx0, sy0, sx1, sy1 = seal.box
    diameter = 36 * MM
    assert sx1 - sx0 == pytest.approx(diameter, abs=0.05)
    assert sx1 == pytest.approx(px0 + (px1 - px0) / 3, abs=0.05)
    assert (sy0 + sy1) / 2 == pytest.approx((py0 + py1) / 2, abs=0.05)

    check_signatures(pdf, keys.root, 2)
    qpdf_check(pdf, tmp_path)

    img = render(pdf, 1, tmp_path)
    red = pixels_where(img, is_red)
    assert len(red) > 1000
    left, top, right, bottom = bbox_px(red)
    # real size: 36 mm at 100 dpi is 141.7 px
    assert right - left == pytest.approx(36 / 25.4 * DPI, abs=4)
    assert bottom - top == pytest.approx(36 / 25.4 * DPI, abs=4)
    sig_left, _t, sig_right, _b = box_px(person.box)
    third = sig_left + (sig_right - sig_left) / 3
    assert right == pytest.approx(third, abs=3)
    assert left < sig_left  # on the left of the signature
    # the signature still shows through and beside the seal
    blue = pixels_where(img, is_blue)
    assert any(x > right + 2 for x, _ in blue)
    assert any(sig_left <= x <= right for x, _ in blue)
    img.save(tmp_path / "seal-over-signature.png")


def test_a_seal_needs_a_signed_person_signature(document: bytes, keys: Signers) -> None:
    seal = SealAppearance(demo_seal_png(AGENCY))
    with pytest.raises(AppearanceError) as err:
        prepare_visible_signature(document, seal, None)
    assert err.value.code == "signer.appearance.no_person_signature"
    # an empty field is not a signature to sit on
    with_field = add_empty_field(document, "ChuKyLanhDao", 1, (350, 230, 490, 290))
    with pytest.raises(AppearanceError) as err:
        prepare_visible_signature(
            with_field, SealAppearance(demo_seal_png(AGENCY), person_field="ChuKyLanhDao"), None
        )
    assert err.value.code == "signer.appearance.person_field_not_signed"
    with pytest.raises(AppearanceError) as err:
        SealAppearance(demo_seal_png(AGENCY), diameter_mm=500)
    assert err.value.code == "signer.appearance.seal_diameter"


# --------------------------------------------------------------------------- the text stamp


def test_text_stamp_top_right_of_first_page_with_vietnam_time(
    document: bytes, keys: Signers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tzlocal

    # The server's zone must not matter: pretend it is New York.
    monkeypatch.setattr(tzlocal, "get_localzone", lambda: ZoneInfo("America/New_York"))
    lines = ["SAO Y", AGENCY]
    visible = prepare_visible_signature(document, TextStampAppearance(lines), None)
    assert visible.kind == "text" and visible.page_index == 0 and visible.box is not None
    x0, y0, x1, y1 = visible.box
    assert x1 == pytest.approx(A4[0] - 15 * MM, abs=0.5)
    assert y1 == pytest.approx(A4[1] - 5 * MM, abs=0.5)
    assert y0 > 772 + 10  # clear of the national motto printed below the top margin

    pdf = sign(document, visible, keys.agency)
    check_signatures(pdf, keys.root, 1)
    qpdf_check(pdf, tmp_path)
    reader = PdfFileReader(io.BytesIO(pdf))
    signing_time = reader.embedded_signatures[0].self_reported_timestamp
    assert signing_time is not None
    expected_time = signing_time.astimezone(dt.timezone(dt.timedelta(hours=7))).strftime(
        "%Y-%m-%dT%H:%M:%S+07:00"
    )

    # the text reads back exactly, diacritics and all, with the time last
    top_px, bottom_px = A4[1] - y1, A4[1] - y0  # pdftotext: points from the top
    stamp_lines = [
        ln
        for ln in words(pdf, 0, tmp_path)
        if ln and ln[0].x0 >= x0 - 1 and ln[0].y0 >= top_px - 1 and ln[-1].y1 <= bottom_px + 1
    ]
    texts = [line_text(ln) for ln in stamp_lines]
    assert texts == [*lines, expected_time]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+07:00", texts[-1])

    # glyph widths are sane: each line is as wide as the font's metrics say (the 2048-unit
    # trap would make them twice as wide and overflow the box)
    for ln, text in zip(stamp_lines, texts, strict=True):
        drawn = ln[-1].x1 - ln[0].x0
        assert drawn == pytest.approx(fonts.text_width(text, 10), rel=0.06), text
        assert ln[-1].x1 <= x1 + 0.5

    # black text top right, nothing else up there
    img = render(pdf, 0, tmp_path)
    black = pixels_where(img, is_black)
    bl, bt, br, bb = box_px(visible.box)
    in_stamp = [(x, y) for x, y in black if bl - 1 <= x <= br + 1 and bt - 1 <= y <= bb + 1]
    assert len(in_stamp) > 200
    left, top, right, _bottom = bbox_px(in_stamp)
    widest = max(fonts.text_width(t, 10) for t in texts) * DPI / 72
    assert right - left == pytest.approx(widest, rel=0.06)
    assert top < 40 and right > img.width * 0.8
    img.crop((int(bl) - 10, 0, img.width, int(bb) + 10)).save(tmp_path / "text-stamp.png")


def test_vietnam_time_is_iso_8601_at_plus_seven() -> None:
    assert vietnam_time("2020-03-05T03:20:30+0000") == "2020-03-05T10:20:30+07:00"
    assert vietnam_time("2020-03-04T22:20:30-0500") == "2020-03-05T10:20:30+07:00"
    moment = dt.datetime(2020, 3, 5, 10, 20, 30, 999, tzinfo=ZoneInfo("Asia/Ho_Chi_Minh"))
    assert vietnam_time(moment) == "2020-03-05T10:20:30+07:00"


def test_text_stamp_refuses_empty_or_unprintable_lines() -> None:
    with pytest.raises(AppearanceError) as err:
        TextStampAppearance(["  "])
    assert err.value.code == "signer.appearance.text_empty"
    with pytest.raises(AppearanceError) as err:
        TextStampAppearance(["SAO Y\nx"])
    assert err.value.code == "signer.appearance.text_bad_line"
    with pytest.raises(AppearanceError) as err:
        prepare_visible_signature(make_document([[]]), TextStampAppearance(["SAO Y ★"]), None)
    assert err.value.code == "signer.appearance.text_unsupported_chars"
    assert TextStampAppearance.copy("SAO Y", AGENCY).lines == ("SAO Y", AGENCY)
    assert TextStampAppearance.attachment("Số: 15/QĐ-UBND").lines == ("Số: 15/QĐ-UBND",)


# --------------------------------------------------------------------------- fields


def add_empty_field(pdf: bytes, name: str, page: int, box: tuple[int, int, int, int]) -> bytes:
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    fields.append_signature_field(
        writer, fields.SigFieldSpec(sig_field_name=name, on_page=page, box=box)
    )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_signing_an_existing_empty_field(document: bytes, keys: Signers, tmp_path: Path) -> None:
    pdf = add_empty_field(document, "ChuKyLanhDao", 1, (350, 230, 490, 290))
    visible = prepare_visible_signature(
        pdf, PersonAppearance(demo_signature_png(SIGNER_NAME)), Placement.in_field("ChuKyLanhDao")
    )
    assert visible.existing_field and visible.new_field_spec is None
    assert visible.field_name == "ChuKyLanhDao"
    assert visible.page_index == 1 and visible.box == (350, 230, 490, 290)
    # naming it as the field to sign, without a placement, does the same
    again = prepare_visible_signature(
        pdf, PersonAppearance(demo_signature_png(SIGNER_NAME)), None, field_name="ChuKyLanhDao"
    )
    assert again.existing_field and again.box == visible.box

    signed = sign(pdf, visible, keys.person)
    check_signatures(signed, keys.root, 1)
    blue = pixels_where(render(signed, 1, tmp_path), is_blue)
    left, top, right, bottom = bbox_px(blue)
    bl, bt, br, bb = box_px(visible.box)
    assert bl - 2 <= left and right <= br + 2 and bt - 2 <= top and bottom <= bb + 2

    with pytest.raises(AppearanceError) as err:
        prepare_visible_signature(
            signed, PersonAppearance(demo_signature_png("x")), Placement.in_field("ChuKyLanhDao")
        )
    assert err.value.code == "signer.appearance.field_already_signed"
    with pytest.raises(AppearanceError) as err:
        prepare_visible_signature(signed, None, None, field_name="ChuKyLanhDao")
    assert err.value.code == "signer.appearance.field_already_signed"
    # and the seal can now be placed from it
    seal = prepare_visible_signature(signed, SealAppearance(demo_seal_png(AGENCY)), None)
    assert seal.box is not None
    assert seal.box[2] == pytest.approx(350 + 140 / 3, abs=0.05)


def test_a_seal_over_an_invisible_person_signature_takes_the_signature_block(
    document: bytes, keys: Signers, tmp_path: Path
) -> None:
    """A USB token's two-phase signature carries no image: the seal goes where the image
    would have been (the right-hand signature block of the last page), not refused."""
    person = sign(document, prepare_visible_signature(document, None, None), keys.person)
    seal = prepare_visible_signature(person, SealAppearance(demo_seal_png(AGENCY)), None)
    assert seal.kind == "seal" and seal.box is not None
    assert seal.page_index == len(document_pages()) - 1  # the last page
    x0, y0, x1, y1 = seal.box
    assert x1 - x0 == pytest.approx(36 * MM, abs=0.05)
    # the usual block (centred at 72 % of the width, 50 mm up): the seal covers its left third
    block_left = 0.72 * A4[0] - PERSON_MAX_WIDTH / 2
    assert x1 == pytest.approx(block_left + PERSON_MAX_WIDTH / 3, abs=1)
    assert (y0 + y1) / 2 == pytest.approx(50 * MM + PERSON_MAX_HEIGHT / 2, abs=1)
    sealed = sign(person, seal, keys.agency)
    check_signatures(sealed, keys.root, 2)
    qpdf_check(sealed, tmp_path)


def test_invisible_signature(document: bytes, keys: Signers, tmp_path: Path) -> None:
    visible = prepare_visible_signature(document, None, None)
    assert visible.kind == "invisible" and visible.box is None and visible.stamp_style is None
    assert visible.new_field_spec is not None and visible.new_field_spec.box is None
    assert visible.field_name == "kyso_signature_1"
    pdf = sign(document, visible, keys.person)
    check_signatures(pdf, keys.root, 1)
    qpdf_check(pdf, tmp_path)
    # a second one gets a fresh name
    assert prepare_visible_signature(pdf, None, None).field_name == "kyso_signature_2"


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("placement", "code"),
    [
        (Placement.at((500, 800, 700, 900)), "signer.appearance.box_outside_page"),
        (Placement.at((10, 10, 100, 60), page=5), "signer.appearance.page_out_of_range"),
        (Placement.at((10, 10, 100, 60), page=-3), "signer.appearance.page_out_of_range"),
        (Placement.near_text("Lê Thị Hoa"), "signer.appearance.anchor_not_found_anywhere"),
        (Placement.near_text(TITLE, page=0), "signer.appearance.anchor_not_found"),
        (Placement.in_field("KhongCo"), "signer.appearance.field_not_found"),
    ],
)
def test_bad_placements_are_refused_with_a_translated_message(
    document: bytes, placement: Placement, code: str
) -> None:
    with pytest.raises(AppearanceError) as err:
        prepare_visible_signature(
            document, PersonAppearance(demo_signature_png(SIGNER_NAME)), placement
        )
    assert err.value.code == code
    vi, en = err.value.message("vi"), err.value.message("en")
    assert vi != en and code not in vi and code not in en
    assert "{" not in vi.replace(PLACEHOLDER, "") and "{" not in en.replace(PLACEHOLDER, "")


def test_malformed_placements_and_images() -> None:
    for make in (
        lambda: Placement(),
        lambda: Placement(box=(0, 0, 10, 10), anchor="x"),
        lambda: Placement(anchor="x", anchor_mode="under"),  # type: ignore[arg-type]
    ):
        with pytest.raises(AppearanceError) as err:
            make()
        assert err.value.code == "signer.appearance.placement_ambiguous"
    for box in [(0, 0, 10), (10, 10, 5, 50), (0, 0, float("nan"), 10), ("a", 0, 1, 2)]:
        with pytest.raises(AppearanceError) as err:
            Placement.at(box)  # type: ignore[arg-type]
        assert err.value.code == "signer.appearance.box_invalid"
    with pytest.raises(AppearanceError) as err:
        Placement.near_text("   ")
    assert err.value.code == "signer.appearance.anchor_empty"
    with pytest.raises(AppearanceError) as err:
        Placement.in_field("a.b")
    assert err.value.code == "signer.appearance.field_name_invalid"

    doc = make_document([[]])
    opaque = io.BytesIO()
    Image.new("RGB", (40, 20), (0, 0, 255)).save(opaque, format="PNG")
    jpeg = io.BytesIO()
    Image.new("RGB", (40, 20), (0, 0, 255)).save(jpeg, format="JPEG")
    cases = [
        (PersonAppearance(opaque.getvalue()), "signer.appearance.signature_image.not_transparent"),
        (PersonAppearance(jpeg.getvalue()), "signer.appearance.signature_image.invalid"),
        (PersonAppearance(b"\x89PNG\r\n\x1a\nbroken"), "signer.appearance.signature_image.invalid"),
    ]
    for appearance, code in cases:
        with pytest.raises(AppearanceError) as err:
            prepare_visible_signature(doc, appearance, None)
        assert err.value.code == code
    with pytest.raises(AppearanceError) as err:
        prepare_visible_signature(doc, None, Placement.at((10, 10, 100, 60)))
    assert err.value.code == "signer.appearance.placement_without_appearance"
    with pytest.raises(AppearanceError) as err:
        prepare_visible_signature(b"not a pdf", None, None)
    assert err.value.code == "signer.appearance.pdf_unreadable"


# --------------------------------------------------------------------------- demo images


def test_demo_images_are_transparent_blue_and_red() -> None:
    sig = Image.open(io.BytesIO(demo_signature_png(SIGNER_NAME)))
    seal = Image.open(io.BytesIO(demo_seal_png(AGENCY)))
    assert sig.format == seal.format == "PNG"
    assert sig.mode == seal.mode == "RGBA"
    for img, colour in ((sig, is_blue), (seal, is_red)):
        alpha = img.getchannel("A")
        assert alpha.getextrema() == (0, 255)
        ink = [p[:3] for p in img.convert("RGBA").get_flattened_data() if p[3] > 200]
        assert ink and sum(map(colour, ink)) / len(ink) > 0.95
    assert seal.width == seal.height
    assert demo_signature_png(SIGNER_NAME) == demo_signature_png(SIGNER_NAME)
    assert demo_signature_png("Trần Thị Bình") != demo_signature_png(SIGNER_NAME)


def test_pdftoppm_is_available() -> None:
    """The rendering checks above need poppler; say so plainly when it is missing."""
    require_tool("pdftoppm")
    assert subprocess.run(["pdftoppm", "-v"], capture_output=True).returncode == 0


# --------------------------------------------------------------------------- rotated pages


def user_box(
    rotate: int, origin: tuple[float, float], box: tuple[float, float, float, float]
) -> tuple[float, float, float, float]:
    """A box as seen on the page (visual points) in the user space of a page made by
    :func:`make_document` with ``rotate`` and ``origin``: through the same ``cm`` the page
    content is drawn with."""
    a, b, c, d, e, f = (float(v) for v in layout_matrix(rotate, *A4, origin).split())
    xs, ys = [], []
    for x, y in ((box[0], box[1]), (box[2], box[3])):
        xs.append(a * x + c * y + e)
        ys.append(b * x + d * y + f)
    return (min(xs), min(ys), max(xs), max(ys))


# Where the checks below put things, as seen (visual points, page 1)
AT_BOX = (60.0, 300.0, 260.0, 380.0)
FIELD_BOX = (330.0, 300.0, 500.0, 370.0)


def _signed_on_every_kind_of_placement(
    rotate: int, origin: tuple[float, float], keys: Signers
) -> bytes:
    """The test document on pages shown at ``rotate``, signed six ways: a text stamp (default
    top right, page 1), a person in a given box and one in an empty field (page 1), a person
    over the placeholder text and one above the printed name, then the seal (page 2)."""
    pdf = make_document(document_pages(), rotate=rotate, origin=origin)
    field_box = tuple(round(v, 3) for v in user_box(rotate, origin, FIELD_BOX))
    pdf = add_empty_field(pdf, "ChuKyLanhDao", 0, field_box)  # type: ignore[arg-type]
    png = demo_signature_png(SIGNER_NAME)
    steps: list[tuple[Any, Any, Any]] = [
        (TextStampAppearance(["SAO Y", AGENCY]), None, keys.agency),
        (
            PersonAppearance(png),
            Placement.at(user_box(rotate, origin, AT_BOX), page=0),
            keys.person,
        ),
        (PersonAppearance(png), Placement.in_field("ChuKyLanhDao"), keys.person),
        (PersonAppearance(png), Placement.near_text(PLACEHOLDER, mode="over"), keys.person),
        (PersonAppearance(png), None, keys.person),  # above the printed name
        (SealAppearance(demo_seal_png(AGENCY)), None, keys.agency),
    ]
    for appearance, placement, signer in steps:
        visible = prepare_visible_signature(pdf, appearance, placement, signer_name=SIGNER_NAME)
        pdf = sign(pdf, visible, signer)
    return pdf


@pytest.fixture(scope="module")
def upright_reference(
    keys: Signers, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Image.Image, Image.Image]:
    """The two pages rendered when nothing is rotated and the media box starts at 0."""
    pdf = _signed_on_every_kind_of_placement(0, (0.0, 0.0), keys)
    folder = tmp_path_factory.mktemp("upright")
    return render(pdf, 0, folder), render(pdf, 1, folder)


def ink(img: Image.Image, colour: str, region: tuple[int, int, int, int] | None = None) -> Any:
    """Mask (mode L, 255 = ink) of the ``colour`` pixels ("blue", "red", "black") of ``img``,
    the thresholds of :func:`is_blue`, :func:`is_red`, :func:`is_black`, inside ``region``
    (pixels: left, top, right, bottom) when given."""
    from PIL import ImageChops

    r, g, b = img.split()

    def below(channel: Image.Image, limit: int) -> Image.Image:
        return channel.point(lambda v: 255 if v < limit else 0)

    def above(channel: Image.Image, limit: int) -> Image.Image:
        return channel.point(lambda v: 255 if v > limit else 0)

    if colour == "blue":
        parts = [above(b, 120), below(r, 110), below(g, 130), above(ImageChops.subtract(b, r), 60)]
    elif colour == "red":
        parts = [above(r, 150), below(g, 110), below(b, 110)]
    else:
        parts = [below(r, 90), below(g, 90), below(b, 90)]
    mask = parts[0]
    for part in parts[1:]:
        mask = ImageChops.multiply(mask, part)
    if region is not None:
        keep = Image.new("L", img.size, 0)
        keep.paste(255, region)
        mask = ImageChops.multiply(mask, keep)
    return mask


def _count(mask: Image.Image) -> int:
    return int(mask.histogram()[255])


def _near(a: Image.Image, b: Image.Image) -> float:
    """Share of the ink of ``a`` with ink of ``b`` at most one pixel away."""
    from PIL import ImageChops, ImageFilter

    total = _count(a)
    close = _count(ImageChops.multiply(a, b.filter(ImageFilter.MaxFilter(3))))
    return close / total if total else 0.0


def assert_same_ink(got: Image.Image, want: Image.Image, what: str) -> None:
    """The same drawing at the same place and the same way up, give or take a pixel."""
    assert _count(want) > 200, what
    assert _count(got) == pytest.approx(_count(want), rel=0.25), what
    got_box, want_box = got.getbbox(), want.getbbox()
    assert got_box is not None and want_box is not None, what
    assert got_box == pytest.approx(want_box, abs=2), (what, got_box, want_box)
    match = min(_near(got, want), _near(want, got))
    assert match > 0.9, (what, match)
    # the same drawing half a turn about its own box matches clearly worse: the check can
    # tell upside down from upright (even for a seal, by its star and its lettering)
    turned = Image.new("L", want.size, 0)
    turned.paste(want.crop(want_box).transpose(Image.Transpose.ROTATE_180), want_box[:2])
    assert _near(turned, want) < match - 0.1, (what, match, _near(turned, want))


@pytest.mark.parametrize(
    ("rotate", "origin"),
    [(0, (36.0, -50.0)), (90, (36.0, -50.0)), (180, (-20.0, 10.0)), (270, (36.0, -50.0))],
    ids=["0-shifted", "90", "180", "270"],
)
def test_rotated_pages_show_every_stamp_upright_where_it_belongs(
    keys: Signers,
    upright_reference: tuple[Image.Image, Image.Image],
    tmp_path: Path,
    rotate: int,
    origin: tuple[float, float],
) -> None:
    """A viewer shows the rotated, shifted page exactly as the upright one: text stamp top
    right, a person in the given box and in the field, over the placeholder and above the
    printed name, the seal on the left third of the last signature; all upright."""
    pdf = _signed_on_every_kind_of_placement(rotate, origin, keys)
    check_signatures(pdf, keys.root, 6)
    # the printed name is found where it is, reported in user space
    half = fonts.text_width(SIGNER_NAME, 14) / 2
    seen = (COL_X - half, NAME_BASELINE - 0.216 * 14, COL_X + half, NAME_BASELINE + 0.784 * 14)
    found = find_text(pdf, SIGNER_NAME)
    assert found is not None and found[0] == 1
    assert found[1] == pytest.approx(user_box(rotate, origin, seen), abs=1.5)
    first, last = render(pdf, 0, tmp_path), render(pdf, 1, tmp_path)
    want_first, want_last = upright_reference
    assert first.size == want_first.size and last.size == want_last.size  # portrait, as seen

    top_right = (first.width // 2, 0, first.width, 80)
    assert_same_ink(
        ink(first, "black", top_right), ink(want_first, "black", top_right), "text stamp"
    )
    assert_same_ink(ink(first, "blue"), ink(want_first, "blue"), "page 1")
    assert_same_ink(ink(last, "blue"), ink(want_last, "blue"), "page 2")
    assert_same_ink(ink(last, "red"), ink(want_last, "red"), "seal")
