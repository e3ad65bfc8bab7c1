"""End to end between two kyso instances on loopback (see conftest.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import time

import httpx
import pytest
import sqlalchemy as sa

from kyso.api import exchange
from kyso.archive.models import Document, DocumentVersion
from kyso.exchange.status import parse_status
from tests.exchange_service.conftest import A1, A2, B1, Instance


def _statuses(instance: Instance, agency: str, message_id: int) -> list[str]:
    reply = instance.api("GET", f"/outbox/{message_id}", agency, "clerk")
    assert reply.status_code == 200, reply.text
    return [s["code"] for s in reply.json()["statuses"]]


def _send(instance: Instance, agency: str, doc: int, *to: str) -> list[dict]:
    reply = instance.api(
        "POST", "/send", agency, "clerk", json={"document_id": doc, "recipients": list(to)}
    )
    assert reply.status_code == 202, reply.text
    messages: list[dict] = reply.json()["messages"]
    assert [m["state"] for m in messages] == ["queued"] * len(to)
    return messages


def test_send_arrive_accept_complete(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    doc = a.sealed_document(A1)
    [sent] = _send(a, A1, doc, B1)

    result = exchange.deliver(a.services, sent["id"])
    assert result["state"] == "delivered", result
    assert _statuses(a, A1, sent["id"]) == ["01"]

    # B filed it: an incoming document with arrival number and trace, the same bytes.
    inbox = b.api("GET", "/inbox", B1, "clerk").json()["messages"]
    [received] = [m for m in inbox if m["edxml_document_id"] == sent["edxml_document_id"]]
    assert received["accepted"] and received["answer_code"] == "01"
    assert received["state"] == "received"
    with a.services.catalog.session() as s:
        sent_sha = s.scalar(
            sa.select(DocumentVersion.sha256)
            .where(DocumentVersion.document_id == doc)
            .order_by(DocumentVersion.seq.desc())
            .limit(1)
        )
    with b.services.catalog.session() as s:
        filed = s.get(Document, received["document_id"])
        assert filed is not None
        assert filed.direction == "incoming" and filed.agency_id == B1
        assert filed.arrival_number and filed.arrival_date
        assert [hop["organ_id"] for hop in filed.trace] == [A1, B1]
        [version] = filed.versions
        assert version.kind == "received" and version.sha256 == sent_sha
    target = b.services.settings.data_dir / "got.pdf"
    b.services.archive.get(received["document_id"], target, actor="test")
    assert hashlib.sha256(target.read_bytes()).hexdigest() == sent_sha

    # B's clerk accepts (03) and completes (06): signed by B, delivered back to A.
    for code in ("03", "06"):
        reply = b.api("POST", f"/inbox/{received['id']}/status", B1, "clerk", json={"code": code})
        assert reply.status_code == 202, reply.text
        back = exchange.deliver(b.services, reply.json()["outgoing_id"])
        assert back["state"] == "delivered", back
    assert _statuses(a, A1, sent["id"]) == ["01", "03", "06"]
    # the times B stated (Vietnam time in the XML) are shown as the instants they were,
    # whatever the sender's database keeps of a time zone
    shown = a.api("GET", f"/outbox/{sent['id']}", A1, "clerk").json()["statuses"]
    now = dt.datetime.now(dt.UTC)
    for status in shown:
        stated = dt.datetime.fromisoformat(status["stated_at"])
        assert stated.tzinfo is not None and abs(now - stated) < dt.timedelta(minutes=10), status

    # Every receipt is B's signed status message, archived on A as received.
    for index, code in enumerate(("01", "03", "06")):
        reply = a.api("GET", f"/outbox/{sent['id']}/receipts/{index}", A1, "clerk")
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("application/xml")
        parsed = parse_status(reply.content, trust_roots=[b.services.pki.root_cert])
        assert parsed.verdict.accepted, parsed.verdict.codes
        assert parsed.status.status_code.value == code
        assert parsed.status.from_organ.organ_id == B1
        assert parsed.status.response_for.document_id == sent["edxml_document_id"]
        if code == "01":
            assert parsed.status.document_sha256 == (sent_sha,)
            assert parsed.status.message_sha256 == sent["sha256"]
    # B keeps its own history of what it answered.
    detail = b.api("GET", f"/inbox/{received['id']}", B1, "clerk").json()
    assert [s["code"] for s in detail["statuses"]] == ["01", "03", "06"]
    # A third-party agency sees none of it.
    assert a.api("GET", f"/outbox/{sent['id']}", A2, "clerk").status_code == 404


def test_receiver_down_then_delivered_exactly_once(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    doc = a.sealed_document(A1)
    [sent] = _send(a, A1, doc, B1)
    b.server.stop()
    try:
        first = exchange.deliver(a.services, sent["id"])
        assert first["state"] == "queued" and first["attempts"] == 1
        assert "ConnectError" in (first["error"] or "")
        # Not due yet: a second call does nothing.
        assert exchange.deliver(a.services, sent["id"])["attempts"] == 1
    finally:
        b.server.start()
    time.sleep(0.1)  # the backoff (0.05 s here)
    results = [r for r in exchange.retry_due(a.services) if r["id"] == sent["id"]]
    assert [r["state"] for r in results] == ["delivered"]
    assert results[0]["attempts"] == 2
    # A repeat of the same message (a retry after a lost answer) files nothing more.
    data = a.message_bytes(sent["id"])
    for _ in range(2):
        again = httpx.post(
            f"{b.url}/api/v1/exchange/inbox",
            content=data,
            headers={"Content-Type": "application/xml"},
        )
        assert again.status_code == 200, again.text
        assert again.headers["X-Kyso-Status"] == "01"
    assert b.count(exchange.incoming, edxml_document_id=sent["edxml_document_id"]) == 1
    with b.services.catalog.session() as s:
        assert (
            s.scalar(
                sa.select(sa.func.count())
                .select_from(Document)
                .where(Document.document_id == sent["edxml_document_id"], Document.agency_id == B1)
            )
            == 1
        )
    assert _statuses(a, A1, sent["id"]) == ["01"]


def test_dead_after_max_attempts_then_requeued(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    doc = a.sealed_document(A1)
    [sent] = _send(a, A1, doc, B1)
    b.server.stop()
    try:
        states = [exchange.deliver(a.services, sent["id"], force=True)["state"] for _ in range(3)]
    finally:
        b.server.start()
    assert states == ["queued", "queued", "dead"]
    dead = a.api("GET", "/outbox?state=dead", A1, "clerk").json()["messages"]
    assert sent["id"] in [m["id"] for m in dead]
    assert a.api("POST", f"/outbox/{sent['id']}/requeue", A1, "official").status_code == 403
    reply = a.api("POST", f"/outbox/{sent['id']}/requeue", A1, "clerk")
    assert reply.status_code == 202, reply.text
    assert exchange.deliver(a.services, sent["id"])["state"] == "delivered"
    assert _statuses(a, A1, sent["id"]) == ["01"]


def test_same_instance_between_two_agencies(pair: tuple[Instance, Instance]) -> None:
    a, _ = pair
    doc = a.sealed_document(A1)
    [sent] = _send(a, A1, doc, A2)
    assert exchange.deliver(a.services, sent["id"])["state"] == "delivered"
    assert _statuses(a, A1, sent["id"]) == ["01"]
    [got] = [
        m
        for m in a.api("GET", "/inbox", A2, "clerk").json()["messages"]
        if m["edxml_document_id"] == sent["edxml_document_id"]
    ]
    assert got["accepted"] and got["via"] == "local"
    with a.services.catalog.session() as s:
        filed = s.get(Document, got["document_id"])
        assert filed is not None and filed.agency_id == A2 and filed.direction == "incoming"
        assert filed.id != doc
    # A1's clerk cannot answer for A2; A2's can, and A1 sees it.
    assert (
        a.api("POST", f"/inbox/{got['id']}/status", A1, "clerk", json={"code": "03"}).status_code
        == 404
    )
    reply = a.api("POST", f"/inbox/{got['id']}/status", A2, "clerk", json={"code": "03"})
    assert reply.status_code == 202, reply.text
    assert exchange.deliver(a.services, reply.json()["outgoing_id"])["state"] == "delivered"
    assert _statuses(a, A1, sent["id"]) == ["01", "03"]

    # An update of the same document: filed anew, the first copy marked as updated.
    reply = a.api(
        "POST",
        "/send",
        A1,
        "clerk",
        json={"document_id": doc, "recipients": [A2], "business": "update", "reason": "Đính chính"},
    )
    assert reply.status_code == 202, reply.text
    [update] = reply.json()["messages"]
    assert update["business_type"] == 2
    assert exchange.deliver(a.services, update["id"])["state"] == "delivered"
    copies = [
        m
        for m in a.api("GET", "/inbox", A2, "clerk").json()["messages"]
        if m["edxml_document_id"] == sent["edxml_document_id"]
    ]
    assert sorted((m["business_type"], m["state"]) for m in copies) == [
        (0, "updated"),
        (2, "received"),
    ]
    assert len({m["document_id"] for m in copies}) == 2


def test_recall(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    doc = a.sealed_document(A1)
    [sent] = _send(a, A1, doc, B1)
    assert exchange.deliver(a.services, sent["id"])["state"] == "delivered"
    reply = a.api("POST", f"/outbox/{sent['id']}/recall", A1, "clerk", json={"reason": "Sai sót"})
    assert reply.status_code == 202, reply.text
    recall = reply.json()
    assert recall["business_type"] == 1
    assert exchange.deliver(a.services, recall["id"])["state"] == "delivered"
    assert _statuses(a, A1, sent["id"]) == ["01", "13"]
    [original] = [
        m
        for m in b.api("GET", "/inbox", B1, "clerk").json()["messages"]
        if m["edxml_document_id"] == sent["edxml_document_id"] and m["business_type"] == 0
    ]
    assert original["state"] == "recall_requested"
    # 03 no longer applies; B agrees to the withdrawal (15).
    assert (
        b.api(
            "POST", f"/inbox/{original['id']}/status", B1, "clerk", json={"code": "03"}
        ).status_code
        == 409
    )
    reply = b.api("POST", f"/inbox/{original['id']}/status", B1, "clerk", json={"code": "15"})
    assert reply.status_code == 202, reply.text
    assert exchange.deliver(b.services, reply.json()["outgoing_id"])["state"] == "delivered"
    assert _statuses(a, A1, sent["id"]) == ["01", "13", "15"]
    detail = b.api("GET", f"/inbox/{original['id']}", B1, "clerk").json()
    assert detail["state"] == "withdrawn"


@pytest.fixture(scope="module")
def unsent(pair: tuple[Instance, Instance]) -> int:
    """A sealed document of A1 that never reaches B (recalled before delivery, refused)."""
    return pair[0].sealed_document(A1)


def test_recall_before_delivery_stops_it(pair: tuple[Instance, Instance], unsent: int) -> None:
    a, b = pair
    doc = unsent
    [sent] = _send(a, A1, doc, B1)
    reply = a.api("POST", f"/outbox/{sent['id']}/recall", A1, "clerk")
    assert reply.status_code == 202
    assert reply.json()["state"] == "failed" and reply.json()["last_error"] == "recalled"
    assert exchange.deliver(a.services, sent["id"])["state"] == "failed"
    assert b.count(exchange.incoming, edxml_document_id=sent["edxml_document_id"]) == 0


@pytest.mark.parametrize("role", ["official", "archivist"])
def test_only_clerks_send(pair: tuple[Instance, Instance], role: str) -> None:
    a, _ = pair
    reply = a.api("POST", "/send", A1, role, json={"document_id": 1, "recipients": [B1]})
    assert reply.status_code == 403
    assert reply.headers["content-type"].startswith("application/problem+json")


def test_send_refuses_what_cannot_travel(pair: tuple[Instance, Instance], unsent: int) -> None:
    a, _ = pair
    doc = unsent
    cases = [
        ({"document_id": doc, "recipients": ["000.00.00.Z99"]}, 422),  # no route
        ({"document_id": doc, "recipients": [A1]}, 422),  # itself
        ({"document_id": doc, "recipients": ["not a code"]}, 422),
        ({"document_id": 2**31 - 2, "recipients": [B1]}, 404),
        ({"document_id": doc, "recipients": []}, 422),
    ]
    for body, status in cases:
        reply = a.api("POST", "/send", A1, "clerk", json=body)
        assert reply.status_code == status, (body, reply.text)
        assert reply.headers["content-type"].startswith("application/problem+json")
    # another agency's document: 404, not 403
    reply = a.api("POST", "/send", A2, "clerk", json={"document_id": doc, "recipients": [B1]})
    assert reply.status_code == 404


def test_background_dispatch_and_retry_loop(pair: tuple[Instance, Instance]) -> None:
    """With dispatch on, sending starts the delivery at once; with the receiver down, the
    retry loop of the API process delivers it once the receiver is back."""
    a, b = pair
    quiet = exchange.exchange_settings(a.services)
    a.services.__dict__["exchange_settings"] = quiet.model_copy(
        update={"dispatch": "thread", "retry_interval": 0.2}
    )
    stop = exchange.start_retry_loop(a.services)
    try:
        doc = a.sealed_document(A1)
        b.server.stop()
        try:
            [sent] = _send(a, A1, doc, B1)
            deadline = time.monotonic() + 30
            while (state := exchange.message(a.services, a.user(A1, "clerk"), sent["id"]))[
                "attempts"
            ] < 1:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert state["state"] in ("queued", "sending", "dead")
        finally:
            b.server.start()
        deadline = time.monotonic() + 60
        while (current := exchange.message(a.services, a.user(A1, "clerk"), sent["id"]))[
            "state"
        ] != "delivered":
            assert time.monotonic() < deadline, current
            if current["state"] == "dead":  # max attempts reached while B was down
                assert a.api("POST", f"/outbox/{sent['id']}/requeue", A1, "clerk").is_success
            time.sleep(0.1)
    finally:
        stop()
        a.services.__dict__["exchange_settings"] = quiet
    assert [s["code"] for s in current["statuses"]] == ["01"]
    assert b.count(exchange.incoming, edxml_document_id=sent["edxml_document_id"]) == 1
