"""The exchange between two agencies of one instance in headless Chromium, in Vietnamese: the
clerk of H41 sends a sealed document to H42 from the document's page → H42's clerk finds it in
the inbox (checked, filed, 01 sent automatically), accepts it (03) and completes it (06) → H41's
outbox shows 01, 03 and 06 with their times and receipts.  Deliveries run in the server's
background threads as in production.  Both lists are also looked at 768 px wide.

Screenshots: tests/web/artifacts/exchange-*.png.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kyso.api import exchange
from tests.api.service_helpers import make_seal_key
from tests.web.conftest import OTHER_AGENCY, Shots, WebApp, new_document, off_loop
from tests.web.test_browser import no_horizontal_scroll

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def exchange_app(web_app: WebApp) -> WebApp:
    """H42 gets a seal key (it signs its answers); deliveries start at once in a background
    thread and a failed attempt is retried after a fraction of a second."""
    web_app.services.__dict__["exchange_settings"] = exchange.ExchangeSettings(
        _env_file=None, dispatch="thread", backoff=0.2, backoff_max=1.0, timeout=10
    )
    off_loop(make_seal_key, web_app.services, OTHER_AGENCY, "Sở Thử Nghiệm")
    return web_app


@pytest.fixture()
def other_page(browser: Any, web_app: WebApp) -> Iterator[Any]:
    """A second browser (its own cookies) for the receiving agency's clerk."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="vi-VN", base_url=web_app.url
    )
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def log_in(page: Any, username: str, password: str, start: str) -> None:
    page.goto(start)
    page.wait_for_url(re.compile(r"/login"))
    page.get_by_label("Tên đăng nhập").fill(username)
    page.get_by_label("Mật khẩu").fill(password)
    page.get_by_role("button", name="Đăng nhập").click()
    page.wait_for_url(re.compile(re.escape(start) + r"$"))


def wait_for(page: Any, selector: str, *, seconds: float = 20) -> Any:
    """Reload ``page`` until ``selector`` shows (deliveries run in the background)."""
    deadline = time.monotonic() + seconds
    while True:
        found = page.locator(selector)
        if found.count() > 0:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{selector} did not appear on {page.url}")
        time.sleep(0.3)
        page.reload()


def test_a_document_sent_to_another_agency_is_answered_and_the_sender_sees_it(
    page: Any, other_page: Any, exchange_app: WebApp, tmp_path: Path
) -> None:
    app = exchange_app
    shots = Shots("exchange")
    subject = "Công văn về việc phối hợp kiểm tra hồ sơ"
    document_id = new_document(app, subject, step="sealed", tmp=tmp_path)

    # -- H41's clerk sends it from the document's page
    clerk_a, password_a = app.user("clerk")
    log_in(page, clerk_a, password_a, f"/documents/{document_id}")
    form = page.locator("#send-form")
    assert form.get_by_role("heading", name="Gửi đi").is_visible()
    form.get_by_label(re.compile(re.escape(f"({OTHER_AGENCY})"))).check()
    shots(page, "send-form")
    form.get_by_role("button", name="Gửi đi").click()
    page.wait_for_url(re.compile(r"/exchange/outbox\?done=exchange_sent$"))
    assert page.locator('nav a[aria-current="page"]').inner_text() == "Văn bản đi"
    section = page.locator(f'section.outgoing[data-recipient="{OTHER_AGENCY}"]').first
    section_id = section.get_attribute("id")
    wait_for(page, f'#{section_id} tr[data-code="01"]')
    assert page.locator(f"#{section_id}").get_attribute("data-state") == "delivered"
    shots(page, "outbox-arrived")

    # -- H42's clerk: the inbox, then 03 and 06
    principal_b, password_b = app.others["clerk"]
    log_in(other_page, principal_b.username, password_b, "/")
    other_page.get_by_role("link", name="Văn bản đến").click()
    other_page.wait_for_url(re.compile(r"/exchange/inbox$"))
    item = other_page.locator("section.incoming", has_text=subject).first
    assert "Hợp lệ" in item.inner_text() and "01" in item.locator(".current-status").inner_text()
    shots(other_page, "inbox-arrived")
    item.get_by_role("button", name=re.compile(r"^03 · ")).click()
    other_page.wait_for_url(re.compile(r"done=exchange_status$"))
    item = other_page.locator("section.incoming", has_text=subject).first
    assert "03" in item.locator(".current-status").inner_text()
    item.get_by_label("Ghi chú gửi kèm (không bắt buộc)").fill("Đã xử lý xong, lưu hồ sơ")
    item.get_by_role("button", name=re.compile(r"^06 · ")).click()
    other_page.wait_for_url(re.compile(r"done=exchange_status$"))
    item = other_page.locator("section.incoming", has_text=subject).first
    assert "06" in item.locator(".current-status").inner_text()
    shots(other_page, "inbox-completed")
    # the filed document opens from the inbox
    item.get_by_role("link", name=re.compile(re.escape(subject))).click()
    other_page.wait_for_url(re.compile(r"/documents/\d+$"))
    assert other_page.get_by_role("heading", level=1).inner_text() == subject

    # -- H41's outbox: 01, 03, 06 with times and receipts
    page.goto("/exchange/outbox")
    wait_for(page, f'#{section_id} tr[data-code="06"]')
    rows = page.locator(f"#{section_id} tr.status-row")
    assert [rows.nth(i).get_attribute("data-code") for i in range(rows.count())] == [
        "01",
        "03",
        "06",
    ]
    assert "Đã xử lý xong, lưu hồ sơ" in rows.nth(2).inner_text()
    with page.expect_download() as got:
        rows.nth(2).get_by_role("link", name=re.compile("Tải biên nhận")).click()
    receipt = Path(got.value.path()).read_bytes()
    assert b"<" in receipt and b"Signature" in receipt
    shots(page, "outbox-completed")

    # -- 768 px: neither list scrolls sideways
    page.set_viewport_size({"width": 768, "height": 1024})
    for path in ("/exchange/outbox", "/exchange/inbox"):
        page.goto(path)
        assert no_horizontal_scroll(page), path
    shots(page, "inbox-768")
    page.goto("/exchange/outbox")
    shots(page, "outbox-768")
