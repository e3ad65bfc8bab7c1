"""The newcomer's path of issue 6, in headless Chromium and in Vietnamese, on a brand-new kyso
with no agency: the setup page with the code ``kyso serve`` prints, the administrator creates
an official (and issues their key with their PIN) and a clerk, the official uploads and signs
by clicking, the clerk numbers and seals from the queue, the verification passes, the archive
search finds the document; a user of another agency finds nothing and gets "not found".

The administration pages are used at 768 px (a tablet): none scrolls sideways.  Every step
leaves a screenshot in tests/web/artifacts/newcomer-*.png.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kyso.api.services import Services
from kyso.api.web.setup import ensure_setup_code
from tests.api.service_helpers import fast_accounts
from tests.conftest import free_port, make_settings
from tests.web.conftest import Shots, _Server, make_pdf, off_loop

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

AGENCY = "000.00.00.H61"
ADMIN = ("quantri", "Mật khẩu quản trị đủ dài")
OFFICIAL = ("nguyenvanan", "Mật khẩu của anh An đủ dài", "Nguyễn Văn An")
CLERK = ("tranthibinh", "Mật khẩu của chị Bình đủ dài", "Trần Thị Bình")
PIN = "482915"
SUBJECT = "Quyết định phê duyệt kế hoạch chuyển đổi số năm 2027"


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Services, str]]:
    """``kyso serve`` on the embedded defaults with nothing in it: the URL, the services and
    the setup code the console would show."""
    from kyso.api.app import create_app

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = make_settings(
        tmp_path_factory.mktemp("newcomer") / "data",
        public_url=url,
        ca_key_type="ec-p256",
        locale="vi",
        verify_rate_limit=1000,
    )
    services = Services(settings)
    services.ensure_pki()
    fast_accounts(services)
    code = ensure_setup_code(services)
    assert code is not None
    server = _Server(create_app(services=services), port)
    server.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not server.is_alive():
            pytest.fail("the kyso web server did not start")
        time.sleep(0.05)
    try:
        yield url, services, code
    finally:
        server.stop()
        jobs = services.__dict__.get("jobs")
        if jobs is not None:
            jobs.close()


def new_page(browser: Any, url: str, width: int = 1280) -> Any:
    context = browser.new_context(
        viewport={"width": width, "height": 900}, locale="vi-VN", base_url=url
    )
    context.set_default_timeout(30_000)
    return context.new_page()


def log_in(page: Any, username: str, password: str, *, start: str = "/") -> None:
    page.goto(start)
    page.wait_for_url(re.compile(r"/login"))
    page.get_by_label("Tên đăng nhập").fill(username)
    page.get_by_label("Mật khẩu", exact=True).fill(password)
    page.get_by_role("button", name="Đăng nhập").click()
    page.wait_for_url(re.compile(re.escape(start) + r"$"))


def no_horizontal_scroll(page: Any) -> bool:
    return bool(
        page.evaluate(
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
    )


def create_user(page: Any, username: str, password: str, full_name: str, role: str) -> int:
    page.goto("/admin/users")
    form = page.locator("form[action='/admin/users']")
    form.get_by_label("Tên đăng nhập").fill(username)
    form.get_by_label("Họ và tên").fill(full_name)
    form.get_by_label("Mật khẩu ban đầu").fill(password)
    form.get_by_label("Nhập lại mật khẩu").fill(password)
    for box in ("official", "clerk"):
        checkbox = page.locator(f"#new-role-{box}")
        checkbox.set_checked(box == role)
    page.get_by_role("button", name="Tạo người dùng").click()
    page.wait_for_url(re.compile(r"/admin/users/(\d+)\?done=admin_user_created$"))
    assert "Đã tạo người dùng." in page.locator(".flash").inner_text()
    return int(re.search(r"/admin/users/(\d+)", page.url).group(1))  # type: ignore[union-attr]


def test_a_newcomer_sets_up_kyso_and_walks_a_document_through(
    browser: Any,
    fresh_server: tuple[str, Services, str],
    tmp_path: Path,
) -> None:
    url, services, code = fresh_server
    shots = Shots("newcomer")

    # -- the administrator: setup at 768 px -----------------------------------------------------
    admin = new_page(browser, url, width=768)
    admin.goto("/")
    admin.wait_for_url(re.compile(r"/setup$"))
    assert admin.locator("html").get_attribute("lang") == "vi"
    assert admin.get_by_role("heading", level=1).inner_text() == "Thiết lập lần đầu"
    assert no_horizontal_scroll(admin)
    shots(admin, "setup")
    admin.get_by_label("Mã thiết lập").fill(code.lower())  # as typed by hand
    admin.get_by_label("Mã định danh cơ quan").fill(AGENCY)
    admin.get_by_label("Tên cơ quan").fill("Ủy ban nhân dân huyện Thử Nghiệm")
    admin.get_by_label("Mã số thuế của cơ quan").fill("0109876543")
    admin.get_by_label("Tên đăng nhập").fill(ADMIN[0])
    admin.get_by_label("Họ và tên").fill("Lê Quản Trị")
    admin.get_by_label("Mật khẩu", exact=True).fill(ADMIN[1])
    admin.get_by_label("Nhập lại mật khẩu").fill(ADMIN[1])
    admin.get_by_role("button", name="Tạo cơ quan và tài khoản quản trị").click()
    admin.wait_for_url(re.compile(r"/login\?done=setup_complete$"))
    assert "Đã thiết lập xong" in admin.locator(".flash").inner_text()
    shots(admin, "setup-done")
    assert admin.request.get("/setup").status == 404  # once only

    log_in(admin, *ADMIN)
    admin.get_by_role("link", name="Quản trị").click()
    admin.wait_for_url(re.compile(r"/admin/users$"))
    assert no_horizontal_scroll(admin)
    shots(admin, "admin-users")

    official_id = create_user(admin, OFFICIAL[0], OFFICIAL[1], OFFICIAL[2], "official")
    assert no_horizontal_scroll(admin)
    shots(admin, "official-created")
    admin.get_by_role("link", name="Cấp chứng thư và khóa ký số").click()
    admin.wait_for_url(re.compile(rf"/admin/users/{official_id}/key$"))
    admin.get_by_label("Số định danh cá nhân (CCCD)").fill("001090012345")
    admin.get_by_label("Chức vụ").fill("Chủ tịch")
    admin.get_by_label("Mã PIN ký số").fill(PIN)  # the official types it themselves
    admin.get_by_label("Nhập lại mã PIN").fill(PIN)
    assert no_horizontal_scroll(admin)
    shots(admin, "issue-key")
    admin.get_by_role("button", name="Cấp khóa ký số").click()
    admin.wait_for_url(re.compile(rf"/admin/users/{official_id}\?done=admin_key_issued$"))
    assert f"{OFFICIAL[2]} · hiệu lực" in admin.locator("#user-keys").inner_text()
    shots(admin, "key-issued")

    clerk_id = create_user(admin, CLERK[0], CLERK[1], CLERK[2], "clerk")
    # keyboard only: tick "Lưu trữ viên" with Space, Tab to the button, Enter
    admin.locator("#edit-role-archivist").focus()
    admin.keyboard.press("Space")
    for _ in range(10):
        admin.keyboard.press("Tab")
        if admin.evaluate("document.activeElement.textContent.trim()") == "Lưu vai trò":
            break
    admin.keyboard.press("Enter")
    admin.wait_for_url(re.compile(rf"/admin/users/{clerk_id}\?done=admin_roles_changed$"))
    roles = off_loop(lambda: services.accounts.get_user(clerk_id).roles)
    assert roles == ("archivist", "clerk")

    # an API token for the administrator: shown once
    admin.goto("/admin/tokens")
    admin.get_by_label("Tên (dùng cho việc gì)").fill("Hệ thống quản lý văn bản")
    admin.keyboard.press("Enter")
    admin.locator("#new-token").wait_for()
    assert admin.locator("#new-token").input_value().startswith("kyso_")
    assert no_horizontal_scroll(admin)
    shots(admin, "token-created")
    admin.goto("/admin/tokens")
    assert admin.locator("#new-token").count() == 0
    assert "Hệ thống quản lý văn bản" in admin.locator("#tokens").inner_text()
    admin.goto("/admin/users")
    table = admin.locator("#users").inner_text()
    assert OFFICIAL[0] in table and CLERK[0] in table and "Người ký" in table
    shots(admin, "users")
    admin.context.close()

    # -- the official uploads and signs where they click ----------------------------------------
    official = new_page(browser, url)
    log_in(official, OFFICIAL[0], OFFICIAL[1])
    official.get_by_role("link", name="Tải lên và ký").first.click()
    official.wait_for_url(re.compile(r"/documents/new$"))
    source = tmp_path / "du-thao.pdf"
    source.write_bytes(make_pdf(1, title="QUYẾT ĐỊNH PHÊ DUYỆT KẾ HOẠCH"))
    official.get_by_label("Tệp PDF dự thảo").set_input_files(str(source))
    official.get_by_label("Trích yếu").fill(SUBJECT)
    official.get_by_label("Ký hiệu").fill("QĐ-UBND")
    official.get_by_label("Chức vụ người ký").fill("Chủ tịch")
    official.get_by_role("button", name="Tải lên").click()
    official.wait_for_url(re.compile(r"/documents/(\d+)/sign\?done=uploaded$"))
    document_id = int(re.search(r"/documents/(\d+)/", official.url).group(1))  # type: ignore[union-attr]
    picker = official.get_by_label("Khóa ký")
    chosen = picker.locator("option:checked").inner_text()
    assert chosen.startswith(f"{OFFICIAL[2]} · hiệu lực ") and "personal:" not in chosen
    image = official.locator("#page-image")
    box = image.bounding_box()
    assert box is not None
    image.click(position={"x": box["width"] * 0.68, "y": box["height"] * 0.70})
    official.get_by_label("Mã PIN ký số").fill(PIN)
    shots(official, "sign")
    official.get_by_role("button", name="Ký số").click()
    official.wait_for_url(re.compile(rf"/documents/{document_id}\?done=signed$"))
    assert official.locator("#doc-status").inner_text() == "Đã ký, chờ cấp số"
    shots(official, "signed")
    official.context.close()

    # -- the clerk numbers and seals from the queue -----------------------------------------------
    clerk = new_page(browser, url)
    log_in(clerk, CLERK[0], CLERK[1], start="/queue")
    item = clerk.locator(
        "section.queue-item", has=clerk.get_by_role("link", name=re.compile(SUBJECT))
    )
    item.get_by_role("button", name="Cấp số").click()
    clerk.wait_for_url(re.compile(r"/queue\?done=registered$"))
    shots(clerk, "numbered")
    sealing = clerk.locator(
        "section.queue-item", has=clerk.get_by_role("link", name=re.compile(SUBJECT))
    )
    sealing.get_by_role("button", name="Đóng dấu").click()
    clerk.wait_for_url(re.compile(r"/queue\?done=sealed$"))
    shots(clerk, "sealed")

    # -- verification and the archive search ----------------------------------------------------
    clerk.goto(f"/documents/{document_id}")
    assert clerk.locator("#doc-status").inner_text() == "Đã đóng dấu cơ quan"
    clerk.get_by_role("button", name="Kiểm tra chữ ký").click()
    verdict = clerk.locator("#verdict")
    verdict.wait_for()
    assert verdict.get_attribute("data-indication") == "TOTAL_PASSED"
    assert clerk.locator("section.signature").count() == 2  # the official and the agency
    shots(clerk, "verified")
    clerk.goto("/search")
    clerk.get_by_label("Trích yếu có chứa").fill("chuyen doi so")
    clerk.get_by_role("button", name="Tìm", exact=True).click()
    clerk.wait_for_url(re.compile(r"/search\?"))
    assert clerk.locator("#results").inner_text() == "Tìm thấy 1 văn bản"
    assert clerk.get_by_role("link", name=f"Quyết định: {SUBJECT}", exact=True).count() == 1
    shots(clerk, "found")
    clerk.context.close()

    # -- another agency sees none of it -----------------------------------------------------------
    def other_agency() -> None:
        accounts = services.accounts
        accounts.create_agency("000.00.00.H62", "Sở Khác", actor="test")
        accounts.create_user(
            "000.00.00.H62",
            "nguoikhac",
            "Người Cơ Quan Khác",
            password="Mật khẩu cơ quan khác dài",
            roles=["archivist", "clerk", "official"],
            actor="test",
        )

    off_loop(other_agency)
    stranger = new_page(browser, url)
    log_in(stranger, "nguoikhac", "Mật khẩu cơ quan khác dài", start="/search")
    stranger.get_by_label("Trích yếu có chứa").fill("chuyen doi so")
    stranger.get_by_role("button", name="Tìm", exact=True).click()
    stranger.wait_for_url(re.compile(r"/search\?"))
    assert stranger.locator("#results").inner_text() == "Tìm thấy 0 văn bản"
    reply = stranger.goto(f"/documents/{document_id}")
    assert reply is not None and reply.status == 404
    assert SUBJECT not in stranger.content()
    stranger.goto("/queue")
    assert SUBJECT not in stranger.locator("main").inner_text()
    shots(stranger, "other-agency")
    stranger.context.close()
