"""The verification report as a PDF (reportlab), for printing, filing and sealing.

Same content as the HTML report (:func:`.html_report.build_view`): the verdict in colour and
words, the file, the policy, every signature, the changes after signing, the document with
the signature boxes and, if asked, the visual comparison of each modified signed revision.

Text is set in kyso's serif (:func:`kyso.signer.fonts.serif_font_path`, Liberation Serif
rescaled and renamed KysoSerif), embedded as a subset with its Unicode map, so every
Vietnamese letter prints and can be searched and copied.  The file is a plain PDF: no form,
no encryption, no JavaScript, so it can then be sealed with a kyso signature.  It is written
atomically: a temporary file beside ``out_path``, renamed onto it once complete.

Strings from the PDF under report are attacker-controlled: they are normalised, stripped of
control characters, shortened when absurdly long and escaped before reportlab's paragraph
mark-up sees them.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import unicodedata
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from kyso.signer.verify.html_report import (
    ChangeView,
    DiffView,
    PreviewPage,
    ReportView,
    Row,
    SignatureView,
    build_view,
    diff_views,
    headline,
    preview_pages,
)
from kyso.signer.verify.model import VerificationReport
from kyso.signer.verify.render import DEFAULT_TIMEOUT

__all__ = ["render_pdf", "render_pdf_bytes"]

FONT = "KysoSerif"
FONT_BOLD = "KysoSerif-Bold"
MONO = "Courier"  # digests and serial numbers: ASCII only
MAX_TEXT = 1500
"""Longest string taken from a report value (a hostile /Reason could be megabytes)."""

TONES = {
    "passed": ("#16803d", "#e8f5ec"),
    "failed": ("#c81e1e", "#fdecec"),
    "indeterminate": ("#b86e00", "#fff4e0"),
}
ROW_TONES = {"good": "#16803d", "warn": "#b86e00", "bad": "#c81e1e"}
MUTED = "#5f6368"


def _clean(text: str, limit: int = MAX_TEXT) -> str:
    """Safe paragraph text: NFC, no control characters, at most ``limit`` characters, escaped."""
    text = unicodedata.normalize("NFC", str(text))
    text = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") and ch != "\n" else ch
        for ch in text
    )
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return escape(text).replace("\n", "<br/>")


def _register_fonts() -> None:
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    from kyso.signer.fonts import serif_font_path

    registered = pdfmetrics.getRegisteredFontNames()
    if FONT not in registered:
        pdfmetrics.registerFont(TTFont(FONT, str(serif_font_path(False))))
    if FONT_BOLD not in registered:
        pdfmetrics.registerFont(TTFont(FONT_BOLD, str(serif_font_path(True))))
    for bold, italic, name in ((0, 0, FONT), (1, 0, FONT_BOLD), (0, 1, FONT), (1, 1, FONT_BOLD)):
        addMapping(FONT, bold, italic, name)


class _Builder:
    """Turns a :class:`ReportView` (and its pictures) into reportlab flowables."""

    def __init__(self, width: float, height: float) -> None:
        from reportlab.lib import colors
        from reportlab.lib.styles import ParagraphStyle

        self.colors = colors
        self.width = width
        self.height = height
        base = ParagraphStyle("kyso", fontName=FONT, fontSize=10.5, leading=13.5, splitLongWords=1)
        self.body = base
        self.small = ParagraphStyle(
            "small", parent=base, fontSize=9, leading=11.5, textColor=colors.HexColor(MUTED)
        )
        self.label = ParagraphStyle(
            "label", parent=base, fontSize=9.5, leading=12, textColor=colors.HexColor(MUTED)
        )
        self.mono = ParagraphStyle(
            "mono", parent=base, fontName=MONO, fontSize=8.5, leading=11, wordWrap="CJK"
        )
        self.title = ParagraphStyle(
            "title", parent=base, fontName=FONT_BOLD, fontSize=18, leading=22, spaceAfter=8
        )
        self.h2 = ParagraphStyle(
            "h2",
            parent=base,
            fontName=FONT_BOLD,
            fontSize=13.5,
            leading=17,
            spaceBefore=12,
            spaceAfter=5,
        )
        self.h3 = ParagraphStyle(
            "h3", parent=base, fontName=FONT_BOLD, fontSize=12, leading=15, spaceAfter=3
        )
        self.h4 = ParagraphStyle(
            "h4",
            parent=base,
            fontName=FONT_BOLD,
            fontSize=10.5,
            leading=13.5,
            spaceBefore=5,
            spaceAfter=2,
        )
        self.verdict = ParagraphStyle(
            "verdict", parent=base, fontName=FONT_BOLD, fontSize=22, leading=27
        )

    # -- small pieces ---------------------------------------------------------------------

    def p(
        self, text: str, style: Any = None, colour: str | None = None, limit: int = MAX_TEXT
    ) -> Any:
        from reportlab.platypus import Paragraph

        markup = _clean(text, limit)
        if colour:
            markup = f'<font color="{colour}">{markup}</font>'
        return Paragraph(markup, style or self.body)

    def bullets(self, items: list[str], colour: str | None = None) -> list[Any]:
        from reportlab.platypus import ListFlowable, ListItem

        if not items:
            return []
        return [
            ListFlowable(
                [ListItem(self.p(item, colour=colour), leftIndent=12) for item in items],
                bulletType="bullet",
                start="•",
                leftIndent=12,
                bulletFontName=FONT,
            )
        ]

    def facts(self, rows: list[Row]) -> Any:
        from reportlab.platypus import Table, TableStyle

        data = []
        for row in rows:
            style = self.mono if row.mono else self.body
            colour = ROW_TONES.get(row.tone)
            data.append([self.p(row.label, self.label), self.p(row.value, style, colour)])
        table = Table(data, colWidths=[self.width * 0.3, self.width * 0.7], hAlign="LEFT")
        table.setStyle(
            TableStyle(
                [
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("LINEBELOW", (0, 0), (-1, -1), 0.4, self.colors.HexColor("#d9dce1")),
                    ("LEFTPADDING", (0, 0), (-1, -1), 3),
                    ("RIGHTPADDING", (0, 0), (-1, -1), 3),
                    ("TOPPADDING", (0, 0), (-1, -1), 2.5),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5),
                ]
            )
        )
        return table

    def boxed(self, content: list[Any], border: str, background: str, width: float = 1.2) -> Any:
        from reportlab.platypus import Table, TableStyle

        table = Table([[content]], colWidths=[self.width], hAlign="LEFT")
        table.setStyle(
            TableStyle(
                [
                    ("BOX", (0, 0), (-1, -1), width, self.colors.HexColor(border)),
                    ("BACKGROUND", (0, 0), (-1, -1), self.colors.HexColor(background)),
                    ("LEFTPADDING", (0, 0), (-1, -1), 8),
                    ("RIGHTPADDING", (0, 0), (-1, -1), 8),
                    ("TOPPADDING", (0, 0), (-1, -1), 6),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 6),
                ]
            )
        )
        return table

    def picture(self, png: bytes, max_height: float | None = None) -> Any:
        from reportlab.lib.utils import ImageReader
        from reportlab.platypus import Image

        reader = ImageReader(io.BytesIO(png))
        px_w, px_h = reader.getSize()
        limit_h = max_height or self.height * 0.8
        scale = min(self.width / px_w, limit_h / px_h)
        image = Image(io.BytesIO(png), width=px_w * scale, height=px_h * scale)
        image.hAlign = "LEFT"
        return image

    def changes(
        self, view: ReportView, forbidden: list[ChangeView], permitted: list[ChangeView]
    ) -> list[Any]:
        out: list[Any] = []
        if forbidden:
            red, pink = TONES["failed"]
            items = [self._change_text(c) for c in forbidden]
            out.append(
                self.boxed(
                    [
                        self.p(view.labels["changes.forbidden"], self.h4, red),
                        *self.bullets(items, red),
                    ],
                    red,
                    pink,
                    1.5,
                )
            )
        if permitted:
            items = [self._change_text(c) for c in permitted]
            out.append(
                self.boxed(
                    [self.p(view.labels["changes.permitted"], self.h4), *self.bullets(items)],
                    "#d9dce1",
                    "#f7f8fa",
                    0.6,
                )
            )
        return out

    @staticmethod
    def _change_text(change: ChangeView) -> str:
        text = f"{change.text} {change.detail}" if change.detail else change.text
        return f"{text} ({change.revision})"

    # -- sections -------------------------------------------------------------------------

    def verdict_box(self, view: ReportView) -> Any:
        colour, background = TONES.get(view.tone, TONES["indeterminate"])
        content = [self.p(view.indication, self.verdict, colour), self.p(view.summary)]
        if view.sub_code:
            content.append(self.p(view.sub_code, self.small))
        content.extend(self.bullets(view.reasons))
        return self.boxed(content, colour, background, 2.5)

    def signature(self, view: ReportView, sig: SignatureView) -> list[Any]:
        from reportlab.platypus import Spacer

        colour, background = TONES.get(sig.tone, TONES["indeterminate"])
        head = self.boxed(
            [
                self.p(sig.heading, self.h3),
                self.p(headline(sig.indication, sig.summary), colour=colour),
                *([self.p(sig.sub_code, self.small)] if sig.sub_code else []),
            ],
            colour,
            background,
            1.5,
        )
        out: list[Any] = [head, Spacer(1, 4), self.facts(sig.rows)]
        if sig.reasons:
            out.append(self.p(view.labels["reasons"], self.h4))
            out.extend(self.bullets(sig.reasons))
        if sig.warnings:
            out.append(self.p(view.labels["warnings"], self.h4))
            out.extend(self.bullets(sig.warnings, ROW_TONES["warn"]))
        out.append(self.p(view.labels["changes.heading"], self.h4))
        if not sig.forbidden and not sig.permitted:
            out.append(self.p(view.labels["changes.none"]))
        out.extend(self.changes(view, sig.forbidden, sig.permitted))
        out.append(Spacer(1, 10))
        return out

    def story(
        self,
        view: ReportView,
        previews: list[PreviewPage],
        preview_notes: list[str],
        diffs: list[DiffView],
    ) -> list[Any]:
        from reportlab.platypus import CondPageBreak, Spacer

        story: list[Any] = [self.p(view.title, self.title), self.verdict_box(view)]
        story += [self.p(view.labels["file.heading"], self.h2), self.facts(view.file_rows)]
        story += [self.p(view.labels["policy.heading"], self.h2), self.facts(view.policy_rows)]
        story.append(self.p(view.labels["policy.trust_anchors"], self.h4))
        if view.anchors:
            story.extend(self.bullets(view.anchors))
        else:
            story.append(self.p(view.labels["policy.no_anchors"]))
        story.append(self.p(view.labels["signatures.heading"], self.h2))
        if not view.signatures:
            story.append(self.p(view.labels["signatures.none"]))
        for sig in view.signatures:
            story.append(CondPageBreak(self.height * 0.25))
            story.extend(self.signature(view, sig))
        if view.forbidden or view.permitted:
            story.append(self.p(view.labels["changes.document_heading"], self.h2))
            story.extend(self.changes(view, view.forbidden, view.permitted))
        if previews or preview_notes:
            story.append(CondPageBreak(self.height * 0.5))
            story.append(self.p(view.labels["pages.heading"], self.h2))
            story.extend(self.p(note, colour=ROW_TONES["warn"]) for note in preview_notes)
            for page in previews:
                if page.png:
                    story.append(self.picture(page.png, self.height * 0.75))
                if page.note:
                    story.append(self.p(page.note, colour=ROW_TONES["warn"]))
                story += [self.p(page.caption, self.small), Spacer(1, 8)]
        if diffs:
            story.append(CondPageBreak(self.height * 0.5))
            story.append(self.p(view.labels["diff.heading"], self.h2))
            for diff in diffs:
                story.append(self.p(diff.title, self.h3))
                if diff.summary:
                    story.append(self.p(diff.summary))
                story.extend(self.p(note, colour=ROW_TONES["warn"]) for note in diff.notes)
                if diff.no_visible_change:
                    story.append(self.p(diff.no_visible_change))
                if diff.pages:
                    story.append(self.p(view.labels["diff.legend"], self.small))
                for changed in diff.pages:
                    story.append(CondPageBreak(self.height * 0.4))
                    story.append(self.p(changed.text, self.h4, ROW_TONES.get(changed.tone)))
                    if changed.detail_png:
                        story.append(self.picture(changed.detail_png, self.height * 0.3))
                        story.append(Spacer(1, 6))
                    if changed.png:
                        story.append(self.picture(changed.png, self.height * 0.6))
                if diff.unchanged:
                    story.append(self.p(diff.unchanged))
                story.append(Spacer(1, 8))
        story += [Spacer(1, 14), self.p(view.footer, self.small)]
        return story


def render_pdf_bytes(
    report: VerificationReport,
    source_pdf: Path | None = None,
    locale: str | None = None,
    visual_diff: bool = False,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> bytes:
    """The report as PDF bytes (see :func:`render_pdf`)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import SimpleDocTemplate

    _register_fonts()
    view = build_view(report, locale)
    previews: list[PreviewPage] = []
    preview_notes: list[str] = []
    diffs: list[DiffView] = []
    if source_pdf is not None:
        previews, preview_notes = preview_pages(report, source_pdf, view.locale, timeout=timeout)
        if visual_diff:
            diffs = diff_views(report, source_pdf, view.locale, timeout=timeout)
    buffer = io.BytesIO()
    margin = 18 * mm

    def on_page(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont(FONT, 8)
        canvas.setFillColorRGB(0.37, 0.39, 0.41)
        canvas.drawString(margin, 10 * mm, f"{view.title}: {report.file.name[:80]}")
        canvas.drawRightString(A4[0] - margin, 10 * mm, str(doc.page))
        canvas.restoreState()

    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=margin,
        rightMargin=margin,
        topMargin=margin,
        bottomMargin=margin,
        title=f"{view.title}: {report.file.name}",
        author="kyso",
        subject=view.summary,
        creator=f"kyso {report.kyso_version}".strip(),
        lang=view.locale,
    )
    builder = _Builder(doc.width, doc.height)
    doc.build(
        builder.story(view, previews, preview_notes, diffs),
        onFirstPage=on_page,
        onLaterPages=on_page,
    )
    return buffer.getvalue()


def render_pdf(
    report: VerificationReport,
    source_pdf: Path | None,
    out_path: Path,
    locale: str | None = None,
    visual_diff: bool = False,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Write the report as a PDF to ``out_path``, atomically (never a half-written file).

    With ``source_pdf`` (the file the report is about) the report pictures the document with
    its signature boxes, and with ``visual_diff`` compares each modified signed revision with
    the file.  A file that cannot be drawn gives a note in the report, never an exception.
    """
    data = render_pdf_bytes(report, source_pdf, locale, visual_diff, timeout=timeout)
    _write_atomic(Path(out_path), data)


def _write_atomic(target: Path, data: bytes) -> None:
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
