"""The web UI over plain HTTP (no browser): who may see what, CSRF, the agency scope, limits,
the locale of a request, headers; and the pieces that need no server (click to PDF box,
Accept-Language, where to go after login, message keys of the templates)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from kyso.api.web import placement, ui
from kyso.api.web.verify_page import RateLimiter
from kyso.i18n import catalogue, t
from tests.web.conftest import WebApp, make_pdf, new_document

WEB_SETTINGS = {"upload_max_bytes": 2 * 1024 * 1024, "verify_rate_limit": 6}
TEMPLATES = Path(ui.__file__).parent / "templates"


def csrf_in(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, html[:500]
    return found.group(1)


def client(app: WebApp, lang: str = "vi") -> httpx.Client:
    return httpx.Client(
        base_url=app.url, headers={"Accept-Language": lang}, timeout=60, follow_redirects=False
    )


@contextmanager
def logged_in(app: WebApp, role: str, *, others: bool = False) -> Iterator[httpx.Client]:
    principal, password = (app.others if others else app.users)[role]
    with client(app) as c:
        form = c.get("/login")
        reply = c.post(
            "/login",
            data={
                "username": principal.username,
                "password": password,
                "csrf_token": csrf_in(form.text),
                "next": "/",
            },
        )
        assert reply.status_code == 303 and reply.headers["location"] == "/", reply.text[:300]
        yield c


@pytest.fixture(scope="module")
def draft(web_app: WebApp, tmp_path_factory: pytest.TempPathFactory) -> int:
    return new_document(
        web_app, "Công văn về việc tổng hợp số liệu", step="draft", tmp=tmp_path_factory.mktemp("d")
    )


@pytest.fixture()
def official(web_app: WebApp) -> Iterator[httpx.Client]:
    with logged_in(web_app, "official") as c:
        yield c


# -- who may see what ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/queue", "/search?q=x", "/documents/new", "/documents/1", "/jobs/abc"]
)
def test_pages_for_people_send_anonymous_visitors_to_the_login_page(
    web_app: WebApp, path: str
) -> None:
    with client(web_app) as c:
        reply = c.get(path)
    assert reply.status_code == 303
    target = httpx.URL(reply.headers["location"])
    assert target.path == "/login" and target.params["next"] == path


def test_public_pages_need_no_account(web_app: WebApp) -> None:
    with client(web_app) as c:
        for path in ("/verify", "/login"):
            reply = c.get(path)
            assert reply.status_code == 200, path
            assert '<html lang="vi">' in reply.text
            assert "default-src 'self'" in reply.headers["content-security-policy"]
            assert reply.headers["x-frame-options"] == "DENY"


def test_a_wrong_password_is_refused_without_saying_which_part_was_wrong(web_app: WebApp) -> None:
    principal, _ = web_app.users["clerk"]
    with client(web_app) as c:
        token = csrf_in(c.get("/login").text)
        for username in (principal.username, "nobody-here"):
            reply = c.post(
                "/login",
                data={"username": username, "password": "sai mật khẩu rồi", "csrf_token": token},
            )
            assert reply.status_code == 401
            assert "Sai tên đăng nhập hoặc mật khẩu." in reply.text
            assert "kyso_session" not in reply.headers.get("set-cookie", "")


def test_the_login_form_needs_its_own_csrf_cookie(web_app: WebApp) -> None:
    username, password = web_app.user("clerk")
    with client(web_app) as c:
        token = csrf_in(c.get("/login").text)
        c.cookies.clear()  # a form posted from another site has no cookie of ours
        reply = c.post(
            "/login", data={"username": username, "password": password, "csrf_token": token}
        )
    assert reply.status_code == 403 and "kyso_session" not in reply.headers.get("set-cookie", "")


def test_a_form_without_the_session_csrf_token_changes_nothing(
    web_app: WebApp, official: httpx.Client
) -> None:
    before = web_app.services.catalog.search(tenant="000.00.00.H41", per_page=100).total
    reply = official.post(
        "/documents/new",
        data={"type": "Công văn", "subject": "Không được tạo", "agency_name": "X"},
        files={"file": ("a.pdf", make_pdf(1), "application/pdf")},
    )
    assert reply.status_code == 403
    assert "Trang này đã cũ" in reply.text
    assert web_app.services.catalog.search(tenant="000.00.00.H41", per_page=100).total == before


def test_roles_decide_the_pages(web_app: WebApp, official: httpx.Client) -> None:
    reply = official.get("/queue")
    assert reply.status_code == 403 and "Không có quyền" in reply.text
    assert 'href="/queue"' not in official.get("/").text  # not offered either
    with logged_in(web_app, "verifier") as verifier:
        assert verifier.get("/documents/new").status_code == 403
        assert verifier.get("/search").status_code == 200


def test_another_agencys_document_does_not_exist_for_you(web_app: WebApp, draft: int) -> None:
    with logged_in(web_app, "clerk", others=True) as stranger:
        page = stranger.get("/")
        token = csrf_in(page.text)
        for reply in (
            stranger.get(f"/documents/{draft}"),
            stranger.get(f"/documents/{draft}/download"),
            stranger.post(
                f"/documents/{draft}/register", data={"csrf_token": token, "symbol": "CV-X"}
            ),
            stranger.post(f"/documents/{draft}/verify", data={"csrf_token": token}),
        ):
            assert reply.status_code == 404, reply.text[:300]
            assert "Không tìm thấy văn bản này" in reply.text
        unknown = stranger.get("/documents/999999")
        assert unknown.status_code == 404 and unknown.text.count("Không tìm thấy") >= 1


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_steps_out_of_order_are_explained_in_the_users_language(
    web_app: WebApp, draft: int, lang: str
) -> None:
    with logged_in(web_app, "clerk") as clerk:
        token = csrf_in(clerk.get("/queue").text)
        clerk.cookies.set("kyso_lang", lang)
        reply = clerk.post(f"/documents/{draft}/seal", data={"csrf_token": token})
    assert reply.status_code == 409
    assert t("web.error.title", locale=lang) in reply.text
    detail = t("workflow.order", locale=lang, kind="draft", step="sealed")
    assert html.escape(detail, quote=False) in reply.text


def test_logging_out_ends_the_session_for_good(web_app: WebApp) -> None:
    with logged_in(web_app, "archivist") as c:
        cookie = c.cookies.get("kyso_session")
        assert cookie
        reply = c.post("/logout", data={"csrf_token": csrf_in(c.get("/").text)})
        assert reply.status_code == 303 and reply.headers["location"] == "/login?done=logged_out"
        assert "Bạn đã đăng xuất." in c.get("/login?done=logged_out").text
    with client(web_app) as replay:
        replay.cookies.set("kyso_session", cookie)
        assert replay.get("/").status_code == 303  # the old cookie no longer works


# -- uploads and the public verification ---------------------------------------------------------


def test_an_upload_over_the_limit_is_refused_before_it_is_read(web_app: WebApp) -> None:
    big = b"%PDF-1.7\n" + b"0" * (3 * 1024 * 1024)
    with client(web_app) as c:
        reply = c.post("/verify", files={"file": ("big.pdf", big, "application/pdf")})
    assert reply.status_code == 413
    assert "Tệp quá lớn: tối đa 2 MB." in reply.text


def test_a_bad_upload_gets_a_message_in_the_page(web_app: WebApp, official: httpx.Client) -> None:
    token = csrf_in(official.get("/documents/new").text)
    reply = official.post(
        "/documents/new",
        data={"csrf_token": token, "type": "Công văn", "subject": "Thử", "agency_name": "X"},
        files={"file": ("a.pdf", b"not a pdf at all", "application/pdf")},
    )
    assert reply.status_code == 422
    assert 'id="upload-error"' in reply.text
    assert 'value="Thử"' not in reply.text  # the subject is kept in the textarea instead
    assert ">Thử</textarea>" in reply.text
    empty = official.post("/documents/new", data={"csrf_token": token, "subject": "x"})
    assert empty.status_code == 422 and "Chưa chọn tệp PDF." in empty.text


def test_public_verification_is_rate_limited_per_client(web_app: WebApp) -> None:
    with client(web_app, lang="en") as c:
        codes = [
            c.post("/verify", files={"file": ("x.pdf", b"nope", "application/pdf")}).status_code
            for _ in range(WEB_SETTINGS["verify_rate_limit"] + 1)
        ]
        last = c.post("/verify", files={"file": ("x.pdf", b"nope", "application/pdf")})
    # (earlier tests of this module may have used some of this minute's allowance)
    assert 429 in codes and codes[-1] == 429 and last.status_code == 429
    assert set(codes[: codes.index(429)]) <= {422}
    assert "Too many verifications" in last.text


# -- language --------------------------------------------------------------------------------------


def test_the_language_comes_from_the_query_the_cookie_or_the_browser(web_app: WebApp) -> None:
    with client(web_app, lang="en-US,en;q=0.9") as c:
        assert '<html lang="en">' in c.get("/verify").text
        reply = c.get("/verify?lang=vi")
        assert '<html lang="vi">' in reply.text
        assert "kyso_lang=vi" in reply.headers["set-cookie"]
        assert '<html lang="vi">' in c.get("/verify").text  # the cookie wins over the browser
        switch = c.get("/lang/en", params={"next": "/verify"})
        assert switch.status_code == 303 and switch.headers["location"] == "/verify"
        assert '<html lang="en">' in c.get("/verify").text
        assert (
            c.get("/lang/en", params={"next": "https://evil.example/"}).headers["location"] == "/"
        )


def test_static_files_are_served_from_the_package_only(web_app: WebApp) -> None:
    with client(web_app) as c:
        js = c.get("/static/kyso.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert c.get("/static/kyso.css").headers["content-type"].startswith("text/css")
        assert c.get("/static/..%2Fui.py").status_code == 404
        assert c.get("/static/missing.js").status_code == 404


# -- pieces without a server ---------------------------------------------------------------------


def test_every_message_key_of_the_templates_exists() -> None:
    used: set[str] = set()
    pattern = re.compile(r"""\bt\(\s*["'](web\.[a-z0-9_.]+)["']""")
    for path in TEMPLATES.glob("*.j2"):
        used.update(pattern.findall(path.read_text(encoding="utf-8")))
    assert len(used) > 100
    assert sorted(k for k in used if k not in catalogue()) == []


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("vi-VN,vi;q=0.9,en;q=0.8", "vi"),
        ("en-GB,en;q=0.9,vi;q=0.5", "en"),
        ("fr-FR,fr;q=0.9,en;q=0.4", "en"),
        ("fr, de", None),
        ("en;q=0, vi;q=0.1", "vi"),
        ("", None),
        ("vi;q=abc, en", "en"),
    ],
)
def test_accept_language(header: str, expected: str | None) -> None:
    assert ui._accept_language(header) == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/queue", "/queue"),
        ("/search?q=a", "/search?q=a"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        (None, "/"),
    ],
)
def test_after_login_we_only_go_to_our_own_pages(target: str | None, expected: str) -> None:
    assert ui.safe_next(target) == expected


def test_a_click_becomes_the_signature_box_around_it_in_pdf_points() -> None:
    # A4 at 96 dpi as PDFium maps it: x right, y down from the top of the page
    scale = 72 / 96
    upright = placement.RenderedPage(
        index=1,
        page_count=2,
        png=None,
        width=794,
        height=1123,
        matrix=(scale, 0.0, 0.0, -scale, 0.0, 842.0),
    )
    x1, y1, x2, y2 = upright.box_at(400, 600)
    assert (x2 - x1, y2 - y1) == pytest.approx((placement.BOX_WIDTH_PT, placement.BOX_HEIGHT_PT))
    assert ((x1 + x2) / 2, (y1 + y2) / 2) == pytest.approx((300, 842 - 450))
    # a click at the very corner is moved so that the whole box stays on the page
    x1, y1, x2, y2 = upright.box_at(0, 0)
    assert (x1, y2) == pytest.approx((0, 842))
    x1, y1, x2, y2 = upright.box_at(10_000, 10_000)
    assert x2 == pytest.approx(794 * scale) and y1 == pytest.approx(0, abs=0.5)
    # a page with /Rotate 90: the picture is landscape, the box is still 170 x 80 on screen
    rotated = placement.RenderedPage(
        index=0,
        page_count=1,
        png=None,
        width=1123,
        height=794,
        matrix=(0.0, scale, scale, 0.0, 0.0, 0.0),
    )
    x1, y1, x2, y2 = rotated.box_at(500, 300)
    assert (x2 - x1, y2 - y1) == pytest.approx((placement.BOX_HEIGHT_PT, placement.BOX_WIDTH_PT))
    assert ((x1 + x2) / 2, (y1 + y2) / 2) == pytest.approx((300 * scale, 500 * scale))


def test_a_page_is_drawn_by_pdfium_with_its_mapping(tmp_path: Path) -> None:
    source = tmp_path / "two.pdf"
    source.write_bytes(make_pdf(2))
    last = placement.render_page(source, None)
    assert (last.index, last.page_count) == (1, 2)
    assert last.png is not None and last.png.startswith(b"\x89PNG")
    assert (last.width, last.height) == (794, 1123)
    first = placement.render_page(source, 0)
    assert first.index == 0 and first.matrix is not None
    beyond = placement.render_page(source, 7)
    assert beyond.index == 1 and beyond.png is not None
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\nnothing")
    bad = placement.render_page(broken, 0)
    assert bad.png is None and bad.error is not None


def test_the_rate_limiter_forgets_after_its_window() -> None:
    limiter = RateLimiter(window=60)
    assert all(limiter.allow("a", 3, now=t) for t in (0, 1, 2))
    assert not limiter.allow("a", 3, now=3)
    assert limiter.allow("b", 3, now=3)
    assert limiter.allow("a", 3, now=60.5)


def test_the_document_page_downloads_and_verifies_its_versions(
    web_app: WebApp, draft: int, official: httpx.Client
) -> None:
    page = official.get(f"/documents/{draft}")
    assert page.status_code == 200 and "Dự thảo, chờ ký" in page.text
    assert f'href="/documents/{draft}/sign"' in page.text  # the official's next step
    pdf = official.get(f"/documents/{draft}/download?version=1")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert pdf.headers["content-type"] == "application/pdf"
    assert "-v1-draft.pdf" in pdf.headers["content-disposition"]
    missing = official.get(f"/documents/{draft}/download?version=9")
    assert missing.status_code == 404
    report = official.post(f"/documents/{draft}/verify", data={"csrf_token": csrf_in(page.text)})
    assert report.status_code == 200
    assert 'id="verdict"' in report.text and f"#{draft} v1" in report.text
    reads = [e.purpose for e in web_app.services.catalog.access_history(draft)]
    assert "show" in reads and "download" in reads  # every read is in the access log
