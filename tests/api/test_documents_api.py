"""The document API over HTTP: the whole flow (upload → person signature with PIN → number
and date → agency seal → verify → search by number and by a word with and without accents →
download bit-identical → export the case file) on SQLite + local store, on the real PostgreSQL,
and on the moto S3 server; then every way a request can be wrong, each a problem+json."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from kyso.archive.export import check_package
from kyso.certs import identity
from tests.api.service_helpers import PIN, login
from tests.api.workflow_fixtures import META, Stack, fresh_pdf, problem, stack
from tests.archive.conftest import moto_endpoint, moto_url

__all__ = ["moto_endpoint"]  # the session's moto server, for the S3 flow


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("documents-api")) as made:
        yield made


def full_flow(s: Stack, tmp_path: Path) -> None:
    client, a = s.client, s.a
    official, clerk = s.auth(a, "official"), s.auth(a, "clerk")
    archivist = s.auth(a, "archivist")

    case = client.post(
        "/api/v1/cases",
        json={"year": 2026, "notation": "07", "title": "Hồ sơ kế hoạch chuyển đổi số"},
        headers=clerk,
    )
    assert case.status_code == 201, case.text
    file_code = case.json()["file_code"]
    assert file_code == f"{a}.2026.07"

    draft = fresh_pdf()
    reply = client.post(
        "/api/v1/documents",
        files={"file": ("du-thao.pdf", draft, "application/pdf")},
        data={
            "metadata": '{"type": "Quyết định", "symbol": "QĐ-UBND", "place": "Hà Nội"}',
            "subject": META["subject"],
            "case": file_code,
        },
        headers=official,
    )
    assert reply.status_code == 201, reply.text
    doc = reply.json()["document_id"]
    assert reply.headers["location"] == f"/api/v1/documents/{doc}"
    assert reply.json()["kind"] == "draft"
    assert reply.json()["sha256"] == hashlib.sha256(draft).hexdigest()

    signed = client.post(
        f"/api/v1/documents/{doc}/sign",
        json={"key": s.key(a), "pin": PIN, "level": "B-T"},
        headers=official,
    )
    assert signed.status_code == 200, signed.text
    assert signed.json()["kind"] == "person_signed"

    registered = client.post(f"/api/v1/documents/{doc}/register", json={}, headers=clerk)
    assert registered.status_code == 200, registered.text
    entry = registered.json()["register"]
    assert entry["symbol"] == "QĐ-UBND" and entry["state"] == "issued"
    number = entry["number"]

    sealed = client.post(f"/api/v1/documents/{doc}/seal", headers=clerk)
    assert sealed.status_code == 200, sealed.text
    assert sealed.json()["kind"] == "sealed" and sealed.json()["version"] == 4

    verified = client.post(f"/api/v1/documents/{doc}/verify", headers=s.auth(a, "verifier"))
    assert verified.status_code == 200, verified.text
    body = verified.json()
    assert body["report"]["indication"] == "TOTAL_PASSED", body["report"]
    kept = client.get(f"/api/v1/documents/{doc}/reports/{body['report_id']}", headers=archivist)
    assert kept.status_code == 200
    assert kept.json()["report"]["indication"] == "TOTAL_PASSED" and kept.json()["version"] == 4

    shown = client.get(f"/api/v1/documents/{doc}", headers=archivist).json()
    assert [v["kind"] for v in shown["versions"]] == [
        "draft",
        "person_signed",
        "registered",
        "sealed",
    ]
    assert shown["number"] == f"{number}/QĐ-UBND" and shown["case_file"] == file_code
    clerk_name = f"{s.users[a]['clerk'].username}@{a}"
    assert any(
        e["action"] == "document.register" and e["actor"].endswith(clerk_name)
        for e in shown["history"]
    )
    assert {"document.add", "version.add", "register.reserve"} <= {
        e["action"] for e in shown["history"]
    }

    for params in (
        {"number": number, "symbol": "QĐ-UBND"},
        {"q": "chuyển đổi số"},
        {"q": "chuyen doi so"},
        {"q": "CHUYEN", "type": "Quyết định"},
        {"case": file_code},
    ):
        found = client.get("/api/v1/search", params=params, headers=archivist)
        assert found.status_code == 200, found.text
        assert doc in [item["id"] for item in found.json()["items"]], params

    content = client.get(f"/api/v1/documents/{doc}/versions/4/content", headers=archivist)
    assert content.status_code == 200
    assert content.headers["content-type"] == "application/pdf"
    assert hashlib.sha256(content.content).hexdigest() == sealed.json()["sha256"]
    assert content.headers["x-content-sha256"] == sealed.json()["sha256"]
    first = client.get(f"/api/v1/documents/{doc}/versions/1/content", headers=archivist)
    assert first.content == draft  # bit-identical, every version

    public = client.post(
        "/api/v1/verify", files={"file": ("vb.pdf", content.content, "application/pdf")}
    )
    assert public.status_code == 200 and public.json()["indication"] == "TOTAL_PASSED"

    pdf = client.get(f"/api/v1/cases/{file_code}/export", headers=archivist)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
    xml = client.get(f"/api/v1/cases/{file_code}/export?format=xml", headers=archivist)
    assert xml.status_code == 200 and "QĐ-UBND".encode() in xml.content
    bag = client.get(f"/api/v1/cases/{file_code}/export?format=zip", headers=archivist)
    assert bag.status_code == 200 and bag.headers["content-type"] == "application/zip"
    target = tmp_path / "bag.zip"
    target.write_bytes(bag.content)
    assert check_package(target) == []
    with zipfile.ZipFile(io.BytesIO(bag.content)) as zf:
        stored = [n for n in zf.namelist() if n.endswith(".pdf") and "/data/" in n]
        assert len(stored) >= 4  # every version
    # values a database cannot hold are refused, never a 500 (PostgreSQL rejects NUL)
    for params in ({"symbol": "QĐ\x00"}, {"agency": "\x00"}, {"signer": "a\x00"}):
        odd = client.get("/api/v1/search", params=params, headers=archivist)
        assert odd.status_code in (200, 422), (params, odd.text)
    odd_case = client.post(
        "/api/v1/cases", json={"year": 2026, "notation": "08", "title": "a\x00"}, headers=clerk
    )
    assert odd_case.status_code in (201, 422), odd_case.text
    odd_meta = client.post(
        "/api/v1/documents",
        files={"file": ("x.pdf", fresh_pdf(), "application/pdf")},
        data={**META, "subject": "a\x00b"},
        headers=official,
    )
    problem(odd_meta, 422, "validation")
    listed = client.get("/api/v1/cases", headers=archivist).json()
    assert [c["documents"] for c in listed["items"] if c["file_code"] == file_code] == [1]


def test_the_whole_flow_on_sqlite(svc: Stack, tmp_path: Path) -> None:
    full_flow(svc, tmp_path)


def test_the_whole_flow_on_postgresql(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    with stack(
        tmp_path_factory.mktemp("pg"),
        catalog="postgresql",
        codes=("000.00.00.P41", "000.00.00.P42"),
    ) as s:
        full_flow(s, tmp_path)


def test_the_whole_flow_on_s3(
    moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    with stack(
        tmp_path_factory.mktemp("s3"),
        s3_url=moto_url(moto_endpoint),
        codes=("000.00.00.S41", "000.00.00.S42"),
    ) as s:
        full_flow(s, tmp_path)
        assert s.services.store.__class__.__name__ == "S3Store"


def test_a_web_session_uploads_with_its_csrf_token(svc: Stack) -> None:
    from tests.api.service_helpers import password_for, username_for

    a = svc.a
    with type(svc.client)(svc.client.app) as client:
        csrf = login(client, username_for("official", a), password_for("official", a))
        files = {"file": ("a.pdf", fresh_pdf(), "application/pdf")}
        missing = client.post("/api/v1/documents", files=files, data=META)
        problem(missing, 403, "csrf")
        by_header = client.post(
            "/api/v1/documents", files=files, data=META, headers={"X-CSRF-Token": csrf}
        )
        assert by_header.status_code == 201, by_header.text
        by_field = client.post(
            "/api/v1/documents",
            files={"file": ("b.pdf", fresh_pdf(), "application/pdf")},
            data={**META, "csrf_token": csrf},
        )
        assert by_field.status_code == 201, by_field.text


def test_two_phase_signing_over_http(svc: Stack) -> None:
    a, client = svc.a, svc.client
    token = svc.services.pki.issue(
        kind="person",
        subject=identity.person_subject("Lê Văn Cường", ids=["CCCD:001090000777"]),
        label="usb-token-http",
        key_type="ec-p256",
    )
    key = svc.services.keys.resolve(token.key_uri)
    pem = b"".join(c.public_bytes(Encoding.PEM) for c in (key.certificate, *key.chain))
    doc = svc.upload(a)["document_id"]
    official = svc.auth(a, "official")
    prepared = client.post(
        f"/api/v1/documents/{doc}/sign/prepare",
        json={"certificate": pem.decode(), "level": "B-T"},
        headers=official,
    )
    assert prepared.status_code == 200, prepared.text
    body = prepared.json()
    value = key.sign(base64.b64decode(body["signed_attributes"]))
    bad = client.post(
        f"/api/v1/documents/{doc}/sign/complete",
        json={"handle": body["handle"], "signature": base64.b64encode(b"x" * 64).decode()},
        headers=official,
    )
    problem(bad, 422, "validation")
    done = client.post(
        f"/api/v1/documents/{doc}/sign/complete",
        json={"handle": body["handle"], "signature": base64.b64encode(value).decode()},
        headers=official,
    )
    assert done.status_code == 200, done.text
    assert done.json()["kind"] == "person_signed"
    again = client.post(
        f"/api/v1/documents/{doc}/sign/complete",
        json={"handle": body["handle"], "signature": base64.b64encode(value).decode()},
        headers=official,
    )
    problem(again, 404, "not-found")


# -- what can go wrong ----------------------------------------------------------------------------


def test_upload_problems(svc: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    client, a = svc.client, svc.a
    official = svc.auth(a, "official")
    problem(
        client.post("/api/v1/documents", files={"file": ("a", b"x")}, data=META),
        401,
        "unauthenticated",
    )
    not_pdf = client.post(
        "/api/v1/documents",
        files={"file": ("a.pdf", b"hello, not a pdf")},
        data=META,
        headers=official,
    )
    problem(not_pdf, 422, "bad-pdf")
    problem(
        client.post("/api/v1/documents", data=META, headers=official), 415, "unsupported-media-type"
    )
    no_file = client.post(
        "/api/v1/documents", files={"other": ("a.txt", b"x")}, data=META, headers=official
    )
    problem(no_file, 422, "validation")
    bad_json = client.post(
        "/api/v1/documents",
        files={"file": ("a.pdf", fresh_pdf())},
        data={"metadata": "{not json"},
        headers=official,
    )
    problem(bad_json, 422, "validation")
    missing_subject = client.post(
        "/api/v1/documents",
        files={"file": ("a.pdf", fresh_pdf())},
        data={"type": "Công văn"},
        headers=official,
    )
    assert "subject" in problem(missing_subject, 422, "validation")["detail"]
    wrong_role = client.post(
        "/api/v1/documents",
        files={"file": ("a.pdf", fresh_pdf())},
        data=META,
        headers=svc.auth(a, "verifier"),
    )
    problem(wrong_role, 403, "forbidden")

    monkeypatch.setattr(svc.services.settings, "upload_max_bytes", 2000)
    big = fresh_pdf(40)
    assert len(big) > 2000
    problem(
        client.post(
            "/api/v1/documents", files={"file": ("a.pdf", big)}, data=META, headers=official
        ),
        413,
        "too-large",
    )

    # no Content-Length (chunked): cut off while streaming
    boundary = "kysoboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n'
        "Content-Type: application/pdf\r\n\r\n"
    ).encode()
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range(1000):
            sent.append(1)
            yield b"0" * 1024
        yield f"\r\n--{boundary}--\r\n".encode()

    streamed = client.post(
        "/api/v1/documents",
        content=chunks(),
        headers={**official, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    problem(streamed, 413, "too-large")


def test_step_problems(svc: Stack) -> None:
    client, a = svc.client, svc.a
    doc = svc.upload(a)["document_id"]
    official, clerk = svc.auth(a, "official"), svc.auth(a, "clerk")
    problem(client.post(f"/api/v1/documents/{doc}/register", headers=clerk), 409, "conflict")
    problem(client.post(f"/api/v1/documents/{doc}/seal", headers=clerk), 409, "conflict")
    problem(
        client.post(f"/api/v1/documents/{doc}/extend", headers=svc.auth(a, "archivist")),
        409,
        "conflict",
    )
    problem(
        client.post(
            f"/api/v1/documents/{doc}/sign", json={"key": svc.key(a), "pin": PIN}, headers=clerk
        ),
        403,
        "forbidden",
    )
    problem(
        client.post(
            f"/api/v1/documents/{doc}/sign",
            json={"key": svc.key(a), "pin": "999999"},
            headers=official,
        ),
        403,
        "bad-pin",
    )
    problem(
        client.post(
            f"/api/v1/documents/{doc}/sign",
            json={"key": "someone-else", "pin": PIN},
            headers=official,
        ),
        404,
        "not-found",
    )
    problem(
        client.post(
            f"/api/v1/documents/{doc}/sign",
            json={"key": svc.key(a), "pin": PIN, "level": "B-Z"},
            headers=official,
        ),
        422,
        "validation",
    )
    problem(
        client.post(
            f"/api/v1/documents/{doc}/sign",
            json={"key": svc.key(a), "pin": PIN, "placement": {"box": [1, 2, 3]}},
            headers=official,
        ),
        422,
        "validation",
    )
    problem(
        client.post(f"/api/v1/documents/{doc}/sign", json={"pin": PIN}, headers=official),
        422,
        "validation",
    )
    problem(client.get("/api/v1/documents/99999999", headers=official), 404, "not-found")
    problem(client.get("/api/v1/documents/abc", headers=official), 422, "validation")
    huge = 10**30
    problem(client.get(f"/api/v1/documents/{huge}", headers=official), 422, "validation")
    problem(
        client.get(f"/api/v1/documents/{doc}/versions/{huge}/content", headers=official),
        422,
        "validation",
    )
    problem(client.get(f"/api/v1/cases/{huge}/export", headers=clerk), 404, "not-found")
    problem(client.get(f"/api/v1/search?page={huge}", headers=clerk), 422, "validation")
    problem(
        client.get(f"/api/v1/documents/{doc}/versions/9/content", headers=official),
        404,
        "not-found",
    )
    problem(
        client.get(f"/api/v1/documents/{doc}/reports/99999", headers=official), 404, "not-found"
    )
    svc.sign(a, doc)
    problem(
        client.post(f"/api/v1/documents/{doc}/register", json={"number": 0}, headers=clerk),
        422,
        "validation",
    )
    problem(
        client.post(
            f"/api/v1/documents/{doc}/register", json={"date": "2999-01-01"}, headers=clerk
        ),
        422,
        "validation",
    )
    problem(
        client.post(f"/api/v1/documents/{doc}/register", json={"symbol": "qd ubnd"}, headers=clerk),
        422,
        "validation",
    )
    done = client.post(f"/api/v1/documents/{doc}/register", json={"number": 42}, headers=clerk)
    assert done.status_code == 200, done.text
    assert done.json()["register"]["number"] == "42"
    other = svc.to_stage(a, "person_signed")
    problem(
        client.post(f"/api/v1/documents/{other}/register", json={"number": 42}, headers=clerk),
        409,
        "conflict",
    )
    problem(client.get("/api/v1/search?from=yesterday", headers=clerk), 422, "validation")
    problem(client.get("/api/v1/search?per_page=100000", headers=clerk), 422, "validation")
    problem(client.get("/api/v1/cases/nope/export", headers=clerk), 404, "not-found")
    problem(client.get("/api/v1/cases/x/export?format=doc", headers=clerk), 422, "validation")
    problem(
        client.post(
            "/api/v1/cases", json={"year": 2026, "notation": "01", "title": "T"}, headers=official
        ),
        403,
        "forbidden",
    )
    first = client.post(
        "/api/v1/cases", json={"year": 2026, "notation": "88", "title": "T"}, headers=clerk
    )
    assert first.status_code == 201
    problem(
        client.post(
            "/api/v1/cases", json={"year": 2026, "notation": "88", "title": "T"}, headers=clerk
        ),
        409,
        "conflict",
    )


def test_the_openapi_schema_documents_the_routes(svc: Stack) -> None:
    schema: dict[str, Any] = svc.client.get("/openapi.json").json()
    paths = schema["paths"]
    upload = paths["/api/v1/documents"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert "/api/v1/documents/{document_id}/sign/prepare" in paths
    assert "/api/v1/cases/{code}/export" in paths
    assert "/api/v1/verify" in paths
