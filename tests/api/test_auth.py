"""Logging in over HTTP, sessions and API tokens, CSRF, roles, tenancy, on SQLite and on the
real PostgreSQL (a schema of this module's own)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kyso.api.app import create_app
from kyso.api.auth import SESSION_COOKIE
from kyso.api.principal import Principal
from kyso.api.services import Services
from kyso.archive.models import AuditEvent
from tests.api.service_helpers import (
    FAST_HASHER,
    bearer,
    catalog_on,
    csrf_headers,
    login,
    make_agency_with_users,
    make_user,
    with_catalog,
)
from tests.conftest import make_settings

Users = dict[str, tuple[Principal, str]]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def services(
    request: pytest.FixtureRequest,
    dev_services: Services,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Services]:
    with catalog_on(request.param, tmp_path_factory.mktemp("auth")) as catalog:
        services = Services(make_settings(dev_services.settings.data_dir))
        with_catalog(services, catalog).accounts.hasher = FAST_HASHER
        yield services


@pytest.fixture(scope="module")
def app(services: Services) -> FastAPI:
    return create_app(services=services)


@pytest.fixture(scope="module")
def agency_a(services: Services) -> Users:
    return make_agency_with_users(services, "000.00.00.A11", seal_key=True)


@pytest.fixture(scope="module")
def agency_b(services: Services) -> Users:
    return make_agency_with_users(services, "B22.01")


def client(app: FastAPI) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


def problem(reply: Any, status: int, slug: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert reply.json()["type"].endswith("/" + slug)
    assert reply.json()["title"] != f"problem.{slug}"  # a translated title


# -- login, logout, me --------------------------------------------------------------------------


def test_login_sets_a_safe_cookie_and_answers_who(
    app: FastAPI, agency_a: Users, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    official, password = agency_a["official"]
    c = client(app)
    reply = c.post("/api/v1/auth/login", json={"username": official.username, "password": password})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["user"]["username"] == official.username
    assert body["agency"]["code"] == "000.00.00.A11"
    assert body["roles"] == ["official"]
    assert body["csrf_token"]
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert "Secure" not in cookie  # development: cookie_secure defaults to off
    assert "Max-Age=28800" in cookie
    me = c.get("/api/v1/auth/me").json()
    assert me["user"]["id"] == official.user_id and me["csrf_token"] == body["csrf_token"]
    assert all(password not in r.getMessage() for r in caplog.records)


def test_secure_cookie_when_configured(services: Services, agency_a: Users) -> None:
    secure = Services(make_settings(services.settings.data_dir, cookie_secure=True))
    with_catalog(secure, services.catalog).accounts.hasher = FAST_HASHER
    official, password = agency_a["official"]
    reply = client(create_app(services=secure)).post(
        "/api/v1/auth/login", json={"username": official.username, "password": password}
    )
    assert reply.status_code == 200
    assert "Secure" in reply.headers["set-cookie"]


def test_wrong_credentials_are_one_401(app: FastAPI, agency_a: Users) -> None:
    official, password = agency_a["official"]
    c = client(app)
    wrong = c.post("/api/v1/auth/login", json={"username": official.username, "password": "x"})
    unknown = c.post("/api/v1/auth/login", json={"username": "nobody", "password": password})
    problem(wrong, 401, "unauthenticated")
    problem(unknown, 401, "unauthenticated")
    assert wrong.json()["detail"] == unknown.json()["detail"]
    assert SESSION_COOKIE not in c.cookies
    problem(c.post("/api/v1/auth/login", json={"username": "a"}), 422, "validation")
    # a cross-site form cannot log in: only JSON is accepted
    form = c.post("/api/v1/auth/login", data={"username": official.username, "password": password})
    assert form.status_code == 422


def test_lockout_after_failures(app: FastAPI, services: Services) -> None:
    users = make_agency_with_users(services, "C33.01", roles=["verifier"])
    verifier, password = users["verifier"]
    c = client(app)
    for _ in range(services.accounts.max_failures):
        reply = c.post(
            "/api/v1/auth/login", json={"username": verifier.username, "password": "bad"}
        )
        problem(reply, 401, "unauthenticated")
    reply = c.post("/api/v1/auth/login", json={"username": verifier.username, "password": password})
    problem(reply, 429, "rate-limited")


def test_logout_ends_the_session_server_side(app: FastAPI, agency_a: Users) -> None:
    clerk, password = agency_a["clerk"]
    c = client(app)
    csrf = login(c, clerk.username, password)
    stolen = c.cookies[SESSION_COOKIE]
    problem(c.post("/api/v1/auth/logout"), 403, "csrf")  # logout is a cookie POST too
    assert c.post("/api/v1/auth/logout", headers=csrf_headers(csrf)).status_code == 204
    problem(c.get("/api/v1/auth/me"), 401, "unauthenticated")
    replay = client(app)
    replay.cookies.set(SESSION_COOKIE, stolen)
    problem(replay.get("/api/v1/auth/me"), 401, "unauthenticated")


def test_a_forged_cookie_is_no_session(app: FastAPI, agency_a: Users) -> None:
    clerk, password = agency_a["clerk"]
    c = client(app)
    login(c, clerk.username, password)
    value = c.cookies[SESSION_COOKIE]
    session_id, _, signature = value.rpartition(".")
    forged = client(app)
    forged.cookies.set(SESSION_COOKIE, f"{session_id}.{'A' * len(signature)}")
    problem(forged.get("/api/v1/auth/me"), 401, "unauthenticated")
    bare = client(app)
    bare.cookies.set(SESSION_COOKIE, session_id)
    problem(bare.get("/api/v1/auth/me"), 401, "unauthenticated")


# -- CSRF ---------------------------------------------------------------------------------------


def test_csrf_is_enforced_on_cookie_posts_only(
    app: FastAPI, services: Services, agency_a: Users
) -> None:
    official, password = agency_a["official"]
    c = client(app)
    csrf = login(c, official.username, password)
    problem(c.post("/api/v1/tokens", json={"name": "no csrf"}), 403, "csrf")
    problem(
        c.post("/api/v1/tokens", json={"name": "bad"}, headers=csrf_headers(csrf + "x")),
        403,
        "csrf",
    )
    made = c.post("/api/v1/tokens", json={"name": "with csrf"}, headers=csrf_headers(csrf))
    assert made.status_code == 201, made.text
    # the form field works as well as the header
    reply = c.request(
        "DELETE",
        f"/api/v1/tokens/{made.json()['id']}",
        data={"csrf_token": csrf},
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert reply.status_code == 204, reply.text
    # a Bearer request needs no CSRF token (and a browser never sends one by itself)
    headers = bearer(services, official)
    other_id, _ = services.accounts.create_token(official.user_id, "other", actor="test")
    assert client(app).delete(f"/api/v1/tokens/{other_id}", headers=headers).status_code == 204


def test_a_bad_bearer_token_is_401_even_with_a_cookie(app: FastAPI, agency_a: Users) -> None:
    official, password = agency_a["official"]
    c = client(app)
    login(c, official.username, password)
    for value in ("Bearer kyso_1_" + "x" * 43, "Bearer nonsense", "Basic Zm9vOmJhcg=="):
        problem(c.get("/api/v1/auth/me", headers={"Authorization": value}), 401, "unauthenticated")


# -- tokens -------------------------------------------------------------------------------------


def test_token_revocation_is_effective_at_once(
    app: FastAPI, services: Services, agency_a: Users
) -> None:
    archivist, password = agency_a["archivist"]
    c = client(app)
    csrf = login(c, archivist.username, password)
    made = c.post("/api/v1/tokens", json={"name": "sync"}, headers=csrf_headers(csrf)).json()
    token = made["token"]
    assert token.startswith("kyso_") and made["roles"] == ["archivist"]
    system = client(app)
    auth = {"Authorization": f"Bearer {token}"}
    me = system.get("/api/v1/auth/me", headers=auth).json()
    assert me["via"] == "token" and me["token_id"] == made["id"] and me["csrf_token"] is None
    listed = c.get("/api/v1/tokens").json()["items"]
    assert [t["id"] for t in listed] == [made["id"]]
    assert listed[0]["last_used_at"] is not None
    assert "token" not in listed[0] and token not in str(listed)
    # a token cannot mint tokens
    problem(system.post("/api/v1/tokens", json={"name": "child"}, headers=auth), 403, "forbidden")
    assert c.delete(f"/api/v1/tokens/{made['id']}", headers=csrf_headers(csrf)).status_code == 204
    problem(system.get("/api/v1/auth/me", headers=auth), 401, "unauthenticated")
    with services.catalog.session() as s:
        rows = list(s.scalars(sa.select(AuditEvent)))
    assert any(r.action == "token.revoke" and r.actor == archivist.actor for r in rows)
    assert all(token not in r.details_json and token not in r.actor for r in rows)


def test_tokens_carry_a_subset_of_roles(app: FastAPI, services: Services) -> None:
    make_agency_with_users(services, "D44.01", roles=["admin"])
    both, password = make_user(services, "D44.01", "boss-d44", ["official", "admin"])
    c = client(app)
    csrf = login(c, both.username, password)
    problem(
        c.post(
            "/api/v1/tokens",
            json={"name": "x", "roles": ["archivist"]},
            headers=csrf_headers(csrf),
        ),
        422,
        "validation",
    )
    made = c.post(
        "/api/v1/tokens", json={"name": "x", "roles": ["official"]}, headers=csrf_headers(csrf)
    ).json()
    auth = {"Authorization": f"Bearer {made['token']}"}
    problem(client(app).get("/api/v1/users", headers=auth), 403, "forbidden")
    assert c.get("/api/v1/users").status_code == 200  # the session keeps every role


def test_only_own_tokens_unless_admin(app: FastAPI, services: Services, agency_a: Users) -> None:
    official, clerk, admin = agency_a["official"][0], agency_a["clerk"][0], agency_a["admin"][0]
    token_id, _ = services.accounts.create_token(official.user_id, "mine", actor="test")
    problem(
        client(app).delete(f"/api/v1/tokens/{token_id}", headers=bearer(services, clerk)),
        404,
        "not-found",
    )
    admin_headers = bearer(services, admin)
    ids = {
        t["id"] for t in client(app).get("/api/v1/tokens", headers=admin_headers).json()["items"]
    }
    assert token_id in ids
    reply = client(app).delete(f"/api/v1/tokens/{token_id}", headers=admin_headers)
    assert reply.status_code == 204
    assert services.accounts.get_token(token_id, agency=official.agency).revoked_at is not None


# -- roles and tenancy --------------------------------------------------------------------------


def test_roles_are_checked(app: FastAPI, services: Services, agency_a: Users) -> None:
    problem(client(app).get("/api/v1/users"), 401, "unauthenticated")
    for role in ("official", "clerk", "verifier", "archivist"):
        headers = bearer(services, agency_a[role][0])
        problem(client(app).get("/api/v1/users", headers=headers), 403, "forbidden")
        assert client(app).get("/api/v1/agencies/me", headers=headers).status_code == 200
    admin = bearer(services, agency_a["admin"][0])
    users = client(app).get("/api/v1/users", headers=admin).json()["items"]
    assert {u["agency"] for u in users} == {"000.00.00.A11"}
    assert all("password" not in str(u) and "hash" not in str(u) for u in users)


def test_admin_manages_users_of_their_agency(
    app: FastAPI, services: Services, agency_a: Users
) -> None:
    admin, password = agency_a["admin"]
    c = client(app)
    csrf = login(c, admin.username, password)
    h = csrf_headers(csrf)
    weak = {"username": "le.chi", "full_name": "Lê Chi", "password": "123", "roles": ["clerk"]}
    problem(c.post("/api/v1/users", json=weak, headers=h), 422, "validation")
    body = {**weak, "password": "Một mật khẩu tốt 2026", "roles": ["clerk"], "pin": "975310"}
    created = c.post("/api/v1/users", json=body, headers=h)
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["agency"] == "000.00.00.A11" and user["has_pin"] is True
    problem(c.post("/api/v1/users", json=body, headers=h), 409, "conflict")
    newcomer = client(app)
    login(newcomer, "le.chi", "Một mật khẩu tốt 2026")
    reply = c.put(f"/api/v1/users/{user['id']}/roles", json={"roles": ["archivist"]}, headers=h)
    assert reply.json()["roles"] == ["archivist"]
    assert newcomer.get("/api/v1/auth/me").json()["roles"] == ["archivist"]  # at once
    problem(
        c.put(f"/api/v1/users/{user['id']}/roles", json={"roles": ["root"]}, headers=h),
        422,
        "validation",
    )
    assert c.post(f"/api/v1/users/{user['id']}/disable", headers=h).json()["disabled"] is True
    problem(newcomer.get("/api/v1/auth/me"), 401, "unauthenticated")
    problem(c.post(f"/api/v1/users/{admin.user_id}/disable", headers=h), 409, "conflict")
    assert c.post(f"/api/v1/users/{user['id']}/enable", headers=h).json()["disabled"] is False


def test_another_agency_is_404(
    app: FastAPI, services: Services, agency_a: Users, agency_b: Users
) -> None:
    admin_a = bearer(services, agency_a["admin"][0])
    official_b = agency_b["official"][0]
    token_b, _ = services.accounts.create_token(official_b.user_id, "b's", actor="test")
    c = client(app)
    missing = c.get("/api/v1/users/999999", headers=admin_a)
    problem(missing, 404, "not-found")
    for method, path, body in (
        ("GET", f"/api/v1/users/{official_b.user_id}", None),
        ("PUT", f"/api/v1/users/{official_b.user_id}/roles", {"roles": ["clerk"]}),
        ("POST", f"/api/v1/users/{official_b.user_id}/disable", None),
        ("DELETE", f"/api/v1/tokens/{token_b}", None),
    ):
        reply = c.request(method, path, json=body, headers=admin_a)
        problem(reply, 404, "not-found")
    assert services.accounts.get_user(official_b.user_id).roles == ("official",)
    assert not services.accounts.get_user(official_b.user_id).disabled
    assert services.accounts.get_token(token_b, agency="B22.01").revoked_at is None
    ids = {t["id"] for t in c.get("/api/v1/tokens", headers=admin_a).json()["items"]}
    assert token_b not in ids
    me = c.get("/api/v1/agencies/me", headers=admin_a).json()
    assert me["code"] == "000.00.00.A11" and me["seal_key"]


def test_keys_listing(app: FastAPI, services: Services, agency_a: Users) -> None:
    official = agency_a["official"][0]
    services.accounts.bind_key(official.user_id, "pkcs11:token=t;object=a11-official", actor="t")
    mine = client(app).get("/api/v1/keys", headers=bearer(services, official)).json()
    assert mine["seal_key"] == services.accounts.agency_key("000.00.00.A11")
    assert [b["key"] for b in mine["bindings"]] == ["pkcs11:token=t;object=a11-official"]
    assert mine["bindings"][0]["kind"] == "pkcs11"
    clerk = client(app).get("/api/v1/keys", headers=bearer(services, agency_a["clerk"][0]))
    assert clerk.json()["bindings"] == []
    admin = client(app).get("/api/v1/keys", headers=bearer(services, agency_a["admin"][0]))
    assert len(admin.json()["bindings"]) == 1
