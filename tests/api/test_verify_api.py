"""``POST /api/v1/verify``: no account, the JSON report of ``kyso verify --offline --json``
(HTML and PDF on request), damaged PDFs get a report, non-PDFs a 422, uploads are limited,
and each client address is rate limited with ``Retry-After``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kyso.api.routes.verify import RateLimiter
from kyso.signer.verify import VerifyPolicy, verify
from tests.api.workflow_fixtures import Stack, fresh_pdf, problem, stack


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("verify-api"), verify_rate_limit=1000) as made:
        yield made


@pytest.fixture(scope="module")
def sealed(svc: Stack) -> bytes:
    """A document of agency A sealed at B-LT, as downloaded."""
    doc = svc.to_stage(svc.a, "sealed")
    reply = svc.client.get(
        f"/api/v1/documents/{doc}/versions/4/content", headers=svc.auth(svc.a, "archivist")
    )
    assert reply.status_code == 200
    return reply.content


def post(svc: Stack, data: bytes, **params: str) -> Any:
    return svc.client.post(
        "/api/v1/verify", params=params, files={"file": ("van-ban.pdf", data, "application/pdf")}
    )


def _summary(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (s.get("kind"), s.get("field_name"), s["indication"], s.get("sub_indication"))
        for s in report["signatures"]
    ]


def test_the_report_is_that_of_kyso_verify(svc: Stack, sealed: bytes, tmp_path: Path) -> None:
    reply = post(svc, sealed)  # no credentials at all
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["indication"] == "TOTAL_PASSED"
    path = tmp_path / "sealed.pdf"
    path.write_bytes(sealed)
    expected = verify(path, VerifyPolicy.from_services(svc.services, offline=True)).to_dict("en")
    assert set(body) == set(expected)
    assert (body["indication"], body.get("sub_indication")) == (
        expected["indication"],
        expected.get("sub_indication"),
    )
    assert _summary(body) == _summary(expected)
    assert [s["signer"]["kind"] for s in body["signatures"] if s["kind"] == "signature"] == [
        "person",
        "organisation",
    ]
    assert post(svc, sealed, lang="vi").json()["indication"] == "TOTAL_PASSED"
    assert body["file"]["name"] == "van-ban.pdf"  # the client's name, not the server's
    sneaky = svc.client.post(
        "/api/v1/verify", files={"file": ("../../etc/..", sealed, "application/pdf")}
    )
    assert sneaky.status_code == 200 and sneaky.json()["file"]["name"] == "document.pdf"


def test_html_and_pdf_reports(svc: Stack, sealed: bytes) -> None:
    html = post(svc, sealed, format="html")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "<html" in html.text.lower()
    pdf = post(svc, sealed, format="pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
    problem(post(svc, sealed, format="docx"), 422, "validation")


def test_a_damaged_pdf_gets_a_report_and_a_non_pdf_a_422(svc: Stack, sealed: bytes) -> None:
    tampered = bytearray(sealed)
    spot = tampered.index(b"0 0 m")  # the page's drawing, inside every signed byte range
    tampered[spot] = ord("9")
    reply = post(svc, bytes(tampered))
    assert reply.status_code == 200, reply.text
    assert reply.json()["indication"] == "TOTAL_FAILED"

    truncated = post(svc, sealed[: len(sealed) * 2 // 3])
    assert truncated.status_code == 200, truncated.text
    assert truncated.json()["indication"] in ("TOTAL_FAILED", "INDETERMINATE")

    unsigned = post(svc, fresh_pdf())
    assert unsigned.status_code == 200 and unsigned.json()["signatures"] == []

    problem(post(svc, b"GIF89a not a pdf at all"), 422, "bad-pdf")
    problem(post(svc, b""), 422, "bad-pdf")
    missing = svc.client.post("/api/v1/verify", files={"other": ("a.txt", b"x")})
    problem(missing, 422, "validation")
    problem(svc.client.post("/api/v1/verify", json={"file": "x"}), 415, "unsupported-media-type")


def test_uploads_are_limited(svc: Stack, sealed: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(svc.services.settings, "upload_max_bytes", len(sealed) - 1)
    problem(post(svc, sealed), 413, "too-large")


def test_each_address_is_rate_limited(svc: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(svc.services.settings, "verify_rate_limit", 3)
    data = fresh_pdf()
    for _ in range(3):
        assert post(svc, data).status_code == 200
    refused = post(svc, data)
    body = problem(refused, 429, "rate-limited")
    seconds = int(refused.headers["retry-after"])
    assert 1 <= seconds <= 60
    assert body["retry_after"] == seconds


def test_the_limiter_slides_and_counts_each_address_alone() -> None:
    now = [1000.0]
    limiter = RateLimiter(2, window=60, clock=lambda: now[0])
    assert limiter.hit("10.0.0.1") == 0 and limiter.hit("10.0.0.1") == 0
    assert limiter.hit("10.0.0.1") == pytest.approx(60)
    assert limiter.hit("10.0.0.2") == 0  # another address has its own count
    now[0] += 30
    assert limiter.hit("10.0.0.1") == pytest.approx(30)
    now[0] += 30.5
    assert limiter.hit("10.0.0.1") == 0
    now[0] += 1000
    assert limiter.hit("10.0.0.3") == 0
    assert set(limiter._log) == {"10.0.0.3"}  # idle addresses are forgotten
