"""Attachments over HTTP: ``POST /api/v1/exchange/send`` as ``multipart/form-data`` (files in
``attachments``) puts them in the signed edXML message kept for the outbox; the limits of
:mod:`kyso.api.uploads` refuse the rest with problem+json and queue nothing; the JSON body
works as before.  One message is delivered, to check the receiver accepts the package (what
it keeps of the attachments is tested with the receiver)."""

from __future__ import annotations

import base64
import io
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

from kyso.api import exchange, uploads
from kyso.api.uploads import content_type_of, safe_name
from tests.exchange_service.conftest import A1, A2, B1, Instance
from tests.signer.helpers import make_pdf

QCVN = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def _docx() -> bytes:
    """A small .docx-like file (a zip with a Word part), unique bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", "<w:document>Ghi chú kèm theo công văn</w:document>")
    return buffer.getvalue()


def _attachments(data: bytes) -> list[dict[str, Any]]:
    """Name, content type, description and decoded bytes of every file of an edXML message,
    read from its ``AttachmentEncoded`` part (the manifest is checked to list the same)."""
    root = etree.fromstring(data, parser=etree.XMLParser(huge_tree=True, resolve_entities=False))
    listed = [
        (
            r.findtext("{*}AttachmentName"),
            r.findtext("{*}ContentType"),
            r.findtext("{*}Description"),
        )
        for r in root.iter(f"{{{QCVN}}}Reference")  # the manifest's, not the signature's
    ]
    files = []
    for item in root.iter(f"{{{QCVN}}}Attachment"):
        files.append(
            {
                "name": item.findtext("{*}AttachmentName"),
                "content_type": item.findtext("{*}ContentType"),
                "description": item.findtext("{*}Description") or None,
                "data": base64.b64decode(
                    "".join((item.findtext("{*}ContentTransferEncoded") or "").split())
                ),
            }
        )
    assert [(f["name"], f["content_type"], f["description"] or None) for f in files] == [
        (n, c, d or None) for n, c, d in listed
    ]
    return files


def _post(a: Instance, data: Any, files: Any, role: str = "clerk", **kw: Any) -> httpx.Response:
    return httpx.post(
        f"{a.url}/api/v1/exchange/send",
        headers=a.auth(A1, role),
        data=data,
        files=files,
        timeout=60,
        **kw,
    )


def _raw_multipart(parts: list[tuple[str, str | None, str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart body written by hand (httpx percent-encodes control characters in file
    names; a hostile client does not): (field, file name, content type, data) per part."""
    boundary = "kyso-test-boundary-7f3a"
    out = bytearray()
    for name, filename, content_type, data in parts:
        out += f"--{boundary}\r\n".encode()
        disposition = f'Content-Disposition: form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += disposition.encode() + b"\r\n"
        if content_type is not None:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _queued(a: Instance, doc: int) -> int:
    return a.count(exchange.outgoing, document_id=doc)


def _problem(reply: httpx.Response, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = reply.json()
    assert body["status"] == status
    return body


def _left_over() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("kyso-form-*")}


@pytest.fixture(scope="module")
def doc(pair: tuple[Instance, Instance]) -> int:
    """A sealed document of H41 that the refusals below must never queue."""
    a, _ = pair
    return a.sealed_document(A1, subject="Công văn có phụ lục kèm theo")


def test_a_multipart_send_puts_the_files_in_the_signed_message(
    pair: tuple[Instance, Instance],
) -> None:
    a, _ = pair
    sealed = a.sealed_document(A1)
    pdf = make_pdf(2) + b"\n% phu luc\n"
    docx = _docx()
    before = _left_over()
    body, content_type = _raw_multipart(
        [
            ("document_id", None, None, str(sealed).encode()),
            ("recipients", None, None, f"{B1}, {A2}".encode()),  # one comma-separated value
            ("descriptions", None, None, "Phụ lục 1: danh sách".encode()),
            ("descriptions", None, None, b""),
            # a browser's "unknown" type: the .pdf name decides
            ("attachments", "Phụ lục số 1.pdf", "application/octet-stream", pdf),
            # folders, a control character and a right-to-left override in the name
            ("attachments", "../../tmp/Ghi chú\x07 kèm\u202e theo.docx", DOCX, docx),
        ]
    )
    reply = httpx.post(
        f"{a.url}/api/v1/exchange/send",
        headers={**a.auth(A1, "clerk"), "Content-Type": content_type},
        content=body,
        timeout=60,
    )
    assert reply.status_code == 202, reply.text
    messages = reply.json()["messages"]
    assert sorted(m["recipient"] for m in messages) == sorted([B1, A2])
    assert len({m["edxml_document_id"] for m in messages}) == 1
    files = _attachments(a.message_bytes(messages[0]["id"]))
    assert len(files) == 3  # the sealed document first, then the two files in order
    main, appendix, note = files
    assert main["content_type"] == "application/pdf" and main["name"].endswith(".pdf")
    assert appendix["name"] == "Phụ lục số 1.pdf"  # Vietnamese letters kept
    assert appendix["content_type"] == "application/pdf"
    assert appendix["description"] == "Phụ lục 1: danh sách"
    # kyso may seal a PDF attachment that has no agency signature: still a PDF
    assert appendix["data"].startswith(b"%PDF")
    assert note["name"] == "Ghi chú kèm theo.docx"  # no folders, no control character
    assert note["content_type"] == DOCX
    assert note["description"] is None
    assert note["data"] == docx  # byte for byte
    assert _left_over() <= before  # the temporary files are gone
    # the receiving kyso accepts the package (the appendix carries the agency's signature)
    [to_b] = [m for m in messages if m["recipient"] == B1]
    delivered = exchange.deliver(a.services, to_b["id"])
    assert delivered["state"] == "delivered", delivered
    outgoing = a.api("GET", f"/outbox/{to_b['id']}", A1, "clerk").json()
    assert [s["code"] for s in outgoing["statuses"]] == ["01"]


def test_json_still_sends_without_attachments(pair: tuple[Instance, Instance]) -> None:
    a, _ = pair
    sealed = a.sealed_document(A1)
    reply = a.api("POST", "/send", A1, "clerk", json={"document_id": sealed, "recipients": [B1]})
    assert reply.status_code == 202, reply.text
    [message] = reply.json()["messages"]
    [main] = _attachments(a.message_bytes(message["id"]))
    assert main["content_type"] == "application/pdf"
    # a JSON body is still validated as one (extra fields, wrong types)
    bad = a.api("POST", "/send", A1, "clerk", json={"document_id": "x", "recipients": [B1]})
    assert ["body", "document_id"] in [e["loc"] for e in _problem(bad, 422)["errors"]]
    extra = a.api(
        "POST", "/send", A1, "clerk", json={"document_id": sealed, "recipients": [B1], "x": 1}
    )
    _problem(extra, 422)
    broken = httpx.post(
        f"{a.url}/api/v1/exchange/send",
        headers={**a.auth(A1, "clerk"), "Content-Type": "application/json"},
        content=b"{not json",
    )
    _problem(broken, 422)
    other = httpx.post(
        f"{a.url}/api/v1/exchange/send",
        headers={**a.auth(A1, "clerk"), "Content-Type": "text/plain"},
        content=b"document_id=1",
    )
    _problem(other, 415)


def test_the_limits_refuse_and_queue_nothing(
    pair: tuple[Instance, Instance], doc: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = pair
    fields = {"document_id": str(doc), "recipients": B1}
    before = _left_over()

    many = [("attachments", (f"tệp {i}.txt", b"x", "text/plain")) for i in range(21)]
    body = _problem(_post(a, fields, many), 422)
    assert "20" in body["detail"]

    empty = [("attachments", ("rỗng.pdf", b"", "application/pdf"))]
    assert "rỗng.pdf" in _problem(_post(a, fields, empty), 422)["detail"]

    nameless = [("attachments", ("", b"%PDF-1.7 something", "application/pdf"))]
    _problem(_post(a, fields, nameless), 422)

    only_dots = [("attachments", ("../..", b"data", "text/plain"))]
    _problem(_post(a, fields, only_dots), 422)

    twice = [
        ("attachments", ("a/bản sao.txt", b"1", "text/plain")),
        ("attachments", ("b\\Bản sao.txt", b"2", "text/plain")),
    ]
    _problem(_post(a, fields, twice), 422)

    described = {**fields, "descriptions": ["một", "hai"]}
    one = [("attachments", ("một.txt", b"1", "text/plain"))]
    _problem(_post(a, described, one), 422)

    unknown = {**fields, "priority": "1"}
    _problem(_post(a, unknown, one), 422)

    bad_id = {**fields, "document_id": "abc"}
    _problem(_post(a, bad_id, one), 422)

    # over KYSO_UPLOAD_MAX_BYTES in all (each file alone is under it): refused while streaming
    monkeypatch.setattr(a.services.settings, "upload_max_bytes", 1000)
    big = [
        ("attachments", ("một.bin", b"1" * 600, "application/octet-stream")),
        ("attachments", ("hai.bin", b"2" * 600, "application/octet-stream")),
    ]
    body = _problem(_post(a, fields, big), 413)
    assert body["type"].endswith("/too-large") and "1000" in body["detail"]
    monkeypatch.undo()
    # one file over the limit of one edXML attachment (50 MiB; lowered here)
    monkeypatch.setattr(uploads, "ATTACHMENT_MAX_BYTES", 500)
    body = _problem(_post(a, fields, big[:1]), 413)
    assert "một.bin" in body["detail"]
    monkeypatch.undo()

    # a non-clerk is refused before the files are read
    _problem(_post(a, fields, one, role="official"), 403)

    assert _queued(a, doc) == 0
    assert _left_over() <= before


def test_names_are_made_safe_base_names() -> None:
    assert safe_name("Quyết định số 12.pdf") == "Quyết định số 12.pdf"
    assert safe_name("C:\\Users\\an\\Tờ trình.docx") == "Tờ trình.docx"
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("..") == "" and safe_name("  ") == ""
    assert safe_name("hóa đơn\u202egpj.exe") == "hóa đơngpj.exe"  # no right-to-left override
    assert safe_name("a\tb\nc\x00d.txt") == "a b cd.txt"
    assert safe_name('x<y>:"z"|?*.txt') == "x_y___z____.txt"
    # decomposed (NFD) letters, as macOS sends them, become the composed ones
    assert safe_name("Quye\u0302\u0301t.pdf") == "Quyết.pdf"
    long = safe_name("á" * 300 + ".pdf")
    assert len(long) == 200 and long.endswith(".pdf")
    assert safe_name("CON.txt") == "_CON.txt"
    assert content_type_of("x.PDF", "text/plain") == "application/pdf"
    assert content_type_of("x.docx", None) == DOCX
    assert content_type_of("x.docx", "application/octet-stream") == DOCX
    assert content_type_of("x.bin", "image/png; q=1") == "image/png"
    assert content_type_of("x", "not a type") == "application/octet-stream"
