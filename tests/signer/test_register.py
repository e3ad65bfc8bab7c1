"""The clerk's step (Decree 30): person signs → number and date filled → agency seal.

Checked end to end with a real `kyso serve` (tests/conftest.py): pyhanko must see both
signatures intact and trusted and the change after the person's signature as FORM_FILLING;
poppler's pdfsig must accept both; pdftotext must show the number and the date.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import unicodedata
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import ModificationLevel

from kyso.certs import identity
from kyso.i18n import catalogue
from kyso.signer import register, sign
from kyso.signer.register import (
    RegisterError,
    add_register_fields,
    fill_register_fields,
    format_date_vi,
    format_number,
    number_text,
    parse_number,
    parse_register_number,
    parse_symbol,
    prepare_register_fields,
    read_register_fields,
)
from kyso.signer.sign import Level, SignOptions
from tests.conftest import LiveServer, require_tool, run
from tests.signer.test_sign import _issue, _pdfsig, _validate, make_pdf, nss_db, signer_for

__all__ = ["nss_db"]  # the fixture, imported for this module's tests

ISSUED = dt.date(2020, 1, 5)
NUMBER_LINE = "Số: 15/QĐ-UBND"
DATE_LINE = "Hà Nội, ngày 05 tháng 01 năm 2020"


# -- numbers, symbols, dates -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "symbol", "expected"),
    [
        (15, "QĐ-UBND", "15/QĐ-UBND"),
        (5, "BNV-VP", "05/BNV-VP"),
        ("05", "BNV-VP", "05/BNV-VP"),
        (12, "UBND-VX", "12/UBND-VX"),
        (15, "QĐ-BNV", "15/QĐ-BNV"),
        (1, "TTr-UBND", "01/TTr-UBND"),
        (99999, " QĐ-UBND ", "99999/QĐ-UBND"),
        (7, "KH-SGDĐT", "07/KH-SGDĐT"),
        (3, "UBND-P2", "03/UBND-P2"),
    ],
)
def test_numbers_and_symbols_follow_decree_30(number: Any, symbol: str, expected: str) -> None:
    assert format_number(number, symbol) == expected
    assert number_text(number, symbol) == f"Số: {expected}"
    assert parse_register_number(f"Số: {expected}") == (parse_number(number), symbol.strip())


def test_symbols_are_normalised_to_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "QĐ-SGDĐT")  # Đ has no decomposition, but…
    assert parse_symbol(decomposed) == "QĐ-SGDĐT"
    assert parse_symbol(unicodedata.normalize("NFD", "KHỞ-UBND")) == "KHỞ-UBND"


@pytest.mark.parametrize(
    ("symbol", "code"),
    [
        ("", "signer.register.symbol.empty"),
        ("QĐ - UBND", "signer.register.symbol.space"),
        ("QĐ UBND", "signer.register.symbol.space"),
        ("2020/QĐ-UBND", "signer.register.symbol.slash"),
        ("QĐ", "signer.register.symbol.groups"),
        ("QĐ-", "signer.register.symbol.groups"),
        ("QĐ--UBND", "signer.register.symbol.groups"),
        ("QĐ-2020", "signer.register.symbol.groups"),
        ("qđ-ubnd", "signer.register.symbol.lowercase"),
        ("QĐ-Ubnd", "signer.register.symbol.lowercase"),
        ("QĐ_UBND", "signer.register.symbol.char"),
        ("QĐ-UBND.", "signer.register.symbol.char"),
        ("A-" + "B" * 40, "signer.register.symbol.too_long"),
    ],
)
def test_bad_symbols_are_refused(symbol: str, code: str) -> None:
    with pytest.raises(RegisterError) as caught:
        parse_symbol(symbol)
    assert caught.value.code == code
    assert caught.value.message("vi") != code and caught.value.message("en") != code


@pytest.mark.parametrize(
    ("number", "code"),
    [
        (0, "signer.register.number.range"),
        (-1, "signer.register.number.range"),
        (100000, "signer.register.number.range"),
        ("", "signer.register.number.invalid"),
        ("1a", "signer.register.number.invalid"),
        ("15/QĐ", "signer.register.number.invalid"),
        (True, "signer.register.number.invalid"),
    ],
)
def test_bad_numbers_are_refused(number: Any, code: str) -> None:
    with pytest.raises(RegisterError) as caught:
        parse_number(number)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("issued", "place", "expected"),
    [
        (dt.date(2020, 1, 5), None, "ngày 05 tháng 01 năm 2020"),
        (dt.date(2020, 2, 9), None, "ngày 09 tháng 02 năm 2020"),
        (dt.date(2020, 3, 5), None, "ngày 05 tháng 3 năm 2020"),
        (dt.date(2021, 12, 25), "Hà Nội", "Hà Nội, ngày 25 tháng 12 năm 2021"),
        (
            dt.date(2024, 11, 1),
            "  Thành phố  Hồ Chí Minh ",
            "Thành phố Hồ Chí Minh, ngày 01 tháng 11 năm 2024",
        ),
        (dt.date(2020, 1, 5), "", "ngày 05 tháng 01 năm 2020"),
    ],
)
def test_dates_are_written_the_vietnamese_way(
    issued: dt.date, place: str | None, expected: str
) -> None:
    assert format_date_vi(issued, place) == expected


def test_bad_dates_and_places_are_refused() -> None:
    with pytest.raises(RegisterError) as caught:
        register.check_issue_date(dt.date(2020, 1, 6), today=dt.date(2020, 1, 5))
    assert caught.value.code == "signer.register.date.future"
    with pytest.raises(RegisterError) as caught:
        register.check_issue_date(dt.date(1900, 1, 1))
    assert caught.value.code == "signer.register.date.invalid"
    with pytest.raises(RegisterError) as caught:
        register.parse_date("2020-13-01")
    assert caught.value.code == "signer.register.date.invalid"
    assert register.parse_date("2020-01-05") == ISSUED
    for place in ("Hà Nội\x07", "Hà Nội, Việt Nam", "x" * 101):
        with pytest.raises(RegisterError) as caught:
            format_date_vi(ISSUED, place)
        assert caught.value.code == "signer.register.place.invalid"
    assert register.today_vn(dt.datetime(2020, 1, 4, 17, 30, tzinfo=dt.UTC)) == ISSUED


def test_every_register_message_has_both_languages() -> None:
    source = Path(register.__file__).read_text(encoding="utf-8")
    codes = set(re.findall(r'"(signer\.register\.[a-z_.]+)"', source))
    messages = catalogue()
    assert codes <= messages.keys(), codes - messages.keys()
    for code in (c for c in messages if c.startswith("signer.register.")):
        assert messages[code].get("vi") and messages[code].get("en"), code
    assert RegisterError().code == "signer.register.error"
    assert isinstance(RegisterError(), sign.SigningError)


# -- the whole procedure ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def signers(live_server: LiveServer) -> tuple[sign.DocumentSigner, sign.DocumentSigner]:
    _issue(live_server, "register-person")
    live_server.services.pki.issue(
        kind="org",
        subject=identity.organisation_subject("UBND Thành phố Hà Nội", ids=["MST:0101234568"]),
        label="register-agency",
    )
    keys = live_server.services.keys
    return (
        signer_for(live_server, keys.resolve("register-person")),
        signer_for(live_server, keys.resolve("register-agency")),
    )


@pytest.fixture()
def plain(tmp_path: Path) -> Path:
    path = tmp_path / "to-trinh.pdf"
    path.write_bytes(make_pdf(2))
    return path


def _sign_with_fields_in_same_revision(
    signer: sign.DocumentSigner,
    source: Path,
    target: Path,
    monkeypatch: pytest.MonkeyPatch,
    options: SignOptions,
) -> None:
    """What the core will do when asked: add the fields on the writer it signs with."""
    original = sign.IncrementalPdfFileWriter

    def writer_with_fields(*args: Any, **kw: Any) -> IncrementalPdfFileWriter:
        writer = original(*args, **kw)
        add_register_fields(writer, page=0)
        return writer

    with monkeypatch.context() as patch:
        patch.setattr(sign, "IncrementalPdfFileWriter", writer_with_fields)
        signer.sign(source, target, options)


def _pdftotext(path: Path) -> str:
    require_tool("pdftotext")
    return str(run("pdftotext", "-f", "1", "-l", "1", path, "-").stdout)


def _dark_pixels(path: Path, box: tuple[float, float, float, float]) -> int:
    """Non-white pixels pdftoppm draws inside ``box`` (PDF points) of page 1 at 72 dpi."""
    from PIL import Image

    require_tool("pdftoppm")
    prefix = path.with_suffix("")
    run("pdftoppm", "-r", "72", "-f", "1", "-l", "1", "-png", "-singlefile", path, prefix)
    image = Image.open(prefix.with_suffix(".png")).convert("L")
    x1, y1, x2, y2 = box
    height = image.height
    crop = image.crop((int(x1), int(height - y2), int(x2), int(height - y1)))
    return sum(crop.histogram()[:128])


@pytest.mark.parametrize("variant", ["same-revision", "own-revision"])
def test_person_register_agency_all_valid(
    live_server: LiveServer,
    nss_db: Path,
    signers: tuple[sign.DocumentSigner, sign.DocumentSigner],
    plain: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    variant: str,
) -> None:
    person, agency = signers
    signed, numbered, sealed = (tmp_path / n for n in ("signed.pdf", "numbered.pdf", "sealed.pdf"))
    options = SignOptions(level=Level.B_T, reason="Ký ban hành")
    if variant == "same-revision":
        _sign_with_fields_in_same_revision(person, plain, signed, monkeypatch, options)
        assert PdfFileReader(BytesIO(signed.read_bytes())).xrefs.total_revisions == 2
    else:
        prepared = tmp_path / "prepared.pdf"
        placed = prepare_register_fields(plain, prepared)
        assert placed.number_box == (85.0, 712.0, 283.0, 732.0)
        person.sign(prepared, signed, options)
    assert read_register_fields(signed) == (None, None)

    before = signed.read_bytes()
    written = fill_register_fields(
        signed, numbered, number=15, symbol="QĐ-UBND", issued=ISSUED, place="Hà Nội"
    )
    assert written == (NUMBER_LINE, DATE_LINE)
    assert numbered.read_bytes().startswith(before)  # only an incremental update
    assert read_register_fields(numbered) == (NUMBER_LINE, DATE_LINE)

    agency.sign(numbered, sealed, SignOptions(level=Level.B_LTA))
    data = sealed.read_bytes()
    statuses: list[Any] = asyncio.run(_validate(live_server, data))
    assert len(statuses) == 3  # person, agency, document timestamp
    person_status, agency_status = statuses[0], statuses[1]
    assert person_status.intact and person_status.valid and person_status.trusted
    assert person_status.modification_level is ModificationLevel.FORM_FILLING
    assert person_status.docmdp_ok
    assert agency_status.bottom_line
    assert agency_status.modification_level <= ModificationLevel.FORM_FILLING

    report = _pdfsig(nss_db, sealed)
    assert report.count("Signature Validation: Signature is Valid.") == 2, report
    assert report.count("Certificate Validation: Certificate is Trusted.") == 2, report
    require_tool("qpdf")
    assert run("qpdf", "--check", sealed).returncode == 0
    text = unicodedata.normalize("NFC", _pdftotext(sealed))
    assert NUMBER_LINE in text, text
    assert DATE_LINE in text, text
    assert _dark_pixels(sealed, (85, 712, 283, 732)) > 20
    assert _dark_pixels(sealed, (283, 712, 539, 732)) > 20
    assert _dark_pixels(signed, (85, 712, 283, 732)) == 0  # empty before registration


# -- refusals --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def person_signed(
    signers: tuple[sign.DocumentSigner, sign.DocumentSigner],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    folder = tmp_path_factory.mktemp("register")
    plain, prepared, signed = (folder / n for n in ("plain.pdf", "prepared.pdf", "signed.pdf"))
    plain.write_bytes(make_pdf())
    prepare_register_fields(plain, prepared)
    signers[0].sign(prepared, signed, SignOptions(level=Level.B_B))
    return signed


def _refused(code: str, source: Path, target: Path, **kw: Any) -> None:
    kw = {"number": 15, "symbol": "QĐ-UBND", "issued": ISSUED, "place": "Hà Nội", **kw}
    with pytest.raises(RegisterError) as caught:
        fill_register_fields(source, target, **kw)
    assert caught.value.code == code, caught.value.msg
    assert not target.exists()
    assert not list(target.parent.glob(f".{target.name}.*"))  # no partial output


def test_unsigned_input_is_refused(plain: Path, tmp_path: Path) -> None:
    prepared = tmp_path / "prepared.pdf"
    prepare_register_fields(plain, prepared)
    _refused("signer.register.unsigned", prepared, tmp_path / "out.pdf")


def test_signed_without_fields_is_refused(
    signers: tuple[sign.DocumentSigner, sign.DocumentSigner], plain: Path, tmp_path: Path
) -> None:
    signed = tmp_path / "signed.pdf"
    signers[0].sign(plain, signed, SignOptions(level=Level.B_B))
    _refused("signer.register.fields.missing", signed, tmp_path / "out.pdf")
    with pytest.raises(RegisterError) as caught:  # too late to add them
        prepare_register_fields(signed, tmp_path / "late.pdf")
    assert caught.value.code == "signer.register.prepare.signed"
    assert not (tmp_path / "late.pdf").exists()


def test_filling_twice_is_refused(person_signed: Path, tmp_path: Path) -> None:
    once = tmp_path / "once.pdf"
    fill_register_fields(person_signed, once, number=5, symbol="BNV-VP", issued=ISSUED)
    assert read_register_fields(once) == ("Số: 05/BNV-VP", "ngày 05 tháng 01 năm 2020")
    _refused("signer.register.fields.filled", once, tmp_path / "twice.pdf")


def test_after_the_agency_seal_is_refused(
    signers: tuple[sign.DocumentSigner, sign.DocumentSigner],
    person_signed: Path,
    tmp_path: Path,
) -> None:
    sealed = tmp_path / "sealed.pdf"
    signers[1].sign(person_signed, sealed, SignOptions(level=Level.B_B))
    _refused("signer.register.sealed", sealed, tmp_path / "out.pdf")


def test_bad_values_are_refused_before_anything_is_read(
    person_signed: Path, tmp_path: Path
) -> None:
    target = tmp_path / "out.pdf"
    _refused("signer.register.symbol.space", person_signed, target, symbol="QĐ UBND")
    _refused("signer.register.number.range", person_signed, target, number=0)
    _refused(
        "signer.register.date.future",
        person_signed,
        target,
        issued=dt.date.today() + dt.timedelta(days=2),
    )
    _refused("signer.register.fields.missing", person_signed, target, names=("a", "b"))


def test_fields_cannot_be_prepared_twice_or_off_the_page(plain: Path, tmp_path: Path) -> None:
    prepared = tmp_path / "prepared.pdf"
    prepare_register_fields(plain, prepared, number_box=(100, 700, 300, 720))
    with pytest.raises(RegisterError) as caught:
        prepare_register_fields(prepared, tmp_path / "again.pdf")
    assert caught.value.code == "signer.register.fields.exist"
    with pytest.raises(RegisterError) as caught:
        prepare_register_fields(plain, tmp_path / "p.pdf", page=5)
    assert caught.value.code == "signer.register.page"
    with pytest.raises(RegisterError) as caught:
        prepare_register_fields(plain, tmp_path / "b.pdf", date_box=(0, 0, 5, 5))
    assert caught.value.code == "signer.register.box"
    reader = PdfFileReader(BytesIO(prepared.read_bytes()))
    fields = {
        str(f["/T"]): f for f in (r.get_object() for r in reader.root["/AcroForm"]["/Fields"])
    }
    assert [float(v) for v in fields["so_hieu"]["/Rect"]] == [100, 700, 300, 720]
    assert fields["so_hieu"]["/FT"] == "/Tx" and "/V" not in fields["so_hieu"]
    assert str(fields["ngay_ban_hanh"]["/DA"]).startswith("/KysoSerif 13 Tf")


# -- the drafting template's own number and date lines ---------------------------------------

TEMPLATE_BASELINE = 740.0
NUMBER_AT = 100.0  # where "Số:" starts
DATE_CENTRE = 410.0
DPI = 100


def _template(
    number_line: str, date_line: str, *more: tuple[Any, ...], shear: float = 0.0, **kw: Any
) -> bytes:
    """An A4 page printing the Decree 30 header rows in the shipped serif, 13 pt; the date
    line slanted by ``shear`` (a synthetic italic); ``kw`` go to ``make_document``."""
    from tests.signer.test_appearance import centred, make_document

    return make_document(
        [
            [
                ("UBND QUẬN LONG BIÊN", 90, 780, 13),
                centred("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", DATE_CENTRE, 780, 12),
                (number_line, NUMBER_AT, TEMPLATE_BASELINE, 13),
                (*centred(date_line, DATE_CENTRE, TEMPLATE_BASELINE, 13), shear),
                ("QUYẾT ĐỊNH", 250, 650, 14),
                *more,
            ]
        ],
        **kw,
    )


def _fields_of(path: Path) -> dict[str, Any]:
    reader = PdfFileReader(BytesIO(path.read_bytes()))
    return {str(f["/T"]): f for f in (r.get_object() for r in reader.root["/AcroForm"]["/Fields"])}


def _word(lines: list[list[Any]], text: str) -> Any:
    return next(w for line in lines for w in line if w.text == text)


def _ink(image: Any, box: tuple[float, float, float, float]) -> tuple[int, int, int, int] | None:
    """Bounding box (pixels) of the dark pixels of ``image`` inside ``box`` (PDF points)."""
    x1, y1, x2, y2 = box
    height = image.height
    scale = DPI / 72
    crop = image.crop(
        (int(x1 * scale), int(height - y2 * scale), int(x2 * scale), int(height - y1 * scale))
    )
    return crop.convert("L").point(lambda v: 255 if v < 140 else 0).getbbox()


def _render(path: Path) -> Any:
    from PIL import Image

    require_tool("pdftoppm")
    prefix = path.with_suffix("")
    run("pdftoppm", "-r", str(DPI), "-f", "1", "-l", "1", "-png", "-singlefile", path, prefix)
    return Image.open(prefix.with_suffix(".png")).convert("RGB")


@pytest.mark.parametrize(
    ("number_line", "date_line", "printed_place", "shear"),
    [
        ("Số:      /QĐ-UBND", "Hà Nội, ngày ….. tháng ….. năm ……", True, 0.0),
        ("Số: ............", "……….., ngày      tháng      năm 20…", False, 0.0),
        ("Số:  …/2026/NĐ-CP", "Hà Nội, ngày … tháng … năm 2026", True, 0.21),
    ],
    ids=["printed-place", "placeholder-place", "italic-date"],
)
def test_register_fields_go_where_the_template_prints_them(
    live_server: LiveServer,
    signers: tuple[sign.DocumentSigner, sign.DocumentSigner],
    tmp_path: Path,
    number_line: str,
    date_line: str,
    printed_place: bool,
    shear: float,
) -> None:
    """``Số:`` and ``…, ngày … tháng … năm …`` of the template: the number goes right after
    ``Số:``, the date over the date line, on the template's baseline at its size; filled,
    they look as if the document had been typed with them (compared with poppler's rendering
    of the same page typed that way), placeholders hidden."""
    from tests.signer.test_appearance import words

    template = tmp_path / "mau.pdf"
    template.write_bytes(_template(number_line, date_line, shear=shear))
    signed, numbered = tmp_path / "signed.pdf", tmp_path / "numbered.pdf"
    person, _agency = signers
    person.sign(template, signed, SignOptions(level=Level.B_B, register_fields=True))

    # where the fields went: horizontally from the font's metrics (where the text was
    # printed), vertically against poppler's box of the printed line (points from the top)
    width = register.fonts.text_width
    label = next(
        w
        for line in words(template.read_bytes(), 0, tmp_path)
        for w in line
        if w.text.startswith("Số:")
    )
    top, bottom = 842.0 - label.y0, 842.0 - label.y1
    fields = _fields_of(signed)
    number, date = fields["so_hieu"], fields["ngay_ban_hanh"]
    nx1, ny1, nx2, ny2 = (float(v) for v in number["/Rect"])
    assert nx1 == pytest.approx(NUMBER_AT + width("Số:", 13) + 1, abs=0.5)  # right after "Số:"
    assert nx2 >= NUMBER_AT + width(number_line, 13)  # over the whole placeholder
    assert ny1 <= bottom and ny2 >= top and ny2 - ny1 < 2 * 13
    dx1, dy1, dx2, dy2 = (float(v) for v in date["/Rect"])
    line_start = DATE_CENTRE - width(date_line, 13) / 2
    if printed_place:  # after the printed "Hà Nội,"
        assert dx1 == pytest.approx(line_start + width("Hà Nội, ", 13) - 2, abs=0.7)
        assert str(date["/KysoTemplate"]["/Printed"]) == "Hà Nội,"
    else:  # over the place placeholder too
        assert dx1 == pytest.approx(line_start - 2, abs=0.5)
        assert str(date["/KysoTemplate"]["/Printed"]) == ""
    assert bool(date["/KysoTemplate"]["/Italic"]) is (shear > 0)
    assert str(number["/KysoTemplate"]["/Printed"]) == "Số:"
    assert bool(number["/KysoTemplate"]["/Italic"]) is False
    assert dx2 >= DATE_CENTRE + width(date_line, 13) / 2  # the whole placeholder is covered
    assert (dy1, dy2) == pytest.approx((ny1, ny2), abs=0.01)
    assert str(number["/DA"]).endswith(" 13 Tf 0 g") and int(number["/Q"]) == 0
    assert [float(v) for v in number["/MK"]["/BG"]] == [1.0]

    # filled: the values are the whole lines; what shows is typed-looking text
    place = "Hà Nội"
    written = fill_register_fields(
        signed, numbered, number=15, symbol="QĐ-UBND", issued=ISSUED, place=place
    )
    assert written == (NUMBER_LINE, DATE_LINE)
    assert read_register_fields(numbered) == (NUMBER_LINE, DATE_LINE)
    statuses: list[Any] = asyncio.run(_validate(live_server, numbered.read_bytes()))
    assert statuses[0].modification_level is ModificationLevel.FORM_FILLING

    typed = tmp_path / "typed.pdf"
    date_start = DATE_CENTRE - register.fonts.text_width(date_line, 13) / 2
    typed.write_bytes(
        _template(NUMBER_LINE, "", (DATE_LINE, date_start, TEMPLATE_BASELINE, 13, shear))
    )
    filled_page, typed_page = _render(numbered), _render(typed)
    row = TEMPLATE_BASELINE - 6, TEMPLATE_BASELINE + 14
    number_area = (NUMBER_AT - 2, row[0], 300, row[1])
    got, want = _ink(filled_page, number_area), _ink(typed_page, number_area)
    assert got is not None and want is not None
    assert got == pytest.approx(want, abs=2), (got, want)  # same place, same baseline, same size
    date_area = (301, row[0], 595, row[1])
    got, want = _ink(filled_page, date_area), _ink(typed_page, date_area)
    assert got is not None and want is not None
    assert got == pytest.approx(want, abs=2), (got, want)  # upright or italic, as printed
    # before registration the template's placeholders show, nothing is drawn over them
    blank = _render(signed)
    assert _ink(blank, number_area) == _ink(_render(template), number_area)


def test_template_lines_only_when_they_are_placeholders_and_explicit_boxes_win(
    tmp_path: Path,
) -> None:
    template = tmp_path / "mau.pdf"
    top = 841.89  # the A4 height make_document uses
    defaults = ((85.0, top - 130, 283.0, top - 110), (283.0, top - 130, 539.0, top - 110))

    # a number placeholder, but a date already written: only the number follows the template
    template.write_bytes(_template("Số:      /QĐ-UBND", "Hà Nội, ngày 05 tháng 01 năm 2020"))
    placed = prepare_register_fields(template, tmp_path / "a.pdf")
    assert placed.from_template == (True, False)
    assert placed.date_box == pytest.approx(defaults[1])
    assert placed.number_box[1] < TEMPLATE_BASELINE < placed.number_box[3]

    # an explicit box wins over the template's line
    template.write_bytes(_template("Số:      /QĐ-UBND", "Hà Nội, ngày … tháng … năm 20…"))
    placed = prepare_register_fields(template, tmp_path / "b.pdf", number_box=(90, 600, 290, 620))
    assert placed.from_template == (False, True)
    assert placed.number_box == (90, 600, 290, 620)
    assert placed.date_box[1] < TEMPLATE_BASELINE < placed.date_box[3]
    assert "/KysoTemplate" not in _fields_of(tmp_path / "b.pdf")["so_hieu"]

    # a number already printed and "ngày tháng năm" in running text are no placeholders
    template.write_bytes(
        _template(
            "Số: 15/QĐ-UBND",
            "",
            ("Quyết định có hiệu lực kể từ ngày tháng năm ký ban hành.", 90, 500, 13),
        )
    )
    placed = prepare_register_fields(template, tmp_path / "c.pdf")
    assert placed.from_template == (False, False)
    assert placed.number_box == pytest.approx(defaults[0])
    assert placed.date_box == pytest.approx(defaults[1])
    assert register.find_template_lines(template.read_bytes(), 0) == (None, None)


def test_a_place_other_than_the_printed_one_is_refused(
    signers: tuple[sign.DocumentSigner, sign.DocumentSigner], tmp_path: Path
) -> None:
    template, signed = tmp_path / "mau.pdf", tmp_path / "signed.pdf"
    template.write_bytes(_template("Số:      /QĐ-UBND", "Hà Nội, ngày … tháng … năm 20…"))
    signers[0].sign(template, signed, SignOptions(level=Level.B_B, register_fields=True))
    _refused("signer.register.place.printed", signed, tmp_path / "out.pdf", place="Đà Nẵng")
    # no place given: the printed one is part of the value; the same place is fine
    for n, place in enumerate((None, "hà  nội")):
        out = tmp_path / f"out-{n}.pdf"
        written = fill_register_fields(
            signed, out, number=15, symbol="QĐ-UBND", issued=ISSUED, place=place
        )
        assert written == (NUMBER_LINE, DATE_LINE)


def _registered_on(
    rotate: int,
    origin: tuple[float, float],
    signer: sign.DocumentSigner,
    folder: Path,
) -> Path:
    """A template page printing only the number line, shown at ``rotate``: signed with the
    fields prepared (number from the template, date in its default box), then filled."""
    template, signed, numbered = (folder / n for n in ("mau.pdf", "signed.pdf", "numbered.pdf"))
    template.write_bytes(_template("Số:      /QĐ-UBND", "", rotate=rotate, origin=origin))
    signer.sign(template, signed, SignOptions(level=Level.B_B, register_fields=True))
    fields = _fields_of(signed)
    assert int(fields["so_hieu"]["/MK"].get("/R", 0)) == rotate
    assert "/KysoTemplate" in fields["so_hieu"] and "/KysoTemplate" not in fields["ngay_ban_hanh"]
    fill_register_fields(
        signed, numbered, number=15, symbol="QĐ-UBND", issued=ISSUED, place="Hà Nội"
    )
    return numbered


@pytest.mark.parametrize(
    ("rotate", "origin"),
    [(90, (36.0, -50.0)), (180, (-20.0, 10.0)), (270, (36.0, -50.0))],
    ids=["90", "180", "270"],
)
def test_register_fields_on_rotated_pages(
    signers: tuple[sign.DocumentSigner, sign.DocumentSigner],
    tmp_path: Path,
    rotate: int,
    origin: tuple[float, float],
) -> None:
    """On a page shown rotated (and a media box not at 0), the number lands after the
    template's ``Số:`` and the date in its default place as a reader sees the page, upright:
    the rendering matches that of the same flow on an upright page."""
    from tests.signer.test_appearance import assert_same_ink, ink

    upright = tmp_path / "upright"
    upright.mkdir()
    want = _render(_registered_on(0, (0.0, 0.0), signers[0], upright))
    got = _render(_registered_on(rotate, origin, signers[0], tmp_path))
    assert got.size == want.size
    scale = DPI / 72
    for name, (x1, x2) in (("number", (NUMBER_AT - 2, 283)), ("date", (283, 560))):
        top, bottom = 842 - TEMPLATE_BASELINE - 14, 842 - TEMPLATE_BASELINE + 8
        if name == "date":  # the default box: 110-130 pt from the top
            top, bottom = 108, 132
        region = (int(x1 * scale), int(top * scale), int(x2 * scale), int(bottom * scale))
        assert_same_ink(ink(got, "black", region), ink(want, "black", region), name)
