"""The one streaming multipart reader (:mod:`kyso.api.uploads`) under the rules of its two
kinds of form: attachments (several named, non-empty files; the defaults) and one PDF judged by
its content (``POST /api/v1/documents`` and ``/verify``: :func:`receive_upload`).  Each case
goes through a small Starlette app, so the body is really streamed (or, with a
``_form``, read from what Starlette parsed), and the temporary folders are watched in a private
temporary directory."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from kyso.api import uploads
from kyso.api.problems import Problem
from kyso.api.routes.documents import MAX_FIELDS, MAX_TEXT_BYTES, NAME_BYTES, receive_upload
from kyso.i18n import t

BOUNDARY = "kysotestboundary"
PDF_RULES = uploads.FormRules(
    1000,
    file_field="file",
    max_files=1,
    max_fields=MAX_FIELDS,
    text_limit=MAX_TEXT_BYTES,
    named_files=False,
)


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary folders of the reader go here, to see that none is left behind."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _left(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir())


def _client(rules: uploads.FormRules | None, *, parse_first: bool = False) -> TestClient:
    """An app whose one route reads the form under ``rules`` (None: ``receive_upload`` with a
    limit of 1000 bytes) and answers what it got, or the problem."""

    async def endpoint(request: Request) -> JSONResponse:
        if parse_first:  # what a cookie session's CSRF check does before the route runs
            await request.form()
        try:
            if rules is None:
                upload = await receive_upload(request, 1000)
                try:
                    named = upload.named()
                    return JSONResponse(
                        {
                            "fields": upload.fields,
                            "name": named.name,
                            "data": named.read_bytes().decode("latin-1"),
                        }
                    )
                finally:
                    upload.cleanup()
            form = await uploads.read_form(request, rules)
        except Problem as exc:
            return JSONResponse({"type": exc.slug, "detail": exc.detail}, status_code=exc.status)
        try:
            return JSONResponse(
                {
                    "fields": form.fields,
                    "files": [
                        {
                            "name": f.name,
                            "size": f.size,
                            "type": f.content_type,
                            "data": f.path.read_bytes().decode("latin-1"),
                        }
                        for f in form.files
                    ],
                }
            )
        finally:
            form.cleanup()

    return TestClient(Starlette(routes=[Route("/", endpoint, methods=["POST"])]))


def _body(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    """``(field, filename or None, content)`` parts as a multipart body written by hand."""
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += content + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def _post(client: TestClient, body: bytes, *, chunked: bool = False, **headers: str) -> Any:
    content: Any = body
    if chunked:  # no Content-Length: only the limits met while streaming stop it

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(body), 100):
                yield body[i : i + 100]

        content = chunks()
    return client.post(
        "/",
        content=content,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", **headers},
    )


def _refused(reply: Any, status: int, slug: str) -> str:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["type"] == slug, body
    return str(body["detail"])


# -- one PDF judged by its content ------------------------------------------------------------


def test_a_pdf_form_keeps_a_file_whatever_its_name_or_size(private_tmp: Path) -> None:
    client = _client(PDF_RULES)
    for filename in (None, "", "../..", "du-thao.pdf"):
        reply = _post(client, _body([("file", filename, b"%PDF-x"), ("subject", None, b"S")]))
        assert reply.status_code == 200, reply.text
        (kept,) = reply.json()["files"]
        assert kept["data"] == "%PDF-x"
        assert kept["name"] == ("du-thao.pdf" if filename == "du-thao.pdf" else "")
        assert reply.json()["fields"] == [["subject", "S"]]
    empty = _post(client, _body([("file", None, b"")]))
    assert empty.status_code == 200 and empty.json()["files"][0]["size"] == 0
    # the attachments' rules refuse the same: a name is needed, an empty file is refused
    attachments = _client(uploads.FormRules(1000, file_field="file"))
    _refused(_post(attachments, _body([("file", "", b"x")])), 422, "validation")
    _refused(_post(attachments, _body([("file", "a.pdf", b"")])), 422, "validation")
    skipped = _post(attachments, _body([("file", "", b"")]))  # a browser's empty file input
    assert skipped.status_code == 200 and skipped.json()["files"] == []
    assert _left(private_tmp) == []


def test_a_pdf_form_takes_one_file_and_reads_other_parts_as_text(private_tmp: Path) -> None:
    client = _client(PDF_RULES)
    two = _post(client, _body([("file", "a.pdf", b"a"), ("file", "b.pdf", b"b")]))
    detail = _refused(two, 422, "validation")
    assert detail == t("api.upload.bad_form", reason=t("api.upload.one_file", field="file"))
    # a file part in a text field (curl -F metadata=@meta.json) is that field's text
    other = _post(client, _body([("file", "a.pdf", b"a"), ("metadata", "m.json", b"{}")]))
    assert other.status_code == 200, other.text
    assert other.json()["fields"] == [["metadata", "{}"]]
    assert len(other.json()["files"]) == 1
    too_long = _post(
        client, _body([("file", "a.pdf", b"a"), ("metadata", "m.json", b"x" * 70_000)])
    )
    _refused(too_long, 422, "validation")
    # several files: the attachments' message, with their number
    three = _client(uploads.FormRules(1000, file_field="file", max_files=2))
    parts = [("file", f"{n}.txt", b"x") for n in "abc"]
    assert _refused(_post(three, _body(parts)), 422, "validation") == t(
        "api.upload.too_many", max=2
    )
    assert _left(private_tmp) == []


def test_a_pdf_past_the_limit_is_cut_off_while_streaming(private_tmp: Path) -> None:
    client = _client(PDF_RULES)
    big = _body([("file", "a.pdf", b"0" * 1001)])
    for chunked in (False, True):
        detail = _refused(_post(client, big, chunked=chunked), 413, "too-large")
        assert detail == t("workflow.upload.too_large", limit=1000)  # "the file", one file
    at_limit = _post(client, _body([("file", "a.pdf", b"0" * 1000)]), chunked=True)
    assert at_limit.status_code == 200, at_limit.text
    # announced: more than the file and the fields may take, refused before reading
    room = 1000 + MAX_TEXT_BYTES + MAX_FIELDS * uploads.PART_OVERHEAD
    small = _body([("file", "a.pdf", b"x")])
    announced = _post(client, small, **{"Content-Length": str(room + 1)})
    _refused(announced, 413, "too-large")
    # the attachments' message speaks of all the files
    several = _client(uploads.FormRules(1000, file_field="file"))
    assert _refused(_post(several, big), 413, "too-large") == t(
        "api.upload.too_large", limit=1000, mb=f"{1000 / (1 << 20):.1f}"
    )
    assert _left(private_tmp) == []


def test_the_fields_of_a_pdf_form_are_few_and_short(private_tmp: Path) -> None:
    client = _client(PDF_RULES)
    fields = [(f"f{n}", None, b"v") for n in range(MAX_FIELDS)]
    ok = _post(client, _body([("file", "a.pdf", b"x"), *fields]))
    assert ok.status_code == 200 and len(ok.json()["fields"]) == MAX_FIELDS
    # repeated names count each time
    repeated = [("to", None, b"v")] * (MAX_FIELDS + 1)
    assert str(MAX_FIELDS) in _refused(_post(client, _body(repeated)), 422, "validation")
    # all the text together: at most MAX_TEXT_BYTES, also when no length is announced
    long = [(f"f{n}", None, b"v" * 60_000) for n in range(MAX_TEXT_BYTES // 60_000 + 1)]
    refused = _post(client, _body([("file", "a.pdf", b"x"), *long]), chunked=True)
    assert _refused(refused, 422, "validation").endswith(
        t("api.upload.field_too_long", field=f"f{len(long) - 1}")
    )
    # the attachments' defaults take more
    many = _client(uploads.FormRules(1000, file_field="file"))
    assert _post(many, _body(repeated)).status_code == 200
    assert _left(private_tmp) == []


def test_a_form_starlette_already_parsed_has_the_same_rules(private_tmp: Path) -> None:
    client = _client(PDF_RULES, parse_first=True)
    ok = _post(client, _body([("file", None, b"%PDF-x"), ("subject", None, b"S")]))
    assert ok.status_code == 200 and ok.json()["files"][0]["data"] == "%PDF-x"
    two = _post(client, _body([("file", "a.pdf", b"a"), ("file", "b.pdf", b"b")]))
    _refused(two, 422, "validation")
    other = _post(client, _body([("file", "a.pdf", b"a"), ("metadata", "m.json", b"{}")]))
    assert other.status_code == 200 and other.json()["fields"] == [["metadata", "{}"]]
    _refused(_post(client, _body([("file", "a.pdf", b"0" * 1001)])), 413, "too-large")
    assert _left(private_tmp) == []


# -- receive_upload (documents and verify) -----------------------------------------------------


def test_receive_upload_names_the_file_safely(private_tmp: Path) -> None:
    client = _client(None)
    plain = _post(client, _body([("file", "Quyết định.pdf", b"%PDF-x"), ("a", None, b"1")]))
    assert plain.status_code == 200, plain.text
    assert plain.json() == {"fields": {"a": "1"}, "name": "Quyết định.pdf", "data": "%PDF-x"}
    for raw in (None, "../../etc/..", "..\\.."):
        reply = _post(client, _body([("file", raw, b"%PDF-x")]))
        assert reply.json()["name"] == "document.pdf", raw
    long = _post(client, _body([("file", "ế" * 199 + ".pdf", b"%PDF-x")]))
    assert long.status_code == 200, long.text
    name = long.json()["name"]
    assert name.endswith(".pdf") and name.startswith("ế") and len(name.encode()) <= NAME_BYTES
    last = _post(
        client, _body([("file", "a.pdf", b"%PDF-x"), ("s", None, b"1"), ("s", None, b"2")])
    )
    assert last.json()["fields"] == {"s": "2"}  # the last value of a repeated name
    missing = _post(client, _body([("subject", None, b"S")]))
    assert _refused(missing, 422, "validation") == t("workflow.upload.no_file")
    assert _left(private_tmp) == []


def test_receive_form_removes_its_folder_and_read_form_leaves_it(private_tmp: Path) -> None:
    seen: list[Path] = []

    async def endpoint(request: Request) -> JSONResponse:
        if request.query_params.get("how") == "read":
            form = await uploads.read_form(request, uploads.FormRules(1000))
            seen.append(form.directory)
            assert form.directory.is_dir() and form.files[0].path.is_file()
            return JSONResponse({})
        async with uploads.receive_form(request, limit=1000) as received:
            seen.append(received.directory)
            assert received.files[0].path.read_bytes() == b"x"
        return JSONResponse({})

    client = TestClient(Starlette(routes=[Route("/", endpoint, methods=["POST"])]))
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    body = _body([("attachments", "a.txt", b"x")])
    assert client.post("/", content=body, headers=headers).status_code == 200
    assert not seen[0].exists()
    assert client.post("/?how=read", content=body, headers=headers).status_code == 200
    assert seen[1].is_dir()  # the caller's to remove
    uploads.ReceivedForm(seen[1]).cleanup()
    assert _left(private_tmp) == []


def test_not_multipart_or_without_a_boundary_is_415() -> None:
    client = _client(PDF_RULES)
    for kind in ("application/json", "multipart/form-data", "multipart/form-data; boundary="):
        reply = client.post("/", content=b"{}", headers={"Content-Type": kind})
        _refused(reply, 415, "unsupported-media-type")
