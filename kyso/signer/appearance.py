"""Visible signatures as Decree 30/2020/NĐ-CP, Appendix I, draws them.

Three appearances, each a frozen dataclass:

* :class:`PersonAppearance`: the competent official's handwritten signature, a **blue** PNG with
  a transparent background, centred in the signature block between the printed title and the
  printed full name (the drafting template already prints both; kyso draws the image only).
* :class:`SealAppearance`: the agency's **red** seal, a transparent PNG drawn at its real size
  (36 mm by default), overlapping about **one third of the person's signature image, on its
  left**.  It is placed from the person's signature already in the document, so the clerk gives
  no coordinates.
* :class:`TextStampAppearance`: attachments in separate files and electronic copies ("SAO Y",
  "SAO LỤC", "TRÍCH SAO"): no image, a text block at the **top right of the first page**: the
  given lines (number and symbol; or copy type and copying agency) and the **signing time** in
  ISO 8601 with the Vietnam offset (``2020-03-05T10:20:30+07:00``), Times New Roman metrics
  (the shipped Liberation Serif), 10 pt, upright, black.

Where it goes is a :class:`Placement`: a box on a page, an existing empty signature field, or a
text anchor found on a page (the signer's printed name, or a placeholder such as
``{{chu_ky}}``).  :func:`prepare_visible_signature` reads the PDF, checks the placement and
returns a :class:`VisibleSignature` with everything ``PdfSigner`` needs.

Text anchors are located with pdfminer.six (in-process, pure Python, per-character boxes, so an
anchor may be part of a line; only the pages searched are interpreted), not with poppler's
``pdftotext`` (an external binary the service would have to ship and call per request, with
word-level boxes only).  pyHanko itself does not extract text.

Coordinates given to and returned by this module (:class:`Placement` boxes, field rectangles,
:func:`find_text`) are PDF user-space points of the page, origin at the bottom left, as in
``/Rect``.  Everything *placed* by meaning (above a name, top right, bottom right, the seal on
the left of the signature) is worked out as a viewer shows the page: a page with ``/Rotate``
90, 180 or 270 and a visible area that does not start at (0, 0) is handled through
:class:`PageFrame`, and every appearance is drawn upright for the viewer (its form XObject
carries the rotation as ``/Matrix``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
import random
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from pyhanko.pdf_utils import generic, layout
from pyhanko.pdf_utils.content import AppearanceContent
from pyhanko.pdf_utils.font.opentype import GlyphAccumulatorFactory
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.pdf_utils.writer import BasePdfFileWriter
from pyhanko.sign.fields import SigFieldSpec
from pyhanko.stamp import (
    BaseStampStyle,
    NoOpStampStyle,
    StaticStampStyle,
    TextStamp,
    TextStampStyle,
)

from kyso.signer import fonts
from kyso.signer.errors import AppearanceError

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "PYHANKO_TIMESTAMP_FORMAT",
    "VIETNAM_TZ",
    "AppearanceError",
    "Box",
    "PersonAppearance",
    "Placement",
    "SealAppearance",
    "TextStampAppearance",
    "VietnamTimeTextStampStyle",
    "VisibleSignature",
    "demo_seal_png",
    "demo_signature_png",
    "find_text",
    "prepare_visible_signature",
    "vietnam_time",
]

Box = tuple[float, float, float, float]
"""A rectangle ``(left x, bottom y, right x, top y)`` in PDF points."""

AnchorMode = Literal["above", "over"]
Kind = Literal["person", "seal", "text", "invisible"]

MM = 72.0 / 25.4
"""PDF points per millimetre."""

VIETNAM_TZ = dt.timezone(dt.timedelta(hours=7), "ICT")
"""Vietnam time, UTC+07:00 all year (no daylight saving since 1975)."""

PYHANKO_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
"""What pyHanko is asked to format the signing time with (``%(ts)s``): an absolute time with
its offset, which :class:`VietnamTimeTextStampStyle` then rewrites in Vietnam time."""

TEXT_FONT_SIZE = 10
TEXT_LEADING = 11
TEXT_PADDING = 2.0
TEXT_COLOR = (0.0, 0.0, 0.0)
TEXT_MARGIN_RIGHT_MM = 15.0
TEXT_MARGIN_TOP_MM = 5.0
MAX_TEXT_LINES = 6
MAX_LINE_CHARS = 200

PERSON_MAX_WIDTH = 160.0
PERSON_MAX_HEIGHT = 70.0
PERSON_MIN_HEIGHT = 30.0
SEAL_MIN_MM = 10.0
SEAL_MAX_MM = 80.0

MAX_IMAGE_PIXELS = 40_000_000
IMAGE_DPI = 300
MIN_BOX_SIZE = 4.0
MAX_FIELD_NAME = 100
_GAP = 2.0

_SAMPLE_TIME = "0000-00-00T00:00:00+07:00"


# --------------------------------------------------------------------------- appearances


@dataclass(frozen=True)
class PersonAppearance:
    """The competent official's signature: the handwritten-signature image, nothing else.

    ``signature_png`` is a PNG with a transparent background (Decree 30 wants it blue; kyso does
    not recolour it).  Fully transparent margins are trimmed, then the image is drawn centred,
    as large as fits, in the signature block: the space between the printed title and the
    printed name when the name is the anchor, otherwise a ``max_width`` × ``max_height`` point
    area.  The signature field's rectangle is the drawn image itself, so the agency seal can
    later be placed from it.
    """

    signature_png: bytes = field(repr=False)
    max_width: float = PERSON_MAX_WIDTH
    """Widest the image may be drawn, in points."""
    max_height: float = PERSON_MAX_HEIGHT
    """Tallest the image may be drawn, in points."""


@dataclass(frozen=True)
class SealAppearance:
    """The agency's seal: the red seal image at its real size, over the person's signature.

    ``seal_png`` is a PNG with a transparent background, trimmed to its visible part and drawn
    ``diameter_mm`` wide.  Without an explicit placement it overlaps ``overlap`` (one third) of
    the person's signature image, on its left, vertically centred on it; the person's signature
    is ``person_field`` or, by default, the last signed visible signature field of the document;
    when the document is signed only invisibly (a USB token's two-phase signature), the seal
    takes the usual signature block of the last page instead.  Its field rectangle stands for
    the signature image: exact for fields kyso creates (sized to the image); in a field
    prepared by a template the image was centred in the rectangle.
    """

    seal_png: bytes = field(repr=False)
    diameter_mm: float = 36.0
    person_field: str | None = None
    """Name of the person's (signed) signature field; None: the last signed visible one."""
    overlap: float = 1.0 / 3.0
    """Fraction of the signature image's width the seal covers, from the image's left edge."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.diameter_mm) and SEAL_MIN_MM <= self.diameter_mm <= SEAL_MAX_MM):
            raise AppearanceError(
                "signer.appearance.seal_diameter",
                diameter=self.diameter_mm,
                min=SEAL_MIN_MM,
                max=SEAL_MAX_MM,
            )
        if not 0.0 <= self.overlap <= 1.0:
            raise ValueError("overlap must be between 0 and 1")

    @property
    def diameter_pt(self) -> float:
        """The seal's diameter in PDF points."""
        return self.diameter_mm * MM


@dataclass(frozen=True)
class TextStampAppearance:
    """An agency signature shown as text, top right of the first page (no image).

    For attachments in separate files, ``lines`` is the number and symbol of the document; for
    electronic copies, the copy type ("SAO Y", "SAO LỤC", "TRÍCH SAO") and the copying agency.
    The signing time, in ISO 8601 with +07:00, is always added as the last line; it is the
    actual signing time pyHanko stamps (the CMS signing time), shown in Vietnam time whatever
    the server's time zone.  Liberation Serif (Times New Roman metrics), 10 pt, black.
    """

    lines: Sequence[str]

    def __post_init__(self) -> None:
        if isinstance(self.lines, str):
            raise TypeError("lines must be a sequence of strings, not one string")
        lines = tuple(unicodedata.normalize("NFC", str(line).strip()) for line in self.lines)
        lines = tuple(line for line in lines if line)
        if not lines:
            raise AppearanceError("signer.appearance.text_empty")
        if len(lines) > MAX_TEXT_LINES:
            raise AppearanceError(
                "signer.appearance.text_bad_line", line=lines[MAX_TEXT_LINES], max=MAX_LINE_CHARS
            )
        for line in lines:
            if len(line) > MAX_LINE_CHARS or any(
                unicodedata.category(c).startswith("C") for c in line
            ):
                raise AppearanceError(
                    "signer.appearance.text_bad_line", line=line[:60], max=MAX_LINE_CHARS
                )
        object.__setattr__(self, "lines", lines)

    @classmethod
    def attachment(cls, number_and_symbol: str) -> TextStampAppearance:
        """For an attachment in a separate file: e.g. ``"Số: 15/QĐ-BNV"``."""
        return cls([number_and_symbol])

    @classmethod
    def copy(cls, copy_type: str, agency: str) -> TextStampAppearance:
        """For an electronic copy: ``copy("SAO Y", "UỶ BAN NHÂN DÂN TỈNH LẠNG SƠN")``."""
        return cls([copy_type, agency])


Appearance = PersonAppearance | SealAppearance | TextStampAppearance


# --------------------------------------------------------------------------- placement


@dataclass(frozen=True)
class Placement:
    """Where a visible signature goes: exactly one of ``box``, ``field`` or ``anchor``.

    * ``box`` on ``page``: a rectangle in PDF user-space points (as in ``/Rect``, whatever the
      page's ``/Rotate``); ``page`` counts from 0, negative from the end, None means the last
      page.  The box must lie within the page's visible area.  For a person the image is
      fitted inside it; a seal (real size) or a text block is centred in it; all drawn upright
      as the page is displayed.
    * ``field``: the name of an existing, empty signature field; its rectangle is used as is.
    * ``anchor``: a text printed on the page (case and spacing do not matter, diacritics do),
      searched on ``page``, or on every page from the last one back when ``page`` is None; the
      lowest occurrence on the page (as displayed) is used.  ``anchor_mode="above"`` puts the
      signature in the space above the text as the reader sees it (the signer's printed name:
      between title and name);
      ``"over"`` centres it on the text (a placeholder such as ``{{chu_ky}}``).
    """

    box: Box | None = None
    page: int | None = None
    field: str | None = None
    anchor: str | None = None
    anchor_mode: AnchorMode = "above"

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.box, self.field, self.anchor))
        if given != 1 or self.anchor_mode not in ("above", "over"):
            raise AppearanceError("signer.appearance.placement_ambiguous")
        if self.box is not None:
            object.__setattr__(self, "box", _check_box(self.box))
        if self.field is not None:
            _check_field_name(self.field)
        if self.anchor is not None and not _fold(self.anchor)[0]:
            raise AppearanceError("signer.appearance.anchor_empty")
        if self.page is not None and not isinstance(self.page, int):
            raise TypeError("page must be an int or None")

    @classmethod
    def at(cls, box: Sequence[float], page: int | None = None) -> Placement:
        """A box ``(x0, y0, x1, y1)`` in points on ``page`` (default: the last page)."""
        return cls(box=tuple(box), page=page)  # type: ignore[arg-type]

    @classmethod
    def in_field(cls, name: str) -> Placement:
        """An existing, empty signature field."""
        return cls(field=name)

    @classmethod
    def near_text(cls, text: str, page: int | None = None, mode: AnchorMode = "above") -> Placement:
        """A text printed on the page: above it (``"above"``) or centred on it (``"over"``)."""
        return cls(anchor=text, page=page, anchor_mode=mode)


def _check_box(box: Any) -> Box:
    try:
        values = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        raise AppearanceError(
            "signer.appearance.box_invalid", box=repr(box), min_size=MIN_BOX_SIZE
        ) from None
    if (
        len(values) != 4
        or not all(math.isfinite(v) for v in values)
        or values[2] - values[0] < MIN_BOX_SIZE
        or values[3] - values[1] < MIN_BOX_SIZE
    ):
        raise AppearanceError(
            "signer.appearance.box_invalid", box=_fmt_box(values), min_size=MIN_BOX_SIZE
        )
    return values


def _check_field_name(name: str) -> None:
    if (
        not isinstance(name, str)
        or not name.strip()
        or "." in name
        or len(name) > MAX_FIELD_NAME
        or any(unicodedata.category(c).startswith("C") for c in name)
    ):
        raise AppearanceError("signer.appearance.field_name_invalid", field=str(name))


def _fmt_box(box: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in box) + ")"


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class VisibleSignature:
    """What the signing core passes on to pyHanko.

    ``PdfSigner(PdfSignatureMetadata(field_name=vs.field_name, ...), signer,
    **vs.pdf_signer_kwargs())``.  ``new_field_spec`` is None when an existing field is signed;
    ``stamp_style`` is None for a new invisible signature (nothing is drawn).
    """

    field_name: str
    new_field_spec: SigFieldSpec | None
    stamp_style: BaseStampStyle | None
    kind: Kind
    page_index: int | None = None
    """Page of the signature's widget (0-based), None when invisible."""
    box: Box | None = None
    """The widget's rectangle on that page, None when invisible."""

    @property
    def existing_field(self) -> bool:
        """True when an existing empty field is signed (no field is created)."""
        return self.new_field_spec is None

    def pdf_signer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``pyhanko.sign.signers.PdfSigner``."""
        return {"stamp_style": self.stamp_style, "new_field_spec": self.new_field_spec}


# --------------------------------------------------------------------------- time stamp style


def vietnam_time(value: str | dt.datetime) -> str:
    """``value`` (a datetime, or a time pyHanko formatted with
    :data:`PYHANKO_TIMESTAMP_FORMAT`) as ISO 8601 in Vietnam time: ``2020-03-05T10:20:30+07:00``.

    A time without an offset is taken as the server's local time.
    """
    if isinstance(value, str):
        try:
            moment = dt.datetime.strptime(value, PYHANKO_TIMESTAMP_FORMAT)
        except ValueError:
            moment = dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S")
    else:
        moment = value
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(VIETNAM_TZ).replace(microsecond=0).isoformat()


# --------------------------------------------------------------------------- page orientation


@dataclass(frozen=True)
class PageFrame:
    """A page as a viewer shows it: its visible area in user space and its ``/Rotate``.

    The *visual* space has its origin at the bottom left of the visible area as displayed,
    x to the right and y up as the reader sees them, in points: its size is the area's, with
    width and height swapped at 90 and 270 degrees.  :meth:`to_visual` and :meth:`to_user`
    convert rectangles between the two.
    """

    area: Box
    """The visible area (crop box clipped to the media box), user space."""
    rotate: int = 0
    """Clockwise rotation when displayed: 0, 90, 180 or 270."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rotate", normalise_rotation(self.rotate))

    @property
    def size(self) -> tuple[float, float]:
        """Width and height of the page as displayed."""
        w, h = self.area[2] - self.area[0], self.area[3] - self.area[1]
        return (h, w) if self.rotate in (90, 270) else (w, h)

    @property
    def visual_area(self) -> Box:
        w, h = self.size
        return (0.0, 0.0, w, h)

    def point_to_visual(self, x: float, y: float) -> tuple[float, float]:
        u, v = x - self.area[0], y - self.area[1]
        w, h = self.area[2] - self.area[0], self.area[3] - self.area[1]
        if self.rotate == 90:
            return (v, w - u)
        if self.rotate == 180:
            return (w - u, h - v)
        if self.rotate == 270:
            return (h - v, u)
        return (u, v)

    def point_to_user(self, x: float, y: float) -> tuple[float, float]:
        w, h = self.area[2] - self.area[0], self.area[3] - self.area[1]
        if self.rotate == 90:
            u, v = w - y, x
        elif self.rotate == 180:
            u, v = w - x, h - y
        elif self.rotate == 270:
            u, v = y, h - x
        else:
            u, v = x, y
        return (u + self.area[0], v + self.area[1])

    def to_visual(self, box: Box) -> Box:
        """A user-space rectangle as the viewer sees it."""
        return _corners(self.point_to_visual(box[0], box[1]), self.point_to_visual(box[2], box[3]))

    def to_user(self, box: Box) -> Box:
        """A rectangle of the visual space in user space (for ``/Rect``)."""
        return _corners(self.point_to_user(box[0], box[1]), self.point_to_user(box[2], box[3]))

    def appearance_matrix(self, width: float, height: float) -> tuple[float, ...]:
        """``/Matrix`` for a form XObject drawn upright in a ``width`` × ``height`` (visual)
        box, so that it shows upright on this page once mapped onto its ``/Rect``."""
        return appearance_matrix(self.rotate, width, height)


def normalise_rotation(value: Any) -> int:
    """``/Rotate`` as 0, 90, 180 or 270 (anything else, which the PDF forbids, counts as 0)."""
    try:
        degrees = int(value)
    except (TypeError, ValueError):
        return 0
    degrees %= 360
    return degrees if degrees in (0, 90, 180, 270) else 0


def appearance_matrix(rotate: int, width: float, height: float) -> tuple[float, ...]:
    """The form matrix turning an upright ``width`` × ``height`` drawing counter-clockwise by
    ``rotate`` degrees (what a page displayed ``rotate`` degrees clockwise needs), with the
    result's bottom-left corner at the origin."""
    rotate = normalise_rotation(rotate)
    if rotate == 90:
        return (0.0, 1.0, -1.0, 0.0, height, 0.0)
    if rotate == 180:
        return (-1.0, 0.0, 0.0, -1.0, width, height)
    if rotate == 270:
        return (0.0, -1.0, 1.0, 0.0, 0.0, width)
    return (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)


def _corners(p: tuple[float, float], q: tuple[float, float]) -> Box:
    return (min(p[0], q[0]), min(p[1], q[1]), max(p[0], q[0]), max(p[1], q[1]))


class _UprightAppearance(AppearanceContent):
    """A stamp laid out upright in its visual box, its form XObject turned by ``/Matrix`` so
    that a viewer showing the page rotated sees it upright."""

    def __init__(self, inner: AppearanceContent, writer: BasePdfFileWriter, rotate: int) -> None:
        super().__init__(writer=writer, box=inner.box)
        self.inner = inner
        self.rotate = rotate

    def as_form_xobject(self) -> generic.StreamObject:
        xobject = self.inner.as_form_xobject()
        matrix = appearance_matrix(self.rotate, self.inner.box.width, self.inner.box.height)
        xobject[generic.pdf_name("/Matrix")] = generic.ArrayObject(
            generic.FloatObject(v) for v in matrix
        )
        return xobject


def _visual_box(box: layout.BoxConstraints, rotate: int) -> layout.BoxConstraints:
    """The field's box as the stamp must be laid out (width and height swapped at 90/270)."""
    if rotate in (90, 270) and box.width_defined and box.height_defined:
        return layout.BoxConstraints(width=box.height, height=box.width)
    return box


def _upright(stamp: Any, writer: BasePdfFileWriter, rotate: int) -> Any:
    return stamp if rotate == 0 or stamp is None else _UprightAppearance(stamp, writer, rotate)


@dataclass(frozen=True)
class UprightStaticStampStyle(StaticStampStyle):
    """pyHanko's static (image) stamp, drawn upright on a page with ``/Rotate``."""

    page_rotation: int = 0

    def create_stamp(
        self,
        writer: BasePdfFileWriter,
        box: layout.BoxConstraints,
        text_params: dict[str, Any],
    ) -> Any:
        stamp = super().create_stamp(writer, _visual_box(box, self.page_rotation), text_params)
        return _upright(stamp, writer, self.page_rotation)


class _VietnamTimeTextStamp(TextStamp):
    def get_default_text_params(self) -> dict[str, str]:
        return {"ts": vietnam_time(dt.datetime.now(dt.UTC))}


@dataclass(frozen=True)
class VietnamTimeTextStampStyle(TextStampStyle):
    """A pyHanko text stamp whose ``%(ts)s`` is the signing time in Vietnam time (+07:00).

    pyHanko formats the signing time (the same instant as the CMS signing time) with
    :attr:`timestamp_format` in the server's time zone; this style asks for an absolute time
    with its offset and rewrites it as ISO 8601 at +07:00, so the server's ``TZ`` does not
    matter.
    """

    timestamp_format: str = PYHANKO_TIMESTAMP_FORMAT
    page_rotation: int = 0
    """The page's ``/Rotate``: the text is drawn upright for the viewer."""

    def create_stamp(
        self,
        writer: BasePdfFileWriter,
        box: layout.BoxConstraints,
        text_params: dict[str, Any],
    ) -> Any:
        params = dict(text_params or {})
        if isinstance(params.get("ts"), str):
            params["ts"] = vietnam_time(params["ts"])
        stamp = _VietnamTimeTextStamp(
            writer=writer,
            style=self,
            box=_visual_box(box, self.page_rotation),
            text_params=params,
        )
        return _upright(stamp, writer, self.page_rotation)


def _text_style(lines: Sequence[str], rotation: int = 0) -> VietnamTimeTextStampStyle:
    font_path = fonts.serif_font_path()
    missing = fonts.missing_glyphs("".join(lines), font_path)
    if missing:
        raise AppearanceError("signer.appearance.text_unsupported_chars", chars=" ".join(missing))
    template = "\n".join([*(line.replace("%", "%%") for line in lines), "%(ts)s"])
    return VietnamTimeTextStampStyle(
        stamp_text=template,
        text_box_style=TextBoxStyle(
            # GlyphAccumulatorFactory.font_size must equal TextBoxStyle.font_size (pyHanko #733)
            font=GlyphAccumulatorFactory(str(font_path), font_size=TEXT_FONT_SIZE),
            font_size=TEXT_FONT_SIZE,
            leading=TEXT_LEADING,
            text_color=TEXT_COLOR,
            border_width=0,
            box_layout_rule=layout.SimpleBoxLayoutRule(
                x_align=layout.AxisAlignment.ALIGN_MIN,
                y_align=layout.AxisAlignment.ALIGN_MIN,
                margins=layout.Margins(),
                inner_content_scaling=layout.InnerScaling.NO_SCALING,
            ),
        ),
        inner_content_layout=layout.SimpleBoxLayoutRule(
            x_align=layout.AxisAlignment.ALIGN_MAX,
            y_align=layout.AxisAlignment.ALIGN_MAX,
            margins=layout.Margins.uniform(TEXT_PADDING),
            inner_content_scaling=layout.InnerScaling.SHRINK_TO_FIT,
        ),
        border_width=0,
        background=None,
        page_rotation=rotation,
    )


def _text_size(lines: Sequence[str]) -> tuple[float, float]:
    """The box a text stamp needs: widest line (or the time) plus padding, all lines."""
    widths = [fonts.text_width(s, TEXT_FONT_SIZE) for s in (*lines, _SAMPLE_TIME)]
    width = math.ceil(max(widths) * 1.03 + 2 * TEXT_PADDING + 2)
    height = (len(lines) + 1) * TEXT_LEADING + 2 * TEXT_PADDING + 2
    return float(width), float(height)


# --------------------------------------------------------------------------- images


_IMAGE_CODES = {
    "signature": (
        "signer.appearance.signature_image.invalid",
        "signer.appearance.signature_image.not_transparent",
        "signer.appearance.signature_image.too_large",
    ),
    "seal": (
        "signer.appearance.seal_image.invalid",
        "signer.appearance.seal_image.not_transparent",
        "signer.appearance.seal_image.too_large",
    ),
}


def _load_png(data: bytes, what: Literal["signature", "seal"]) -> Image.Image:
    """The PNG as RGBA, trimmed to its visible part; refuses non-PNG and opaque images."""
    from PIL import Image, UnidentifiedImageError

    invalid, opaque, too_large = _IMAGE_CODES[what]
    if not isinstance(data, bytes | bytearray) or not bytes(data[:8]) == b"\x89PNG\r\n\x1a\n":
        raise AppearanceError(invalid, reason="not a PNG file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            pixels = img.width * img.height
            if pixels > MAX_IMAGE_PIXELS:
                raise AppearanceError(too_large, pixels=pixels, limit=MAX_IMAGE_PIXELS)
            img.load()
            rgba = img.convert("RGBA")
    except AppearanceError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise AppearanceError(invalid, reason=str(exc)) from None
    alpha = rgba.getchannel("A")
    low, _high = alpha.getextrema()
    if low == 255:
        raise AppearanceError(opaque)
    visible = alpha.point(lambda a: 255 if a > 8 else 0).getbbox()
    if visible is None:
        raise AppearanceError(invalid, reason="the image is fully transparent")
    return rgba.crop(visible)


def _downscaled(img: Image.Image, width_pt: float) -> Image.Image:
    """At most :data:`IMAGE_DPI` at its drawn width (keeps PDFs small)."""
    from PIL import Image

    max_px = max(8, math.ceil(width_pt / 72.0 * IMAGE_DPI))
    if img.width <= max_px:
        return img
    height = max(1, round(img.height * max_px / img.width))
    return img.resize((max_px, height), Image.Resampling.LANCZOS)


def _image_style(img: Image.Image, rotation: int = 0) -> UprightStaticStampStyle:
    from pyhanko.pdf_utils.images import PdfImage

    return UprightStaticStampStyle(
        background=PdfImage(img),
        background_opacity=1.0,
        background_layout=layout.SimpleBoxLayoutRule(
            x_align=layout.AxisAlignment.ALIGN_MID,
            y_align=layout.AxisAlignment.ALIGN_MID,
            margins=layout.Margins(),
            inner_content_scaling=layout.InnerScaling.STRETCH_TO_FIT,
        ),
        border_width=0,
        page_rotation=rotation,
    )


# --------------------------------------------------------------------------- reading the PDF


@dataclass(frozen=True)
class _Page:
    index: int
    ref: tuple[int, int]
    media_box: Box
    crop_box: Box
    rotate: int = 0

    @property
    def area(self) -> Box:
        """The visible area: the crop box clipped to the media box."""
        return visible_area(self.media_box, self.crop_box)

    @property
    def frame(self) -> PageFrame:
        return PageFrame(self.area, self.rotate)


def visible_area(media: Box, crop: Box | None) -> Box:
    """The crop box clipped to the media box (the media box when they do not overlap)."""
    m, c = media, crop or media
    area = (max(m[0], c[0]), max(m[1], c[1]), min(m[2], c[2]), min(m[3], c[3]))
    return area if area[2] > area[0] and area[3] > area[1] else m


@dataclass(frozen=True)
class _Field:
    name: str
    field_type: str | None
    signed: bool
    widgets: tuple[tuple[tuple[int, int] | None, Box, tuple[int, int] | None], ...]
    """(widget ref, /Rect, /P ref) of each widget."""


def _ref_key(obj: Any) -> tuple[int, int] | None:
    if isinstance(obj, generic.IndirectObject):
        return (obj.idnum, obj.generation)
    return None


def _rect(value: Any) -> Box | None:
    try:
        x0, y0, x1, y1 = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _pages(reader: PdfFileReader) -> list[_Page]:
    pages: list[_Page] = []
    root = reader.root.raw_get("/Pages")

    def walk(node_ref: Any, inherited: dict[str, Any], seen: frozenset[tuple[int, int]]) -> None:
        key = _ref_key(node_ref)
        if key is None or key in seen or len(seen) > 64:
            raise AppearanceError("signer.appearance.pdf_unreadable", reason="bad page tree")
        node = node_ref.get_object()
        attrs = dict(inherited)
        for name in ("/MediaBox", "/CropBox", "/Rotate"):
            if name in node:
                attrs[name] = node[name]
        node_type = node.get("/Type")
        if node_type == "/Pages" or ("/Kids" in node and node_type != "/Page"):
            for kid in node["/Kids"]:
                walk(kid, attrs, seen | {key})
            return
        media = _rect(attrs.get("/MediaBox")) or (0.0, 0.0, 595.28, 841.89)
        crop = _rect(attrs.get("/CropBox")) or media
        rotate = normalise_rotation(attrs.get("/Rotate", 0))
        pages.append(
            _Page(index=len(pages), ref=key, media_box=media, crop_box=crop, rotate=rotate)
        )

    walk(root, {}, frozenset())
    return pages


def _fields(reader: PdfFileReader) -> list[_Field]:
    """Every form field (terminal or not) with its fully qualified name."""
    out: list[_Field] = []
    try:
        top = reader.root["/AcroForm"]["/Fields"]
    except (KeyError, TypeError):
        return out

    def walk(
        refs: Any, parent: str | None, ftype: str | None, seen: frozenset[tuple[int, int]]
    ) -> None:
        for ref in refs:
            key = _ref_key(ref)
            if key is None or key in seen or len(seen) > 32:
                continue
            obj = ref.get_object()
            if not isinstance(obj, generic.DictionaryObject) or "/T" not in obj:
                continue
            name = str(obj["/T"]) if parent is None else f"{parent}.{obj['/T']}"
            own_type = obj.get("/FT", ftype)
            kids = obj.get("/Kids", generic.ArrayObject())
            widgets: list[tuple[tuple[int, int] | None, Box, tuple[int, int] | None]] = []
            if obj.get("/Subtype") == "/Widget":
                rect = _rect(obj.get("/Rect"))
                if rect is not None:
                    widgets.append(
                        (key, rect, _ref_key(obj.raw_get("/P") if "/P" in obj else None))
                    )
            sub_fields = []
            for kid in kids:
                kid_obj = kid.get_object()
                if not isinstance(kid_obj, generic.DictionaryObject):
                    continue
                if "/T" in kid_obj:
                    sub_fields.append(kid)
                elif kid_obj.get("/Subtype") == "/Widget":
                    rect = _rect(kid_obj.get("/Rect"))
                    if rect is not None:
                        p = kid_obj.raw_get("/P") if "/P" in kid_obj else None
                        widgets.append((_ref_key(kid), rect, _ref_key(p)))
            out.append(
                _Field(
                    name=name,
                    field_type=str(own_type) if own_type is not None else None,
                    signed=bool(obj.get("/V")),
                    widgets=tuple(widgets),
                )
            )
            if sub_fields:
                walk(sub_fields, name, own_type, seen | {key})

    walk(top, None, None, frozenset())
    return out


def _annotation_pages(reader: PdfFileReader, pages: Sequence[_Page]) -> dict[tuple[int, int], int]:
    """Widget reference → index of the page whose /Annots lists it."""
    found: dict[tuple[int, int], int] = {}
    for page in pages:
        page_obj = reader.get_object(generic.Reference(*page.ref, pdf=reader))
        annots = page_obj.get("/Annots") if isinstance(page_obj, generic.DictionaryObject) else None
        if annots is None:
            continue
        for annot in annots:
            key = _ref_key(annot)
            if key is not None:
                found.setdefault(key, page.index)
    return found


def _widget_page(
    widget: tuple[tuple[int, int] | None, Box, tuple[int, int] | None],
    annot_pages: dict[tuple[int, int], int],
    pages: Sequence[_Page],
) -> int | None:
    ref, _box, page_ref = widget
    if ref is not None and ref in annot_pages:
        return annot_pages[ref]
    for page in pages:
        if page.ref == page_ref:
            return page.index
    return None


# --------------------------------------------------------------------------- text anchors


@dataclass(frozen=True)
class _Line:
    chars: tuple[tuple[str, Box | None], ...]
    bbox: Box
    italic: tuple[bool, ...] = ()
    """Per character: drawn in an italic or oblique face (empty when not known)."""


def _fold(text: str) -> tuple[str, list[int]]:
    """Text for matching (decomposed, case-folded, spaces collapsed) and, per folded
    character, the index of the source character it came from."""
    out: list[str] = []
    owner: list[int] = []
    for i, char in enumerate(text):
        if char.isspace():
            if out and out[-1] != " ":
                out.append(" ")
                owner.append(i)
            continue
        for piece in unicodedata.normalize("NFD", char).casefold():
            out.append(piece)
            owner.append(i)
    while out and out[-1] == " ":
        out.pop()
        owner.pop()
    return "".join(out), owner


def _text_lines(stream: BinaryIO, wanted: Sequence[int]) -> Iterator[tuple[int, list[_Line]]]:
    """Text lines (with per-character boxes, in user space) of the pages ``wanted``, in the
    order given."""
    from pdfminer.converter import PDFPageAggregator
    from pdfminer.layout import LAParams, LTAnno, LTChar, LTContainer, LTTextLine
    from pdfminer.pdfdocument import PDFDocument
    from pdfminer.pdfinterp import PDFPageInterpreter, PDFResourceManager
    from pdfminer.pdfpage import PDFPage
    from pdfminer.pdfparser import PDFParser

    stream.seek(0)
    document = PDFDocument(PDFParser(stream))
    miner_pages = list(PDFPage.create_pages(document))
    manager = PDFResourceManager(caching=True)
    device = PDFPageAggregator(manager, laparams=LAParams())
    interpreter = PDFPageInterpreter(manager, device)
    for index in wanted:
        if not 0 <= index < len(miner_pages):
            continue
        page = miner_pages[index]
        interpreter.process_page(page)
        to_user = _pdfminer_inverse(page.mediabox, page.rotate)
        lines: list[_Line] = []

        def collect(item: Any, to_user: Any = to_user, lines: list[_Line] = lines) -> None:
            if isinstance(item, LTTextLine):
                chars: list[tuple[str, Box | None]] = []
                italic: list[bool] = []
                for ch in item:
                    if isinstance(ch, LTChar):
                        chars.append((ch.get_text(), to_user(ch.bbox)))
                        italic.append(_is_italic(ch.fontname, ch.matrix))
                    elif isinstance(ch, LTAnno):
                        chars.append((ch.get_text(), None))
                        italic.append(False)
                if chars:
                    lines.append(_Line(tuple(chars), to_user(item.bbox), tuple(italic)))
            elif isinstance(item, LTContainer):
                for child in item:
                    collect(child)

        collect(device.get_result())
        yield index, lines


def _is_italic(fontname: Any, matrix: Sequence[float]) -> bool:
    """An italic face by its name, or upright glyphs slanted by the text matrix."""
    name = str(fontname or "").lower()
    if "italic" in name or "oblique" in name:
        return True
    a, b, c, d = (float(v) for v in matrix[:4])
    norm = math.hypot(a, b) * math.hypot(c, d)
    return norm > 0 and abs(a * c + b * d) / norm > 0.1


def _pdfminer_inverse(mediabox: Sequence[float], rotate: int) -> Any:
    """Map pdfminer's device boxes back to PDF user space (undo its page CTM)."""
    x0, y0, x1, y1 = (float(v) for v in mediabox)
    ctm = {
        90: (0.0, -1.0, 1.0, 0.0, -y0, x1),
        180: (-1.0, 0.0, 0.0, -1.0, x1, y1),
        270: (0.0, 1.0, -1.0, 0.0, y1, -x0),
    }.get(rotate % 360, (1.0, 0.0, 0.0, 1.0, -x0, -y0))
    a, b, c, d, e, f = ctm
    det = a * d - b * c

    def point(u: float, v: float) -> tuple[float, float]:
        return ((d * (u - e) - c * (v - f)) / det, (-b * (u - e) + a * (v - f)) / det)

    def box(bbox: Sequence[float]) -> Box:
        p = point(bbox[0], bbox[1])
        q = point(bbox[2], bbox[3])
        return (min(p[0], q[0]), min(p[1], q[1]), max(p[0], q[0]), max(p[1], q[1]))

    return box


def _matches(lines: Sequence[_Line], needle: str) -> list[Box]:
    key, _ = _fold(needle)
    found: list[Box] = []
    if not key:
        return found
    for line in lines:
        text = "".join(c for c, _ in line.chars)
        folded, owner = _fold(text)
        start = folded.find(key)
        while start >= 0:
            covered = {owner[i] for i in range(start, start + len(key))}
            boxes = [line.chars[i][1] for i in sorted(covered)]
            real = [b for b in boxes if b is not None]
            if real:
                found.append(_union(real))
            start = folded.find(key, start + 1)
    return found


def _union(boxes: Sequence[Box]) -> Box:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def find_text(pdf: bytes | BinaryIO, text: str, page: int | None = None) -> tuple[int, Box] | None:
    """Where ``text`` is printed: ``(page index, box)`` of its lowest occurrence (as the page
    is displayed) on ``page`` (or on the last page that has it, when ``page`` is None), or
    None.  The box is in user space.

    Matching ignores case and spacing, not diacritics.  A stream's position is restored.
    """
    with _opened(pdf) as stream:
        reader = _reader(stream)
        pages = _pages(reader)
        found = _find_anchor(stream, pages, text, page)
    if found is None:
        return None
    return found[0], pages[found[0]].frame.to_user(found[1])


def visual_lines(frame: PageFrame, lines: Sequence[_Line]) -> list[_Line]:
    """``lines`` (user space) as the viewer sees them."""
    return [
        _Line(
            tuple((c, frame.to_visual(b) if b is not None else None) for c, b in line.chars),
            frame.to_visual(line.bbox),
            line.italic,
        )
        for line in lines
    ]


def page_text_lines(pdf: bytes | BinaryIO, page: int) -> tuple[PageFrame, list[_Line]]:
    """The text lines of page ``page`` (0-based) with per-character boxes in the page's visual
    space (:class:`PageFrame`), and that frame.  A stream's position is restored."""
    with _opened(pdf) as stream:
        pages = _pages(_reader(stream))
        index = _page_index(pages, page)
        frame = pages[index].frame
        try:
            found = [lines for _i, lines in _text_lines(stream, [index])]
        except AppearanceError:
            raise
        except Exception as exc:  # pdfminer raises many unrelated types on damaged files
            raise AppearanceError("signer.appearance.pdf_unreadable", reason=str(exc)) from None
    return frame, visual_lines(frame, found[0] if found else [])


def _find_anchor(
    stream: BinaryIO, pages: Sequence[_Page], text: str, page: int | None
) -> tuple[int, Box, list[_Line]] | None:
    """Page, box and lines (visual space) of the lowest occurrence of ``text``."""
    order = [_page_index(pages, page)] if page is not None else list(range(len(pages)))[::-1]
    try:
        for index, user_lines in _text_lines(stream, order):
            lines = visual_lines(pages[index].frame, user_lines)
            hits = _matches(lines, text)
            if hits:
                best = min(hits, key=lambda b: (round(b[1], 1), -b[0]))
                return index, best, lines
    except AppearanceError:
        raise
    except Exception as exc:  # pdfminer raises many unrelated types on damaged files
        raise AppearanceError("signer.appearance.pdf_unreadable", reason=str(exc)) from None
    return None


# --------------------------------------------------------------------------- geometry


def _page_index(pages: Sequence[_Page], page: int | None) -> int:
    count = len(pages)
    index = count - 1 if page is None else page
    if index < 0:
        index += count
    if not 0 <= index < count:
        shown = page + 1 if page is not None and page >= 0 else page
        raise AppearanceError("signer.appearance.page_out_of_range", page=shown, pages=count)
    return index


def _inside(box: Box, area: Box, tolerance: float = 0.5) -> bool:
    return (
        box[0] >= area[0] - tolerance
        and box[1] >= area[1] - tolerance
        and box[2] <= area[2] + tolerance
        and box[3] <= area[3] + tolerance
    )


def _clamp(box: Box, area: Box) -> Box:
    """Shift ``box`` (not resize) so it lies inside ``area`` where it can."""
    w, h = box[2] - box[0], box[3] - box[1]
    x0 = min(max(box[0], area[0]), area[2] - w) if w <= area[2] - area[0] else area[0]
    y0 = min(max(box[1], area[1]), area[3] - h) if h <= area[3] - area[1] else area[1]
    return (x0, y0, x0 + w, y0 + h)


def _centred(cx: float, cy: float, w: float, h: float) -> Box:
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _fit(aspect_w: float, aspect_h: float, box: Box) -> Box:
    """The largest rectangle of the given aspect, centred in ``box``."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    scale = min(bw / aspect_w, bh / aspect_h)
    w, h = aspect_w * scale, aspect_h * scale
    return _centred((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, w, h)


def _rounded(box: Box) -> Box:
    return (round(box[0], 2), round(box[1], 2), round(box[2], 2), round(box[3], 2))


def _box_near_anchor(
    anchor: Box,
    lines: Sequence[_Line],
    mode: AnchorMode,
    size: tuple[float, float],
    *,
    fill_gap: bool,
) -> Box:
    """A box of ``size`` centred on the anchor, or sitting above it.

    With ``fill_gap`` the box above is the free space between the anchor and the next line
    above it in the same column (the title), at most ``size[1]`` high and centred in that space
    when the space is taller; never less than :data:`PERSON_MIN_HEIGHT` high.
    """
    w, h = size
    cx = (anchor[0] + anchor[2]) / 2
    if mode == "over":
        return _centred(cx, (anchor[1] + anchor[3]) / 2, w, h)
    bottom = anchor[3] + _GAP
    top = bottom + h
    if fill_gap:
        left, right = cx - w / 2, cx + w / 2
        above = [
            ln.bbox[1]
            for ln in lines
            if ln.bbox[1] >= anchor[3] - 1.0 and ln.bbox[0] < right and ln.bbox[2] > left
        ]
        if above:
            ceiling = max(min(above) - _GAP, bottom + PERSON_MIN_HEIGHT)
            if ceiling - bottom > h:
                bottom = (bottom + ceiling - h) / 2
                top = bottom + h
            else:
                top = ceiling
    return (cx - w / 2, bottom, cx + w / 2, top)


# --------------------------------------------------------------------------- entry point


class _opened:
    """A seekable binary stream over ``pdf``; a caller's stream gets its position back."""

    def __init__(self, pdf: bytes | bytearray | memoryview | BinaryIO) -> None:
        if isinstance(pdf, bytes | bytearray | memoryview):
            self.stream: BinaryIO = io.BytesIO(bytes(pdf))
            self.position: int | None = None
        else:
            self.stream = pdf
            try:
                self.position = pdf.tell()
            except (OSError, AttributeError, ValueError):
                raise AppearanceError(
                    "signer.appearance.pdf_unreadable", reason="the stream is not seekable"
                ) from None

    def __enter__(self) -> BinaryIO:
        return self.stream

    def __exit__(self, *exc: object) -> None:
        if self.position is not None:
            self.stream.seek(self.position)


def _reader(stream: BinaryIO) -> PdfFileReader:
    try:
        stream.seek(0)
        reader = PdfFileReader(stream, strict=False)
        encrypted = reader.encrypted
    except (PdfError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise AppearanceError("signer.appearance.pdf_unreadable", reason=str(exc)) from None
    if encrypted:
        raise AppearanceError("signer.appearance.pdf_encrypted")
    return reader


def prepare_visible_signature(
    pdf: bytes | BinaryIO,
    appearance: PersonAppearance | SealAppearance | TextStampAppearance | None,
    placement: Placement | None = None,
    *,
    field_name: str | None = None,
    signer_name: str | None = None,
) -> VisibleSignature:
    """Check where the signature goes and build what pyHanko needs to draw it.

    ``pdf`` is the document about to be signed, as bytes or a seekable binary stream (its
    position is restored).  ``appearance`` None means an invisible signature.  Without a
    placement: a person's signature goes above ``signer_name`` printed on the last page, else
    at the usual signature-block place, bottom right of the last page; a seal goes over the
    person's signature; a text stamp goes top right of the first page.  ``field_name`` names
    the new field (generated when None); naming an existing empty signature field signs it.

    Raises :class:`AppearanceError` (with a catalogue code) for a page or box outside the
    document, an anchor not found, a missing, non-signature or already signed field, a seal
    with no person's signature to sit on, or an unusable image or text.
    """
    if field_name is not None:
        _check_field_name(field_name)
    with _opened(pdf) as stream:
        reader = _reader(stream)
        pages = _pages(reader)
        if not pages:
            raise AppearanceError("signer.appearance.pdf_no_pages")
        all_fields = _fields(reader)
        by_name = {f.name: f for f in all_fields}

        target = _existing_target(by_name, placement, field_name)
        if target is not None:
            return _sign_existing(reader, pages, target, appearance)
        if field_name is not None and field_name in by_name:
            raise AppearanceError("signer.appearance.field_exists", field=field_name)
        name = field_name or _free_name(by_name, _kind(appearance))

        if appearance is None:
            if placement is not None:
                raise AppearanceError("signer.appearance.placement_without_appearance")
            return VisibleSignature(
                field_name=name,
                new_field_spec=SigFieldSpec(sig_field_name=name),
                stamp_style=None,
                kind="invisible",
            )
        if isinstance(appearance, PersonAppearance):
            return _person(stream, pages, appearance, placement, name, signer_name)
        if isinstance(appearance, SealAppearance):
            return _seal(reader, stream, pages, all_fields, appearance, placement, name)
        if isinstance(appearance, TextStampAppearance):
            return _text(stream, pages, appearance, placement, name)
        raise TypeError(f"unknown appearance {type(appearance).__name__}")


def _kind(appearance: Appearance | None) -> Kind:
    if isinstance(appearance, PersonAppearance):
        return "person"
    if isinstance(appearance, SealAppearance):
        return "seal"
    if isinstance(appearance, TextStampAppearance):
        return "text"
    return "invisible"


def _free_name(by_name: dict[str, _Field], kind: Kind) -> str:
    stem = {"person": "kyso_person", "seal": "kyso_seal", "text": "kyso_stamp"}.get(
        kind, "kyso_signature"
    )
    n = 1
    while f"{stem}_{n}" in by_name:
        n += 1
    return f"{stem}_{n}"


def _existing_target(
    by_name: dict[str, _Field], placement: Placement | None, field_name: str | None
) -> _Field | None:
    """The existing empty signature field to sign, if the caller asked for one."""
    wanted: str | None = None
    if placement is not None and placement.field is not None:
        if field_name is not None and field_name != placement.field:
            raise AppearanceError(
                "signer.appearance.field_name_conflict",
                field=field_name,
                placement_field=placement.field,
            )
        wanted = placement.field
    elif placement is None and field_name is not None and field_name in by_name:
        if by_name[field_name].field_type != "/Sig":
            raise AppearanceError("signer.appearance.field_exists", field=field_name)
        wanted = field_name
    if wanted is None:
        return None
    found = by_name.get(wanted)
    if found is None:
        raise AppearanceError("signer.appearance.field_not_found", field=wanted)
    if found.field_type != "/Sig":
        raise AppearanceError("signer.appearance.field_not_signature", field=wanted)
    if found.signed:
        raise AppearanceError("signer.appearance.field_already_signed", field=wanted)
    return found


def _sign_existing(
    reader: PdfFileReader,
    pages: Sequence[_Page],
    target: _Field,
    appearance: Appearance | None,
) -> VisibleSignature:
    visible = [w for w in target.widgets if w[1][2] - w[1][0] > 0 and w[1][3] - w[1][1] > 0]
    if appearance is None:
        return VisibleSignature(
            field_name=target.name,
            new_field_spec=None,
            stamp_style=NoOpStampStyle(),
            kind="invisible",
        )
    if len(visible) != 1:
        raise AppearanceError("signer.appearance.field_not_visible", field=target.name)
    widget = visible[0]
    page_index = _widget_page(widget, _annotation_pages(reader, pages), pages)
    box = widget[1]
    frame = pages[page_index].frame if page_index is not None else PageFrame(box)
    seen = frame.to_visual(box)
    style: BaseStampStyle
    if isinstance(appearance, PersonAppearance):
        img = _load_png(appearance.signature_png, "signature")
        style = _image_style(_downscaled(img, seen[2] - seen[0]), frame.rotate)
    elif isinstance(appearance, SealAppearance):
        img = _load_png(appearance.seal_png, "seal")
        style = _image_style(_downscaled(img, seen[2] - seen[0]), frame.rotate)
    else:
        style = _text_style(appearance.lines, frame.rotate)
    return VisibleSignature(
        field_name=target.name,
        new_field_spec=None,
        stamp_style=style,
        kind=_kind(appearance),
        page_index=page_index,
        box=box,
    )


def _new_field(
    name: str, page: _Page, visual_box: Box, style: BaseStampStyle, kind: Kind
) -> VisibleSignature:
    """A new field whose widget shows at ``visual_box`` (visual space) of ``page``."""
    box = _rounded(page.frame.to_user(visual_box))
    return VisibleSignature(
        field_name=name,
        new_field_spec=SigFieldSpec(sig_field_name=name, on_page=page.index, box=box),  # type: ignore[arg-type]
        stamp_style=style,
        kind=kind,
        page_index=page.index,
        box=box,
    )


def _explicit_box(pages: Sequence[_Page], placement: Placement) -> tuple[int, Box]:
    """Page index and the given box (user space), checked to lie on the visible page."""
    assert placement.box is not None
    index = _page_index(pages, placement.page)
    area = pages[index].area
    if not _inside(placement.box, area):
        raise AppearanceError(
            "signer.appearance.box_outside_page",
            box=_fmt_box(placement.box),
            page=index + 1,
            page_box=_fmt_box(area),
        )
    return index, placement.box


def _anchor(
    stream: BinaryIO, pages: Sequence[_Page], placement: Placement
) -> tuple[int, Box, list[_Line]]:
    assert placement.anchor is not None
    if placement.page is not None:
        _page_index(pages, placement.page)
    found = _find_anchor(stream, pages, placement.anchor, placement.page)
    if found is None:
        if placement.page is None:
            raise AppearanceError(
                "signer.appearance.anchor_not_found_anywhere", text=placement.anchor
            )
        raise AppearanceError(
            "signer.appearance.anchor_not_found",
            text=placement.anchor,
            page=_page_index(pages, placement.page) + 1,
        )
    return found


def _person(
    stream: BinaryIO,
    pages: Sequence[_Page],
    appearance: PersonAppearance,
    placement: Placement | None,
    name: str,
    signer_name: str | None,
) -> VisibleSignature:
    img = _load_png(appearance.signature_png, "signature")
    size = (appearance.max_width, appearance.max_height)
    area_box: Box  # visual space, from here on
    if placement is not None and placement.box is not None:
        index, given = _explicit_box(pages, placement)
        frame = pages[index].frame
        area_box = frame.to_visual(given)
    elif placement is not None and placement.anchor is not None:
        index, anchor, lines = _anchor(stream, pages, placement)
        frame = pages[index].frame
        width = max(size[0], anchor[2] - anchor[0])
        area_box = _box_near_anchor(
            anchor, lines, placement.anchor_mode, (width, size[1]), fill_gap=True
        )
        area_box = _clamp(area_box, frame.visual_area)
    else:
        index = len(pages) - 1
        frame = pages[index].frame
        found = None
        if signer_name and _fold(signer_name)[0]:
            found = _find_anchor(stream, pages, signer_name, index)
        if found is not None:
            _i, anchor, lines = found
            width = max(size[0], anchor[2] - anchor[0])
            area_box = _box_near_anchor(anchor, lines, "above", (width, size[1]), fill_gap=True)
        else:
            area_box = _default_person_box(frame.visual_area, size)
        area_box = _clamp(area_box, frame.visual_area)
    box = _fit(img.width, img.height, area_box)
    style = _image_style(_downscaled(img, box[2] - box[0]), frame.rotate)
    return _new_field(name, pages[index], box, style, "person")


def _default_person_box(area: Box, size: tuple[float, float]) -> Box:
    """The usual signature-block place when nothing tells better: the right-hand column
    (centred at 72 % of the width), its bottom 50 mm above the page's bottom edge (``area``
    and the result in visual space)."""
    w, h = size
    cx = area[0] + 0.72 * (area[2] - area[0])
    bottom = area[1] + 50 * MM
    return (cx - w / 2, bottom, cx + w / 2, bottom + h)


def _seal(
    reader: PdfFileReader,
    stream: BinaryIO,
    pages: Sequence[_Page],
    all_fields: Sequence[_Field],
    appearance: SealAppearance,
    placement: Placement | None,
    name: str,
) -> VisibleSignature:
    img = _load_png(appearance.seal_png, "seal")
    d = appearance.diameter_pt
    # Real size: the seal's larger side is its diameter (as seen, upright).
    w, h = (
        (d, d * img.height / img.width)
        if img.width >= img.height
        else (
            d * img.width / img.height,
            d,
        )
    )
    if placement is not None and placement.box is not None:
        index, given = _explicit_box(pages, placement)
        seen = pages[index].frame.to_visual(given)
        box = _centred((seen[0] + seen[2]) / 2, (seen[1] + seen[3]) / 2, w, h)
    elif placement is not None and placement.anchor is not None:
        index, anchor, lines = _anchor(stream, pages, placement)
        box = _box_near_anchor(anchor, lines, placement.anchor_mode, (w, h), fill_gap=False)
    else:
        found = _person_signature(reader, pages, all_fields, appearance.person_field)
        if found is None:
            # The person signed without an image (a USB token's two-phase signature, an
            # invisible signature): the seal goes where that image would have been, the
            # usual signature block of the last page, overlapping it as it would the image.
            index = len(pages) - 1
            person = _default_person_box(
                pages[index].frame.visual_area, (PERSON_MAX_WIDTH, PERSON_MAX_HEIGHT)
            )
        else:
            index, person_user = found
            person = pages[index].frame.to_visual(person_user)
        person_w = person[2] - person[0]
        right = person[0] + appearance.overlap * person_w
        cy = (person[1] + person[3]) / 2
        box = (right - w, cy - h / 2, right, cy + h / 2)
    frame = pages[index].frame
    box = _clamp(box, frame.visual_area)
    style = _image_style(_downscaled(img, w), frame.rotate)
    return _new_field(name, pages[index], box, style, "seal")


def _person_signature(
    reader: PdfFileReader,
    pages: Sequence[_Page],
    all_fields: Sequence[_Field],
    wanted: str | None,
) -> tuple[int, Box] | None:
    """Page and rectangle of the person's signed, visible signature; None when the document
    is signed but by no visible signature (``wanted`` unset), an error when it is not signed."""
    annot_pages = _annotation_pages(reader, pages)

    def visible(f: _Field) -> tuple[int, Box] | None:
        if f.field_type != "/Sig" or not f.signed:
            return None
        shown = [w for w in f.widgets if w[1][2] - w[1][0] > 1 and w[1][3] - w[1][1] > 1]
        if len(shown) != 1:
            return None
        page = _widget_page(shown[0], annot_pages, pages)
        return None if page is None else (page, shown[0][1])

    if wanted is not None:
        match = next((f for f in all_fields if f.name == wanted), None)
        if match is None:
            raise AppearanceError("signer.appearance.field_not_found", field=wanted)
        if match.field_type != "/Sig":
            raise AppearanceError("signer.appearance.field_not_signature", field=wanted)
        where = visible(match)
        if where is None:
            raise AppearanceError("signer.appearance.person_field_not_signed", field=wanted)
        return where
    candidates = [v for v in (visible(f) for f in all_fields) if v is not None]
    if candidates:
        return candidates[-1]
    if any(f.field_type == "/Sig" and f.signed for f in all_fields):
        return None
    raise AppearanceError("signer.appearance.no_person_signature")


def _text(
    stream: BinaryIO,
    pages: Sequence[_Page],
    appearance: TextStampAppearance,
    placement: Placement | None,
    name: str,
) -> VisibleSignature:
    lines = tuple(appearance.lines)
    w, h = _text_size(lines)
    if placement is not None and placement.box is not None:
        index, given = _explicit_box(pages, placement)
        box = pages[index].frame.to_visual(given)
    elif placement is not None and placement.anchor is not None:
        index, anchor, found_lines = _anchor(stream, pages, placement)
        box = _box_near_anchor(anchor, found_lines, placement.anchor_mode, (w, h), fill_gap=False)
        box = _clamp(box, pages[index].frame.visual_area)
    else:
        index = 0
        area = pages[0].frame.visual_area
        right = area[2] - TEXT_MARGIN_RIGHT_MM * MM
        top = area[3] - TEXT_MARGIN_TOP_MM * MM
        box = _clamp((right - w, top - h, right, top), area)
    style = _text_style(lines, pages[index].rotate)
    return _new_field(name, pages[index], box, style, "text")


# --------------------------------------------------------------------------- demo images


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def demo_signature_png(name: str) -> bytes:
    """A made-up blue handwritten-looking signature for ``name`` (PNG, transparent background).

    For demonstrations and tests only: real officials upload an image of their own signature.
    The same name always gives the same image.
    """
    from PIL import Image, ImageDraw

    rng = random.Random(_seed("signature:" + name))  # noqa: S311 (a drawing, not a secret)
    scale = 3
    width, height = 600, 220
    canvas = Image.new("RGBA", (width * scale, height * scale), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    ink = (16, 42, 170, 255)
    letters = max(4, min(9, len(name.replace(" ", "")) // 2 + 2))
    points: list[tuple[float, float]] = []
    x, base = 60.0, 125.0
    for i in range(letters):
        amp = rng.uniform(70, 95) if i == 0 else rng.uniform(15, 55)
        step = rng.uniform(38, 58)
        loop = rng.uniform(12, 22)
        for k in range(24):
            t = 2 * math.pi * k / 24
            px = x + step * k / 24 - loop * math.sin(t)
            py = base - amp * (1 - math.cos(t)) / 2 + rng.uniform(-0.6, 0.6)
            points.append((px, py))
        x += step
        base += rng.uniform(-4, 4)
    # a closing flourish under the name
    end_x = x
    for k in range(30):
        t = k / 29
        points.append((end_x - t * (end_x - 40), base + 18 + 22 * math.sin(math.pi * t) - 10 * t))
    # a right-leaning hand
    scaled = [((px + 0.35 * (125.0 - py)) * scale, py * scale) for px, py in points]
    draw.line(scaled, fill=ink, width=5 * scale, joint="curve")
    # a dot and a short stroke, as hands do
    dx, dy = rng.uniform(200, 420) * scale, rng.uniform(40, 60) * scale
    draw.ellipse((dx - 6 * scale, dy - 6 * scale, dx + 6 * scale, dy + 6 * scale), fill=ink)
    image = canvas.resize((width, height), Image.Resampling.LANCZOS)
    return _png_bytes(image)


def demo_seal_png(agency: str, diameter_px: int = 600) -> bytes:
    """A made-up red round seal: ``agency`` around the ring, a star in the middle (PNG,
    transparent background).

    For demonstrations and tests only: real agencies upload an image of their own seal.
    """
    from PIL import Image, ImageDraw, ImageFont

    size = diameter_px
    red = (206, 22, 32, 255)
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    c = size / 2
    outer = size / 2 - size * 0.01
    draw.ellipse((c - outer, c - outer, c + outer, c + outer), outline=red, width=int(size * 0.03))
    inner = outer * 0.68
    draw.ellipse((c - inner, c - inner, c + inner, c + inner), outline=red, width=int(size * 0.012))
    # the star
    star_r = inner * 0.42
    star = []
    for k in range(10):
        r = star_r if k % 2 == 0 else star_r * 0.4
        angle = -math.pi / 2 + k * math.pi / 5
        star.append((c + r * math.cos(angle), c + r * math.sin(angle)))
    draw.polygon(star, fill=red)
    # the agency name around the ring, clockwise from the left
    text = unicodedata.normalize("NFC", agency.upper().strip()) or "KYSO"
    text = f"{text} • "
    font_size = max(12, int(size * 0.075))
    font = ImageFont.truetype(str(fonts.shipped_font_path(bold=True)), font_size)
    ring_r = (outer + inner) / 2
    sweep = 2 * math.pi * 0.92
    total = sum(font.getlength(ch) for ch in text)
    available = sweep * ring_r
    if total > available:
        font_size = max(8, int(font_size * available / total))
        font = ImageFont.truetype(str(fonts.shipped_font_path(bold=True)), font_size)
        total = sum(font.getlength(ch) for ch in text)
    angle = -math.pi / 2 - (total / ring_r) / 2
    for ch in text:
        adv = font.getlength(ch)
        mid = angle + (adv / 2) / ring_r
        glyph = Image.new("RGBA", (font_size * 2, font_size * 2), (0, 0, 0, 0))
        ImageDraw.Draw(glyph).text((font_size, font_size), ch, font=font, fill=red, anchor="mm")
        rotated = glyph.rotate(-math.degrees(mid + math.pi / 2), resample=Image.Resampling.BICUBIC)
        gx = c + ring_r * math.cos(mid) - rotated.width / 2
        gy = c + ring_r * math.sin(mid) - rotated.height / 2
        canvas.alpha_composite(rotated, (round(gx), round(gy)))
        angle += adv / ring_r
    return _png_bytes(canvas)


def _png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
