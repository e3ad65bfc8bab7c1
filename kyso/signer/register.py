"""The clerk's step of Decree 30/2020: the number, symbol and date of an outgoing document.

Order (Art. 14, 15.3, 32.2d): the competent person signs, the system fills "Số: 15/QĐ-UBND"
and "Hà Nội, ngày 05 tháng 01 năm 2020", then the clerk applies the agency seal.  The number
and the date therefore go into the PDF *after* the first signature, in a way a verifier
accepts: two text form fields are created in (or before) the revision the person signs, empty;
filling them later is an incremental update that pyHanko's default difference policy
classifies as ``ModificationLevel.FORM_FILLING`` (``GenericFieldModificationRule``: only
``/V``, ``/AP``, ``/Ff`` of existing non-signature fields change, the new appearance streams
are new objects).  Creating the fields *after* the signature would be rejected
(``SigFieldCreationRule`` allows only new signature fields), which is why
:func:`add_register_fields` must run before the person signs.

The fields carry a ``/DA`` naming a font in ``/AcroForm /DR``: a subset of kyso's serif
font (Liberation Serif, rescaled) with every printable ASCII character and every Vietnamese
letter, embedded once when the fields are prepared.  :func:`fill_register_fields` writes the
appearance streams with that same embedded font (encoded from the font program in the file,
so it does not depend on the font files installed when filling), so viewers, ``pdftotext``
and ``pdftoppm`` show the text with its diacritics without regenerating anything.

Default boxes (points from the page's top-left corner, A4 portrait, Decree 30 Appendix I
margins: left 30 mm, right 20 mm, top 20 mm):

* number ``Số: ...``: x 85-283 pt (30-100 mm, the left column under the agency name),
  110-130 pt from the top (38.8-45.9 mm), centred;
* place and date: x 283-539 pt (100-190 mm, the right column under the national motto),
  the same height, centred, oblique (the Decree wants italics; the font ships no italic).

Measured as the page is displayed (a page with ``/Rotate`` or a visible area that does not
start at 0 gets its boxes where a reader sees that corner; the field's ``/MK /R`` says how its
appearance is turned, and the filled appearance is drawn upright).

**From the drafting template.** When the page prints the number line of the template
(``Số:`` followed only by a placeholder: blanks, dots, ``…``, ``_``, and maybe ``/QĐ-UBND``)
and/or its date line (``…, ngày … tháng … năm …`` with dotted or blank placeholders), found
with pdfminer.six (:func:`kyso.signer.appearance.page_text_lines`), the fields go there
instead: the number right after ``Số:``, the date over the date line (after the place name
when the template prints one, over the place placeholder otherwise), at the template's font
size and on its baseline, left-aligned, with a white background (``/MK /BG``) that hides the
placeholder once filled, upright or italic as the template prints that line.  What the
template already prints before the field (``Số:``, the place name) is kept in the field
(``/KysoTemplate``) and not drawn again: the filled appearance shows ``15/QĐ-UBND`` after the
printed ``Số:``, and the field's value is still the whole line (``Số: 15/QĐ-UBND``,
``Hà Nội, ngày 05 tháng 01 năm 2020``); a ``place`` other than the printed one is refused.
Explicit boxes always win; a line not found falls back to the default box.  The baseline is
placed for Times-like metrics (descent 0.216 em), what Decree 30 templates use.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import statistics
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from cryptography import x509
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader

from kyso.aio import run_sync, sync_twin
from kyso.signer import fonts
from kyso.signer.appearance import (
    AppearanceError,
    PageFrame,
    appearance_matrix,
    normalise_rotation,
    page_text_lines,
    visible_area,
)
from kyso.signer.errors import SigningError

log = logging.getLogger(__name__)

__all__ = [
    "DATE_BOX",
    "DEFAULT_NAMES",
    "FONT_RESOURCE",
    "MAX_NUMBER",
    "NUMBER_BOX",
    "RegisterError",
    "RegisterFields",
    "TemplateLine",
    "add_register_fields",
    "async_fill_register_fields",
    "check_issue_date",
    "check_place",
    "fill_register_fields",
    "find_template_lines",
    "format_date_vi",
    "format_number",
    "number_text",
    "parse_number",
    "parse_register_number",
    "parse_symbol",
    "prepare_register_fields",
    "read_register_fields",
    "today_vn",
]

Box = tuple[float, float, float, float]


class RegisterError(SigningError):
    """The number, symbol or date is invalid, or the document cannot be registered."""

    code = "signer.register.error"


# -- numbers, symbols and dates (Decree 30, Art. 15 and Appendix I) ---------------------------

MAX_NUMBER = 99999
"""Highest accepted number (the sequence restarts at 01 every 1 January)."""

MAX_SYMBOL_LENGTH = 30
"""Appendix VI: CodeNotation is a String(30)."""

MIXED_CASE_GROUPS = frozenset({"TTr", "CTr"})
"""Decree 30 Appendix III abbreviations written with a lower-case letter (Tờ trình,
Chương trình) [M: from memory of the appendix]; every other group is upper case."""

_VN_UPPER = frozenset(c for c in fonts.VIETNAMESE_LETTERS if c.isupper())
_SYMBOL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") | _VN_UPPER
VN_TZ = dt.timezone(dt.timedelta(hours=7), "ICT")
EARLIEST_YEAR = 1945


def today_vn(now: dt.datetime | None = None) -> dt.date:
    """Today's date in Vietnam (UTC+7), the date a document issued now carries."""
    moment = now or dt.datetime.now(dt.UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(VN_TZ).date()


def parse_number(value: int | str) -> int:
    """The document number as an int: ``15``, ``"15"`` and ``"05"`` are accepted, 1..MAX."""
    if isinstance(value, bool):
        raise RegisterError("signer.register.number.invalid", value=str(value))
    if isinstance(value, int):
        number = value
    else:
        text = unicodedata.normalize("NFKC", str(value)).strip()
        if not re.fullmatch(r"[0-9]{1,7}", text):
            raise RegisterError("signer.register.number.invalid", value=str(value))
        number = int(text)
    if not 1 <= number <= MAX_NUMBER:
        raise RegisterError("signer.register.number.range", value=str(value), max=MAX_NUMBER)
    return number


def parse_symbol(value: str) -> str:
    """Check and normalise (NFC, outer blanks trimmed) a symbol such as ``QĐ-UBND``.

    Groups of upper-case letters (Vietnamese ones such as Đ included) and digits, joined by
    ``-``, no spaces, at least two groups (type + agency, or agency + drafting unit), at most
    30 characters.  ``TTr`` and ``CTr`` are the only mixed-case groups.
    """
    text = unicodedata.normalize("NFC", value or "").strip()
    if not text:
        raise RegisterError("signer.register.symbol.empty")
    if any(c.isspace() for c in text):
        raise RegisterError("signer.register.symbol.space", value=text)
    if "/" in text:
        raise RegisterError("signer.register.symbol.slash", value=text)
    if len(text) > MAX_SYMBOL_LENGTH:
        raise RegisterError("signer.register.symbol.too_long", value=text, max=MAX_SYMBOL_LENGTH)
    groups = text.split("-")
    for group in groups:
        if group in MIXED_CASE_GROUPS:
            continue
        for char in group:
            if char not in _SYMBOL_CHARS:
                if char.upper() in _SYMBOL_CHARS and char.upper() != char:
                    raise RegisterError("signer.register.symbol.lowercase", value=text, group=group)
                raise RegisterError("signer.register.symbol.char", value=text, char=char)
    if len(groups) < 2 or any(not g or g.isdigit() for g in groups):
        raise RegisterError("signer.register.symbol.groups", value=text)
    return text


def format_number(number: int | str, symbol: str) -> str:
    """``15/QĐ-BNV``: the number (leading 0 below 10), ``/``, the symbol."""
    return f"{parse_number(number):02d}/{parse_symbol(symbol)}"


def number_text(number: int | str, symbol: str) -> str:
    """The full line of the document: ``Số: 15/QĐ-BNV``."""
    return f"Số: {format_number(number, symbol)}"


def parse_register_number(text: str) -> tuple[int, str]:
    """Read ``15/QĐ-UBND`` (or ``Số: 15/QĐ-UBND``) back into ``(15, "QĐ-UBND")``."""
    cleaned = unicodedata.normalize("NFC", text or "").strip()
    cleaned = re.sub(r"^Số\s*:\s*", "", cleaned)
    number, sep, symbol = cleaned.partition("/")
    if not sep:
        raise RegisterError("signer.register.number.invalid", value=text)
    return parse_number(number), parse_symbol(symbol)


def check_issue_date(issued: dt.date, today: dt.date | None = None) -> dt.date:
    """Refuse a date in the future (in Vietnam) or before 1945."""
    if isinstance(issued, dt.datetime):
        issued = issued.astimezone(VN_TZ).date() if issued.tzinfo else issued.date()
    if not isinstance(issued, dt.date):
        raise RegisterError("signer.register.date.invalid", value=str(issued))
    limit = today or today_vn()
    if issued > limit:
        raise RegisterError(
            "signer.register.date.future", value=issued.isoformat(), today=limit.isoformat()
        )
    if issued.year < EARLIEST_YEAR:
        raise RegisterError("signer.register.date.invalid", value=issued.isoformat())
    return issued


def parse_date(value: str) -> dt.date:
    """``YYYY-MM-DD`` (the CLI's ``--date``) as a date."""
    try:
        return dt.date.fromisoformat(value.strip())
    except (ValueError, AttributeError):
        raise RegisterError("signer.register.date.invalid", value=str(value)) from None


def check_place(place: str | None) -> str | None:
    """The place name (địa danh) trimmed and NFC-normalised; None or blank means none."""
    if place is None:
        return None
    text = " ".join(unicodedata.normalize("NFC", place).split())
    if not text:
        return None
    if len(text) > 100 or any(not c.isprintable() for c in text) or "," in text:
        raise RegisterError("signer.register.place.invalid", value=place)
    return text


def format_date_vi(issued: dt.date, place: str | None = None) -> str:
    """``ngày 05 tháng 01 năm 2020``, or ``Hà Nội, ngày 05 tháng 01 năm 2020`` with a place.

    Decree 30 Appendix I: days below 10 and the months 1 and 2 take a leading 0 (so that
    "tháng 1" cannot become "tháng 11"); other months are written without it.
    """
    if isinstance(issued, dt.datetime):
        issued = issued.date()
    if not isinstance(issued, dt.date):
        raise RegisterError("signer.register.date.invalid", value=str(issued))
    month = f"{issued.month:02d}" if issued.month <= 2 else str(issued.month)
    text = f"ngày {issued.day:02d} tháng {month} năm {issued.year}"
    where = check_place(place)
    return f"{where}, {text}" if where else text


# -- preparing the fields (before the person signs) ------------------------------------------

DEFAULT_NAMES = ("so_hieu", "ngay_ban_hanh")
FONT_RESOURCE = "/KysoSerif"
FONT_SIZE = 13.0
MIN_FONT_SIZE = 7.0
NUMBER_BOX: Box = (85.0, 110.0, 283.0, 130.0)
"""Number box, (left, top, right, bottom) in points from the page's top-left corner."""
DATE_BOX: Box = (283.0, 110.0, 539.0, 130.0)
"""Date box, (left, top, right, bottom) in points from the page's top-left corner."""
OBLIQUE = 0.21  # shear of the synthetic italic (about 12 degrees)
_TOOLTIPS = ("Số, ký hiệu văn bản", "Địa danh, ngày tháng năm ban hành")
_EXTRA_CHARS = "–—‘’“”…•°"
FIELD_CHARSET = "".join(chr(c) for c in range(0x20, 0x7F)) + fonts.VIETNAMESE_LETTERS + _EXTRA_CHARS
"""Characters the embedded font subset can draw."""

_FF_READ_ONLY = 1
TEMPLATE_KEY = "/KysoTemplate"
"""Field entry of a field placed on the template's own line: ``<< /Printed (Số:) /Italic
false >>``, what the template prints just before the field (not drawn again) and whether
its text there is italic (the filled text follows it)."""
_WHITE = generic.ArrayObject([generic.FloatObject(1)])


@dataclass(frozen=True)
class RegisterFields:
    """Where the prepared fields went."""

    names: tuple[str, str]
    page: int
    number_box: Box
    date_box: Box
    from_template: tuple[bool, bool] = (False, False)
    """Whether each box was found from the template's text (number, date)."""


def _inherited(page: generic.DictionaryObject, key: str) -> Any:
    node: Any = page
    for _ in range(64):
        if key in node:
            return node[key]
        if "/Parent" not in node:
            return None
        node = node["/Parent"].get_object()
    return None


def _as_box(value: Any) -> Box | None:
    try:
        x1, y1, x2, y2 = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def page_frame(page: generic.DictionaryObject) -> PageFrame:
    """The page as displayed: visible area (crop box within media box) and ``/Rotate``."""
    media = _as_box(_inherited(page, "/MediaBox")) or (0.0, 0.0, 595.0, 842.0)
    crop = _as_box(_inherited(page, "/CropBox"))
    return PageFrame(visible_area(media, crop), normalise_rotation(_inherited(page, "/Rotate")))


def _from_top_left(frame: PageFrame, box: Box) -> Box:
    """``(left, top, right, bottom)`` in points from the displayed page's top-left corner, as
    a user-space rectangle."""
    x1, t1, x2, t2 = box
    height = frame.size[1]
    return frame.to_user((x1, height - t2, x2, height - t1))


def default_boxes(page: generic.DictionaryObject) -> tuple[Box, Box]:
    """The default number and date boxes in PDF coordinates (x1, y1, x2, y2) for ``page``."""
    frame = page_frame(page)
    return _from_top_left(frame, NUMBER_BOX), _from_top_left(frame, DATE_BOX)


# -- finding the template's number and date lines ---------------------------------------------


@dataclass(frozen=True)
class TemplateLine:
    """Where the template prints a register line, and the field that fills it."""

    box: Box
    """The field's rectangle, user space."""
    font_size: float
    """The template's font size on that line."""
    printed: str
    """What the template prints just before the field (``Số:``, ``Hà Nội,``), or ""."""
    italic: bool = False
    """The template prints that line in italics."""


_PLACEHOLDER_CHARS = " \t.…_·‥"
_NUMBER_LINE = re.compile(
    r"\b(số\s*:)([ \t.…_·‥]*(?:/\S*)?)(?![ \t.…_·‥]*\d)(?=\s|$)", re.IGNORECASE
)
_DATE_LINE = re.compile(r"ngày([ \t.…_·‥]*)tháng([ \t.…_·‥]*)năm[ \t.…_·‥\d]*", re.IGNORECASE)
_DESCENT = 0.216
"""Descent of a Times-like face, in em: pdfminer's character boxes start this far below the
baseline (their height is the font size)."""
_RUN_GAP_EM = 2.0
"""A gap wider than this (in em) between two characters of a line separates two columns."""
NUMBER_MIN_WIDTH_EM = 7.0
"""The number field is at least this wide (``15/QĐ-UBND`` is about 5.3 em)."""
_SAMPLE_DATE = "ngày 28 tháng 12 năm 2020"
_SAMPLE_PLACE = "Hà Nội, "


@dataclass(frozen=True)
class _Run:
    """A piece of a line between column gaps: its text (NFC), each character's box and
    whether it is italic."""

    text: str
    boxes: tuple[Box | None, ...]
    italic: tuple[bool, ...]

    def span(self, start: int, end: int) -> list[Box]:
        return [b for b in self.boxes[start:end] if b is not None]

    def is_italic(self, start: int, end: int) -> bool:
        pairs = zip(self.italic[start:end], self.boxes[start:end], strict=True)
        flags = [i for i, b in pairs if b]
        return bool(flags) and sum(flags) * 2 > len(flags)


def _runs(line: Any) -> list[_Run]:
    """Split a text line (visual space) into runs at wide gaps, NFC per character (combining
    marks that pdfminer gives as characters of their own join the letter before)."""
    flags = tuple(line.italic) or (False,) * len(line.chars)
    merged: list[tuple[str, Box | None, bool]] = []
    for (piece, box), italic in zip(line.chars, flags, strict=True):
        if merged and piece and all(unicodedata.combining(c) for c in piece):
            prev_text, prev_box, prev_italic = merged[-1]
            merged[-1] = (prev_text + piece, prev_box, prev_italic)
        else:
            merged.append((piece, box, italic))
    chars = [(unicodedata.normalize("NFC", t), b, i) for t, b, i in merged]
    heights = [b[3] - b[1] for _t, b, _i in chars if b is not None and b[3] > b[1]]
    em = statistics.median(heights) if heights else 12.0
    runs: list[_Run] = []
    text: list[str] = []
    boxes: list[Box | None] = []
    italics: list[bool] = []
    last: Box | None = None
    for t, b, i in chars:
        if b is not None and last is not None and b[0] - last[2] > _RUN_GAP_EM * em and text:
            runs.append(_Run("".join(text), tuple(boxes), tuple(italics)))
            text, boxes, italics = [], [], []
        # one entry per code point, so regex offsets index the boxes
        for k, c in enumerate(t):
            text.append(c)
            boxes.append(b if k == 0 else None)
            italics.append(i)
        if b is not None:
            last = b
    if text:
        runs.append(_Run("".join(text), tuple(boxes), tuple(italics)))
    return runs


def _size_and_baseline(boxes: Sequence[Box]) -> tuple[float, float]:
    size = statistics.median(b[3] - b[1] for b in boxes)
    bottom = min(b[1] for b in boxes)
    return size, bottom + _DESCENT * size


def _line_box(x0: float, x1: float, size: float, baseline: float) -> Box:
    """A field box from ``x0`` to ``x1`` whose vertically centred text (see
    :func:`_appearance`) sits on ``baseline``, covering the line's ascenders and descenders."""
    half = (0.35 + _DESCENT) * size + 1.0
    centre = baseline + 0.35 * size
    return (x0, centre - half, x1, centre + half)


def _is_placeholder(text: str) -> bool:
    return all(c in _PLACEHOLDER_CHARS or c.isspace() or c == "," for c in text)


@dataclass(frozen=True)
class _Found:
    """A template line found, in visual space: the field's left and right, the template's
    font size and baseline there, what it prints before the field, italics."""

    left: float
    right: float
    size: float
    baseline: float
    printed: str
    italic: bool

    @property
    def box(self) -> Box:
        return _line_box(self.left, self.right, self.size, self.baseline)


def _find_number(runs: Sequence[_Run]) -> _Found | None:
    for run in runs:
        for match in _NUMBER_LINE.finditer(run.text):
            label = run.span(match.start(1), match.end(1))
            rest = run.span(match.start(2), match.end(2))
            if not label:
                continue
            size, baseline = _size_and_baseline(label)
            left = max(b[2] for b in label) + 1.0
            right = max([left + NUMBER_MIN_WIDTH_EM * size, *(b[2] + 2.0 for b in rest)])
            printed = " ".join(match.group(1).split()).replace(" :", ":")
            italic = run.is_italic(match.start(1), match.end(1))
            return _Found(left, right, size, baseline, printed, italic)
    return None


def _find_date(runs: Sequence[_Run]) -> _Found | None:
    for run in runs:
        for match in _DATE_LINE.finditer(run.text):
            word = run.span(match.start(), match.start() + 4)  # "ngày"
            month = run.span(match.end(1), match.end(1) + 5)  # "tháng"
            body = run.span(match.start(), match.end())
            if not word or not month or not body:
                continue
            size, baseline = _size_and_baseline(body)
            gap = month[0][0] - max(b[2] for b in word)
            blanks = match.group(1)
            if not (
                any(c in ".…_·‥" for c in blanks + match.group(2))
                or len(blanks) >= 2
                or gap > 1.2 * size
            ):
                continue  # "ngày tháng năm" in running text, not a placeholder line
            before = run.text[: match.start()]
            head = before.rstrip()
            printed = ""
            if head and not _is_placeholder(head):
                # the printed place stays; the field starts where "ngày" is printed
                printed = " ".join(head.split())
                left = word[0][0] - 2.0
                needed = fonts.text_width(_SAMPLE_DATE, size)
            else:
                start = len(before) - len(before.lstrip())
                left = run.span(start, match.end())[0][0] - 2.0
                needed = fonts.text_width(_SAMPLE_PLACE + _SAMPLE_DATE, size)
            right = max(max(b[2] for b in body) + 2.0, left + needed + 6.0)
            italic = run.is_italic(match.start(), match.end())
            return _Found(left, right, size, baseline, printed, italic)
    return None


def find_template_lines(pdf: Any, page: int) -> tuple[TemplateLine | None, TemplateLine | None]:
    """The template's number line and date line on page ``page`` (0-based), if it prints
    them with placeholders (see the module docstring), as :class:`TemplateLine` (user space).

    ``pdf`` is the document as bytes or a seekable binary stream (its position is restored).
    Raises :class:`~kyso.signer.appearance.AppearanceError` when the page cannot be read.
    """
    frame, lines = page_text_lines(pdf, page)
    runs = [run for line in lines for run in _runs(line)]
    number, date = _find_number(runs), _find_date(runs)
    area = frame.visual_area
    found: list[TemplateLine | None] = []
    for item in (number, date):
        if item is None:
            found.append(None)
            continue
        box = item.box
        if item is number and date is not None:
            # never run into the date line printed further right on the same row
            other = date.box
            if date.left > item.left and other[1] < box[3] and box[1] < other[3]:
                box = (box[0], box[1], min(box[2], date.left - 4.0), box[3])
        box = (
            max(box[0], area[0]),
            max(box[1], area[1]),
            min(box[2], area[2]),
            min(box[3], area[3]),
        )
        if box[2] - box[0] < 20 or box[3] - box[1] < MIN_FONT_SIZE:
            found.append(None)
            continue
        line = TemplateLine(frame.to_user(box), round(item.size, 2), item.printed, item.italic)
        found.append(line)
    return found[0], found[1]


def _check_box(box: Sequence[float], name: str) -> Box:
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise RegisterError("signer.register.box", name=name, box=str(box)) from None
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    if x2 - x1 < 20 or y2 - y1 < MIN_FONT_SIZE:
        raise RegisterError("signer.register.box", name=name, box=str(box))
    return (x1, y1, x2, y2)


def _all_fields(root: generic.DictionaryObject) -> dict[str, generic.IndirectObject]:
    """Top-level AcroForm fields by name (``/T``), with their references."""
    form = root.get("/AcroForm")
    if form is None:
        return {}
    found: dict[str, generic.IndirectObject] = {}
    for item in form.get_object().get("/Fields", generic.ArrayObject()):
        if not isinstance(item, generic.IndirectObject):
            continue
        obj = item.get_object()
        if isinstance(obj, generic.DictionaryObject) and "/T" in obj:
            found[str(obj["/T"])] = item
    return found


def _font_engine(writer: Any) -> Any:
    from pyhanko.pdf_utils.font.opentype import GlyphAccumulator

    path = fonts.serif_font_path()
    engine = GlyphAccumulator(writer, BytesIO(path.read_bytes()), font_size=int(FONT_SIZE))
    for char in FIELD_CHARSET:
        # one character at a time: no ligature may replace the glyphs of single letters
        engine.shape(char, with_actual_text=False)
    return engine


def add_register_fields(
    writer: IncrementalPdfFileWriter,
    *,
    page: int = 0,
    number_box: Sequence[float] | None = None,
    date_box: Sequence[float] | None = None,
    names: tuple[str, str] = DEFAULT_NAMES,
) -> RegisterFields:
    """Add the two empty text fields (number, date) to ``writer``'s next revision.

    Call it on the writer the person's signature is applied with, before signing (or in a
    revision of its own before the signature).  Boxes are PDF user-space rectangles
    ``(x1, y1, x2, y2)`` on page ``page`` (0-based); None takes the template's number or date
    line when the page prints one (:func:`find_template_lines`), else the Decree 30 defaults
    (:data:`NUMBER_BOX`, :data:`DATE_BOX`).
    """
    if len(names) != 2 or not all(isinstance(n, str) and n for n in names) or names[0] == names[1]:
        raise RegisterError("signer.register.names", names=", ".join(map(str, names)))
    root = writer.root
    try:
        page_count = int(root["/Pages"]["/Count"])
    except (KeyError, TypeError, ValueError):
        page_count = 0
    if not -page_count <= page < page_count:
        raise RegisterError("signer.register.page", page=page + 1, pages=page_count)
    existing = _all_fields(root)
    for name in names:
        if name in existing:
            raise RegisterError("signer.register.fields.exist", name=name)
    if any(_is_signed_sig(ref.get_object()) for ref in existing.values()):
        raise RegisterError("signer.register.prepare.signed")

    page_ref, _resources = writer.find_page_for_modification(page)
    page_obj = page_ref.get_object()
    frame = page_frame(page_obj)
    defaults = default_boxes(page_obj)
    template: tuple[TemplateLine | None, TemplateLine | None] = (None, None)
    if number_box is None or date_box is None:
        try:
            template = find_template_lines(writer.prev.stream, page % page_count)
        except AppearanceError as exc:
            log.warning("template text not readable, default register boxes used: %s", exc)
    found = (
        template[0] if number_box is None else None,
        template[1] if date_box is None else None,
    )
    boxes = (
        _check_box(number_box, names[0])
        if number_box is not None
        else (found[0].box if found[0] is not None else defaults[0]),
        _check_box(date_box, names[1])
        if date_box is not None
        else (found[1].box if found[1] is not None else defaults[1]),
    )

    # /AcroForm, its /Fields and the /DR font
    form_value = root.get("/AcroForm")
    if form_value is None:
        form = generic.DictionaryObject({pdf_name("/Fields"): generic.ArrayObject()})
        root[pdf_name("/AcroForm")] = writer.add_object(form)
        writer.update_root()
    else:
        form = form_value.get_object()
        if isinstance(form_value, generic.IndirectObject):
            writer.mark_update(form_value)
        else:
            writer.update_root()
    fields_value = form.get("/Fields")
    if fields_value is None:
        field_list = form[pdf_name("/Fields")] = generic.ArrayObject()
    else:
        field_list = fields_value.get_object()
        if isinstance(form.raw_get("/Fields"), generic.IndirectObject):
            writer.mark_update(form.raw_get("/Fields"))
    engine = _font_engine(writer)
    font_ref = engine.as_resource()
    dr_value = form.get("/DR")
    if dr_value is None:
        dr = form[pdf_name("/DR")] = generic.DictionaryObject()
    else:
        dr = dr_value.get_object()
        if isinstance(form.raw_get("/DR"), generic.IndirectObject):
            writer.mark_update(form.raw_get("/DR"))
    font_dict_value = dr.get("/Font")
    if font_dict_value is None:
        font_dict = dr[pdf_name("/Font")] = generic.DictionaryObject()
    else:
        font_dict = font_dict_value.get_object()
        if isinstance(dr.raw_get("/Font"), generic.IndirectObject):
            writer.mark_update(dr.raw_get("/Font"))
    resource = FONT_RESOURCE
    n = 1
    while pdf_name(resource) in font_dict:
        n += 1
        resource = f"{FONT_RESOURCE}{n}"
    font_dict[pdf_name(resource)] = font_ref

    for name, tooltip, box, line in zip(names, _TOOLTIPS, boxes, found, strict=True):
        x1, y1, x2, y2 = box
        size = min(max(line.font_size, MIN_FONT_SIZE), 2 * FONT_SIZE) if line else FONT_SIZE
        da = f"{resource} {size:g} Tf 0 g"
        mk = generic.DictionaryObject()
        if frame.rotate:
            mk[pdf_name("/R")] = generic.NumberObject(frame.rotate)
        if line is not None:
            mk[pdf_name("/BG")] = _WHITE
        empty = generic.StreamObject(
            {
                pdf_name("/Type"): pdf_name("/XObject"),
                pdf_name("/Subtype"): pdf_name("/Form"),
                pdf_name("/BBox"): generic.ArrayObject(
                    [
                        generic.FloatObject(0),
                        generic.FloatObject(0),
                        generic.FloatObject(x2 - x1),
                        generic.FloatObject(y2 - y1),
                    ]
                ),
                pdf_name("/Resources"): generic.DictionaryObject(),
            },
            stream_data=b"/Tx BMC EMC",
        )
        field = generic.DictionaryObject(
            {
                pdf_name("/Type"): pdf_name("/Annot"),
                pdf_name("/Subtype"): pdf_name("/Widget"),
                pdf_name("/FT"): pdf_name("/Tx"),
                pdf_name("/T"): generic.TextStringObject(name),
                pdf_name("/TU"): generic.TextStringObject(tooltip),
                pdf_name("/Rect"): generic.ArrayObject(
                    [generic.FloatObject(v) for v in (x1, y1, x2, y2)]
                ),
                pdf_name("/F"): generic.NumberObject(4),  # print
                pdf_name("/Ff"): generic.NumberObject(0),
                pdf_name("/P"): page_ref,
                pdf_name("/DA"): generic.TextStringObject(da),
                # centred in a default box; from the template's left, as its text runs
                pdf_name("/Q"): generic.NumberObject(0 if line is not None else 1),
                pdf_name("/MK"): mk,
                pdf_name("/AP"): generic.DictionaryObject(
                    {pdf_name("/N"): writer.add_object(empty)}
                ),
            }
        )
        if line is not None:
            field[pdf_name(TEMPLATE_KEY)] = generic.DictionaryObject(
                {
                    pdf_name("/Printed"): generic.TextStringObject(line.printed),
                    pdf_name("/Italic"): generic.BooleanObject(line.italic),
                }
            )
        field_ref = writer.add_object(field)
        field_list.append(field_ref)
        writer.register_annotation(page_ref, field_ref)
    return RegisterFields(
        names=(names[0], names[1]),
        page=page if page >= 0 else page_count + page,
        number_box=boxes[0],
        date_box=boxes[1],
        from_template=(found[0] is not None, found[1] is not None),
    )


def _is_signed_sig(obj: Any) -> bool:
    return (
        isinstance(obj, generic.DictionaryObject)
        and obj.get("/FT") == "/Sig"
        and (obj.get("/V") is not None)
    )


async def async_prepare_register_fields(
    source: Path,
    target: Path,
    *,
    page: int = 0,
    number_box: Sequence[float] | None = None,
    date_box: Sequence[float] | None = None,
    names: tuple[str, str] = DEFAULT_NAMES,
) -> RegisterFields:
    """Add the empty fields to an unsigned ``source`` as a revision of their own."""
    from kyso.signer.sign import atomic_output, open_pdf

    source, target = Path(source), Path(target)
    _refuse_same(source, target)
    with open_pdf(source) as handle:
        writer = _writer(handle, source)
        if list(writer.prev.embedded_signatures):
            raise RegisterError("signer.register.prepare.signed")
        placed = add_register_fields(
            writer, page=page, number_box=number_box, date_box=date_box, names=names
        )
        async with atomic_output(target) as out:
            writer.write(out)
    return placed


def prepare_register_fields(source: Path, target: Path, **kw: Any) -> RegisterFields:
    """Synchronous twin of :func:`async_prepare_register_fields`."""

    return run_sync(async_prepare_register_fields(source, target, **kw))


# -- filling them (after the person signed, before the agency seal) ---------------------------


def _refuse_same(source: Path, target: Path) -> None:
    from kyso.signer.errors import BadInputError
    from kyso.signer.sign import same_file

    if same_file(source, target):
        raise BadInputError("signer.output.is_input", path=str(target))


def _writer(handle: Any, source: Path) -> IncrementalPdfFileWriter:
    from kyso.signer.errors import BadInputError

    try:
        return IncrementalPdfFileWriter(handle, strict=False)
    except (PdfError, ValueError, KeyError) as exc:
        raise BadInputError("signer.input.damaged", path=str(source), reason=str(exc)) from None


def _is_agency(cert: x509.Certificate) -> bool:
    from kyso.certs.identity import identity_of

    return identity_of(cert).kind == "organisation"


@dataclass
class _Font:
    """An embedded Type0/Identity-H TrueType font, enough to encode and measure text."""

    cmap: dict[int, int]  # code point -> CID (= GID: CIDToGIDMap /Identity)
    widths: dict[int, float]  # CID -> width in 1/1000 text space units
    default_width: float

    def encode(self, text: str) -> tuple[bytes, float]:
        """Hex string operand and width (per 1 pt of font size) of ``text``."""
        missing = [c for c in text if ord(c) not in self.cmap]
        if missing:
            raise RegisterError("signer.register.glyphs", chars="".join(dict.fromkeys(missing)))
        cids = [self.cmap[ord(c)] for c in text]
        width = sum(self.widths.get(cid, self.default_width) for cid in cids) / 1000
        return ("<" + "".join(f"{cid:04X}" for cid in cids) + ">").encode("ascii"), width


def _load_font(font: generic.DictionaryObject, name: str) -> _Font:
    from fontTools.ttLib import TTFont, TTLibError

    try:
        if font.get("/Subtype") != "/Type0" or font.get("/Encoding") != "/Identity-H":
            raise KeyError("/Encoding")
        descendant = font["/DescendantFonts"][0].get_object()
        if descendant.get("/CIDToGIDMap", "/Identity") != "/Identity":
            raise KeyError("/CIDToGIDMap")
        program = descendant["/FontDescriptor"]["/FontFile2"].get_object().data
        with TTFont(BytesIO(program)) as tt:
            best = tt.getBestCmap() or {}
            cmap = {code: tt.getGlyphID(glyph) for code, glyph in best.items()}
        widths: dict[int, float] = {}
        spec = list(descendant.get("/W", generic.ArrayObject()))
        i = 0
        while i < len(spec):
            first = int(spec[i])
            nxt = spec[i + 1]
            if isinstance(nxt, generic.ArrayObject):
                for k, w in enumerate(nxt):
                    widths[first + k] = float(w)
                i += 2
            else:
                for cid in range(first, int(nxt) + 1):
                    widths[cid] = float(spec[i + 2])
                i += 3
        default = float(descendant.get("/DW", 1000))
    except (
        KeyError,
        IndexError,
        TypeError,
        ValueError,
        AttributeError,
        TTLibError,
        PdfError,
        AssertionError,
    ) as exc:
        raise RegisterError("signer.register.font", name=name, reason=str(exc)) from None
    return _Font(cmap=cmap, widths=widths, default_width=default)


_DA_FONT = re.compile(r"/([^\s/\[\]()<>{}%]+)\s+([0-9.]+)\s+Tf")


def _appearance(
    writer: IncrementalPdfFileWriter,
    field: generic.DictionaryObject,
    form: generic.DictionaryObject,
    text: str,
    *,
    oblique: bool,
) -> generic.IndirectObject:
    name = str(field.get("/T"))
    da = str(field.get("/DA") or form.get("/DA") or "")
    match = _DA_FONT.search(da)
    if match is None:
        raise RegisterError("signer.register.font", name=name, reason=f"/DA {da!r}")
    resource = "/" + match.group(1)
    size = float(match.group(2)) or FONT_SIZE
    try:
        font_ref = form["/DR"]["/Font"].raw_get(resource)
    except (KeyError, TypeError):
        raise RegisterError("signer.register.font", name=name, reason=resource) from None
    font = _load_font(font_ref.get_object(), name)
    hex_text, unit_width = font.encode(text)
    x1, y1, x2, y2 = (float(v) for v in field["/Rect"])
    width, height = abs(x2 - x1), abs(y2 - y1)
    mk = field.get("/MK")
    mk = mk.get_object() if mk is not None else generic.DictionaryObject()
    rotate = normalise_rotation(mk.get("/R", 0)) if isinstance(mk, generic.DictionaryObject) else 0
    if rotate in (90, 270):
        width, height = height, width  # laid out upright, turned by /Matrix below
    background = _colour_ops(mk.get("/BG") if isinstance(mk, generic.DictionaryObject) else None)
    if background:
        background += f" 0 0 {width:.2f} {height:.2f} re f\n"
    pad = 2.0
    if unit_width * size > width - 2 * pad:
        size = max(MIN_FONT_SIZE, (width - 2 * pad) / unit_width)
    size = min(size, height)
    text_width = unit_width * size
    quadding = int(field.get("/Q", form.get("/Q", 0)))
    if quadding == 1:
        x = (width - text_width) / 2
    elif quadding == 2:
        x = width - pad - text_width
    else:
        x = pad
    x = max(pad, x)
    y = (height - 0.7 * size) / 2  # cap height of a Times-like face is ~0.66 em
    shear = OBLIQUE if oblique else 0
    ops = (
        (
            f"{background}/Tx BMC\nq\n{pad:g} 0 {width - 2 * pad:.2f} {height:.2f} re W n\nBT\n"
            f"{resource} {size:.2f} Tf\n0 g\n1 0 {shear:g} 1 {x:.2f} {y:.2f} Tm\n"
        ).encode("ascii")
        + hex_text
        + b" Tj\nET\nQ\nEMC"
    )
    stream = generic.StreamObject(
        {
            pdf_name("/Type"): pdf_name("/XObject"),
            pdf_name("/Subtype"): pdf_name("/Form"),
            pdf_name("/BBox"): generic.ArrayObject(
                [
                    generic.FloatObject(0),
                    generic.FloatObject(0),
                    generic.FloatObject(width),
                    generic.FloatObject(height),
                ]
            ),
            pdf_name("/Resources"): generic.DictionaryObject(
                {pdf_name("/Font"): generic.DictionaryObject({pdf_name(resource): font_ref})}
            ),
        },
        stream_data=ops,
    )
    if rotate:
        stream[pdf_name("/Matrix")] = generic.ArrayObject(
            generic.FloatObject(v) for v in appearance_matrix(rotate, width, height)
        )
    stream.compress()
    return writer.add_object(stream)


def _colour_ops(value: Any) -> str:
    """Fill-colour operators for a ``/MK /BG`` array (gray, RGB or CMYK), "" for none."""
    try:
        parts = [float(v) for v in value.get_object()] if value is not None else []
    except (TypeError, ValueError, AttributeError):
        return ""
    if not all(0.0 <= v <= 1.0 for v in parts):
        return ""
    operator = {1: "g", 3: "rg", 4: "k"}.get(len(parts))
    return "" if operator is None else " ".join(f"{v:g}" for v in parts) + f" {operator}"


def _check_signatures(
    reader: PdfFileReader, source: Path, is_agency: Callable[[x509.Certificate], bool]
) -> list[Any]:
    signatures = [s for s in reader.embedded_signatures if s.sig_object_type == "/Sig"]
    if not signatures:
        raise RegisterError("signer.register.unsigned", path=str(source))
    for sig in signatures:
        cert = x509.load_der_x509_certificate(sig.signer_cert.dump())
        if is_agency(cert):
            raise RegisterError("signer.register.sealed", signer=cert.subject.rfc4514_string())
    perms = reader.root.get("/Perms")
    if perms is not None and "/DocMDP" in perms.get_object():
        try:
            sig_obj = perms.get_object()["/DocMDP"].get_object()
            level = int(sig_obj["/Reference"][0]["/TransformParams"].get("/P", 2))
        except (KeyError, IndexError, TypeError, ValueError):
            level = 2
        if level < 2:
            raise RegisterError("signer.register.locked")
    return signatures


def _locked_names(reader: PdfFileReader) -> set[str] | None:
    """Field names locked by a FieldMDP /Lock of a signed field; None when all are."""
    locked: set[str] = set()
    for ref in _all_fields(reader.root).values():
        obj = ref.get_object()
        if not _is_signed_sig(obj) or "/Lock" not in obj:
            continue
        lock = obj["/Lock"].get_object()
        action = lock.get("/Action")
        names = {str(n) for n in lock.get("/Fields", ())}
        if action == "/All":
            return None
        if action == "/Include":
            locked |= names
        elif action == "/Exclude":
            locked |= {n for n in _all_fields(reader.root) if n not in names}
    return locked


def read_register_fields(
    source: Path, names: tuple[str, str] = DEFAULT_NAMES
) -> tuple[str | None, str | None]:
    """The values of the two fields (None when absent or empty)."""
    from kyso.signer.sign import open_pdf

    with open_pdf(Path(source)) as handle:
        reader = PdfFileReader(handle, strict=False)
        found = _all_fields(reader.root)
        values: list[str | None] = []
        for name in names:
            ref = found.get(name)
            value = ref.get_object().get("/V") if ref is not None else None
            values.append(str(value) if value not in (None, "") else None)
    return values[0], values[1]


async def async_fill_register_fields(
    source: Path,
    target: Path,
    *,
    number: int | str,
    symbol: str,
    issued: dt.date | None = None,
    place: str | None = None,
    names: tuple[str, str] = DEFAULT_NAMES,
    today: dt.date | None = None,
    is_agency: Callable[[x509.Certificate], bool] = _is_agency,
) -> tuple[str, str]:
    """Write the number and date into the prepared fields of a signed ``source``.

    An incremental update (earlier signatures stay intact, the change is FORM_FILLING),
    written atomically to ``target``.  Refuses an unsigned file, a file an agency already
    sealed, missing, misplaced or already filled fields.  Returns the two texts written.
    """
    from kyso.signer.sign import atomic_output, open_pdf

    source, target = Path(source), Path(target)
    _refuse_same(source, target)
    number_line = number_text(number, symbol)
    issued_on = check_issue_date(issued or today_vn(), today)
    where = check_place(place)
    with open_pdf(source) as handle:
        writer = _writer(handle, source)
        reader = writer.prev
        signatures = _check_signatures(reader, source, is_agency)
        first_signed = min(s.signed_revision for s in signatures)
        found = _all_fields(writer.root)
        missing = [n for n in names if n not in found]
        if missing:
            raise RegisterError("signer.register.fields.missing", names=", ".join(missing))
        locked = _locked_names(reader)
        form = writer.root["/AcroForm"].get_object()
        for name in names:
            ref = found[name]
            field = ref.get_object()
            if field.get("/FT") != "/Tx":
                raise RegisterError("signer.register.fields.wrong_type", name=name)
            value = field.get("/V")
            if value not in (None, ""):
                raise RegisterError("signer.register.fields.filled", name=name, value=str(value))
            if reader.xrefs.get_introducing_revision(ref.reference) > first_signed:
                raise RegisterError("signer.register.fields.after_signature", name=name)
            if locked is None or name in locked:
                raise RegisterError("signer.register.locked")
        number_printed, number_italic = _template_of(found[names[0]].get_object(), False)
        date_printed, date_italic = _template_of(found[names[1]].get_object(), True)
        number_shown = format_number(number, symbol) if number_printed else number_line
        date_line, date_shown = _date_texts(issued_on, where, date_printed)
        for name, text, shown, oblique in zip(
            names,
            (number_line, date_line),
            (number_shown, date_shown),
            (number_italic, date_italic),
            strict=True,
        ):
            ref = found[name]
            field = ref.get_object()
            field[pdf_name("/V")] = generic.TextStringObject(text)
            field[pdf_name("/AP")] = generic.DictionaryObject(
                {pdf_name("/N"): _appearance(writer, field, form, shown, oblique=oblique)}
            )
            field[pdf_name("/Ff")] = generic.NumberObject(int(field.get("/Ff", 0)) | _FF_READ_ONLY)
            writer.mark_update(ref)
        async with atomic_output(target) as out:
            writer.write(out)
    return number_line, date_line


def _template_of(field: generic.DictionaryObject, italic: bool) -> tuple[str, bool]:
    """What the template prints before the field ("" when nothing) and whether the filled
    text is slanted: the template's own style for a field on its line (``/KysoTemplate``),
    else ``italic`` (Decree 30: the date line is italic, the number upright)."""
    entry = field.get(TEMPLATE_KEY)
    entry = entry.get_object() if entry is not None else None
    if not isinstance(entry, generic.DictionaryObject):
        return "", italic
    printed = " ".join(unicodedata.normalize("NFC", str(entry.get("/Printed", ""))).split())
    return printed, bool(entry.get("/Italic", False))


def _same_place(a: str, b: str) -> bool:
    def fold(text: str) -> str:
        return " ".join(unicodedata.normalize("NFC", text).casefold().split())

    return fold(a) == fold(b)


def _date_texts(issued: dt.date, place: str | None, printed: str) -> tuple[str, str]:
    """The date field's value (the whole line) and what its appearance draws.

    With the place printed by the template (``printed``, e.g. ``Hà Nội,``) only the date is
    drawn after it; a different ``place`` would contradict the document and is refused."""
    if not printed:
        text = format_date_vi(issued, place)
        return text, text
    printed_place = printed.rstrip(", ").strip()
    if place is not None and not _same_place(place, printed_place):
        raise RegisterError("signer.register.place.printed", printed=printed_place, place=place)
    date_only = format_date_vi(issued)
    return (f"{printed_place}, {date_only}" if printed_place else date_only), date_only


fill_register_fields = sync_twin(async_fill_register_fields)
