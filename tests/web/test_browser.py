"""The web UI in headless Chromium: the four flows of issue 6 end to end (log in, upload and
sign by clicking on the page; the clerk's queue: number then seal; the public verification
page: drop a PDF, read the verdict; archive search with and without diacritics, then download),
plus the English switch, a keyboard-only login and the tablet layout.

Every step leaves a screenshot in tests/web/artifacts/.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from kyso.api import workflow
from kyso.signer.verify import VerifyPolicy, verify
from tests.api.service_helpers import PIN
from tests.web.conftest import WebApp, make_pdf, new_document, off_loop, tamper

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def log_in(page: Any, app: WebApp, role: str, *, start: str = "/") -> None:
    username, password = app.user(role)
    page.goto(start)
    page.wait_for_url(re.compile(r"/login"))
    page.get_by_label("Tên đăng nhập").fill(username)
    page.get_by_label("Mật khẩu").fill(password)
    page.get_by_role("button", name="Đăng nhập").click()
    page.wait_for_url(re.compile(re.escape(start) + r"$"))


def latest_pdf(app: WebApp, role: str, document_id: int, tmp: Path) -> bytes:
    target = tmp / f"doc-{document_id}.pdf"
    off_loop(workflow.download, app.services, app.users[role][0], document_id, target)
    return target.read_bytes()


def no_horizontal_scroll(page: Any) -> bool:
    return bool(
        page.evaluate(
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
    )


# -- flow 1: the official ------------------------------------------------------------------------


def test_official_logs_in_uploads_and_signs_where_they_click(
    page: Any, web_app: WebApp, shots: Any, tmp_path: Path
) -> None:
    page.goto("/")
    page.wait_for_url(re.compile(r"/login\?next=%2F$"))
    assert page.locator("html").get_attribute("lang") == "vi"
    shots(page, "login-page")
    log_in(page, web_app, "official")
    assert page.get_by_role("heading", level=1).inner_text().startswith("Xin chào")
    shots(page, "home")

    page.get_by_role("link", name="Tải lên và ký").first.click()
    page.wait_for_url(re.compile(r"/documents/new$"))
    source = tmp_path / "du-thao.pdf"
    source.write_bytes(make_pdf(2, title="QUYẾT ĐỊNH PHÊ DUYỆT ĐỀ ÁN THỬ NGHIỆM"))
    page.get_by_label("Tệp PDF dự thảo").set_input_files(str(source))
    page.get_by_label("Trích yếu").fill("Quyết định phê duyệt đề án thử nghiệm ký số")
    page.get_by_label("Ký hiệu").fill("QĐ-UBND")
    page.get_by_label("Chức vụ người ký").fill("Chủ tịch")
    shots(page, "upload-filled")
    page.get_by_role("button", name="Tải lên").click()
    page.wait_for_url(re.compile(r"/documents/(\d+)/sign\?done=uploaded$"))
    document_id = int(re.search(r"/documents/(\d+)/", page.url).group(1))  # type: ignore[union-attr]
    assert "Đã tải văn bản lên." in page.locator(".flash").inner_text()
    assert page.get_by_role("heading", name="Trang 2/2").is_visible()  # the last page first
    shots(page, "sign-page")

    # click at 70 % across, 62 % down the picture of page 2
    image = page.locator("#page-image")
    box = image.bounding_box()
    assert box is not None and box["width"] > 300
    image.click(position={"x": box["width"] * 0.70, "y": box["height"] * 0.62})
    assert page.locator(".marker.shown").is_visible()
    assert "Đã chọn vị trí chữ ký trên trang 2" in page.locator("#pick-status").inner_text()
    x = int(page.locator("input[name=x]").input_value())
    y = int(page.locator("input[name=y]").input_value())
    natural_w, natural_h = (int(image.get_attribute(a) or 0) for a in ("width", "height"))
    assert abs(x - 0.70 * natural_w) <= 2 and abs(y - 0.62 * natural_h) <= 2
    page.get_by_label("Mã PIN ký số").fill(PIN)
    shots(page, "position-chosen")
    page.get_by_role("button", name="Ký số").click()
    page.wait_for_url(re.compile(rf"/documents/{document_id}\?done=signed$"))
    assert page.locator("#doc-status").inner_text() == "Đã ký, chờ cấp số"
    shots(page, "signed")

    # the signature is where the official clicked: page 2, centred on the point
    signed = tmp_path / "signed.pdf"
    signed.write_bytes(latest_pdf(web_app, "official", document_id, tmp_path))
    report = off_loop(verify, signed, VerifyPolicy.from_services(web_app.services))
    [person] = [s for s in report.signatures if s.kind != "doc_timestamp"]
    assert person.page == 2 and person.rect is not None
    # A4 is 595 x 842 pt; the page picture is drawn at 96 dpi: pixel -> point is x 0.75
    click_x, click_y = x * 0.75, 842 - y * 0.75
    x1, y1, x2, y2 = (float(v) for v in person.rect)
    assert x1 < click_x < x2 and y1 < click_y < y2, (person.rect, click_x, click_y)
    assert abs((x1 + x2) / 2 - click_x) < 3 and abs((y1 + y2) / 2 - click_y) < 3


def test_a_wrong_pin_keeps_the_page_and_says_so(
    page: Any, web_app: WebApp, shots: Any, tmp_path: Path
) -> None:
    document_id = new_document(web_app, "Công văn về lịch họp tháng", step="draft", tmp=tmp_path)
    log_in(page, web_app, "official", start=f"/documents/{document_id}/sign")
    page.locator("#page-image").click(position={"x": 200, "y": 300})
    page.get_by_label("Mã PIN ký số").fill("000000")
    page.get_by_role("button", name="Ký số").click()
    error = page.locator("#sign-error")
    error.wait_for()
    assert "PIN" in error.inner_text()
    assert page.locator(".marker.shown").is_visible()  # the chosen position is kept
    shots(page, "wrong-pin")


# -- flow 2: the clerk -------------------------------------------------------------------------


def test_clerk_gives_the_number_then_the_seal_from_the_queue(
    page: Any, web_app: WebApp, shots: Any, tmp_path: Path
) -> None:
    subject = "Quyết định thành lập tổ công tác liên ngành"
    document_id = new_document(web_app, subject, step="person_signed", tmp=tmp_path)
    log_in(page, web_app, "clerk", start="/queue")
    item = page.locator(
        "section.queue-item", has=page.get_by_role("link", name=re.compile(subject))
    )
    assert item.count() == 1
    assert page.locator("#to-number").inner_text().startswith("Chờ cấp số")
    shots(page, "queue")
    assert item.get_by_label("Ký hiệu").input_value() == "QĐ-UBND"  # planned at upload
    item.get_by_role("button", name="Cấp số").click()
    page.wait_for_url(re.compile(r"/queue\?done=registered$"))
    assert "Đã cấp số" in page.locator(".flash").inner_text()
    shots(page, "numbered")

    doc = web_app.services.catalog.get(document_id, actor="test")
    assert doc.code_number is not None and doc.code_notation == "QĐ-UBND"
    sealing = page.locator(
        "section.queue-item", has=page.get_by_role("link", name=re.compile(subject))
    )
    assert doc.number_symbol in sealing.inner_text()
    sealing.get_by_role("button", name="Đóng dấu").click()
    page.wait_for_url(re.compile(r"/queue\?done=sealed$"))
    assert "Đã đóng dấu cơ quan" in page.locator(".flash").inner_text()
    assert page.locator("section.queue-item", has_text=subject).count() == 0
    shots(page, "sealed")

    page.goto(f"/documents/{document_id}")
    assert page.locator("#doc-status").inner_text() == "Đã đóng dấu cơ quan"
    shots(page, "document")
    kinds = [v.kind for v in web_app.services.catalog.get(document_id, actor="test").versions]
    assert kinds == ["draft", "person_signed", "registered", "sealed"]


# -- flow 3: anyone verifies -------------------------------------------------------------------


def _drop(page: Any, data: bytes, name: str) -> None:
    """Drag a PDF from the desktop onto the drop zone (a DataTransfer with a File)."""
    page.evaluate(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "application/pdf"}));
            const zone = document.querySelector("[data-drop-target]");
            for (const type of ["dragenter", "dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true,
                                                        cancelable: true}));
            }
        }""",
        [base64.b64encode(data).decode(), name],
    )


def test_anyone_drops_a_pdf_on_the_verification_page(
    page: Any, web_app: WebApp, shots: Any, tmp_path: Path
) -> None:
    document_id = new_document(
        web_app, "Quyết định ban hành quy chế văn thư", step="sealed", tmp=tmp_path
    )
    sealed = latest_pdf(web_app, "clerk", document_id, tmp_path)
    page.goto("/verify")  # no account
    assert page.get_by_role("link", name="Đăng nhập").is_visible()
    shots(page, "empty")
    _drop(page, sealed, "quyet-dinh-da-ky.pdf")
    verdict = page.locator("#verdict")
    verdict.wait_for()
    assert verdict.get_attribute("data-indication") == "TOTAL_PASSED"
    assert "passed" in (verdict.get_attribute("class") or "")
    assert "quyet-dinh-da-ky.pdf" in page.locator("#report-heading").inner_text()
    assert page.locator("section.signature").count() == 2  # the official and the agency
    previews = page.locator(".previews img")
    assert previews.count() >= 1 and previews.first.evaluate("i => i.naturalWidth") > 300
    shots(page, "passed")

    # a file changed after signing, chosen with the file picker and sent with the keyboard
    page.get_by_label("Tệp PDF cần kiểm tra").set_input_files(
        files=[{"name": "bi-sua.pdf", "mimeType": "application/pdf", "buffer": tamper(sealed)}]
    )
    page.get_by_role("button", name="Kiểm tra", exact=True).focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#verdict[data-indication='TOTAL_FAILED']")
    assert "failed" in (page.locator("#verdict").get_attribute("class") or "")
    diff = page.locator("section.diff")
    assert diff.count() >= 1
    assert diff.locator("img").count() >= 1
    shots(page, "failed-with-diff")

    page.get_by_label("Tệp PDF cần kiểm tra").set_input_files(
        files=[{"name": "khong-phai.pdf", "mimeType": "application/pdf", "buffer": b"hello"}]
    )
    page.get_by_role("button", name="Kiểm tra", exact=True).click()
    page.locator("#verify-error").wait_for()
    assert "Không kiểm tra được tệp này" in page.locator("#verify-error").inner_text()
    shots(page, "not-a-pdf")


# -- flow 4: the archivist -----------------------------------------------------------------------


def test_archive_search_with_and_without_diacritics_then_download(
    page: Any, web_app: WebApp, shots: Any, tmp_path: Path
) -> None:
    subject = "Kế hoạch chuyển đổi số năm 2026"
    document_id = new_document(web_app, subject, step="sealed", tmp=tmp_path, symbol="KH-UBND")
    log_in(page, web_app, "archivist", start="/search")
    shots(page, "search-form")
    for query in ("chuyen doi so", "Chuyển đổi số"):
        page.get_by_label("Trích yếu có chứa").fill(query)
        page.get_by_role("button", name="Tìm", exact=True).click()
        page.wait_for_url(re.compile(r"/search\?"))
        assert page.locator("#results").inner_text() == "Tìm thấy 1 văn bản"
        assert page.get_by_role("link", name=f"Quyết định: {subject}", exact=True).count() == 1
        shots(page, "found-" + ("plain" if query.islower() else "accents"))

    with page.expect_download() as info:
        page.get_by_role("link", name=re.compile(r"Tải PDF\s+" + re.escape(subject))).click()
    download = info.value
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert saved.name.endswith("-sealed.pdf") and "KH-UBND" in saved.name
    doc = web_app.services.catalog.get(document_id, actor="test")
    newest = max(doc.versions, key=lambda v: v.seq)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == newest.sha256

    # the same search by a user of another agency finds nothing
    page.context.clear_cookies()
    other, password = web_app.others["archivist"]
    page.goto("/search?q=chuyen+doi+so")
    page.get_by_label("Tên đăng nhập").fill(other.username)
    page.get_by_label("Mật khẩu").fill(password)
    page.get_by_role("button", name="Đăng nhập").click()
    page.wait_for_url(re.compile(r"/search\?q=chuyen"))
    assert page.locator("#results").inner_text() == "Tìm thấy 0 văn bản"
    shots(page, "other-agency-finds-nothing")


def test_batch_verification_shows_a_progress_bar(
    page: Any, web_app: WebApp, shots: Any, tmp_path: Path
) -> None:
    for n in range(2):
        new_document(
            web_app, f"Thông báo kết luận cuộc họp số {n + 1}", step="sealed", tmp=tmp_path
        )
    log_in(page, web_app, "archivist", start="/search?q=thong+bao+ket+luan")
    boxes = page.get_by_role("checkbox")
    assert boxes.count() == 2
    for i in range(2):
        boxes.nth(i).check()
    polled: list[Any] = []
    page.on(
        "response", lambda r: polled.append(r) if re.search(r"/api/v1/jobs/\w+$", r.url) else None
    )
    page.get_by_role("button", name="Kiểm tra chữ ký các văn bản đã chọn").click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f]+$"))
    shots(page, "progress")
    page.wait_for_selector("#job-state:has-text('Hoàn tất')", timeout=60_000)
    bar = page.locator("progress")
    assert bar.get_attribute("value") == "2" and bar.get_attribute("max") == "2"
    assert page.locator("tbody tr").count() == 2
    assert page.locator("tbody").inner_text().count("Hợp lệ") == 2
    # the bar was fed by the job status API (the same session cookie)
    assert polled and all(r.status == 200 for r in polled)
    final = page.request.get(polled[-1].url).json()
    assert (final["done"], final["total"], final["state"]) == (2, 2, "done")
    shots(page, "done")


# -- language, keyboard, tablet ------------------------------------------------------------------


def test_english_switch_is_remembered(page: Any, web_app: WebApp, shots: Any) -> None:
    page.goto("/login")
    assert page.get_by_role("heading", level=1).inner_text() == "Đăng nhập"
    page.get_by_role("link", name="English").click()
    page.wait_for_url(re.compile(r"lang=en"))
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("heading", level=1).inner_text() == "Log in"
    shots(page, "login-en")
    page.goto("/verify")  # the cookie keeps the choice
    assert page.get_by_role("heading", level=1).inner_text() == "Verify a signed document"
    username, password = web_app.user("clerk")
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/$"))
    assert page.get_by_role("link", name="Waiting for a number").is_visible()
    shots(page, "home-en")
    page.get_by_role("link", name="Tiếng Việt").click()
    page.wait_for_url(re.compile(r"lang=vi"))
    assert page.locator("html").get_attribute("lang") == "vi"
    assert page.get_by_role("link", name="Văn bản chờ cấp số").is_visible()


def test_keyboard_only_login(page: Any, web_app: WebApp, shots: Any) -> None:
    username, password = web_app.user("archivist")
    page.goto("/verify")
    page.keyboard.press("Tab")  # from the top of a page: the skip link comes first
    assert page.evaluate("document.activeElement.className") == "skip"
    assert page.locator(".skip").is_visible()
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    shots(page, "skip-link")
    for _ in range(10):  # then the menu, in order, up to the login link
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "Đăng nhập":
            break
    assert page.evaluate("document.activeElement.getAttribute('href')") == "/login"
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/login$"))
    assert page.evaluate("document.activeElement.id") == "username"  # the form has the focus
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "password"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.type(password)
    shots(page, "typed")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/$"))
    assert page.get_by_role("heading", level=1).inner_text().startswith("Xin chào")
    shots(page, "logged-in")


def test_tablet_layout_has_no_horizontal_scroll(
    browser: Any, web_app: WebApp, shots: Any, tmp_path: Path
) -> None:
    context = browser.new_context(
        viewport={"width": 768, "height": 1024}, locale="vi-VN", base_url=web_app.url
    )
    try:
        tab = context.new_page()
        tab.goto("/verify")
        assert no_horizontal_scroll(tab)
        shots(tab, "verify")
        draft = new_document(
            web_app, "Tờ trình đề nghị phê duyệt dự toán", step="draft", tmp=tmp_path
        )
        signed = new_document(
            web_app, "Quyết định giao dự toán ngân sách", step="person_signed", tmp=tmp_path
        )
        tab.get_by_label("Tệp PDF cần kiểm tra").set_input_files(
            files=[
                {
                    "name": "a.pdf",
                    "mimeType": "application/pdf",
                    "buffer": tamper(latest_pdf(web_app, "clerk", signed, tmp_path)),
                }
            ]
        )
        tab.get_by_role("button", name="Kiểm tra", exact=True).click()
        tab.locator("#verdict").wait_for()
        assert no_horizontal_scroll(tab)
        shots(tab, "report")
        log_in(tab, web_app, "official", start=f"/documents/{draft}/sign")
        assert no_horizontal_scroll(tab)
        shots(tab, "sign")
        tab.context.clear_cookies()
        username, password = web_app.user("clerk")
        tab.goto("/login?next=/queue")
        tab.get_by_label("Tên đăng nhập").fill(username)
        tab.get_by_label("Mật khẩu").fill(password)
        tab.get_by_role("button", name="Đăng nhập").click()
        tab.wait_for_url(re.compile(r"/queue$"))
        for path in ("/queue", "/", f"/documents/{signed}", "/search?q=du+toan"):
            tab.goto(path)
            assert no_horizontal_scroll(tab), path
            shots(tab, path.strip("/").split("?")[0].replace("/", "-") or "home")
    finally:
        context.close()
