"""Tenant isolation: a user of agency B, holding every role, tries every ``/api/v1`` route on
agency A's records (documents at each stage, versions, reports, a pending two-phase signature,
a case file, users, tokens, keys, a job, messages A sent to and received from a third agency)
and gets 404 (never 403, never A's data); lists and searches never show A's records.
``test_every_api_route_is_tried`` lists the app's routes and fails when a new ``/api/v1``
route has no check here."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi.testclient import TestClient

from kyso.api.principal import ROLES
from kyso.certs import identity
from tests.api.service_helpers import (
    PIN,
    bearer,
    login,
    make_agency_with_users,
    make_user,
    password_for,
    username_for,
)
from tests.api.workflow_fixtures import META, Stack, fresh_pdf, problem, stack


@dataclass
class World:
    s: Stack
    draft: int
    sealed: int
    sealed_sha: str
    report: int
    handle: str
    case: str
    case_id: int
    number: str
    user_id: int
    token_id: int
    b_all: dict[str, str]
    b_draft: int
    job: str
    outgoing: int
    incoming: int


def _wait_for_inbox(s: Stack, agency: str) -> int:
    """The id of the first message in ``agency``'s inbox (delivery runs in the background)."""
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        reply = s.client.get("/api/v1/exchange/inbox", headers=s.auth(agency, "clerk"))
        messages = reply.json().get("messages", []) if reply.status_code == 200 else []
        if messages:
            return int(messages[0]["id"])
        time.sleep(0.2)
    raise AssertionError(f"nothing arrived in {agency}'s inbox: {reply.text}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with stack(tmp_path_factory.mktemp("tenancy")) as s:
        a, b, client = s.a, s.b, s.client
        case = client.post(
            "/api/v1/cases",
            json={"year": 2026, "notation": "01", "title": "Hồ sơ mật của A"},
            headers=s.auth(a, "clerk"),
        ).json()
        draft = s.upload(a)["document_id"]
        sealed = s.to_stage(a, "sealed")
        client.post(  # A's sealed document is also in A's case file
            "/api/v1/documents",
            files={"file": ("c.pdf", fresh_pdf(), "application/pdf")},
            data={**META, "case": case["file_code"]},
            headers=s.auth(a, "official"),
        )
        verified = client.post(
            f"/api/v1/documents/{sealed}/verify", headers=s.auth(a, "verifier")
        ).json()
        shown = client.get(f"/api/v1/documents/{sealed}", headers=s.auth(a, "archivist")).json()
        token = s.services.pki.issue(
            kind="person",
            subject=identity.person_subject("Phạm Thị Dung", ids=["CCCD:001190000999"]),
            label="tenancy-token",
            key_type="ec-p256",
        )
        key = s.services.keys.resolve(token.key_uri)
        pem = b"".join(c.public_bytes(Encoding.PEM) for c in (key.certificate, *key.chain))
        pending = s.upload(a)["document_id"]
        prepared = client.post(
            f"/api/v1/documents/{pending}/sign/prepare",
            json={"certificate": pem.decode()},
            headers=s.auth(a, "official"),
        ).json()
        a_token_id, _ = s.services.accounts.create_token(
            s.users[a]["clerk"].user_id, "A's system", actor="test"
        )
        everything, _ = make_user(s.services, b, "all-roles@b", ROLES)
        job = client.post(
            "/api/v1/jobs",
            json={"kind": "verify", "items": [{"document_id": sealed}]},
            headers=s.auth(a, "verifier"),
        )
        assert job.status_code == 202, job.text
        # exchange: A sends its sealed document to a third agency C, and C sends one to A
        c = "000.00.00.H43"
        made_c = make_agency_with_users(s.services, c, seal_key=True, personal_key=True)
        s.users[c] = {role: p for role, (p, _) in made_c.items()}
        sent = client.post(
            "/api/v1/exchange/send",
            json={"document_id": sealed, "recipients": [c]},
            headers=s.auth(a, "clerk"),
        )
        assert sent.status_code == 202, sent.text
        from_c = client.post(
            "/api/v1/exchange/send",
            json={"document_id": s.to_stage(c, "sealed"), "recipients": [a]},
            headers=s.auth(c, "clerk"),
        )
        assert from_c.status_code == 202, from_c.text
        incoming = _wait_for_inbox(s, a)
        b_draft = s.upload(b)["document_id"]
        yield World(
            s=s,
            draft=draft,
            sealed=sealed,
            sealed_sha=shown["versions"][-1]["sha256"],
            report=verified["report_id"],
            handle=prepared["handle"],
            case=case["file_code"],
            case_id=case["id"],
            number=shown["code_number"],
            user_id=s.users[a]["clerk"].user_id,
            token_id=a_token_id,
            b_all=bearer(s.services, everything),
            b_draft=b_draft,
            job=job.json()["id"],
            outgoing=sent.json()["messages"][0]["id"],
            incoming=incoming,
        )


def hidden(reply: Any) -> None:
    problem(reply, 404, "not-found")


# -- one check per route ------------------------------------------------------------------------


def c_login(w: World) -> None:
    b = w.s.b
    with TestClient(w.s.client.app) as client:
        login(client, username_for("clerk", b), password_for("clerk", b))
        me = client.get("/api/v1/auth/me").json()
        assert b in str(me) and w.s.a not in str(me)


def c_logout(w: World) -> None:
    a, b = w.s.a, w.s.b
    with TestClient(w.s.client.app) as client_a:
        login(client_a, username_for("official", a), password_for("official", a))
        reply = w.s.client.post("/api/v1/auth/logout", headers=w.s.auth(b, "official"))
        assert reply.status_code in (204, 200)
        assert client_a.get("/api/v1/auth/me").status_code == 200  # A's session lives on


def c_me(w: World) -> None:
    me = w.s.client.get("/api/v1/auth/me", headers=w.b_all).json()
    assert w.s.a not in str(me) and w.s.b in str(me)


def c_agency(w: World) -> None:
    agency = w.s.client.get("/api/v1/agencies/me", headers=w.b_all).json()
    assert w.s.a not in str(agency) and w.s.b in str(agency)


def c_users_list(w: World) -> None:
    users = w.s.client.get("/api/v1/users", headers=w.b_all).json()["items"]
    assert users and all(u["id"] != w.user_id for u in users)
    assert w.s.a.lower() not in str(users)


def c_users_create(w: World) -> None:
    reply = w.s.client.post(
        "/api/v1/users",
        json={
            "username": "moi@b",
            "full_name": "Người mới",
            "password": "Một mật khẩu đủ dài cho B",
            "roles": ["verifier"],
        },
        headers=w.b_all,
    )
    assert reply.status_code == 201, reply.text
    assert w.s.b in str(reply.json()) and w.s.a not in str(reply.json())


def c_user_get(w: World) -> None:
    hidden(w.s.client.get(f"/api/v1/users/{w.user_id}", headers=w.b_all))


def c_user_roles(w: World) -> None:
    hidden(
        w.s.client.put(
            f"/api/v1/users/{w.user_id}/roles", json={"roles": ["admin"]}, headers=w.b_all
        )
    )


def c_user_disable(w: World) -> None:
    hidden(w.s.client.post(f"/api/v1/users/{w.user_id}/disable", headers=w.b_all))
    assert w.s.client.get("/api/v1/auth/me", headers=w.s.auth(w.s.a, "clerk")).status_code == 200


def c_user_enable(w: World) -> None:
    hidden(w.s.client.post(f"/api/v1/users/{w.user_id}/enable", headers=w.b_all))


def c_tokens_list(w: World) -> None:
    items = w.s.client.get("/api/v1/tokens", headers=w.b_all).json()["items"]
    assert all(tk["id"] != w.token_id for tk in items)


def c_tokens_create(w: World) -> None:
    b = w.s.b
    with TestClient(w.s.client.app) as client:
        csrf = login(client, username_for("admin", b), password_for("admin", b))
        made = client.post(
            "/api/v1/tokens", json={"name": "B system"}, headers={"X-CSRF-Token": csrf}
        )
        assert made.status_code == 201, made.text
        token = made.json()["token"]
    hidden(
        w.s.client.get(f"/api/v1/documents/{w.draft}", headers={"Authorization": f"Bearer {token}"})
    )


def c_token_revoke(w: World) -> None:
    hidden(w.s.client.delete(f"/api/v1/tokens/{w.token_id}", headers=w.b_all))


def c_keys(w: World) -> None:
    keys = w.s.client.get("/api/v1/keys", headers=w.b_all).json()
    assert w.s.a.lower() not in str(keys).lower()
    a_refs = w.s.services.accounts.keys_of(w.s.users[w.s.a]["official"].user_id)
    assert not any(ref in str(keys) for ref in a_refs)


def c_upload(w: World) -> None:
    s, b = w.s, w.s.b
    into_a_case = s.client.post(
        "/api/v1/documents",
        files={"file": ("x.pdf", fresh_pdf(), "application/pdf")},
        data={**META, "case": w.case},
        headers=s.auth(b, "official"),
    )
    hidden(into_a_case)
    by_id = s.client.post(
        "/api/v1/documents",
        files={"file": ("x.pdf", fresh_pdf(), "application/pdf")},
        data={**META, "case": str(w.case_id)},
        headers=s.auth(b, "official"),
    )
    hidden(by_id)
    as_a = s.client.post(
        "/api/v1/documents",
        files={"file": ("x.pdf", fresh_pdf(), "application/pdf")},
        data={**META, "agency_id": s.a},
        headers=s.auth(b, "official"),
    )
    problem(as_a, 422, "validation")
    a_bytes = s.client.get(
        f"/api/v1/documents/{w.sealed}/versions/4/content", headers=s.auth(s.a, "archivist")
    ).content
    same = s.client.post(
        "/api/v1/documents",
        files={"file": ("x.pdf", a_bytes, "application/pdf")},
        data=META,
        headers=s.auth(b, "official"),
    )
    assert same.status_code == 201, same.text  # a record of B's own, never A's
    assert same.json()["created"] and same.json()["document_id"] != w.sealed


def c_show(w: World) -> None:
    hidden(w.s.client.get(f"/api/v1/documents/{w.sealed}", headers=w.b_all))
    hidden(w.s.client.get(f"/api/v1/documents/{w.draft}", headers=w.b_all))


def c_sign(w: World) -> None:
    s, b = w.s, w.s.b
    hidden(
        s.client.post(
            f"/api/v1/documents/{w.draft}/sign",
            json={"key": s.key(b), "pin": PIN},
            headers=s.auth(b, "official"),
        )
    )


def c_prepare(w: World) -> None:
    s, b = w.s, w.s.b
    hidden(
        s.client.post(
            f"/api/v1/documents/{w.draft}/sign/prepare",
            json={"certificate": "-----BEGIN CERTIFICATE-----"},
            headers=s.auth(b, "official"),
        )
    )


def c_complete(w: World) -> None:
    s, b = w.s, w.s.b
    body = {"handle": w.handle, "signature": base64.b64encode(b"x" * 64).decode()}
    for doc in (w.draft, w.b_draft):
        hidden(
            s.client.post(
                f"/api/v1/documents/{doc}/sign/complete", json=body, headers=s.auth(b, "official")
            )
        )


def c_register(w: World) -> None:
    hidden(w.s.client.post(f"/api/v1/documents/{w.draft}/register", headers=w.b_all))


def c_seal(w: World) -> None:
    hidden(w.s.client.post(f"/api/v1/documents/{w.draft}/seal", headers=w.b_all))


def c_verify_stored(w: World) -> None:
    hidden(w.s.client.post(f"/api/v1/documents/{w.sealed}/verify", headers=w.b_all))


def c_extend(w: World) -> None:
    hidden(w.s.client.post(f"/api/v1/documents/{w.sealed}/extend", headers=w.b_all))


def c_content(w: World) -> None:
    for seq in (1, 4, 99):
        hidden(
            w.s.client.get(f"/api/v1/documents/{w.sealed}/versions/{seq}/content", headers=w.b_all)
        )


def c_report(w: World) -> None:
    hidden(w.s.client.get(f"/api/v1/documents/{w.sealed}/reports/{w.report}", headers=w.b_all))
    # B's own document id with A's report id
    hidden(w.s.client.get(f"/api/v1/documents/{w.b_draft}/reports/{w.report}", headers=w.b_all))


def c_verify_public(w: World) -> None:
    """Anyone may verify bytes they hold; it records nothing about A's documents."""
    s = w.s
    before = s.client.get(f"/api/v1/documents/{w.sealed}", headers=s.auth(s.a, "archivist"))
    reply = s.client.post(
        "/api/v1/verify",
        files={"file": ("x.pdf", fresh_pdf(), "application/pdf")},
        headers=w.b_all,
    )
    assert reply.status_code == 200
    after = s.client.get(f"/api/v1/documents/{w.sealed}", headers=s.auth(s.a, "archivist"))
    reports = [len(v["reports"]) for v in before.json()["versions"]]
    assert reports == [len(v["reports"]) for v in after.json()["versions"]]


def c_search(w: World) -> None:
    s = w.s
    for params in (
        {"number": w.number, "symbol": "QĐ-UBND"},
        {"q": "chuyển đổi"},
        {"q": "chuyen doi"},
        {"agency": s.a},
        {},
    ):
        found = s.client.get("/api/v1/search", params=params, headers=w.b_all)
        assert found.status_code == 200
        ids = [item["id"] for item in found.json()["items"]]
        assert w.sealed not in ids and w.draft not in ids, params
    hidden(s.client.get("/api/v1/search", params={"case": w.case}, headers=w.b_all))
    # A itself finds it: the filters do match
    mine = s.client.get(
        "/api/v1/search", params={"q": "chuyen doi"}, headers=s.auth(s.a, "archivist")
    )
    assert w.sealed in [item["id"] for item in mine.json()["items"]]


def c_cases_list(w: World) -> None:
    items = w.s.client.get("/api/v1/cases", headers=w.b_all).json()["items"]
    assert all(c["id"] != w.case_id and c["file_code"] != w.case for c in items)


def c_cases_create(w: World) -> None:
    made = w.s.client.post(
        "/api/v1/cases",
        json={"year": 2026, "notation": "01", "title": "Hồ sơ của B"},
        headers=w.b_all,
    )
    assert made.status_code == 201, made.text
    assert made.json()["file_code"] == f"{w.s.b}.2026.01"


def c_export(w: World) -> None:
    for fmt in ("pdf", "xml", "zip"):
        for code in (w.case, str(w.case_id)):
            hidden(w.s.client.get(f"/api/v1/cases/{code}/export?format={fmt}", headers=w.b_all))


def c_job(w: World) -> None:
    hidden(w.s.client.get(f"/api/v1/jobs/{w.job}", headers=w.b_all))


def c_jobs_list(w: World) -> None:
    reply = w.s.client.get("/api/v1/jobs", headers=w.b_all)
    assert reply.status_code == 200, reply.text
    assert w.job not in reply.text


def c_job_cancel(w: World) -> None:
    hidden(w.s.client.post(f"/api/v1/jobs/{w.job}/cancel", headers=w.b_all))


def c_job_submit(w: World) -> None:
    """B may submit a job naming A's document: it is refused, or its item fails as not
    found; it never verifies, signs or extends A's record."""
    import time

    reply = w.s.client.post(
        "/api/v1/jobs",
        json={"kind": "verify", "items": [{"document_id": w.sealed}]},
        headers=w.b_all,
    )
    if reply.status_code != 202:
        hidden(reply)
        return
    job = reply.json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = w.s.client.get(f"/api/v1/jobs/{job}", headers=w.b_all).json()
        items = status.get("items", [])
        if items and all(i.get("state") not in ("queued", "running", "retrying") for i in items):
            break
        time.sleep(0.2)
    [item] = status["items"]
    assert item["state"] != "done" and not item.get("result"), status
    from kyso.i18n import t

    assert item["error"] in {
        t("workflow.document.not_found", locale=loc, id=w.sealed) for loc in ("vi", "en")
    }, status


def c_send(w: World) -> None:
    hidden(
        w.s.client.post(
            "/api/v1/exchange/send",
            json={"document_id": w.sealed, "recipients": [w.s.a]},
            headers=w.b_all,
        )
    )
    # the same as multipart/form-data with an attachment
    hidden(
        w.s.client.post(
            "/api/v1/exchange/send",
            data={"document_id": str(w.sealed), "recipients": w.s.a},
            files=[("attachments", ("phu-luc.txt", b"x", "text/plain"))],
            headers=w.b_all,
        )
    )


def c_outbox(w: World) -> None:
    reply = w.s.client.get("/api/v1/exchange/outbox", headers=w.b_all)
    assert reply.status_code == 200
    assert all(m["id"] != w.outgoing for m in reply.json()["messages"])


def c_outgoing(w: World) -> None:
    hidden(w.s.client.get(f"/api/v1/exchange/outbox/{w.outgoing}", headers=w.b_all))


def c_receipt(w: World) -> None:
    hidden(w.s.client.get(f"/api/v1/exchange/outbox/{w.outgoing}/receipts/0", headers=w.b_all))


def c_recall(w: World) -> None:
    hidden(w.s.client.post(f"/api/v1/exchange/outbox/{w.outgoing}/recall", headers=w.b_all))


def c_requeue(w: World) -> None:
    hidden(w.s.client.post(f"/api/v1/exchange/outbox/{w.outgoing}/requeue", headers=w.b_all))


def c_inbox(w: World) -> None:
    reply = w.s.client.get("/api/v1/exchange/inbox", headers=w.b_all)
    assert reply.status_code == 200
    assert all(m["id"] != w.incoming for m in reply.json()["messages"])


def c_incoming(w: World) -> None:
    hidden(w.s.client.get(f"/api/v1/exchange/inbox/{w.incoming}", headers=w.b_all))


def c_incoming_attachment(w: World) -> None:
    path = f"/api/v1/exchange/inbox/{w.incoming}/attachments/0"
    own = w.s.client.get(path, headers=w.s.auth(w.s.a, "clerk"))
    assert own.status_code == 200 and own.content.startswith(b"%PDF"), own.text[:300]
    hidden(w.s.client.get(path, headers=w.b_all))


def c_incoming_status(w: World) -> None:
    hidden(
        w.s.client.post(
            f"/api/v1/exchange/inbox/{w.incoming}/status",
            json={"code": "03", "description": "B đã tiếp nhận?"},
            headers=w.b_all,
        )
    )


def c_peer_inbox(w: World) -> None:
    """Other instances post edXML here, authenticated by the message's XML signature: an
    unsigned message addressed to A is refused and lands in nobody's inbox."""
    before = w.s.client.get("/api/v1/exchange/inbox", headers=w.s.auth(w.s.a, "clerk")).json()
    reply = w.s.client.post(
        f"/api/v1/exchange/inbox?to={w.s.a}",
        content=b"<?xml version='1.0'?><edXMLEnvelope/>",
        headers={"Content-Type": "application/xml"},
    )
    assert reply.status_code != 500
    after = w.s.client.get("/api/v1/exchange/inbox", headers=w.s.auth(w.s.a, "clerk")).json()
    assert len(after["messages"]) == len(before["messages"])


def c_peer_status(w: World) -> None:
    """A status message must be signed by the peer: a forged one changes nothing of A's."""
    a = w.s.auth(w.s.a, "clerk")
    before = w.s.client.get(f"/api/v1/exchange/outbox/{w.outgoing}", headers=a).json()
    reply = w.s.client.post(
        "/api/v1/exchange/status",
        content=b"<?xml version='1.0'?><Status/>",
        headers={"Content-Type": "application/xml"},
    )
    assert 400 <= reply.status_code < 500, reply.text
    after = w.s.client.get(f"/api/v1/exchange/outbox/{w.outgoing}", headers=a).json()
    assert after == before


CHECKS: dict[tuple[str, str], Callable[[World], None]] = {
    ("POST", "/api/v1/jobs"): c_job_submit,
    ("GET", "/api/v1/jobs"): c_jobs_list,
    ("GET", "/api/v1/jobs/{job_id}"): c_job,
    ("POST", "/api/v1/jobs/{job_id}/cancel"): c_job_cancel,
    ("POST", "/api/v1/exchange/send"): c_send,
    ("GET", "/api/v1/exchange/outbox"): c_outbox,
    ("GET", "/api/v1/exchange/outbox/{message_id}"): c_outgoing,
    ("GET", "/api/v1/exchange/outbox/{message_id}/receipts/{index}"): c_receipt,
    ("POST", "/api/v1/exchange/outbox/{message_id}/recall"): c_recall,
    ("POST", "/api/v1/exchange/outbox/{message_id}/requeue"): c_requeue,
    ("GET", "/api/v1/exchange/inbox"): c_inbox,
    ("POST", "/api/v1/exchange/inbox"): c_peer_inbox,
    ("GET", "/api/v1/exchange/inbox/{message_id}"): c_incoming,
    ("GET", "/api/v1/exchange/inbox/{message_id}/attachments/{index}"): c_incoming_attachment,
    ("POST", "/api/v1/exchange/inbox/{message_id}/status"): c_incoming_status,
    ("POST", "/api/v1/exchange/status"): c_peer_status,
    ("POST", "/api/v1/auth/login"): c_login,
    ("POST", "/api/v1/auth/logout"): c_logout,
    ("GET", "/api/v1/auth/me"): c_me,
    ("GET", "/api/v1/agencies/me"): c_agency,
    ("GET", "/api/v1/users"): c_users_list,
    ("POST", "/api/v1/users"): c_users_create,
    ("GET", "/api/v1/users/{user_id}"): c_user_get,
    ("PUT", "/api/v1/users/{user_id}/roles"): c_user_roles,
    ("POST", "/api/v1/users/{user_id}/disable"): c_user_disable,
    ("POST", "/api/v1/users/{user_id}/enable"): c_user_enable,
    ("GET", "/api/v1/tokens"): c_tokens_list,
    ("POST", "/api/v1/tokens"): c_tokens_create,
    ("DELETE", "/api/v1/tokens/{token_id}"): c_token_revoke,
    ("GET", "/api/v1/keys"): c_keys,
    ("POST", "/api/v1/documents"): c_upload,
    ("GET", "/api/v1/documents/{document_id}"): c_show,
    ("POST", "/api/v1/documents/{document_id}/sign"): c_sign,
    ("POST", "/api/v1/documents/{document_id}/sign/prepare"): c_prepare,
    ("POST", "/api/v1/documents/{document_id}/sign/complete"): c_complete,
    ("POST", "/api/v1/documents/{document_id}/register"): c_register,
    ("POST", "/api/v1/documents/{document_id}/seal"): c_seal,
    ("POST", "/api/v1/documents/{document_id}/verify"): c_verify_stored,
    ("POST", "/api/v1/documents/{document_id}/extend"): c_extend,
    ("GET", "/api/v1/documents/{document_id}/versions/{seq}/content"): c_content,
    ("GET", "/api/v1/documents/{document_id}/reports/{report_id}"): c_report,
    ("POST", "/api/v1/verify"): c_verify_public,
    ("GET", "/api/v1/search"): c_search,
    ("GET", "/api/v1/cases"): c_cases_list,
    ("POST", "/api/v1/cases"): c_cases_create,
    ("GET", "/api/v1/cases/{code}/export"): c_export,
}


def api_routes(app: Any) -> set[tuple[str, str]]:
    """Every (method, path) under /api/v1 the app serves: its routes, walked through included
    routers, and its OpenAPI schema."""
    found: set[tuple[str, str]] = set()

    def walk(routes: Any) -> None:
        for route in routes:
            nested = getattr(route, "effective_candidates", None)
            if callable(nested):
                walk(nested())
                continue
            if hasattr(route, "routes") and not hasattr(route, "methods"):
                walk(route.routes)
                continue
            path = getattr(route, "path", None) or ""
            for method in getattr(route, "methods", None) or ():
                if path.startswith("/api/v1") and method != "HEAD":
                    found.add((method, path))

    walk(app.routes)
    for path, operations in app.openapi()["paths"].items():
        if path.startswith("/api/v1"):
            found.update((m.upper(), path) for m in operations)
    return found


def test_every_api_route_is_tried(world: World) -> None:
    routes = api_routes(world.s.client.app)
    assert len(routes) >= 20  # the walk found the app's routes at all
    missing = sorted(routes - set(CHECKS))
    assert not missing, f"add a tenancy check for: {missing}"


@pytest.mark.parametrize("route", sorted(CHECKS), ids=lambda r: f"{r[0]} {r[1]}")
def test_agency_b_cannot_reach_agency_a(world: World, route: tuple[str, str]) -> None:
    CHECKS[route](world)


def test_a_still_sees_its_own_records(world: World) -> None:
    s = world.s
    a = s.auth(s.a, "archivist")
    assert s.client.get(f"/api/v1/documents/{world.sealed}", headers=a).status_code == 200
    content = s.client.get(f"/api/v1/documents/{world.sealed}/versions/4/content", headers=a)
    assert content.status_code == 200
    import hashlib

    assert hashlib.sha256(content.content).hexdigest() == world.sealed_sha
    export = s.client.get(f"/api/v1/cases/{world.case}/export?format=xml", headers=a)
    assert export.status_code == 200
