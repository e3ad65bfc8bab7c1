"""What the receiving instance refuses: tampering in transit, bad XML signatures, PDFs whose
signatures fail, malformed input; nothing is filed and the sender learns why (02)."""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kyso.api import exchange
from kyso.archive.models import Document
from kyso.exchange.edxml import Attachment, build_edxml, parse_edxml
from kyso.exchange.status import parse_status
from tests.conftest import free_port
from tests.exchange_service.conftest import A1, A2, B1, Instance


def _post_inbox(b: Instance, data: bytes, **params: str) -> httpx.Response:
    return httpx.post(
        f"{b.url}/api/v1/exchange/inbox",
        content=data,
        params=params,
        headers={"Content-Type": "application/xml"},
    )


def _answer_reasons(b: Instance, reply: httpx.Response) -> list[str]:
    assert reply.status_code == 200, reply.text
    parsed = parse_status(reply.content, trust_roots=[b.services.pki.root_cert])
    assert parsed.verdict.accepted
    assert parsed.status.status_code.value == "02"
    assert parsed.status.verdict == "TOTAL_FAILED"
    assert parsed.status.description
    return [r.code for r in parsed.status.reasons]


def _nothing_filed(b: Instance, edxml_document_id: str) -> None:
    with b.services.catalog.session() as s:
        filed = s.scalar(
            sa.select(sa.func.count())
            .select_from(Document)
            .where(Document.document_id == edxml_document_id, Document.agency_id == B1)
        )
        rows = s.execute(
            sa.select(exchange.incoming.c.accepted, exchange.incoming.c.document_id).where(
                exchange.incoming.c.edxml_document_id == edxml_document_id
            )
        ).all()
    assert filed == 0
    assert rows and all(not r.accepted and r.document_id is None for r in rows)


def _archived(b: Instance, data: bytes) -> list[bool]:
    """Whether B kept each record of this message's bytes."""
    with b.services.catalog.session() as s:
        keys = s.scalars(
            sa.select(exchange.incoming.c.object_key).where(
                exchange.incoming.c.message_sha256 == hashlib.sha256(data).hexdigest()
            )
        ).all()
    return [k is not None for k in keys]


def _queued(a: Instance, doc: int | None = None, agency: str = A1) -> dict:
    """A new message to B1 (of ``doc``, else of a fresh sealed document), not delivered."""
    doc = doc if doc is not None else a.sealed_document(agency)
    [sent] = exchange.send(a.services, a.user(agency, "clerk"), doc, [B1])
    return sent


@pytest.fixture(scope="module")
def never_filed(pair: tuple[Instance, Instance]) -> int:
    """A sealed document of A1 that B never accepts (the tests using it only send forgeries
    of it), so each can send it again."""
    return pair[0].sealed_document(A1)


class TamperingProxy:
    """Forwards POSTs to ``target`` after flipping one base64 character of the attachment."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.port = free_port()
        self.seen = 0

        async def forward(request: Request) -> Response:
            body = await request.body()
            self.seen += 1
            body = _flip_attachment(body)
            async with httpx.AsyncClient() as client:
                reply = await client.post(
                    f"{self.target}/{request.path_params['rest']}",
                    content=body,
                    params=dict(request.query_params),
                    headers={"Content-Type": request.headers["content-type"]},
                )
            return Response(
                reply.content,
                status_code=reply.status_code,
                media_type=reply.headers.get("content-type"),
            )

        app = Starlette(routes=[Route("/{rest:path}", forward, methods=["POST"])])
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> TamperingProxy:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _flip_attachment(data: bytes) -> bytes:
    match = re.search(
        rb"<ContentTransferEncoded>([A-Za-z0-9+/=\s]+)</ContentTransferEncoded>", data
    )
    assert match is not None
    start = match.start(1) + 2000  # inside the PDF, past its header
    original = data[start : start + 4]
    decoded = bytearray(base64.b64decode(original))
    decoded[0] ^= 0x01
    flipped = base64.b64encode(bytes(decoded))
    assert flipped != original
    return data[:start] + flipped + data[start + 4 :]


def test_tampered_in_transit_is_rejected_and_the_sender_learns_why(
    pair: tuple[Instance, Instance],
) -> None:
    a, b = pair
    sent = _queued(a)
    with TamperingProxy(f"{b.url}/api/v1/exchange") as proxy:
        exchange.add_peer(
            a.services,
            B1,
            f"http://127.0.0.1:{proxy.port}",
            b.seal_certificate_pem(B1),
            actor="test",
        )
        try:
            result = exchange.deliver(a.services, sent["id"])
        finally:
            exchange.add_peer(
                a.services, B1, f"{b.url}/api/v1/exchange", b.seal_certificate_pem(B1), actor="t"
            )
        assert proxy.seen == 1
    assert result["state"] == "delivered", result
    detail = a.api("GET", f"/outbox/{sent['id']}", A1, "clerk").json()
    assert detail["answer_code"] == "02"
    [status] = detail["statuses"]
    assert status["code"] == "02" and status["verdict"] == "TOTAL_FAILED"
    assert [r["code"] for r in status["reasons"]] == ["exchange.reason.attachment_altered"]
    # B's signed receipt names the bytes it got: not those A sent (altered on the way).
    receipt = a.api("GET", f"/outbox/{sent['id']}/receipts/0", A1, "clerk").content
    parsed = parse_status(receipt, trust_roots=[b.services.pki.root_cert])
    assert parsed.verdict.accepted
    assert parsed.status.message_sha256 not in (None, sent["sha256"])
    _nothing_filed(b, sent["edxml_document_id"])
    # The genuine message still gets through afterwards (a rejection blocks nothing).
    reply = _post_inbox(b, a.message_bytes(sent["id"]))
    assert reply.headers["X-Kyso-Status"] == "01"


def test_a_pdf_whose_signature_fails_is_rejected(
    pair: tuple[Instance, Instance], never_filed: int
) -> None:
    a, b = pair
    sent = _queued(a, never_filed)
    data = a.message_bytes(sent["id"])
    with parse_edxml(data, trust_roots=[a.services.pki.root_cert]) as message:
        assert message.verdict.accepted
        header = message.header
        [pdf] = message.attachments
        content = bytearray(pdf.read_bytes())
    # one byte of the page content, inside what the signatures cover
    at = content.index(b"stream") + 20
    content[at] ^= 0x20
    key = a.services.keys.resolve(a.services.accounts.agency_key(A1) or "")
    forged = build_edxml(header, [Attachment(name=pdf.name, data=bytes(content))], signing_key=key)
    reasons = _answer_reasons(b, _post_inbox(b, forged))
    assert reasons and set(reasons) == {"exchange_service.reason.pdf_signature"}
    _nothing_filed(b, sent["edxml_document_id"])
    assert _archived(b, forged) == [True]  # signed by A: kept as evidence


def test_a_bad_xml_signature_is_rejected(pair: tuple[Instance, Instance], never_filed: int) -> None:
    a, b = pair
    sent = _queued(a, never_filed)
    data = a.message_bytes(sent["id"])
    altered = data.replace("Về việc triển khai".encode(), "Về việc hủy bỏ".encode(), 1)
    assert altered != data
    assert "exchange.reason.digest_mismatch" in _answer_reasons(b, _post_inbox(b, altered))
    _nothing_filed(b, sent["edxml_document_id"])
    assert _archived(b, altered) == [False]  # unauthenticated bytes are not kept


def test_a_message_signed_by_another_agency_is_rejected(
    pair: tuple[Instance, Instance], never_filed: int
) -> None:
    a, b = pair
    sent = _queued(a, never_filed)
    with parse_edxml(a.message_bytes(sent["id"]), trust_roots=[a.services.pki.root_cert]) as m:
        header = m.header
        [pdf] = m.attachments
        content = pdf.read_bytes()
    other = a.services.keys.resolve(a.services.accounts.agency_key(A2) or "")
    forged = build_edxml(header, [Attachment(name=pdf.name, data=content)], signing_key=other)
    assert _answer_reasons(b, _post_inbox(b, forged)) == ["exchange.reason.signer_not_sender"]
    _nothing_filed(b, sent["edxml_document_id"])


@pytest.mark.parametrize(
    ("body", "content_type", "status", "slug"),
    [
        (b"not xml at all", "application/xml", 422, "validation"),
        (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
            "application/xml",
            422,
            "validation",
        ),
        (b"<a/>", "text/plain", 415, "unsupported-media-type"),
        (b"", "application/xml", 400, "empty-request"),
    ],
)
def test_malformed_input_is_a_problem(
    pair: tuple[Instance, Instance], body: bytes, content_type: str, status: int, slug: str
) -> None:
    _, b = pair
    for path in ("inbox", "status"):
        reply = httpx.post(
            f"{b.url}/api/v1/exchange/{path}", content=body, headers={"Content-Type": content_type}
        )
        assert reply.status_code == status, reply.text
        assert reply.headers["content-type"].startswith("application/problem+json")
        assert reply.json()["type"].endswith("/" + slug)


def test_a_status_from_nobody_known_is_refused(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    sent = _queued(a)
    # B answers a message A never sent to B: valid signature, but no such outgoing message
    reply = _post_inbox(b, a.message_bytes(sent["id"]))
    assert reply.headers["X-Kyso-Status"] == "01"
    forged = reply.content.replace(sent["edxml_document_id"].encode(), b"X", 1)
    bad = httpx.post(
        f"{a.url}/api/v1/exchange/status",
        content=forged,
        headers={"Content-Type": "application/xml"},
    )
    assert bad.status_code == 422, bad.text
    # The genuine answer is accepted once, then idempotent.
    for recorded in (True, False):
        ok = httpx.post(
            f"{a.url}/api/v1/exchange/status",
            content=reply.content,
            headers={"Content-Type": "application/xml"},
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["recorded"] is recorded
    codes = [
        s["code"] for s in a.api("GET", f"/outbox/{sent['id']}", A1, "clerk").json()["statuses"]
    ]
    assert codes == ["01"]


def test_unknown_recipient_is_not_found(pair: tuple[Instance, Instance], never_filed: int) -> None:
    a, b = pair
    sent = _queued(a, never_filed)
    reply = _post_inbox(b, a.message_bytes(sent["id"]), to="000.00.00.H99")
    assert reply.status_code == 422  # not addressed to it
    reply = _post_inbox(a, a.message_bytes(sent["id"]))  # addressed to B1 only: not here
    assert reply.status_code == 404
    assert reply.headers["content-type"].startswith("application/problem+json")
