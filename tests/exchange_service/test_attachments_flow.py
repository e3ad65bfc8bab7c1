"""A document sent with attachments between two instances (Decree 30/2020 Appendix I): the
sending kyso gives an unsigned PDF appendix the agency's signature (text stamp with the
document's number and symbol), other files travel as they are; the receiving kyso verifies
every PDF, files the document and keeps every file, which its clerk can read back."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import uuid
from pathlib import Path

import pytest

from kyso.api import exchange
from kyso.api.problems import Problem
from kyso.archive.models import Document
from kyso.errors import KysoError
from kyso.exchange.edxml import Attachment, parse_edxml
from kyso.signer.register import number_text
from kyso.signer.verify import VerifyPolicy, verify
from tests.exchange_service.conftest import A1, B1, Instance
from tests.signer.helpers import make_pdf


def _appendix(tmp: Path) -> Path:
    path = tmp / f"phu-luc-{uuid.uuid4().hex[:6]}.pdf"
    path.write_bytes(make_pdf(2))
    return path


def test_attachments_are_sealed_sent_verified_and_kept(
    pair: tuple[Instance, Instance], tmp_path: Path
) -> None:
    a, b = pair
    doc = a.sealed_document(A1)
    appendix = _appendix(tmp_path)
    table = "STT;Đơn vị;Số lượng\n1;Phòng Nội vụ;3\n".encode()
    [sent] = exchange.send(
        a.services,
        a.user(A1, "clerk"),
        doc,
        [B1],
        attachments=[
            Attachment(name="Phụ lục I.pdf", path=appendix, description="Danh sách"),
            Attachment(name="bang-so-lieu.csv", data=table, content_type="text/csv"),
        ],
    )

    # What travels: the document, then the appendix with the agency's signature, the table.
    message = parse_edxml(a.message_bytes(sent["id"]), trust_roots=[])
    with message:
        names = [f.name for f in message.attachments]
        assert names[1:] == ["Phụ lục I.pdf", "bang-so-lieu.csv"]
        travelled = message.attachments[1].path.read_bytes()
        assert message.attachments[2].read_bytes() == table
    assert travelled != appendix.read_bytes() and travelled.startswith(appendix.read_bytes())
    sealed = tmp_path / "sealed-appendix.pdf"
    sealed.write_bytes(travelled)
    report = verify(sealed, VerifyPolicy.from_services(a.services, offline=True)).to_dict()
    assert report["indication"] == "TOTAL_PASSED", report
    assert len(report["signatures"]) == 1
    # the stamp: the document's number and symbol, top right of the first page
    with a.services.catalog.session() as s:
        filed = s.get(Document, doc)
        assert filed is not None
        stamp = number_text(filed.code_number, filed.code_notation)
    shown = subprocess.run(
        ["pdftotext", "-f", "1", "-l", "1", str(sealed), "-"], capture_output=True, text=True
    ).stdout
    before = subprocess.run(
        ["pdftotext", str(appendix), "-"], capture_output=True, text=True
    ).stdout
    assert stamp in shown and stamp not in before
    # poppler agrees that the appendix's signature covers it and is intact
    pdfsig = subprocess.run(["pdfsig", str(sealed)], capture_output=True, text=True)
    assert "Signature Validation: Signature is Valid." in pdfsig.stdout, pdfsig.stdout

    assert exchange.deliver(a.services, sent["id"])["state"] == "delivered"
    inbox = b.api("GET", "/inbox", B1, "clerk").json()["messages"]
    [received] = [m for m in inbox if m["edxml_document_id"] == sent["edxml_document_id"]]
    assert received["accepted"] and received["answer_code"] == "01", received["verdict"]
    files = b.api("GET", f"/inbox/{received['id']}", B1, "clerk").json()["attachments"]
    assert [(f["index"], f["name"], f["main"]) for f in files] == [
        (0, files[0]["name"], True),
        (1, "Phụ lục I.pdf", False),
        (2, "bang-so-lieu.csv", False),
    ]
    assert [f["indication"] for f in files] == ["TOTAL_PASSED", "TOTAL_PASSED", None]
    assert all("object_key" not in f for f in files)

    clerk_b = b.user(B1, "clerk")
    for f, expected in ((files[1], travelled), (files[2], table)):
        with exchange.open_incoming_attachment(b.services, clerk_b, received["id"], f["index"]) as (
            info,
            stream,
        ):
            data = stream.read()
        assert data == expected and info["sha256"] == hashlib.sha256(expected).hexdigest()

    # over HTTP: the bytes, their hash, the Vietnamese file name (RFC 6266 filename*)
    reply = b.api("GET", f"/inbox/{received['id']}/attachments/1", B1, "clerk")
    assert reply.status_code == 200 and reply.content == travelled
    assert reply.headers["content-type"] == "application/pdf"
    assert reply.headers["x-content-sha256"] == hashlib.sha256(travelled).hexdigest()
    assert (
        "filename*=utf-8''Ph%E1%BB%A5%20l%E1%BB%A5c%20I.pdf" in reply.headers["content-disposition"]
    )
    assert b.api("GET", f"/inbox/{received['id']}/attachments/7", B1, "clerk").status_code == 404

    # a clerk of another agency on the same instance, or a file that is not there: not found
    stranger = dataclasses.replace(clerk_b, agency="000.00.00.H99")
    with (
        pytest.raises(Problem) as other,
        exchange.open_incoming_attachment(b.services, stranger, received["id"], 1),
    ):
        pass
    assert other.value.status == 404
    with (
        pytest.raises(Problem) as missing,
        exchange.open_incoming_attachment(b.services, clerk_b, received["id"], 9),
    ):
        pass
    assert missing.value.status == 404


def test_a_damaged_pdf_attachment_is_refused_before_anything_is_sent(
    pair: tuple[Instance, Instance], tmp_path: Path
) -> None:
    a, _ = pair
    doc = a.sealed_document(A1)
    before = a.count(exchange.outgoing)
    broken = Attachment(name="hong.pdf", data=b"%PDF-1.7\nnot really a pdf\n")
    with pytest.raises(Problem) as caught:
        exchange.send(a.services, a.user(A1, "clerk"), doc, [B1], attachments=[broken])
    # 422, named as the clerk knows it, never by the server's temporary copy
    assert caught.value.status == 422 and "hong.pdf" in caught.value.detail
    assert "kyso-exchange-" not in caught.value.detail and "/tmp" not in caught.value.detail
    assert isinstance(caught.value.__cause__, KysoError)
    assert caught.value.__cause__.code == "signer.input.damaged"
    assert a.count(exchange.outgoing) == before


def test_at_most_twenty_files(pair: tuple[Instance, Instance]) -> None:
    a, _ = pair
    doc = a.sealed_document(A1)
    files = [Attachment(name=f"{i}.txt", data=b"x", content_type="text/plain") for i in range(21)]
    with pytest.raises(Problem) as refused:
        exchange.send(a.services, a.user(A1, "clerk"), doc, [B1], attachments=files)
    assert refused.value.status == 422


def test_an_encrypted_pdf_attachment_is_named_in_the_refusal(
    pair: tuple[Instance, Instance], tmp_path: Path
) -> None:
    a, _ = pair
    doc = a.sealed_document(A1)
    plain, locked = tmp_path / "plain.pdf", tmp_path / "locked.pdf"
    plain.write_bytes(make_pdf(1))
    subprocess.run(
        ["qpdf", "--encrypt", "u", "o", "256", "--", str(plain), str(locked)], check=True
    )
    attachment = Attachment(name="Phụ lục mật.pdf", path=locked)
    with pytest.raises(Problem) as caught:
        exchange.send(a.services, a.user(A1, "clerk"), doc, [B1], attachments=[attachment])
    assert caught.value.status == 422
    assert "Phụ lục mật.pdf" in caught.value.detail and "/tmp" not in caught.value.detail
