"""What a person would see changed since a signature: the signed revision and the file, drawn.

A signature covers the bytes of one revision; later revisions may legitimately add a
signature or fill a form, or may hide, reveal or overlay content (the "shadow attacks").  The
structural comparison says which objects changed; this module shows the *effect*: every page
of the signed revision (the first ``ByteRange[2] + ByteRange[3]`` bytes of the file) and of the
current file is rendered by PDFium at the same scale (:mod:`.render`, in a child process), the
two images are compared pixel by pixel, and the changed areas are boxed in red on a
side-by-side picture.  Pages added or removed since signing are shown whole.

Nothing here raises because of the PDF: an unreadable revision, a crash or a time-out of the
renderer become :attr:`VisualDiff.notes` (catalogue codes ``verify.report.render.*``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageChops

from kyso.signer.verify.model import TOTAL_PASSED, Reason, SignatureReport
from kyso.signer.verify.render import (
    DEFAULT_DPI,
    DEFAULT_MAX_PAGES,
    DEFAULT_TIMEOUT,
    RED,
    Box,
    PageImage,
    Rendering,
    RenderRequest,
    draw_boxes,
    placeholder,
    png_bytes,
    render_pages,
    side_by_side,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "PageDiff",
    "VisualDiff",
    "changed_regions",
    "signed_length",
    "visual_diff",
    "visual_diffs",
]

DEFAULT_THRESHOLD = 40
"""A pixel counts as changed when a colour channel differs by more than this (of 255)."""
MIN_PIXELS = 4
"""A changed area with fewer changed pixels is noise, not a change."""
MAX_REVISIONS = 5
"""Signed revisions drawn and compared per report (each costs two renderings of the file)."""
MAX_REGIONS = 100
"""Changed areas reported per page (the largest ones)."""
_CELL = 8  # pixels per cell of the grid changed areas are grouped on
_GAP = 2  # cells: changed pixels closer than this belong to one area (a word, a line)

PixelBox = tuple[int, int, int, int]
PdfRect = tuple[float, float, float, float]

UNCHANGED = "unchanged"
CHANGED = "changed"
ADDED = "added"
REMOVED = "removed"
ERROR = "error"


@dataclass
class PageDiff:
    """One page position compared (``page`` is 1-based).

    ``regions`` are pixel boxes ``(left, top, right, bottom)`` on both halves of the picture
    (the two renderings share their top-left corner); ``regions_pdf`` the same areas in the
    PDF user space of the current page (of the signed page when it was removed).
    ``image_png`` is the side-by-side picture (signed revision left, current file right), made
    for pages that changed only; ``detail_png`` the same, cropped to the changed areas and
    enlarged, when they cover a small part of the page (a changed amount, a date).
    """

    page: int
    status: str
    regions: list[PixelBox] = field(default_factory=list)
    regions_pdf: list[PdfRect] = field(default_factory=list)
    size_changed: bool = False
    image_png: bytes | None = None
    detail_png: bytes | None = None  # the changed area enlarged, when it is a small part
    note: Reason | None = None

    @property
    def changed(self) -> bool:
        return self.status in (CHANGED, ADDED, REMOVED)


@dataclass
class VisualDiff:
    """The comparison of one signed revision with the current file."""

    signed_length: int
    dpi: float
    max_pages: int
    signed_pages: int | None = None
    current_pages: int | None = None
    pages: list[PageDiff] = field(default_factory=list)
    notes: list[Reason] = field(default_factory=list)

    @property
    def compared(self) -> int:
        """Page positions compared (at most :attr:`max_pages`)."""
        return len(self.pages)

    @property
    def truncated(self) -> bool:
        """Pages beyond :attr:`max_pages` were not compared."""
        total = max(self.signed_pages or 0, self.current_pages or 0)
        return total > self.max_pages

    @property
    def changed(self) -> bool:
        return any(p.changed for p in self.pages)

    @property
    def changed_pages(self) -> list[PageDiff]:
        return [p for p in self.pages if p.changed]


def signed_length(signature: SignatureReport, file_size: int | None = None) -> int | None:
    """Length of the revision ``signature`` signed: ``ByteRange[2] + ByteRange[3]``, if sane."""
    byte_range = signature.integrity.byte_range
    if not byte_range or len(byte_range) != 4:
        return None
    try:
        start, length = int(byte_range[2]), int(byte_range[3])
    except (TypeError, ValueError):
        return None
    end = start + length
    if start < 0 or length < 0 or end <= 0:
        return None
    if file_size is not None and end > file_size:
        return None
    return end


def visual_diffs(
    signatures: Sequence[SignatureReport],
    pdf_path: Path,
    *,
    dpi: float = DEFAULT_DPI,
    max_pages: int = DEFAULT_MAX_PAGES,
    max_revisions: int = MAX_REVISIONS,
    threshold: int = DEFAULT_THRESHOLD,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[tuple[list[int], VisualDiff]]:
    """A visual diff for each signed revision modified since (signature indexes, diff).

    Signatures (or document timestamps) whose report says ``modified_after_signing`` are
    grouped by the revision they cover, so each revision is rendered once, in file order.
    At most ``max_revisions`` revisions are drawn (those of signatures not found valid
    first); the others get a diff with only a note saying so.
    """
    try:
        size = Path(pdf_path).stat().st_size
    except OSError:
        size = None
    groups: dict[int | None, list[SignatureReport]] = {}
    for sig in signatures:
        if sig.modified_after_signing:
            groups.setdefault(signed_length(sig, size), []).append(sig)
    ordered = sorted(groups.items(), key=lambda item: item[0] or 0)
    by_priority = sorted(
        (length for length, _ in ordered if length is not None),
        key=lambda length: all(s.indication == TOTAL_PASSED for s in groups[length]),
    )
    drawn = set(by_priority[: max(0, max_revisions)])
    results: list[tuple[list[int], VisualDiff]] = []
    for length, sigs in ordered:
        indexes = [s.index for s in sigs]
        if length is None:
            diff = VisualDiff(signed_length=0, dpi=dpi, max_pages=max_pages)
            diff.notes.append(Reason("verify.report.render.bad_byte_range"))
        elif length not in drawn:
            diff = VisualDiff(signed_length=length, dpi=dpi, max_pages=max_pages)
            diff.notes.append(Reason("verify.report.diff.skipped", {"max": max_revisions}))
        else:
            diff = visual_diff(
                pdf_path,
                length,
                dpi=dpi,
                max_pages=max_pages,
                threshold=threshold,
                timeout=timeout,
            )
        results.append((indexes, diff))
    return results


def visual_diff(
    pdf_path: Path,
    signed_length: int,
    *,
    dpi: float = DEFAULT_DPI,
    max_pages: int = DEFAULT_MAX_PAGES,
    threshold: int = DEFAULT_THRESHOLD,
    timeout: float = DEFAULT_TIMEOUT,
) -> VisualDiff:
    """Compare the revision made of the first ``signed_length`` bytes with the whole file.

    Pages 1 to ``max_pages`` are rendered from both at ``dpi`` and compared; see
    :class:`PageDiff` for what each page position gives.  Never raises because of the PDF.
    """
    diff = VisualDiff(signed_length=signed_length, dpi=dpi, max_pages=max_pages)
    requests = [
        RenderRequest(Path(pdf_path), length=signed_length, max_pages=max_pages, dpi=dpi),
        RenderRequest(Path(pdf_path), max_pages=max_pages, dpi=dpi),
    ]
    with render_pages(requests, timeout=timeout) as (signed, current):
        diff.signed_pages, diff.current_pages = signed.page_count, current.page_count
        for rendering, which in ((signed, "signed"), (current, "current")):
            if rendering.error is not None:
                diff.notes.append(Reason(f"verify.report.diff.{which}_failed"))
                diff.notes.append(_note(rendering.error, rendering.detail))
        if signed.error is not None or current.error is not None:
            return diff
        total = min(max(signed.page_count or 0, current.page_count or 0), max_pages)
        for index in range(total):
            diff.pages.append(_compare_page(index, signed, current, threshold))
        if diff.truncated:
            diff.notes.append(
                Reason(
                    "verify.report.diff.truncated",
                    {
                        "compared": max_pages,
                        "total": max(diff.signed_pages or 0, diff.current_pages or 0),
                    },
                )
            )
    return diff


def _note(code: str, detail: str | None, *, page: int | None = None) -> Reason:
    return Reason(
        f"verify.report.render.{code}",
        {"detail": detail or "", "page": page if page is not None else ""},
    )


def _compare_page(index: int, signed: Rendering, current: Rendering, threshold: int) -> PageDiff:
    number = index + 1
    old = signed.page(index) if index < (signed.page_count or 0) else None
    new = current.page(index) if index < (current.page_count or 0) else None
    for side in (old, new):
        if side is not None and not side.ok:
            return PageDiff(
                number, ERROR, note=_note(side.error or "page_failed", side.detail, page=number)
            )
    if old is None and new is None:
        return PageDiff(number, ERROR, note=_note("page_failed", None, page=number))
    if old is None:
        assert new is not None
        return _whole_page(number, ADDED, new)
    if new is None:
        return _whole_page(number, REMOVED, old)
    before, after = old.load(), new.load()
    regions = changed_regions(before, after, threshold=threshold)
    size_changed = before.size != after.size
    if not regions and not size_changed:
        return PageDiff(number, UNCHANGED)
    boxes = [Box(r, RED, fill=True) for r in regions]
    if size_changed and not regions:
        # Only the page box changed: frame the larger page.
        frame = (0, 0, max(before.width, after.width), max(before.height, after.height))
        boxes = [Box(frame, RED)]
    left, right = draw_boxes(before, boxes), draw_boxes(after, boxes)
    detail = _detail(left, right, regions)
    return PageDiff(
        number,
        CHANGED,
        regions=regions,
        regions_pdf=[new.box_to_pdf(r) for r in regions] if new.matrix else [],
        size_changed=size_changed,
        image_png=png_bytes(side_by_side(left, right)),
        detail_png=png_bytes(detail) if detail is not None else None,
    )


def _detail(left: Image.Image, right: Image.Image, regions: list[PixelBox]) -> Image.Image | None:
    """Both sides cropped to the changed areas (with some context) and enlarged."""
    if not regions:
        return None
    width, height = max(left.width, right.width), max(left.height, right.height)
    x0, y0 = min(r[0] for r in regions), min(r[1] for r in regions)
    x1, y1 = max(r[2] for r in regions), max(r[3] for r in regions)
    if (x1 - x0) * (y1 - y0) > 0.3 * width * height:
        return None  # changes all over the page: the whole page says it
    margin = max(24, width // 30)
    x0, y0, x1, y1 = x0 - margin, y0 - margin, x1 + margin, y1 + margin
    # At least a third of the page wide, so a changed figure is seen within its line.
    grow = max(0, width // 3 - (x1 - x0))
    x0, x1 = x0 - grow // 2, x1 + grow - grow // 2
    box = (max(0, x0), max(0, y0), min(width, x1), min(height, y1))
    crops = [_on_white(side, (width, height)).crop(box) for side in (left, right)]
    factor = min(3.0, max(1.0, 600 / crops[0].width))
    if factor > 1.0:
        size = (round(crops[0].width * factor), round(crops[0].height * factor))
        crops = [c.resize(size, Image.Resampling.LANCZOS) for c in crops]
    return side_by_side(crops[0], crops[1], gap=16)


def _whole_page(number: int, status: str, page: PageImage) -> PageDiff:
    image = page.load()
    box = (0, 0, image.width, image.height)
    framed = draw_boxes(image, [Box(box, RED)], width=max(4, min(image.size) // 120))
    empty = placeholder(image.size)
    left, right = (empty, framed) if status == ADDED else (framed, empty)
    return PageDiff(
        number,
        status,
        regions=[box],
        regions_pdf=[page.box_to_pdf(box)] if page.matrix else [],
        image_png=png_bytes(side_by_side(left, right)),
    )


def _on_white(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image
    canvas = Image.new("RGB", size, (255, 255, 255))
    canvas.paste(image, (0, 0))
    return canvas


def changed_regions(
    before: Image.Image,
    after: Image.Image,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    min_pixels: int = MIN_PIXELS,
) -> list[PixelBox]:
    """Bounding boxes of the areas where ``after`` differs from ``before`` (top-left aligned).

    A pixel differs when one colour channel moves by more than ``threshold``; differing
    pixels within a few pixels of each other form one area (a changed word, line or picture);
    an area of fewer than ``min_pixels`` differing pixels is ignored.  Largest areas first.
    """
    size = (max(before.width, after.width), max(before.height, after.height))
    a = _on_white(before.convert("RGB"), size)
    b = _on_white(after.convert("RGB"), size)
    red, green, blue = ImageChops.difference(a, b).split()
    strongest = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    lut = [0] * (threshold + 1) + [255] * (255 - threshold)
    mask = strongest.point(lut)
    if mask.getbbox() is None:
        return []
    grid = mask.reduce(_CELL)
    width, height = grid.size
    cells = grid.tobytes()
    seen = bytearray(len(cells))
    regions: list[tuple[int, PixelBox]] = []
    for start, value in enumerate(cells):
        if not value or seen[start]:
            continue
        seen[start] = 1
        queue = deque([start])
        x0 = x1 = start % width
        y0 = y1 = start // width
        while queue:
            cell = queue.popleft()
            cx, cy = cell % width, cell // width
            x0, x1, y0, y1 = min(x0, cx), max(x1, cx), min(y0, cy), max(y1, cy)
            for ny in range(max(0, cy - _GAP), min(height, cy + _GAP + 1)):
                row = ny * width
                for nx in range(max(0, cx - _GAP), min(width, cx + _GAP + 1)):
                    other = row + nx
                    if cells[other] and not seen[other]:
                        seen[other] = 1
                        queue.append(other)
        box = (
            x0 * _CELL,
            y0 * _CELL,
            min(size[0], (x1 + 1) * _CELL),
            min(size[1], (y1 + 1) * _CELL),
        )
        part = mask.crop(box)
        count = part.histogram()[255]
        tight = part.getbbox()
        if count < min_pixels or tight is None:
            continue
        exact = (box[0] + tight[0], box[1] + tight[1], box[0] + tight[2], box[1] + tight[3])
        regions.append((count, exact))
    regions.sort(key=lambda item: -((item[1][2] - item[1][0]) * (item[1][3] - item[1][1])))
    return [box for _count, box in regions[:MAX_REGIONS]]
