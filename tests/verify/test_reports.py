"""The verification reports: HTML, PDF, ETSI XML, page pictures and the visual diff.

Reports are built by hand from the model (a passed one with two signatures, a failed one with
forbidden changes, an indeterminate one); the documents pictured are small PDFs made here with
reportlab, and the "modified" ones get a real incremental update appended by pyhanko.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image, ImageChops
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

from kyso.api.services import Services
from kyso.certs import identity
from kyso.i18n import catalogue
from kyso.signer.appearance import Placement, TextStampAppearance
from kyso.signer.fonts import serif_font_path
from kyso.signer.sign import Level, SignOptions
from kyso.signer.verify import VerifyPolicy, verify
from kyso.signer.verify.html_report import build_view, preview_pages, render_html
from kyso.signer.verify.model import (
    DOC_TIMESTAMP,
    INDETERMINATE,
    SIGNATURE,
    TOTAL_FAILED,
    TOTAL_PASSED,
    Algorithms,
    CertificateInfo,
    Change,
    FileInfo,
    Integrity,
    PolicyInfo,
    Reason,
    Revocation,
    SignatureReport,
    TimestampInfo,
    VerificationReport,
)
from kyso.signer.verify.pdf_report import render_pdf
from kyso.signer.verify.render import GREEN, RED, RenderRequest, render_pages
from kyso.signer.verify.visual_diff import changed_regions, visual_diff, visual_diffs
from kyso.signer.verify.xml_report import NAMESPACE, render_xml
from tests.conftest import require_tool, run

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 21, 7, 30, tzinfo=UTC)
VR = f"{{{NAMESPACE}}}"
HOSTILE = "<script>alert('x')</script>"

# Where the test document draws things (PDF user space, A4 portrait).
AMOUNT_AT = (72, 640)  # "So tien: 100.000 dong" in Helvetica 14
SIG_RECT = [300.0, 100.0, 520.0, 170.0]  # the signature box drawn on page 1
UNTOUCHED_AT = (72, 400)


# -- reports built by hand --------------------------------------------------------------------


def cert(
    name: str,
    *,
    org: str | None = None,
    title: str | None = None,
    ids: dict[str, str] | None = None,
    kind: str = "person",
    seed: str = "",
) -> CertificateInfo:
    digest = hashlib.sha256((name + seed).encode()).hexdigest()
    return CertificateInfo(
        subject=f"CN={name},O={org or 'kyso'},C=VN",
        common_name=name,
        organisation=org,
        title=title,
        identities=ids or {},
        kind=kind,
        issuer="CN=kyso Dev Issuing CA (KHÔNG DÙNG THẬT),O=kyso,C=VN",
        serial=digest[:40].upper(),
        not_before=dt.datetime(2026, 1, 1, tzinfo=UTC),
        not_after=dt.datetime(2028, 1, 1, tzinfo=UTC),
        sha256=digest,
        key="RSA-2048",
    )


ROOT = cert("kyso Dev Root CA", kind="unknown", seed="root")
ISSUING = cert("kyso Dev Issuing CA", kind="unknown", seed="issuing")
TSA = cert("kyso Dev TSA", kind="unknown", seed="tsa")


def policy() -> PolicyInfo:
    return PolicyInfo(
        trust_anchors=[{"subject": ROOT.subject, "sha256": ROOT.sha256}],
        revocation="offline",
        validation_time=T0,
        time_given=False,
        weak_algorithms="warn",
        annotations="reject",
    )


def signature(
    number: int,
    indication: str,
    *,
    signer: CertificateInfo,
    sub: str | None = None,
    modified: bool = False,
    byte_range: list[int] | None = None,
    page: int | None = 1,
    rect: list[float] | None = None,
    **extra: object,
) -> SignatureReport:
    values: dict[str, object] = {
        "index": number - 1,
        "kind": SIGNATURE,
        "field_name": f"Signature{number}",
        "sub_filter": "/ETSI.CAdES.detached",
        "revision": number,
        "indication": indication,
        "sub_indication": sub,
        "modified_after_signing": modified,
        "integrity": Integrity(
            byte_range=byte_range or [0, 100, 200, 300],
            byte_range_ok=True,
            covers_revision=number,
            covers_whole_file=not modified,
            digest_ok=True,
            signature_ok=True,
            digest_algorithm="sha256",
            signature_algorithm="sha256_rsa",
        ),
        "signer": signer,
        "chain": [signer, ISSUING, ROOT],
        "trusted": True,
        "trust_anchor": ROOT.subject,
        "key_usage_ok": True,
        "algorithms": Algorithms(digest="sha256", signature="sha256_rsa", key="RSA-2048"),
        "revocation": Revocation(status="good", source="embedded"),
        "claimed_signing_time": T0 - dt.timedelta(hours=1),
        "timestamp": TimestampInfo(
            time=T0 - dt.timedelta(minutes=59), tsa=TSA, intact=True, trusted=True
        ),
        "best_signature_time": T0 - dt.timedelta(minutes=59),
        "level": "B-LT",
        "verifiable_until": dt.datetime(2028, 1, 1, tzinfo=UTC),
        "reason_text": "Phê duyệt",
        "location": "Hà Nội",
        "page": page,
        "rect": rect if rect is not None else (list(SIG_RECT) if page else None),
    }
    values.update(extra)
    return SignatureReport(**values)  # type: ignore[arg-type]


OFFICIAL = cert(
    "Nguyễn Văn An", org="UBND Quận Long Biên", title="Chủ tịch", ids={"CCCD": "001090000001"}
)
AGENCY = cert("UBND Quận Long Biên", ids={"MST": "0101234567"}, kind="organisation")


def file_info(path: Path | None = None) -> FileInfo:
    data = path.read_bytes() if path else b"%PDF-1.7 test"
    return FileInfo(
        name=path.name if path else "cong-van.pdf",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        revisions=2,
        pages=2,
    )


def passed_report(path: Path | None = None) -> VerificationReport:
    sigs = [
        signature(
            1,
            TOTAL_PASSED,
            signer=OFFICIAL,
            modified=True,
            changes=[
                Change("signature_added", 2, True, target="Signature2"),
                Change("form_filled", 2, True, page=1, target="so_hieu"),
            ],
        ),
        signature(2, TOTAL_PASSED, signer=AGENCY, rect=[320.0, 110.0, 400.0, 160.0]),
    ]
    return VerificationReport(
        file=file_info(path),
        policy=policy(),
        verified_at=T0,
        indication=TOTAL_PASSED,
        sub_indication=None,
        modified_after_signing=False,
        signatures=sigs,
        kyso_version="0.1.0",
    )


def failed_report(path: Path | None = None, signed_length: int = 300) -> VerificationReport:
    changes = [
        Change("page_content_changed", 2, False, page=1),
        Change("object_overridden", 2, False, page=1, target="12 0 R"),
        Change("ltv_data_added", 2, True),
    ]
    sig = signature(
        1,
        TOTAL_FAILED,
        signer=OFFICIAL,
        sub="HASH_FAILURE",
        modified=True,
        byte_range=[0, 100, 200, signed_length - 200],
        changes=changes,
        reasons=[
            Reason("verify.change.page_content_changed", {"page": 1, "target": "", "revision": 2})
        ],
    )
    return VerificationReport(
        file=file_info(path),
        policy=policy(),
        verified_at=T0,
        indication=TOTAL_FAILED,
        sub_indication="HASH_FAILURE",
        modified_after_signing=True,
        signatures=[sig],
        changes=changes,
        kyso_version="0.1.0",
    )


def indeterminate_report() -> VerificationReport:
    sig = signature(
        1,
        INDETERMINATE,
        signer=OFFICIAL,
        sub="TRY_LATER",
        revocation=Revocation(status="unknown"),
        timestamp=None,
        best_signature_time=None,
        level="B-B",
        algorithms=Algorithms(digest="sha1", signature="sha1_rsa", key="RSA-1024", weak=True),
    )
    stamp = signature(
        2,
        INDETERMINATE,
        signer=TSA,
        sub="NO_CERTIFICATE_CHAIN_FOUND",
        kind=DOC_TIMESTAMP,
        page=None,
        trusted=False,
        level=None,
    )
    return VerificationReport(
        file=file_info(),
        policy=policy(),
        verified_at=T0,
        indication=INDETERMINATE,
        sub_indication="TRY_LATER",
        modified_after_signing=False,
        signatures=[sig, stamp],
        kyso_version="0.1.0",
    )


# -- documents made here ------------------------------------------------------------------------


def _font() -> str:
    if "KysoSerif-Test" not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont("KysoSerif-Test", str(serif_font_path())))
    return "KysoSerif-Test"


def make_document(path: Path, *, rotate_second: bool = False) -> Path:
    """Two A4 pages: a Vietnamese title, an ASCII amount line, a signature box on page 1."""
    c = canvas.Canvas(str(path), pagesize=(595, 842))
    c.setFont(_font(), 16)
    c.drawString(72, 760, "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM")
    c.setFont("Helvetica", 14)
    c.drawString(*AMOUNT_AT, "So tien: 100.000 dong")
    c.drawString(*UNTOUCHED_AT, "Unchanged line on page one")
    c.rect(SIG_RECT[0], SIG_RECT[1], SIG_RECT[2] - SIG_RECT[0], SIG_RECT[3] - SIG_RECT[1])
    c.showPage()
    if rotate_second:
        c.setPageRotation(90)
        c.setCropBox((40, 30, 560, 800))
    c.setFont("Helvetica", 14)
    c.drawString(72, 700, "Page two stays the same")
    c.rect(100, 100, 200, 50, fill=1)
    c.showPage()
    c.save()
    return path


def append_update(
    source: Path, target: Path, *, new_text: bytes | None = None, add_page: bool = False
) -> Path:
    """An incremental update: page 1's content rewritten and/or a page appended."""
    data = source.read_bytes()
    writer = IncrementalPdfFileWriter(io.BytesIO(data))
    pages = writer.root["/Pages"]
    if new_text is not None:
        page = pages["/Kids"][0].get_object()
        content = page["/Contents"].get_object()
        changed = content.data.replace(b"100.000", new_text)
        assert changed != content.data
        page["/Contents"] = writer.add_object(generic.StreamObject(stream_data=changed))
        writer.update_container(page)
    if add_page:
        font = generic.DictionaryObject(
            {
                generic.NameObject("/Type"): generic.NameObject("/Font"),
                generic.NameObject("/Subtype"): generic.NameObject("/Type1"),
                generic.NameObject("/BaseFont"): generic.NameObject("/Helvetica"),
            }
        )
        stream = generic.StreamObject(stream_data=b"BT /F1 24 Tf 72 700 Td (Added later) Tj ET")
        new_page = generic.DictionaryObject(
            {
                generic.NameObject("/Type"): generic.NameObject("/Page"),
                generic.NameObject("/Parent"): writer.root.raw_get("/Pages"),
                generic.NameObject("/MediaBox"): generic.ArrayObject(
                    [generic.NumberObject(v) for v in (0, 0, 595, 842)]
                ),
                generic.NameObject("/Contents"): writer.add_object(stream),
                generic.NameObject("/Resources"): generic.DictionaryObject(
                    {
                        generic.NameObject("/Font"): generic.DictionaryObject(
                            {generic.NameObject("/F1"): writer.add_object(font)}
                        )
                    }
                ),
            }
        )
        pages["/Kids"].append(writer.add_object(new_page))
        pages["/Count"] = generic.NumberObject(int(pages["/Count"]) + 1)
        writer.update_container(pages)
    out = io.BytesIO()
    writer.write(out)
    target.write_bytes(out.getvalue())
    assert target.read_bytes().startswith(data)  # an incremental update indeed
    return target


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("docs")
    original = make_document(folder / "cong-van.pdf")
    return {
        "original": original,
        "modified": append_update(original, folder / "cong-van-sua.pdf", new_text=b"900.000"),
        "added": append_update(original, folder / "cong-van-them.pdf", add_page=True),
        "rotated": make_document(folder / "xoay.pdf", rotate_second=True),
    }


def _images(html: str) -> list[Image.Image]:
    uris = re.findall(r'src="([^"]*)"', html)
    assert uris
    assert all(u.startswith("data:image/png;base64,") for u in uris)
    return [Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))) for u in uris]


# -- HTML ----------------------------------------------------------------------------------------


def test_html_passed_report_in_vietnamese_and_english(docs: dict[str, Path]) -> None:
    report = passed_report(docs["original"])
    html = render_html(report, docs["original"], "vi")
    assert '<html lang="vi">' in html
    assert "Hợp lệ" in html and "ind-passed" in html
    assert "ind-failed" not in html and "ind-indeterminate" not in html
    for text in (
        "Nguyễn Văn An",
        "UBND Quận Long Biên",
        "Chủ tịch",
        "CCCD: 001090000001",
        "MST: 0101234567",
        "băm SHA-256; ký RSA, SHA-256; khóa RSA-2048",
        OFFICIAL.serial,
        report.file.sha256,
        "B-LT",
        "kyso Dev TSA",
        "Chỉ dùng dữ liệu nhúng trong tệp",
        "Chưa bị thu hồi",
        "Thay đổi được phép",
        "Trường biểu mẫu &#39;so_hieu&#39; được điền",
    ):
        assert text in html, text
    assert "Thay đổi KHÔNG được phép" not in html  # nothing forbidden in a passed report
    assert html.count('class="signature passed') == 2
    # 21/11/2026 07:30 UTC is 14:30 in Hanoi.
    assert "21/11/2026 lúc 14:30:00" in html
    images = _images(html)
    assert len(images) == 1  # page 1 bears both signatures
    english = render_html(report, None, "en")
    assert '<html lang="en">' in english and "Valid" in english and "Hợp lệ" not in english
    assert "2026-11-21 at 14:30:00" in english
    assert "src=" not in english  # no source: no pictures


def test_html_colour_class_follows_the_indication() -> None:
    failed = render_html(failed_report(), None, "vi")
    assert "ind-failed" in failed and "Không hợp lệ" in failed
    assert "Nội dung đã ký bị thay đổi: mã băm không khớp." in failed
    indeterminate = render_html(indeterminate_report(), None, "vi")
    assert "ind-indeterminate" in indeterminate and "Chưa xác định" in indeterminate
    assert "Dấu thời gian của tài liệu 2" in indeterminate
    assert "YẾU: không còn đủ an toàn" in indeterminate  # SHA-1 flagged
    assert "Không dẫn về chứng thư gốc tin cậy nào" in indeterminate


def test_html_separates_forbidden_from_permitted_changes() -> None:
    html = render_html(failed_report(), None, "vi")
    forbidden = html.split('class="box-forbidden"')[1].split("</div>")[0]
    permitted = html.split('class="box-permitted"')[1].split("</div>")[0]
    assert "Nội dung trang 1 bị thay thế." in forbidden
    assert "Đối tượng 12 0 R bị ghi đè nên trang 1 hiển thị nội dung khác." in forbidden
    assert "Bổ sung dữ liệu kiểm tra dài hạn" in permitted
    assert "Bổ sung dữ liệu kiểm tra dài hạn" not in forbidden


def test_html_escapes_everything_from_the_pdf() -> None:
    report = passed_report()
    hostile = cert(HOSTILE, org='"><img src=x onerror=alert(1)>', title="</td></tr></table>")
    report.signatures[0] = signature(
        1,
        TOTAL_PASSED,
        signer=hostile,
        reason_text="<b onmouseover=alert(1)>x</b>",
        field_name="F\"'<>&",
        location="<iframe src=//evil>",
    )
    html = render_html(report, None, "vi")
    assert "<script" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    for raw in ("<img src=x", "<b onmouseover", "<iframe", "</td></tr></table>"):
        assert raw not in html
    assert "&lt;iframe src=//evil&gt;" in html
    assert "default-src &#39;none&#39;" not in html  # the CSP itself is markup, not escaped
    assert "default-src 'none'" in html


def test_html_pictures_outline_the_signature_boxes(docs: dict[str, Path]) -> None:
    report = passed_report(docs["original"])
    report.signatures[1].indication = TOTAL_FAILED  # second box red
    pages, notes = preview_pages(report, docs["original"], "vi")
    assert not notes and [p.page for p in pages] == [1]
    image = Image.open(io.BytesIO(pages[0].png or b"")).convert("RGB")
    with render_pages([RenderRequest(docs["original"], pages=(0,), dpi=110)]) as (r,):
        rendered = r.page(0)
        assert rendered is not None
        green_box = rendered.to_pixels(SIG_RECT)
        red_box = rendered.to_pixels([320.0, 110.0, 400.0, 160.0])
    assert green_box is not None and red_box is not None
    for colour, box in ((GREEN, green_box), (RED, red_box)):
        channels = ImageChops.difference(image, Image.new("RGB", image.size, colour)).split()
        distance = ImageChops.lighter(ImageChops.lighter(channels[0], channels[1]), channels[2])
        exact = distance.point(lambda v: 255 if v == 0 else 0)
        found = exact.getbbox()
        assert found is not None, colour
        # The outline surrounds the box (a few pixels out), the label sits above it.
        assert abs(found[0] - box[0]) <= 8 and abs(found[2] - box[2]) <= 8, (found, box)
        assert abs(found[3] - box[3]) <= 8 and box[1] - 40 <= found[1] <= box[1], (found, box)


def test_boxes_follow_crop_box_and_rotation(docs: dict[str, Path]) -> None:
    """Page 2 is rotated 90° with a CropBox not at the origin: the mapping is PDFium's."""
    with render_pages([RenderRequest(docs["rotated"], pages=(1,), dpi=72)]) as (rendering,):
        page = rendering.page(1)
        assert page is not None and page.ok
        image = page.load()
        # The filled black rectangle drawn at (100, 100, 300, 150) in user space.
        dark = image.convert("L").point(lambda v: 255 if v < 60 else 0)
        expected = page.to_pixels([100, 100, 300, 150])
    assert expected is not None
    found = dark.getbbox()
    assert found is not None
    assert all(abs(a - b) <= 2 for a, b in zip(found, expected, strict=True)), (found, expected)
    # Rotated: the 200 x 50 rectangle is 50 wide and 200 tall on screen.
    assert 45 <= expected[2] - expected[0] <= 55 and 195 <= expected[3] - expected[1] <= 205
    # Cropped: the picture is the CropBox clipped to the MediaBox (0 0 842 595 as reportlab
    # writes a rotated page), i.e. 520 x 565 pt, turned a quarter.
    assert image.size == (565, 520)


# -- visual diff ---------------------------------------------------------------------------------


def _overlaps(
    rect: tuple[float, float, float, float], x: float, y: float, w: float, h: float
) -> bool:
    return rect[0] < x + w and rect[2] > x and rect[1] < y + h and rect[3] > y


def test_visual_diff_finds_the_changed_text_and_nothing_else(docs: dict[str, Path]) -> None:
    signed = docs["original"].stat().st_size
    diff = visual_diff(docs["modified"], signed)
    assert diff.notes == []
    assert (diff.signed_pages, diff.current_pages, diff.compared) == (2, 2, 2)
    first, second = diff.pages
    assert first.status == "changed" and first.changed and first.image_png
    assert second.status == "unchanged" and not second.regions and second.image_png is None
    assert first.regions_pdf
    # Every changed area is on the amount line ("100.000" became "900.000")...
    for rect in first.regions_pdf:
        assert _overlaps(rect, AMOUNT_AT[0], AMOUNT_AT[1] - 4, 200, 18), rect
    # ... and the first digit is among them.
    assert any(_overlaps(r, AMOUNT_AT[0] + 55, AMOUNT_AT[1], 8, 10) for r in first.regions_pdf)
    picture = Image.open(io.BytesIO(first.image_png or b""))
    assert picture.width > 1.3 * picture.height  # two A4 pages side by side


def test_visual_diff_shows_added_pages_and_caps_the_count(docs: dict[str, Path]) -> None:
    signed = docs["original"].stat().st_size
    diff = visual_diff(docs["added"], signed, max_pages=50)
    assert [p.status for p in diff.pages] == ["unchanged", "unchanged", "added"]
    assert diff.pages[2].image_png and diff.changed_pages == [diff.pages[2]]
    capped = visual_diff(docs["added"], signed, max_pages=1)
    assert capped.compared == 1 and capped.truncated
    assert any(n.code == "verify.report.diff.truncated" for n in capped.notes)
    # The same file seen whole: nothing changed.
    same = visual_diff(docs["original"], signed)
    assert not same.changed and same.compared == 2


def test_visual_diff_never_raises_on_a_hostile_file(tmp_path: Path, docs: dict[str, Path]) -> None:
    junk = tmp_path / "junk.pdf"
    junk.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 40)
    diff = visual_diff(junk, 100)
    codes = [n.code for n in diff.notes]
    assert "verify.report.diff.signed_failed" in codes
    assert "verify.report.render.unreadable" in codes
    assert diff.pages == []
    # A signed length cutting the file in the middle of an object.
    cut = visual_diff(docs["modified"], 50)
    assert cut.pages == [] and cut.notes
    # A renderer that does not finish in time is a note, too.
    slow = visual_diff(docs["modified"], docs["original"].stat().st_size, timeout=0.001)
    assert any(n.code == "verify.report.render.timeout" for n in slow.notes)
    # A password-protected file.
    locked = tmp_path / "locked.pdf"
    c = canvas.Canvas(str(locked), encrypt="secret")
    c.drawString(100, 100, "locked")
    c.save()
    pages, notes = preview_pages(passed_report(), locked, "vi")
    assert pages == [] and "được bảo vệ bằng mật khẩu" in notes[0]
    # A gigantic page is drawn at a lower resolution instead of exhausting memory.
    huge = tmp_path / "huge.pdf"
    c = canvas.Canvas(str(huge), pagesize=(14400, 14400))
    c.drawString(100, 100, "huge")
    c.save()
    with render_pages([RenderRequest(huge, dpi=300)]) as (rendering,):
        page = rendering.page(0)
        assert page is not None and page.ok
        assert page.width * page.height <= 12_000_000


def test_a_crashed_renderer_is_a_note(
    monkeypatch: pytest.MonkeyPatch, docs: dict[str, Path]
) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")  # dies at once, like a segfault
    diff = visual_diff(docs["modified"], docs["original"].stat().st_size)
    assert diff.pages == []
    assert any(n.code == "verify.report.render.crashed" for n in diff.notes)
    html = render_html(failed_report(docs["modified"]), docs["modified"], "en", visual_diff=True)
    assert "The PDF renderer failed on this file" in html


def test_visual_diffs_group_signatures_by_revision(docs: dict[str, Path]) -> None:
    signed = docs["original"].stat().st_size
    first = signature(
        1, TOTAL_FAILED, signer=OFFICIAL, modified=True, byte_range=[0, 100, 200, signed - 200]
    )
    second = signature(
        2, TOTAL_PASSED, signer=AGENCY, modified=True, byte_range=[0, 100, 200, signed - 200]
    )
    broken = signature(3, TOTAL_FAILED, signer=AGENCY, modified=True, byte_range=[0, 10, 20, 10**9])
    untouched = signature(4, TOTAL_PASSED, signer=AGENCY)
    results = visual_diffs([first, second, broken, untouched], docs["modified"])
    assert [indexes for indexes, _ in results] == [[2], [0, 1]]
    assert results[0][1].notes[0].code == "verify.report.render.bad_byte_range"
    assert results[1][1].changed
    skipped = visual_diffs([first], docs["modified"], max_revisions=0)
    assert skipped[0][1].notes[0].code == "verify.report.diff.skipped"
    assert skipped[0][1].pages == []


def test_changed_regions_ignores_noise_and_merges_a_word() -> None:
    before = Image.new("RGB", (200, 100), "white")
    after = before.copy()
    after.putpixel((5, 5), (200, 200, 200))  # below the threshold
    after.putpixel((150, 80), (0, 0, 0))  # one dark pixel: too small to be a change
    assert changed_regions(before, after) == []
    for x in range(42, 80):
        for y in range(40, 50):
            if x % 6 < 4:  # letters with gaps between them
                after.putpixel((x, y), (0, 0, 0))
    assert changed_regions(before, after) == [(42, 40, 80, 50)]


def test_html_with_visual_diff(docs: dict[str, Path]) -> None:
    report = failed_report(docs["modified"], docs["original"].stat().st_size)
    html = render_html(report, docs["modified"], "vi", visual_diff=True)
    assert "So sánh hình ảnh: bản đã ký và bản hiện tại" in html
    assert "Trang 1: nội dung hiển thị đã thay đổi" in html
    assert "Các trang hiển thị như lúc ký: 2." in html
    # The document's page 1; the diff of page 1, enlarged on the amount, then whole.
    preview, detail, whole = _images(html)
    assert preview.width < whole.width / 1.8  # one page; two side by side
    assert detail.width < whole.width and detail.height < whole.height / 2
    without = render_html(report, docs["modified"], "vi", visual_diff=False)
    assert "So sánh hình ảnh" not in without


# -- PDF -------------------------------------------------------------------------------------------


def test_pdf_report_is_a_clean_pdf_with_vietnamese_text(
    tmp_path: Path, docs: dict[str, Path]
) -> None:
    qpdf, pdftotext = require_tool("qpdf"), require_tool("pdftotext")
    out = tmp_path / "bao-cao.pdf"
    report = passed_report(docs["original"])
    report.signatures[0].reason_text = HOSTILE + "\x00\x07 <b>đậm</b> & <br/>"
    render_pdf(report, docs["original"], out, "vi", False)
    assert [p.name for p in tmp_path.iterdir()] == ["bao-cao.pdf"]  # no temporary left over
    run(qpdf, "--check", out)
    text = run(pdftotext, "-enc", "UTF-8", out, "-").stdout
    for expected in (
        "Hợp lệ",
        "Nguyễn Văn An",
        "Chủ tịch",
        "CCCD: 001090000001",
        "Báo cáo kiểm tra chữ ký số",
        "Thay đổi được phép",
        HOSTILE,
        "<b>đậm</b>",
    ):
        assert expected in text.replace("\n", " ") or expected in text, expected
    data = out.read_bytes()
    assert b"/Encrypt" not in data and b"/AcroForm" not in data and b"/JavaScript" not in data
    assert b"KysoSerif" in data


def test_pdf_report_failed_with_visual_diff_in_english(
    tmp_path: Path, docs: dict[str, Path]
) -> None:
    qpdf, pdftotext = require_tool("qpdf"), require_tool("pdftotext")
    out = tmp_path / "report.pdf"
    report = failed_report(docs["modified"], docs["original"].stat().st_size)
    render_pdf(report, docs["modified"], out, "en", True)
    run(qpdf, "--check", out)
    text = " ".join(run(pdftotext, "-enc", "UTF-8", out, "-").stdout.split())
    for expected in (
        "Not valid",
        "Forbidden changes",
        "Page 1 content replaced.",
        "Visual comparison",
        "Page 1: the displayed content changed",
        "Nguyễn Văn An",
    ):
        assert expected in text, expected
    indeterminate = tmp_path / "indeterminate.pdf"
    render_pdf(indeterminate_report(), None, indeterminate, "vi", True)
    run(qpdf, "--check", indeterminate)
    assert "Chưa xác định" in run(pdftotext, "-enc", "UTF-8", indeterminate, "-").stdout


# -- ETSI TS 119 102-2 XML -------------------------------------------------------------------------


def test_xml_report_follows_the_etsi_schema() -> None:
    from pyhanko.generated.etsi import ts_11910202
    from xsdata.formats.dataclass.parsers import XmlParser
    from xsdata.formats.dataclass.parsers.config import ParserConfig

    for report, mains in (
        (passed_report(), ["total-passed", "total-passed"]),
        (failed_report(), ["total-failed"]),
        (indeterminate_report(), ["indeterminate", "indeterminate"]),
    ):
        text = render_xml(report)
        root = ET.fromstring(text.encode())
        assert root.tag == f"{VR}ValidationReport"
        sig_reports = root.findall(f"{VR}SignatureValidationReport")
        assert len(sig_reports) == len(report.signatures)
        for element, main, sig in zip(sig_reports, mains, report.signatures, strict=True):
            status = element.find(f"{VR}SignatureValidationStatus")
            assert status is not None
            assert (
                status.findtext(f"{VR}MainIndication") == f"urn:etsi:019102:mainindication:{main}"
            )
            subs = [e.text for e in status.findall(f"{VR}SubIndication")]
            assert subs == (
                [f"urn:etsi:019102:subindication:{sig.sub_indication}"]
                if sig.sub_indication
                else []
            )
            assert element.findtext(f"{VR}SignatureIdentifier/{VR}DAIdentifier") == sig.field_name
            ref = element.find(f"{VR}SignerInformation/{VR}SignerCertificate")
            assert ref is not None
            assert ref.get("VOReference") == f"vo-certificate-{sig.signer.sha256.lower()}"  # type: ignore[union-attr]
            assert element.findtext(f"{VR}ValidationTimeInfo/{VR}ValidationTime", "").startswith(
                "2026-11-21T07:30:00"
            )
        objects = root.findall(f"{VR}SignatureValidationObjects/{VR}ValidationObject")
        assert {o.get("id") for o in objects} >= {
            f"vo-certificate-{s.signer.sha256.lower()}" for s in report.signatures if s.signer
        }
        # The bindings read it back without complaint (elements known, in order).
        parsed = XmlParser(ParserConfig(fail_on_unknown_properties=True)).from_string(
            text, ts_11910202.ValidationReport
        )
        assert len(parsed.signature_validation_report) == len(report.signatures)


def test_xml_report_details_and_hostile_strings() -> None:
    report = indeterminate_report()
    report.signatures[0].reason_text = "bad\x00\x01 <reason> & ]]>"
    report.signatures[0].field_name = "Sig<1>"
    text = render_xml(report)
    root = ET.fromstring(text.encode())
    first = root.findall(f"{VR}SignatureValidationReport")[0]
    reason = first.findtext(f"{VR}SignatureAttributes/{VR}Reason/{VR}ReasonElement")
    assert reason is not None and "<reason> & ]]>" in reason and "\x00" not in reason
    assert first.findtext(f"{VR}SignatureIdentifier/{VR}DAIdentifier") == "Sig<1>"
    crypto = first.find(f".//{VR}CryptoInformation")
    assert crypto is not None
    assert crypto.findtext(f"{VR}Algorithm") == "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
    assert crypto.findtext(f"{VR}SecureAlgorithm") == "false"
    assert first.findtext(f"{VR}SignatureQuality/{VR}SignatureQualityInformation", "").endswith(
        "PAdES-B-B"
    )
    policy_id = first.findtext(f".//{VR}SignatureValidationPolicy/{VR}PolicyName")
    assert policy_id is not None and "revocation=offline" in policy_id
    assert b"<ds:DigestValue>" in text.encode()  # the policy is identified by its digest
    # A document timestamp reports its time as a DocTimeStamp attribute.
    passed = render_xml(passed_report())
    assert "SignatureTimeStamp" in passed and "urn:etsi:019102:validationprocess:LTVM" in passed


# -- the catalogue ---------------------------------------------------------------------------------


def test_every_report_string_is_translated() -> None:
    """Keys the report code builds at run time exist in both languages."""
    messages = catalogue()
    for locale in ("vi", "en"):
        view = build_view(indeterminate_report(), locale)
        assert all(not v.startswith("verify.") for v in view.labels.values()), view.labels
        for sig in view.signatures:
            for row in sig.rows:
                assert not row.label.startswith("verify."), row.label
                assert not row.value.startswith("verify."), row.value
    for code in (
        "unreadable",
        "encrypted",
        "timeout",
        "crashed",
        "failed",
        "page_failed",
        "empty_page",
        "bad_byte_range",
    ):
        assert f"verify.report.render.{code}" in messages
    for status in ("good", "unknown", "not_checked"):
        assert f"verify.report.revocation.{status}" in messages
    for kind in ("person", "organisation", "unknown"):
        assert f"verify.report.signer.kind.{kind}" in messages
    for permission in ("NO_CHANGES", "FILL_FORMS", "ANNOTATE"):
        assert f"verify.report.certification.{permission}" in messages
    from kyso.signer.verify.engine import ANNOTATION_RULE

    assert f"verify.report.policy.annotations.{ANNOTATION_RULE}" in messages


# -- end to end, with the verifier -----------------------------------------------------------------


def test_reports_of_real_verifications(dev_services: Services, tmp_path: Path) -> None:
    """Sign with kyso, verify, forge, verify again: the reports show what happened."""
    qpdf = require_tool("qpdf")
    label = "reports-person"
    if label not in {r.label for r in dev_services.pki.records()}:
        dev_services.pki.issue(
            kind="person",
            subject=identity.person_subject(
                "Nguyễn Văn An",
                ids=["CCCD:001090000001"],
                title="Chủ tịch",
                organisation="UBND Quận Long Biên",
            ),
            label=label,
        )
    source = make_document(tmp_path / "du-thao.pdf")
    signed = tmp_path / "da-ky.pdf"
    options = SignOptions(
        level=Level.B_LT,
        appearance=TextStampAppearance(["Số: 123/UBND-VP"]),
        placement=Placement(box=(SIG_RECT[0], SIG_RECT[1], SIG_RECT[2], SIG_RECT[3]), page=0),
        reason=HOSTILE,
    )
    dev_services.document_signer(label).sign(source, signed, options)
    policy = VerifyPolicy(trust_roots=(dev_services.pki.root_cert,), offline=True)

    report = verify(signed, policy)
    assert report.indication == TOTAL_PASSED, report.to_dict("en")
    html = render_html(report, signed, "vi")
    assert "ind-passed" in html and "Nguyễn Văn An" in html and "<script>" not in html
    pages, notes = preview_pages(report, signed, "vi")
    assert not notes and pages[0].png

    forged = append_update(signed, tmp_path / "da-sua.pdf", new_text=b"900.000")
    bad = verify(forged, policy)
    assert bad.indication == TOTAL_FAILED and bad.signatures[0].modified_after_signing
    html = render_html(bad, forged, "vi", visual_diff=True)
    assert "ind-failed" in html and "Thay đổi KHÔNG được phép" in html
    assert "Nội dung trang 1 bị thay thế." in html
    assert "Trang 1: nội dung hiển thị đã thay đổi" in html
    out = tmp_path / "bao-cao.pdf"
    render_pdf(bad, forged, out, "vi", True)
    run(qpdf, "--check", out)
    root = ET.fromstring(render_xml(bad).encode())
    status = root.find(f"{VR}SignatureValidationReport/{VR}SignatureValidationStatus")
    assert status is not None
    assert status.findtext(f"{VR}MainIndication") == "urn:etsi:019102:mainindication:total-failed"
