"""Where the official clicked on the rendered page, as a signature box in PDF coordinates.

The page is drawn by PDFium in a sandboxed child process (:mod:`kyso.signer.verify.render`),
which also gives the matrix from image pixels to PDF user space (CropBox offsets, ``/Rotate``
and the scale included).  The browser sends the clicked pixel of the image; the server draws
the page again (it trusts no coordinates mapping from the client) and turns the pixel into the
box ``[x1, y1, x2, y2]`` the signature image is fitted in, centred on the click and kept inside
the page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from kyso.signer.verify.render import PageImage, RenderRequest, png_bytes, render_pages

DPI = 96.0
"""Resolution of the page shown for placing the signature (about a screen's)."""
BOX_WIDTH_PT = 170.0
BOX_HEIGHT_PT = 80.0
"""The person's signature box (about 60 x 28 mm): the image is fitted inside it."""
RENDER_TIMEOUT = 60.0


@dataclass(frozen=True)
class RenderedPage:
    """One page as an image, with what it takes to map a click back onto the PDF."""

    index: int  # 0-based
    page_count: int
    png: bytes | None
    width: int
    height: int
    matrix: tuple[float, float, float, float, float, float] | None
    error: str | None = None

    @property
    def box_pixels(self) -> tuple[float, float]:
        """The signature box's size in pixels of this image."""
        scale = self._scale()
        return BOX_WIDTH_PT * scale, BOX_HEIGHT_PT * scale

    def _scale(self) -> float:
        if self.matrix is None:
            return DPI / 72.0
        a, b, c, d, _, _ = self.matrix
        # points per pixel along the image's x axis, whatever the rotation
        per_pixel = math.hypot(a, b) or math.hypot(c, d)
        return 1.0 / per_pixel if per_pixel else DPI / 72.0

    def box_at(self, x: float, y: float) -> tuple[float, float, float, float]:
        """The PDF rectangle of the signature box centred on pixel ``(x, y)``, inside the page."""
        if self.matrix is None:
            raise ValueError("page has no coordinate mapping")
        w, h = self.box_pixels
        w, h = min(w, self.width), min(h, self.height)
        cx = min(max(x, w / 2), self.width - w / 2)
        cy = min(max(y, h / 2), self.height - h / 2)
        image = PageImage(index=self.index, width=self.width, height=self.height)
        image.matrix = self.matrix
        x1, y1, x2, y2 = image.box_to_pdf((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        return round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)


def page_count(source: Path) -> int | None:
    """How many pages ``source`` has, read from its page tree (pure Python, no PDFium);
    None when the tree cannot be read."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    try:
        with open(source, "rb") as stream:
            count = PdfFileReader(stream, strict=False).root["/Pages"]["/Count"]
            return int(count) if 0 < int(count) < 1_000_000 else None
    except Exception:  # a damaged tree: PDFium is asked instead
        return None


def render_page(source: Path, index: int | None, *, dpi: float = DPI) -> RenderedPage:
    """Page ``index`` (0-based; None or out of range: the last page) of ``source`` as PNG."""
    count = page_count(source)
    if count is not None and (index is None or not 0 <= index < count):
        index = count - 1
    if index is not None and index >= 0:
        page = _render(source, index, dpi)
        if page.png is not None or page.page_count == 0 or page.error not in (None, "missing"):
            return page
    with render_pages([RenderRequest(source, pages=(), dpi=dpi)], timeout=RENDER_TIMEOUT) as (
        probe,
    ):
        count, error = probe.page_count or 0, probe.error
    if error is not None or count == 0:
        return RenderedPage(0, count, None, 0, 0, None, error or "empty")
    return _render(source, count - 1, dpi)


def _render(source: Path, index: int, dpi: float) -> RenderedPage:
    with render_pages([RenderRequest(source, pages=(index,), dpi=dpi)], timeout=RENDER_TIMEOUT) as (
        rendering,
    ):
        count = rendering.page_count or 0
        page = rendering.page(index)
        if rendering.error is not None:
            return RenderedPage(index, count, None, 0, 0, None, rendering.error)
        if page is None:
            return RenderedPage(index, count, None, 0, 0, None, "missing")
        if not page.ok or page.matrix is None:
            return RenderedPage(index, count, None, 0, 0, None, page.error or "failed")
        return RenderedPage(
            index=index,
            page_count=count,
            png=png_bytes(page.load()),
            width=page.width,
            height=page.height,
            matrix=page.matrix,
        )
