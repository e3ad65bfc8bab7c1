"""The exchange pages over plain HTTP (no browser): the outbox, the inbox and the send form of a
sealed document, between agencies H41 and H42 of one instance.  Deliveries are not dispatched
in the background here (``KYSO_EXCHANGE_DISPATCH=none``): the tests run them, as beat would,
so every step is deterministic."""

from __future__ import annotations

import html
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.serialization import Encoding

from kyso.api import exchange
from kyso.archive.models import AuditEvent, Document
from tests.api.service_helpers import make_seal_key
from tests.web.conftest import AGENCY, OTHER_AGENCY, WebApp, new_document, off_loop
from tests.web.test_pages import csrf_in, logged_in

DEAD_PEER = "000.00.00.H99"


@pytest.fixture(scope="module", autouse=True)
def _deliveries_run_by_the_tests() -> Iterator[None]:
    """Before the server starts: no background delivery, one attempt before a message is dead
    (ExchangeSettings read the environment when the app starts)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("KYSO_EXCHANGE_DISPATCH", "none")
    patch.setenv("KYSO_EXCHANGE_MAX_ATTEMPTS", "1")
    patch.setenv("KYSO_EXCHANGE_TIMEOUT", "3")
    yield
    patch.undo()


@pytest.fixture(scope="module")
def ready(web_app: WebApp) -> WebApp:
    """H42 gets a seal key (it signs its answers); a peer H99 whose endpoint is down."""
    services = web_app.services
    services.__dict__["exchange_settings"] = exchange.ExchangeSettings(
        _env_file=None, dispatch="none", max_attempts=1, timeout=3
    )
    make_seal_key(services, OTHER_AGENCY, "Sở Thử Nghiệm")
    ref = services.accounts.agency_key(AGENCY)
    assert ref is not None
    pem = services.keys.resolve(ref).certificate.public_bytes(Encoding.PEM).decode()
    from tests.conftest import free_port

    exchange.add_peer(
        services,
        DEAD_PEER,
        f"http://127.0.0.1:{free_port()}/api/v1/exchange",
        pem,
        name="Cơ quan ở xa",
        actor="test:setup",
    )
    return web_app


@pytest.fixture(scope="module")
def sealed(ready: WebApp, tmp_path_factory: pytest.TempPathFactory) -> int:
    return new_document(
        ready, "Công văn gửi Sở Thử Nghiệm", step="sealed", tmp=tmp_path_factory.mktemp("x")
    )


def _deliver(app: WebApp) -> None:
    # the library's asyncio.run cannot start in a thread where Playwright's loop runs (the
    # browser tests of this session): off_loop runs it in a worker thread
    off_loop(exchange.retry_due, app.services)


def _outgoing(app: WebApp, document_id: int, recipient: str) -> list[dict[str, object]]:
    with app.services.catalog.session() as s:
        rows = (
            s.execute(
                sa.select(exchange.outgoing)
                .where(
                    exchange.outgoing.c.document_id == document_id,
                    exchange.outgoing.c.recipient == recipient,
                    exchange.outgoing.c.kind == "document",
                )
                .order_by(exchange.outgoing.c.id)
            )
            .mappings()
            .all()
        )
    return [dict(r) for r in rows]


def _incoming_id(app: WebApp, document_id: int) -> int:
    """H42's incoming message (the new document) for H41's document ``document_id``."""
    [row] = _outgoing(app, document_id, OTHER_AGENCY)[:1]
    with app.services.catalog.session() as s:
        found = s.scalar(
            sa.select(exchange.incoming.c.id).where(
                exchange.incoming.c.agency_id == OTHER_AGENCY,
                exchange.incoming.c.edxml_document_id == row["edxml_document_id"],
                exchange.incoming.c.business_type == 0,
            )
        )
    assert found is not None
    return int(found)


def _audit_events(app: WebApp, action: str, subject: str) -> list[AuditEvent]:
    with app.services.catalog.session() as s:
        return list(
            s.scalars(
                sa.select(AuditEvent).where(
                    AuditEvent.action == action, AuditEvent.subject == subject
                )
            ).all()
        )


def _section(page: str, element_id: str) -> str:
    """The HTML of the <section id=element_id> of ``page``."""
    start = page.index(f'id="{element_id}"')
    return page[start : page.index("</section>", start)]


# -- who may see what ----------------------------------------------------------------------------


def test_the_exchange_pages_need_an_account_and_a_clerk_to_act(ready: WebApp) -> None:
    with httpx.Client(base_url=ready.url) as anonymous:
        for path in ("/exchange/outbox", "/exchange/inbox"):
            reply = anonymous.get(path)
            assert reply.status_code == 303
            assert reply.headers["location"].startswith("/login?next=")
    with logged_in(ready, "clerk") as clerk:
        home = clerk.get("/").text
        assert 'href="/exchange/outbox"' in home and "Văn bản đi" in home
        assert 'href="/exchange/inbox"' in home and "Văn bản đến" in home
        page = clerk.get("/exchange/outbox")
        assert page.status_code == 200 and 'aria-current="page"' in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        assert clerk.get("/exchange/inbox").status_code == 200
    with logged_in(ready, "official") as official:
        home = official.get("/").text
        assert 'href="/exchange/outbox"' not in home  # the menu: clerks only
        page = official.get("/exchange/outbox")  # officials may read
        assert page.status_code == 200
        assert "/requeue" not in page.text and "/recall" not in page.text
        token = csrf_in(page.text)
        refused = official.post("/exchange/outbox/1/requeue", data={"csrf_token": token})
        assert refused.status_code == 403 and "<html" in refused.text


# -- send, arrive, answer, statuses back ---------------------------------------------------------


def test_a_clerk_sends_to_another_agency_which_answers_and_the_sender_sees_every_status(
    ready: WebApp, sealed: int
) -> None:
    app = ready
    with logged_in(app, "clerk") as clerk_a, logged_in(app, "clerk", others=True) as clerk_b:
        page = clerk_a.get(f"/documents/{sealed}")
        assert page.status_code == 200 and 'id="send-form"' in page.text
        assert f'value="{OTHER_AGENCY}"' in page.text  # the other local agency
        assert f'value="{DEAD_PEER}"' in page.text  # and the configured peer
        assert f'value="{AGENCY}"' not in page.text  # not oneself
        token = csrf_in(page.text)

        # without the CSRF token nothing is sent
        forged = clerk_a.post(f"/documents/{sealed}/send", data={"recipients": OTHER_AGENCY})
        assert forged.status_code == 403
        assert _outgoing(app, sealed, OTHER_AGENCY) == []
        # nobody chosen: said on a page, nothing sent
        none = clerk_a.post(f"/documents/{sealed}/send", data={"csrf_token": token})
        assert none.status_code == 422 and "Chọn ít nhất một cơ quan nhận" in none.text

        sent = clerk_a.post(
            f"/documents/{sealed}/send", data={"csrf_token": token, "recipients": OTHER_AGENCY}
        )
        assert sent.status_code == 303
        assert sent.headers["location"] == "/exchange/outbox?done=exchange_sent"
        [row] = _outgoing(app, sealed, OTHER_AGENCY)
        outbox = clerk_a.get(sent.headers["location"]).text
        assert "Đã gửi văn bản" in outbox
        assert 'data-state="queued"' in _section(outbox, f"out-{row['id']}")

        _deliver(app)  # B receives it, files it, answers 01
        outbox = clerk_a.get("/exchange/outbox").text
        mine = _section(outbox, f"out-{row['id']}")
        assert 'data-state="delivered"' in mine and 'data-code="01"' in mine

        incoming_id = _incoming_id(app, sealed)
        inbox = clerk_b.get("/exchange/inbox").text
        item = html.unescape(_section(inbox, f"in-{incoming_id}"))
        assert AGENCY in item and str(row["edxml_document_id"]) in item
        assert "Hợp lệ" in item and "01" in item
        incoming = exchange.incoming_message(app.services, app.others["clerk"][0], incoming_id)
        assert f'href="/documents/{incoming["document_id"]}"' in item
        with app.services.catalog.session() as s:
            filed = s.get(Document, incoming["document_id"])
            assert filed is not None and filed.agency_id == OTHER_AGENCY
            arrival = f"Số {filed.arrival_number}, ngày {filed.arrival_date:%d/%m/%Y}"
        assert arrival in item
        assert f'id="answer-{incoming_id}-03"' in item

        token_b = csrf_in(inbox)
        for code in ("03", "06"):
            answered = clerk_b.post(
                f"/exchange/inbox/{incoming_id}/status",
                data={"csrf_token": token_b, "code": code, "description": f"bước {code}"},
            )
            assert answered.status_code == 303, answered.text[:300]
            _deliver(app)  # the signed status travels back to A
        inbox = clerk_b.get("/exchange/inbox").text
        assert "Đã hoàn thành" in _section(inbox, f"in-{incoming_id}")

        outbox = clerk_a.get("/exchange/outbox").text
        mine = _section(outbox, f"out-{row['id']}")
        codes = [c for c in ("01", "02", "03", "06") if f'data-code="{c}"' in mine]
        assert codes == ["01", "03", "06"]
        assert "bước 06" in mine
        assert mine.index('data-code="01"') < mine.index('data-code="03"')
        # the receipts, as archived
        history = exchange.message(app.services, app.users["clerk"][0], int(row["id"]))["statuses"]
        for index in range(len(history)):
            got = clerk_a.get(f"/exchange/outbox/{row['id']}/receipts/{index}")
            assert got.status_code == 200
            assert got.headers["content-type"].startswith("application/xml")
            assert "attachment" in got.headers["content-disposition"]
            assert got.content == exchange.receipt(
                app.services, app.users["clerk"][0], int(row["id"]), index
            )
            assert b"Signature" in got.content
        assert clerk_a.get(f"/exchange/outbox/{row['id']}/receipts/99").status_code == 404

        # in English
        english = clerk_a.get("/exchange/outbox?lang=en").text
        assert "Delivered" in english and "Completed" in english and 'lang="en"' in english

        # the other agency cannot touch A's message, nor A B's incoming one: not found
        token_b = csrf_in(clerk_b.get("/exchange/outbox").text)
        assert (
            clerk_b.post(
                f"/exchange/outbox/{row['id']}/requeue", data={"csrf_token": token_b}
            ).status_code
            == 404
        )
        assert (
            clerk_b.post(
                f"/exchange/outbox/{row['id']}/recall", data={"csrf_token": token_b}
            ).status_code
            == 404
        )
        assert clerk_b.get(f"/exchange/outbox/{row['id']}/receipts/0").status_code == 404
        assert (
            clerk_a.post(
                f"/exchange/inbox/{incoming_id}/status",
                data={"csrf_token": csrf_in(outbox), "code": "03"},
            ).status_code
            == 404
        )
        # B cannot send A's document either
        assert (
            clerk_b.post(
                f"/documents/{sealed}/send", data={"csrf_token": token_b, "recipients": AGENCY}
            ).status_code
            == 404
        )
        # a status the page does not offer, and a status out of order
        assert (
            clerk_b.post(
                f"/exchange/inbox/{incoming_id}/status", data={"csrf_token": token_b, "code": "02"}
            ).status_code
            == 422
        )
        # requeueing a delivered message is out of order
        again = clerk_a.post(
            f"/exchange/outbox/{row['id']}/requeue", data={"csrf_token": csrf_in(outbox)}
        )
        assert again.status_code == 409 and "<html" in again.text


def test_a_recall_and_its_answer_join_the_history(
    ready: WebApp, tmp_path_factory: pytest.TempPathFactory
) -> None:
    app = ready
    doc = new_document(app, "Công văn sẽ thu hồi", step="sealed", tmp=tmp_path_factory.mktemp("r"))
    with logged_in(app, "clerk") as clerk_a, logged_in(app, "clerk", others=True) as clerk_b:
        token = csrf_in(clerk_a.get(f"/documents/{doc}").text)
        sent = clerk_a.post(
            f"/documents/{doc}/send", data={"csrf_token": token, "other": OTHER_AGENCY}
        )
        assert sent.status_code == 303
        _deliver(app)
        [row] = _outgoing(app, doc, OTHER_AGENCY)
        outbox = clerk_a.get("/exchange/outbox").text
        assert f'action="/exchange/outbox/{row["id"]}/recall"' in outbox
        recalled = clerk_a.post(
            f"/exchange/outbox/{row['id']}/recall",
            data={"csrf_token": token, "reason": "Sai sót số liệu"},
        )
        assert recalled.status_code == 303
        assert recalled.headers["location"] == "/exchange/outbox?done=exchange_recalled"
        _deliver(app)  # the recall arrives; B's automatic answer 13 comes back

        incoming_id = _incoming_id(app, doc)
        inbox = clerk_b.get("/exchange/inbox").text
        item = _section(inbox, f"in-{incoming_id}")
        assert f'id="answer-{incoming_id}-15"' in item
        assert f'id="answer-{incoming_id}-03"' not in item
        answered = clerk_b.post(
            f"/exchange/inbox/{incoming_id}/status",
            data={"csrf_token": csrf_in(inbox), "code": "15"},
        )
        assert answered.status_code == 303
        _deliver(app)

        mine = _section(clerk_a.get("/exchange/outbox").text, f"out-{row['id']}")
        for code in ("01", "13", "15"):
            assert f'data-code="{code}"' in mine, code
        assert "Đồng ý thu hồi" in mine
        # the service allows recalling again (a new request): the button stays
        assert f'action="/exchange/outbox/{row["id"]}/recall"' in mine  # still delivered


def test_the_send_form_sends_an_update_with_its_reason(
    ready: WebApp, tmp_path_factory: pytest.TempPathFactory
) -> None:
    app = ready
    doc = new_document(
        app, "Công văn sẽ đính chính", step="sealed", tmp=tmp_path_factory.mktemp("u")
    )
    with logged_in(app, "clerk") as clerk_a:
        page = clerk_a.get(f"/documents/{doc}").text
        assert 'name="business" value="update"' in page and 'id="send-reason"' in page
        token = csrf_in(page)
        first = {"csrf_token": token, "other": OTHER_AGENCY}
        assert clerk_a.post(f"/documents/{doc}/send", data=first).status_code == 303
        _deliver(app)
        # an update needs its reason; an unknown kind is refused; nothing is queued by either
        no_reason = clerk_a.post(f"/documents/{doc}/send", data={**first, "business": "update"})
        assert no_reason.status_code == 422
        assert "lý do" in no_reason.text
        odd = clerk_a.post(
            f"/documents/{doc}/send", data={**first, "business": "recall", "reason": "x"}
        )
        assert odd.status_code == 422
        assert len(_outgoing(app, doc, OTHER_AGENCY)) == 1
        update = {**first, "business": "update", "reason": "Đính chính số liệu tại mục 2"}
        files = {"attachments": ("", b"", "application/octet-stream")}  # no file chosen
        sent = clerk_a.post(f"/documents/{doc}/send", data=update, files=files)
        assert sent.status_code == 303, sent.text
        _deliver(app)
    original, again = _outgoing(app, doc, OTHER_AGENCY)
    assert (original["business_type"], again["business_type"]) == (0, 2)
    assert again["state"] == "delivered" and again["answer_code"] == "01"
    with app.services.catalog.session() as s:
        rows = s.execute(
            sa.select(exchange.incoming.c.business_type, exchange.incoming.c.state)
            .where(
                exchange.incoming.c.agency_id == OTHER_AGENCY,
                exchange.incoming.c.edxml_document_id == again["edxml_document_id"],
            )
            .order_by(exchange.incoming.c.id)
        ).all()
    # the receiver filed the update and marked the first arrival as updated
    assert [tuple(r) for r in rows] == [(0, "updated"), (2, "received")]


# -- dead letters ---------------------------------------------------------------------------------


def test_a_dead_message_is_marked_with_its_error_and_can_be_sent_again(
    ready: WebApp, sealed: int
) -> None:
    app = ready
    clerk = app.users["clerk"][0]
    [message] = exchange.send(app.services, clerk, sealed, [DEAD_PEER])
    result = off_loop(exchange.deliver, app.services, message["id"])
    assert result["state"] == "dead"  # the peer is down, one attempt allowed
    with logged_in(app, "clerk") as c:
        page = c.get("/exchange/outbox").text
        assert 'id="dead-alert"' in page
        mine = _section(page, f"out-{message['id']}")
        assert 'data-state="dead"' in mine
        assert "Ngừng gửi sau nhiều lần thử" in mine and "tone-bad" in mine
        assert "1/1 lần" in mine
        error = exchange.message(app.services, clerk, message["id"])["last_error"]
        assert error and html.escape(error) in mine
        assert f'action="/exchange/outbox/{message["id"]}/requeue"' in mine

        forged = c.post(f"/exchange/outbox/{message['id']}/requeue", data={"csrf_token": "x"})
        assert forged.status_code == 403
        assert exchange.message(app.services, clerk, message["id"])["state"] == "dead"

        done = c.post(
            f"/exchange/outbox/{message['id']}/requeue", data={"csrf_token": csrf_in(page)}
        )
        assert done.status_code == 303
        assert done.headers["location"] == "/exchange/outbox?done=exchange_requeued"
        again = exchange.message(app.services, clerk, message["id"])
        assert again["state"] == "queued" and again["attempts"] == 0
        page = c.get(done.headers["location"]).text
        assert 'data-state="queued"' in _section(page, f"out-{message['id']}")
    events = _audit_events(app, "exchange.requeue", f"exchange:outgoing:{message['id']}")
    assert len(events) == 1 and events[0].actor == clerk.actor


def test_the_send_form_is_only_for_a_sealed_document_and_a_clerk(
    ready: WebApp, tmp_path_factory: pytest.TempPathFactory, sealed: int
) -> None:
    registered = new_document(
        ready, "Chưa đóng dấu", step="registered", tmp=tmp_path_factory.mktemp("n")
    )
    with logged_in(ready, "clerk") as clerk:
        page = clerk.get(f"/documents/{registered}").text
        assert 'id="send-form"' not in page
        refused = clerk.post(
            f"/documents/{registered}/send",
            data={"csrf_token": csrf_in(page), "recipients": OTHER_AGENCY},
        )
        assert refused.status_code == 409 and "<html" in refused.text
        unknown = clerk.post(
            f"/documents/{sealed}/send",
            data={"csrf_token": csrf_in(page), "other": "000.00.00.Z77"},
        )
        assert unknown.status_code == 422 and "000.00.00.Z77" in unknown.text
    with logged_in(ready, "official") as official:
        page = official.get(f"/documents/{sealed}").text
        assert 'id="send-form"' not in page
        refused = official.post(
            f"/documents/{sealed}/send",
            data={"csrf_token": csrf_in(page), "recipients": OTHER_AGENCY},
        )
        assert refused.status_code == 403


def test_a_rejected_message_is_listed_with_its_reasons_and_no_buttons(
    ready: WebApp, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A message changed in transit: its XML signature fails, H42 answers 02 with the reason
    and files nothing; the inbox says so."""
    app = ready
    subject = "Công văn chưa từng gửi"
    doc = new_document(app, subject, step="sealed", tmp=tmp_path_factory.mktemp("f"))
    [message] = exchange.send(app.services, app.users["clerk"][0], doc, [OTHER_AGENCY])
    # not delivered: this copy is only the source of the forgery
    exchange.recall(app.services, app.users["clerk"][0], message["id"])
    with app.services.catalog.session() as s:
        key = s.scalar(
            sa.select(exchange.outgoing.c.object_key).where(exchange.outgoing.c.id == message["id"])
        )
    with app.services.store.open(str(key)) as fh:
        original = fh.read()
    forged = original.replace(subject.encode(), "Công văn đã sửa đổi".encode())
    assert forged != original
    received = off_loop(exchange.receive, app.services, forged, via="test", recipient=OTHER_AGENCY)
    assert received.code == "02" and received.document_id is None
    with logged_in(app, "clerk", others=True) as clerk_b:
        page = clerk_b.get("/exchange/inbox").text
        item = html.unescape(_section(page, f"in-{received.incoming_id}"))
        assert "Bị từ chối (02)" in item and 'data-state="rejected"' in page
        [row] = [
            r
            for r in exchange.inbox(app.services, app.others["clerk"][0])
            if r["id"] == received.incoming_id
        ]
        reasons = row["verdict"]["reasons"]
        assert reasons and all(r["message"] in item for r in reasons)
        assert "/status" not in item  # nothing to answer
        assert '<a href="/documents/' not in item  # nothing filed


# -- attachments ----------------------------------------------------------------------------------


def _attachment_names(app: WebApp, outgoing_id: object) -> list[tuple[str, str, bytes]]:
    """(name, content type, bytes) of each file of the signed message an outgoing row names."""
    import base64

    from lxml import etree

    with app.services.catalog.session() as s:
        key = s.scalar(
            sa.select(exchange.outgoing.c.object_key).where(exchange.outgoing.c.id == outgoing_id)
        )
    with app.services.store.open(str(key)) as fh:
        root = etree.fromstring(fh.read(), parser=etree.XMLParser(huge_tree=True))
    ns = "{http://www.mic.gov.vn/TBT/QCVN_102_2016}"
    return [
        (
            item.findtext(f"{ns}AttachmentName") or "",
            item.findtext(f"{ns}ContentType") or "",
            base64.b64decode("".join((item.findtext(f"{ns}ContentTransferEncoded") or "").split())),
        )
        for item in root.iter(f"{ns}Attachment")
    ]


def test_the_send_form_carries_attachments_with_the_same_limits_as_the_api(
    ready: WebApp, tmp_path_factory: pytest.TempPathFactory
) -> None:
    app = ready
    doc = new_document(app, "Công văn có phụ lục", step="sealed", tmp=tmp_path_factory.mktemp("p"))
    note = "Danh sách đơn vị nhận kèm theo.\n".encode() * 20
    with logged_in(app, "clerk") as clerk:
        page = clerk.get(f"/documents/{doc}").text
        form = page[
            page.index('id="send-form"') : page.index("</form>", page.index('id="send-form"'))
        ]
        assert 'enctype="multipart/form-data"' in page.split('id="send-form"')[0][-300:]
        assert 'type="file"' in form and 'name="attachments"' in form and "multiple" in form
        assert "Tệp đính kèm" in form and "tối đa 20 tệp" in form  # the hint, in Vietnamese
        token = csrf_in(page)
        fields = {"csrf_token": token, "recipients": OTHER_AGENCY}

        # without the CSRF token nothing is sent, also as multipart
        forged = clerk.post(
            f"/documents/{doc}/send",
            data={"recipients": OTHER_AGENCY},
            files=[("attachments", ("x.txt", b"x", "text/plain"))],
        )
        assert forged.status_code == 403 and "<html" in forged.text
        # an empty file: a page saying which one (no traceback), nothing sent
        empty = clerk.post(
            f"/documents/{doc}/send",
            data=fields,
            files=[("attachments", ("Phụ lục trống.pdf", b"", "application/pdf"))],
        )
        assert empty.status_code == 422 and "<html" in empty.text
        assert "Phụ lục trống.pdf" in html.unescape(empty.text) and "Traceback" not in empty.text
        # 21 files: the same limit as the API
        many = clerk.post(
            f"/documents/{doc}/send",
            data=fields,
            files=[("attachments", (f"{i}.txt", b"x", "text/plain")) for i in range(21)],
        )
        assert many.status_code == 422 and "20" in many.text
        assert _outgoing(app, doc, OTHER_AGENCY) == []

        sent = clerk.post(
            f"/documents/{doc}/send",
            data=fields,
            files=[
                ("attachments", ("Phụ lục/Danh sách.odt", note, "application/octet-stream")),
                # what a browser posts for an input with no file chosen: skipped
                ("attachments", ("", b"", "application/octet-stream")),
            ],
        )
        assert sent.status_code == 303, sent.text[:500]
        assert sent.headers["location"] == "/exchange/outbox?done=exchange_sent"
    [row] = _outgoing(app, doc, OTHER_AGENCY)
    main, attached = _attachment_names(app, row["id"])
    assert main[1] == "application/pdf"
    assert attached == ("Danh sách.odt", "application/vnd.oasis.opendocument.text", note)


def test_the_api_takes_attachments_from_a_signed_in_browser_too(
    ready: WebApp, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A cookie session posting multipart to the API: the CSRF check reads the form first
    (csrf_token field), and the same limits apply to the files it read."""
    app = ready
    doc = new_document(app, "Công văn gửi qua API", step="sealed", tmp=tmp_path_factory.mktemp("q"))
    with logged_in(app, "clerk") as clerk:
        token = csrf_in(clerk.get(f"/documents/{doc}").text)
        fields = {"document_id": str(doc), "recipients": OTHER_AGENCY}
        one = [("attachments", ("Tờ trình.txt", "Nội dung".encode(), "text/plain"))]
        forged = clerk.post("/api/v1/exchange/send", data=fields, files=one)
        assert forged.status_code == 403 and forged.json()["type"].endswith("/csrf")
        empty = clerk.post(
            "/api/v1/exchange/send",
            data={**fields, "csrf_token": token},
            files=[("attachments", ("trống.txt", b"", "text/plain"))],
        )
        assert empty.status_code == 422 and "trống.txt" in empty.json()["detail"]
        sent = clerk.post("/api/v1/exchange/send", data={**fields, "csrf_token": token}, files=one)
        assert sent.status_code == 202, sent.text
    [message] = sent.json()["messages"]
    _, attached = _attachment_names(app, message["id"])
    assert attached == ("Tờ trình.txt", "text/plain", "Nội dung".encode())


# -- files received -------------------------------------------------------------------------------


def test_the_inbox_lists_the_files_received_and_serves_them_byte_for_byte(
    ready: WebApp, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """H41 sends a document with a PDF appendix (sealed on the way) and a text file; H42's
    inbox lists the three files with their sizes and verdicts, each downloads exactly as it
    travelled in the signed message, and nobody else gets them."""
    import hashlib
    from urllib.parse import quote

    from kyso.api.web.ui import human_size
    from kyso.exchange.edxml import Attachment
    from kyso.i18n import t
    from tests.web.conftest import make_pdf

    app = ready
    tmp = tmp_path_factory.mktemp("files")
    doc = new_document(app, "Công văn kèm phụ lục", step="sealed", tmp=tmp)
    appendix = tmp / "appendix.pdf"
    appendix.write_bytes(make_pdf(1, title="PHU LUC"))
    note = "Ghi chú: gửi kèm bảng số liệu.\n".encode() * 10
    [message] = exchange.send(
        app.services,
        app.users["clerk"][0],
        doc,
        [OTHER_AGENCY],
        attachments=[
            Attachment(name="Phụ lục.pdf", path=appendix, description="Phụ lục số liệu"),
            Attachment(name="Ghi chú.txt", data=note, content_type="text/plain"),
        ],
    )
    _deliver(app)
    travelled = {name: data for name, _, data in _attachment_names(app, message["id"])}
    assert travelled["Ghi chú.txt"] == note
    assert travelled["Phụ lục.pdf"] != appendix.read_bytes()  # sealed by the sender
    incoming_id = _incoming_id(app, doc)
    reader = app.others["clerk"][0]
    files = exchange.incoming_message(app.services, reader, incoming_id)["attachments"]
    assert len(files) == 3 and [f["index"] for f in files if f["main"]] == [0]
    by_name = {f["name"]: f for f in files}

    with logged_in(app, "clerk", others=True) as clerk_b, logged_in(app, "clerk") as clerk_a:
        page = clerk_b.get("/exchange/inbox")
        assert page.status_code == 200
        item = _section(page.text, f"in-{incoming_id}")
        listed = html.unescape(item[item.index(f'id="in-{incoming_id}-files"') :])
        assert "<caption>Tệp nhận được</caption>" in listed
        assert 'scope="col"' in listed and 'scope="row"' in listed
        rows = listed.split('class="received-file"')[1:]
        assert len(rows) == 3 and "văn bản chính" in rows[0]  # the document first
        for f in files:
            [row] = [r for r in rows if f'/attachments/{f["index"]}"' in r]
            assert f["name"] in row and human_size(f["size"], "vi") in row
            if f["indication"]:
                assert f'data-indication="{f["indication"]}"' in row
                assert t(f"verify.indication.{f['indication']}", locale="vi") in row
            else:
                assert "Không phải tệp PDF" in row
        assert by_name["Phụ lục.pdf"]["indication"] == "TOTAL_PASSED"
        assert "Phụ lục số liệu" in listed
        english = html.unescape(clerk_b.get("/exchange/inbox?lang=en").text)
        assert "Files received" in english and "Not a PDF file" in english

        for name in ("Phụ lục.pdf", "Ghi chú.txt"):
            info = by_name[name]
            got = clerk_b.get(f"/exchange/inbox/{incoming_id}/attachments/{info['index']}")
            assert got.status_code == 200, got.text[:300]
            assert got.content == travelled[name]
            assert hashlib.sha256(got.content).hexdigest() == info["sha256"]
            assert got.headers["content-type"].startswith(info["content_type"])
            disposition = got.headers["content-disposition"]
            assert disposition.startswith("attachment")
            assert f"filename*=utf-8''{quote(name)}" in disposition
            assert got.headers["x-content-type-options"] == "nosniff"
            assert got.headers["cache-control"] == "no-store"
        main = clerk_b.get(f"/exchange/inbox/{incoming_id}/attachments/0")
        assert main.status_code == 200 and main.content.startswith(b"%PDF")

        # another agency's message, a missing file, ids that are not ids: not found, a page
        for client, path in (
            (clerk_a, f"/exchange/inbox/{incoming_id}/attachments/0"),
            (clerk_b, f"/exchange/inbox/{incoming_id}/attachments/3"),
            (clerk_b, f"/exchange/inbox/{incoming_id}/attachments/99999999999"),
            (clerk_b, f"/exchange/inbox/{incoming_id}/attachments/-1"),
            (clerk_b, "/exchange/inbox/abc/attachments/0"),
            (clerk_b, "/exchange/inbox/0/attachments/0"),
            (clerk_b, f"/exchange/inbox/{2**40}/attachments/0"),
            (clerk_b, "/exchange/inbox/2147483647/attachments/0"),
        ):
            refused = client.get(path)
            assert refused.status_code == 404, path
            assert "<html" in refused.text and "Traceback" not in refused.text
        # the sender's page does not list them as received
        assert f'id="in-{incoming_id}-files"' not in clerk_a.get("/exchange/inbox").text
    with httpx.Client(base_url=app.url) as anonymous:
        reply = anonymous.get(f"/exchange/inbox/{incoming_id}/attachments/0")
        assert reply.status_code == 303 and reply.headers["location"].startswith("/login?next=")
    reads = _audit_events(app, "exchange.attachment.read", f"exchange:incoming:{incoming_id}")
    assert len(reads) == 3 and {e.actor for e in reads} == {reader.actor}
