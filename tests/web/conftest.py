"""Fixtures of the web UI tests: a kyso app served by uvicorn on a free loopback port (in a
thread of this process, so the tests can also call the library directly), two agencies with
one user per role, and one headless Chromium (Debian's, driven by Playwright) for the session.

Screenshots of every flow step go to tests/web/artifacts/ (kept after the run, gitignored).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from kyso.api.principal import Principal
from kyso.api.services import Services
from tests.api.service_helpers import PIN, make_agency_with_users
from tests.conftest import free_port, make_settings

T = TypeVar("T")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AGENCY = "000.00.00.H41"
OTHER_AGENCY = "000.00.00.H42"


@dataclass
class WebApp:
    """A running kyso server and the people of two agencies."""

    url: str
    services: Services
    users: dict[str, tuple[Principal, str]]
    others: dict[str, tuple[Principal, str]]
    key_ref: str
    seeded: dict[str, Any] = field(default_factory=dict)

    def user(self, role: str) -> tuple[str, str]:
        principal, password = self.users[role]
        return principal.username, password


def _images(services: Services, app_users: dict[str, tuple[Principal, str]], code: str) -> str:
    """The official's signature image and the agency's seal image, kept for their keys."""
    from kyso.signer.appearance import demo_seal_png, demo_signature_png

    official = app_users["official"][0]
    [ref] = services.accounts.keys_of(official.user_id)
    label = ref.split(":", 1)[1]
    path = services.image_path(label)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(demo_signature_png(official.full_name))
    seal_ref = services.accounts.agency_key(code)
    assert seal_ref is not None
    services.image_path(services.keys.resolve(seal_ref).label).write_bytes(
        demo_seal_png(f"UBND {code}")
    )
    return ref


class _Server(threading.Thread):
    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        super().__init__(daemon=True, name="kyso-web-test-server")
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False
        )
        self.server = uvicorn.Server(config)

    def run(self) -> None:
        self.server.run()

    def stop(self) -> None:
        self.server.should_exit = True
        self.join(15)


@pytest.fixture(scope="module")
def web_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebApp]:
    """kyso on its embedded defaults (SQLite, local store, in-process jobs, built-in PKI and
    TSA) with agencies H41 (every role, keys and images) and H42 (every role). A test module
    may set ``WEB_SETTINGS`` (a dict) to change settings."""
    from kyso.api.app import create_app

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    overrides: dict[str, Any] = {"verify_rate_limit": 1000}
    overrides.update(getattr(request.module, "WEB_SETTINGS", {}))
    settings = make_settings(
        tmp_path_factory.mktemp("web") / "data",
        public_url=url,
        ca_key_type="ec-p256",
        **overrides,
    )
    services = Services(settings)
    services.ensure_pki()
    users = make_agency_with_users(
        services, AGENCY, name="Ủy ban nhân dân tỉnh Thử Nghiệm", seal_key=True, personal_key=True
    )
    others = make_agency_with_users(services, OTHER_AGENCY, name="Sở Thử Nghiệm")
    key_ref = _images(services, users, AGENCY)
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
        yield WebApp(url=url, services=services, users=users, others=others, key_ref=key_ref)
    finally:
        server.stop()
        jobs = services.__dict__.get("jobs")
        if jobs is not None:
            jobs.close()


# -- documents made through the library (what earlier steps of the workflow would leave) ------


def make_pdf(pages: int = 2, title: str = "") -> bytes:
    """An A4 draft with a title line and the signature block (title, then the signer's name)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen import canvas

    from kyso.signer.fonts import shipped_font_path

    if "KysoSerif" not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont("KysoSerif", str(shipped_font_path())))
    out = BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4)
    for n in range(pages):
        pdf.setFont("KysoSerif", 14)
        pdf.drawString(72, 760, title or "QUYẾT ĐỊNH")
        pdf.setFont("KysoSerif", 12)
        for i in range(12):
            pdf.drawString(
                72, 700 - 22 * i, f"Điều {i + 1}. Nội dung thử nghiệm của trang {n + 1}."
            )
        if n == pages - 1:
            pdf.drawString(380, 260, "CHỦ TỊCH")
        pdf.showPage()
    pdf.save()
    return out.getvalue()


def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run library code in a worker thread: Playwright's sync API keeps an asyncio loop
    running in the test's thread, where the library's own ``asyncio.run`` cannot start."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def new_document(
    app: WebApp, subject: str, *, step: str, tmp: Path, symbol: str = "QĐ-UBND"
) -> int:
    """A document of H41 taken through the workflow (the library, as the API does) up to
    ``step``: draft, person_signed, registered or sealed."""
    return off_loop(_new_document, app, subject, step=step, tmp=tmp, symbol=symbol)


def _new_document(app: WebApp, subject: str, *, step: str, tmp: Path, symbol: str) -> int:
    from kyso.api import workflow

    services = app.services
    official = app.users["official"][0]
    clerk = app.users["clerk"][0]
    source = tmp / f"{abs(hash(subject))}.pdf"
    source.write_bytes(make_pdf(1, title=subject.upper()))
    meta = {
        "type": "Quyết định",
        "subject": subject,
        "symbol": symbol,
        "agency_name": "Ủy ban nhân dân tỉnh Thử Nghiệm",
        "signer": official.full_name,
        "position": "Chủ tịch",
    }
    doc = workflow.upload(services, official, source, meta).document_id
    if step == "draft":
        return doc
    workflow.sign_as_person(services, official, doc, key=app.key_ref, pin=PIN)
    if step == "person_signed":
        return doc
    workflow.register(services, clerk, doc)
    if step == "registered":
        return doc
    workflow.seal(services, clerk, doc)
    return doc


def tamper(data: bytes) -> bytes:
    """``data`` with page 1's content replaced in an incremental update after the signatures
    (a forbidden change: the verdict fails and the visual diff shows it)."""
    from pyhanko.pdf_utils import generic

    from tests.verify.corpus import (
        _current,
        _indirect,
        _reader,
        _ref,
        _stream,
        append_revision,
        next_free,
    )

    page_num = _ref(_reader(data).root["/Pages"]["/Kids"].raw_get(0))
    page = _current(data, page_num)
    [num] = next_free(data, 1)
    page[generic.NameObject("/Contents")] = _indirect(num)
    drawing = b"0 0 0 rg 90 520 380 120 re f 1 0 0 rg 90 300 200 60 re f"
    return append_revision(data, {page_num: page, num: _stream(drawing)})


# -- the browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module (Debian's package, no download).  Not per
    session: Playwright's sync API keeps an event loop running in the test thread while it is
    open, and the modules that run after the browser tests in the same process (pytest-xdist
    hands whole files to each process) call synchronous code that starts loops of its own."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture()
def page(browser: Any, web_app: WebApp) -> Iterator[Any]:
    """A fresh browser context (no cookies) at 1280 x 900, in Vietnamese."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="vi-VN", base_url=web_app.url
    )
    context.set_default_timeout(30_000)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()


class Shots:
    """Numbered screenshots of one test's steps in tests/web/artifacts/."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.n = 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob(f"{name}-*.png"):
            old.unlink()

    def __call__(self, page: Any, step: str) -> Path:
        self.n += 1
        path = ARTIFACTS / f"{self.name}-{self.n:02d}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 1000
        return path


@pytest.fixture()
def shots(request: pytest.FixtureRequest) -> Shots:
    return Shots(request.node.name.removeprefix("test_"))
