"""Pages of a PDF as images, for the verification reports: rendered by PDFium in a child process.

A verifier reads hostile files by definition, and PDFium (through pypdfium2) is a large C++
library: a browser runs it in a sandbox for that reason.  kyso renders pages in a short-lived
child process (``python -I`` running this very file), under a wall-clock limit and an
address-space limit, so a crash, a hang or a memory blow-up costs a note in the report
(:attr:`Rendering.error`, :attr:`PageImage.error`), never the server.  The child writes one
PNG per page and one JSON line per result as it goes, so what was rendered before a crash is
still used.

This module imports nothing from kyso (the child runs it as a script); the messages are codes
that the report writers translate (``verify.report.render.<code>``).

Coordinates: :attr:`PageImage.matrix` maps a pixel of the image to PDF user space as PDFium
drew it, so CropBox/MediaBox offsets, ``/Rotate`` and the scale are all accounted for;
:meth:`PageImage.to_pixels` maps a PDF rectangle (``[x1, y1, x2, y2]``, e.g. a signature
field's ``/Rect``) onto the image.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "DEFAULT_DPI",
    "DEFAULT_MAX_PAGES",
    "DEFAULT_TIMEOUT",
    "MAX_PAGE_PIXELS",
    "Box",
    "PageImage",
    "RenderRequest",
    "Rendering",
    "data_uri",
    "draw_boxes",
    "framed",
    "placeholder",
    "png_bytes",
    "render_pages",
    "side_by_side",
]

DEFAULT_DPI = 100.0
DEFAULT_MAX_PAGES = 50
DEFAULT_TIMEOUT = 120.0
MAX_PAGE_PIXELS = 12_000_000
"""A page larger than this at the requested resolution is drawn at a lower one (hostile sizes)."""
MEMORY_LIMIT = 3 << 30
"""Address space allowed to the rendering process (bytes)."""
_OUTPUT_LIMIT = 1 << 30
"""Largest file the rendering process may write (bytes)."""

# Colours of the reports (RGB).
GREEN = (22, 128, 61)
RED = (200, 30, 30)
AMBER = (196, 120, 0)
GREY = (110, 110, 110)

Matrix = tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class RenderRequest:
    """One document to render: a file, or only its first ``length`` bytes (a signed revision)."""

    source: Path
    length: int | None = None
    pages: tuple[int, ...] | None = None  # 0-based indexes; None: the first max_pages pages
    max_pages: int = DEFAULT_MAX_PAGES
    dpi: float = DEFAULT_DPI


@dataclass
class PageImage:
    """One rendered page (``index`` is 0-based; ``page`` the 1-based number people read)."""

    index: int
    path: Path | None = None
    width: int = 0
    height: int = 0
    scale: float = 0.0
    matrix: Matrix | None = None  # pixel (x, y) -> PDF user space (a, b, c, d, e, f)
    error: str | None = None
    detail: str | None = None

    @property
    def page(self) -> int:
        return self.index + 1

    @property
    def ok(self) -> bool:
        return self.path is not None and self.error is None

    def load(self) -> Image.Image:
        """The image (RGB), read from the rendering folder (valid inside :func:`render_pages`)."""
        if self.path is None:
            raise ValueError(f"page {self.page} was not rendered ({self.error})")
        with Image.open(self.path) as img:
            img.load()
            return img.convert("RGB")

    def to_pdf(self, x: float, y: float) -> tuple[float, float]:
        """The PDF user-space point under pixel ``(x, y)``."""
        if self.matrix is None:
            raise ValueError("page has no coordinate mapping")
        a, b, c, d, e, f = self.matrix
        return a * x + c * y + e, b * x + d * y + f

    def box_to_pdf(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        """A pixel box ``(left, top, right, bottom)`` as a PDF rectangle ``[x1, y1, x2, y2]``."""
        corners = [self.to_pdf(x, y) for x in (box[0], box[2]) for y in (box[1], box[3])]
        xs = [p[0] for p in corners]
        ys = [p[1] for p in corners]
        return min(xs), min(ys), max(xs), max(ys)

    def to_pixels(self, rect: Sequence[float]) -> tuple[int, int, int, int] | None:
        """A PDF rectangle as a pixel box ``(left, top, right, bottom)``, clipped to the image.

        None when the mapping is unknown, the rectangle is malformed or empty, or it lies
        outside the page.
        """
        if self.matrix is None or len(rect) != 4:
            return None
        try:
            values = [float(v) for v in rect]
        except (TypeError, ValueError):
            return None
        if not all(math.isfinite(v) for v in values):
            return None
        a, b, c, d, e, f = self.matrix
        det = a * d - b * c
        if det == 0:
            return None
        corners = []
        for px in (values[0], values[2]):
            for py in (values[1], values[3]):
                u, v = px - e, py - f
                corners.append(((d * u - c * v) / det, (-b * u + a * v) / det))
        left = max(0, math.floor(min(p[0] for p in corners)))
        top = max(0, math.floor(min(p[1] for p in corners)))
        right = min(self.width, math.ceil(max(p[0] for p in corners)))
        bottom = min(self.height, math.ceil(max(p[1] for p in corners)))
        if right - left < 1 or bottom - top < 1:
            return None
        return left, top, right, bottom


@dataclass
class Rendering:
    """What became of one :class:`RenderRequest`."""

    request: RenderRequest
    page_count: int | None = None
    pages: list[PageImage] = field(default_factory=list)
    error: str | None = None  # unreadable | encrypted | timeout | crashed | failed
    detail: str | None = None

    def page(self, index: int) -> PageImage | None:
        for page in self.pages:
            if page.index == index:
                return page
        return None

    @property
    def truncated(self) -> bool:
        """Pages were left out because of :attr:`RenderRequest.max_pages`."""
        return (
            self.request.pages is None
            and self.page_count is not None
            and self.page_count > self.request.max_pages
        )


@contextlib.contextmanager
def render_pages(
    requests: Sequence[RenderRequest], *, timeout: float = DEFAULT_TIMEOUT
) -> Iterator[list[Rendering]]:
    """Render the requested pages in one child process; the images live until the block ends.

    Never raises because of the PDF: a document PDFium cannot open, a crash, a time-out or a
    memory limit is recorded in :attr:`Rendering.error` (the whole document) or
    :attr:`PageImage.error` (one page).  Pages are read with :meth:`PageImage.load`.
    """
    folder = Path(tempfile.mkdtemp(prefix="kyso-render-"))
    try:
        yield _run(requests, folder, timeout)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(requests: Sequence[RenderRequest], folder: Path, timeout: float) -> list[Rendering]:
    renderings = [Rendering(request=r) for r in requests]
    if not requests:
        return renderings
    spec = {
        "out": str(folder),
        "jobs": [
            {
                "source": str(Path(r.source).resolve()),
                "length": r.length,
                "pages": list(r.pages) if r.pages is not None else None,
                "max_pages": max(0, int(r.max_pages)),
                "dpi": float(r.dpi),
            }
            for r in requests
        ],
    }
    failure: tuple[str, str] | None = None
    errors = folder / "stderr.txt"
    try:
        with open(errors, "wb") as stderr:
            proc = subprocess.run(  # noqa: S603 - our own interpreter running this module
                [sys.executable, "-I", str(Path(__file__).resolve())],
                input=json.dumps(spec).encode(),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                timeout=timeout,
                cwd=folder,
                check=False,
            )
        if proc.returncode != 0:
            failure = ("crashed", _exit_detail(proc.returncode, errors))
    except subprocess.TimeoutExpired:
        failure = ("timeout", f"{timeout:g} s")
    except OSError as exc:
        failure = ("failed", str(exc))
    _collect(renderings, folder / "results.jsonl")
    if failure is not None:
        code, detail = failure
        for rendering in renderings:
            _mark_unfinished(rendering, code, detail)
    return renderings


def _exit_detail(returncode: int, errors: Path) -> str:
    """How the child ended: the signal that killed it, or its status and last error line."""
    if returncode < 0:
        try:
            how = signal.Signals(-returncode).name
        except ValueError:
            how = f"signal {-returncode}"
    else:
        how = f"exit status {returncode}"
    try:
        with open(errors, "rb") as stream:
            stream.seek(max(0, errors.stat().st_size - 2000))
            tail = stream.read().decode("utf-8", "replace").strip().splitlines()[-1:]
    except OSError:
        tail = []
    return f"{how}: {tail[0][:300]}" if tail else how


def _collect(renderings: list[Rendering], results: Path) -> None:
    try:
        lines = results.read_text(encoding="utf-8").splitlines()
    except OSError:
        return
    for line in lines:
        try:
            record = json.loads(line)
            rendering = renderings[int(record["job"])]
        except (ValueError, KeyError, IndexError, TypeError):
            continue  # a line cut short by a crash
        if "page_count" in record:
            rendering.page_count = int(record["page_count"])
        elif "page" in record:
            path = record.get("file")
            matrix = record.get("matrix")
            rendering.pages.append(
                PageImage(
                    index=int(record["page"]),
                    path=results.parent / path if path else None,
                    width=int(record.get("width") or 0),
                    height=int(record.get("height") or 0),
                    scale=float(record.get("scale") or 0.0),
                    matrix=tuple(float(v) for v in matrix) if matrix else None,  # type: ignore[arg-type]
                    error=record.get("error"),
                    detail=record.get("detail"),
                )
            )
        elif "error" in record:
            rendering.error = str(record["error"])
            rendering.detail = record.get("detail")


def _wanted(rendering: Rendering) -> list[int]:
    request = rendering.request
    if request.pages is not None:
        return list(request.pages)
    if rendering.page_count is None:
        return []
    return list(range(min(rendering.page_count, request.max_pages)))


def _mark_unfinished(rendering: Rendering, code: str, detail: str) -> None:
    if rendering.error is not None:
        return
    if rendering.page_count is None:
        rendering.error, rendering.detail = code, detail
        return
    done = {p.index for p in rendering.pages}
    for index in _wanted(rendering):
        if index not in done and 0 <= index < rendering.page_count:
            rendering.pages.append(PageImage(index=index, error=code, detail=detail))


# -- drawing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """A rectangle to outline on an image (pixels), with its colour and an optional label."""

    box: tuple[int, int, int, int]
    colour: tuple[int, int, int] = RED
    label: str | None = None
    fill: bool = False


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def draw_boxes(
    image: Image.Image, boxes: Sequence[Box], *, width: int | None = None
) -> Image.Image:
    """A copy of ``image`` with each box outlined (translucent fill if asked) and labelled."""
    base = image.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    line = width or max(2, round(min(base.size) / 300))
    font_size = max(12, round(min(base.size) / 45))
    font = _font(font_size)
    for item in boxes:
        left, top, right, bottom = item.box
        # Around the area, not over it, and visible even for a box of a pixel or two.
        pad = line + 2
        left, top = max(0, left - pad), max(0, top - pad)
        right, bottom = min(base.width - 1, right + pad), min(base.height - 1, bottom + pad)
        if right <= left or bottom <= top:
            continue
        draw.rectangle(
            (left, top, right, bottom),
            outline=(*item.colour, 255),
            fill=(*item.colour, 48) if item.fill else None,
            width=line,
        )
        if item.label:
            text_box = draw.textbbox((0, 0), item.label, font=font)
            tw, th = text_box[2] - text_box[0], text_box[3] - text_box[1]
            margin = max(2, line)
            tx = left
            ty = top - th - 2 * margin if top - th - 2 * margin >= 0 else top
            draw.rectangle(
                (tx, ty, tx + tw + 2 * margin, ty + th + 2 * margin), fill=(*item.colour, 255)
            )
            draw.text(
                (tx + margin - text_box[0], ty + margin - text_box[1]),
                item.label,
                font=font,
                fill=(255, 255, 255, 255),
            )
    return Image.alpha_composite(base, overlay).convert("RGB")


def framed(image: Image.Image, colour: tuple[int, int, int] = (160, 160, 160)) -> Image.Image:
    """A copy of ``image`` with a one-pixel frame (a white page on a white sheet)."""
    copy = image.convert("RGB")
    ImageDraw.Draw(copy).rectangle((0, 0, copy.width - 1, copy.height - 1), outline=colour)
    return copy


def placeholder(size: tuple[int, int]) -> Image.Image:
    """A hatched grey area standing for a page that does not exist on one side of a diff."""
    width, height = max(1, size[0]), max(1, size[1])
    image = Image.new("RGB", (width, height), (236, 236, 236))
    draw = ImageDraw.Draw(image)
    step = max(12, min(width, height) // 25)
    for offset in range(-height, width, step):
        draw.line((offset, 0, offset + height, height), fill=(212, 212, 212), width=2)
    draw.rectangle((0, 0, width - 1, height - 1), outline=(170, 170, 170), width=2)
    return image


def side_by_side(left: Image.Image, right: Image.Image, *, gap: int = 24) -> Image.Image:
    """``left`` and ``right`` next to each other on a light background, top-aligned."""
    width = left.width + right.width + 3 * gap
    height = max(left.height, right.height) + 2 * gap
    canvas = Image.new("RGB", (width, height), (245, 245, 245))
    canvas.paste(left, (gap, gap))
    canvas.paste(right, (2 * gap + left.width, gap))
    draw = ImageDraw.Draw(canvas)
    for x, img in ((gap, left), (2 * gap + left.width, right)):
        draw.rectangle((x - 1, gap - 1, x + img.width, gap + img.height), outline=(160, 160, 160))
    return canvas


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """A ``data:`` URI for a PNG (safe in an HTML attribute: base64 only)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# -- the child process -----------------------------------------------------------------------


def _limit_resources() -> None:
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    limits = ((resource.RLIMIT_AS, MEMORY_LIMIT), (resource.RLIMIT_FSIZE, _OUTPUT_LIMIT))
    for limit, value in limits:
        with contextlib.suppress(ValueError, OSError):
            soft, hard = resource.getrlimit(limit)
            cap = value
            for current in (soft, hard):
                if current != resource.RLIM_INFINITY:
                    cap = min(cap, current)
            resource.setrlimit(limit, (cap, hard))


def _emit(out: Any, record: dict[str, Any]) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


def _worker() -> int:
    _limit_resources()
    spec = json.loads(sys.stdin.read())
    folder = Path(spec["out"])
    import pypdfium2 as pdfium

    with open(folder / "results.jsonl", "w", encoding="utf-8") as out:
        docs: dict[int, Any] = {}
        queues: dict[int, list[int]] = {}
        try:
            for number, job in enumerate(spec["jobs"]):
                doc = _open_job(pdfium, number, job, out)
                if doc is None:
                    continue
                docs[number] = doc
                count = len(doc)
                _emit(out, {"job": number, "page_count": count})
                wanted = job["pages"] if job["pages"] is not None else range(job["max_pages"])
                queues[number] = [int(i) for i in wanted if 0 <= int(i) < count]
            # Page by page across the documents, so that a page that kills the renderer
            # leaves the pages before it compared on every side.
            for step in range(max((len(q) for q in queues.values()), default=0)):
                for number, queue in queues.items():
                    if step < len(queue):
                        record = _render_page(
                            docs[number], number, queue[step], spec["jobs"][number]["dpi"], folder
                        )
                        _emit(out, record)
        finally:
            for doc in docs.values():
                with contextlib.suppress(Exception):
                    doc.close()
    return 0


def _open_job(pdfium: Any, number: int, job: dict[str, Any], out: Any) -> Any:
    try:
        with open(job["source"], "rb") as stream:
            data = stream.read() if job["length"] is None else stream.read(int(job["length"]))
        return pdfium.PdfDocument(data)
    except Exception as exc:
        error = "encrypted" if "password" in str(exc).lower() else "unreadable"
        _emit(out, {"job": number, "error": error, "detail": f"{type(exc).__name__}: {exc}"})
        return None


def _render_page(doc: Any, number: int, index: int, dpi: float, folder: Path) -> dict[str, Any]:
    record: dict[str, Any] = {"job": number, "page": index}
    page = None
    bitmap = None
    try:
        page = doc[index]
        width_pt, height_pt = page.get_size()
        if not (width_pt > 0 and height_pt > 0 and math.isfinite(width_pt * height_pt)):
            record.update(error="empty_page", detail=f"{width_pt} x {height_pt} pt")
            return record
        scale = max(dpi, 1.0) / 72.0
        if width_pt * height_pt * scale * scale > MAX_PAGE_PIXELS:
            scale = math.sqrt(MAX_PAGE_PIXELS / (width_pt * height_pt))
            # pypdfium2 rounds the bitmap size up.
            while math.ceil(width_pt * scale) * math.ceil(height_pt * scale) > MAX_PAGE_PIXELS:
                scale *= 0.995
        bitmap = page.render(scale=scale, may_draw_forms=False, draw_annots=True)
        image = bitmap.to_pil().convert("RGB")
        conv = bitmap.get_posconv(page)
        w, h = image.size
        x0, y0 = conv.to_page(0, 0)
        x1, y1 = conv.to_page(w, 0)
        x2, y2 = conv.to_page(0, h)
        name = f"{number}-{index}.png"
        image.save(folder / name, format="PNG", compress_level=1)
        record.update(
            file=name,
            width=w,
            height=h,
            scale=scale,
            matrix=[(x1 - x0) / w, (y1 - y0) / w, (x2 - x0) / h, (y2 - y0) / h, x0, y0],
        )
    except Exception as exc:
        record.update(error="page_failed", detail=f"{type(exc).__name__}: {exc}")
    finally:
        for obj in (bitmap, page):
            if obj is not None:
                with contextlib.suppress(Exception):
                    obj.close()
    return record


if __name__ == "__main__":
    sys.exit(_worker())
