"""Helpers for the service's tests: agencies with one user per role, logging in, API tokens,
keys bound to users.

Typical use (any test with a :class:`~kyso.api.services.Services` on a built-in PKI)::

    users = make_agency_with_users(services, "000.00.00.H41", seal_key=True, personal_key=True)
    official, password = users["official"]
    with TestClient(create_app(services=services)) as client:
        csrf = login(client, official.username, password)          # cookie session
        client.post("/api/v1/...", headers={"X-CSRF-Token": csrf}, ...)
        client.get("/api/v1/...", headers=bearer(services, official))  # API token

Agency codes and usernames are unique per catalogue: on the shared ``dev_services`` use
:func:`fresh_code`, or give the test its own catalogue (:func:`catalog_on` + :func:`with_catalog`,
on SQLite or PostgreSQL). Passwords are hashed with cheap argon2 parameters here
(:func:`fast_accounts`), so creating users costs milliseconds; the service itself keeps
argon2-cffi's defaults.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from kyso.api.accounts import AccountStore, issue_personal_key
from kyso.api.principal import ROLES, Principal
from kyso.api.services import Services
from kyso.archive.catalog import Catalog

#: Every test user's signing PIN (the PIN of the personal keys issued here).
PIN = "246810"
ACTOR = "test:setup"
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
_CODES = iter(range(10, 10_000))


@contextmanager
def catalog_on(kind: str, folder: Path) -> Iterator[Catalog]:
    """A migrated catalogue on an empty database of ``kind``: ``sqlite`` (a file in
    ``folder``) or ``postgresql`` (a fresh schema on KYSO_TEST_POSTGRES_URL, dropped afterwards;
    the test fails when the variable is missing)."""
    if kind == "sqlite":
        catalog = Catalog(f"sqlite:///{folder / f'catalog-{uuid.uuid4().hex[:8]}.sqlite3'}")
        try:
            catalog.migrate()
            yield catalog
        finally:
            catalog.close()
        return
    base = os.environ.get("KYSO_TEST_POSTGRES_URL")
    if not base:
        pytest.fail("KYSO_TEST_POSTGRES_URL is not set (run the tests through .ci/run)")
    schema = f"kyso_test_{uuid.uuid4().hex[:12]}"
    admin = Catalog(base).engine
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    catalog = Catalog(base, schema=schema)
    try:
        catalog.migrate()
        yield catalog
    finally:
        catalog.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def with_catalog(services: Services, catalog: Catalog) -> Services:
    """``services`` working on ``catalog`` (e.g. from :func:`catalog_on`) instead of the one
    its settings name."""
    services.__dict__["catalog"] = catalog
    services.__dict__.pop("accounts", None)
    return services


def fast_accounts(services: Services) -> AccountStore:
    """``services.accounts`` with cheap argon2 parameters (tests only)."""
    accounts = services.accounts
    if accounts.hasher is not FAST_HASHER:
        accounts.hasher = FAST_HASHER
        accounts.__dict__.pop("_dummy_hash", None)
    return accounts


def fresh_code() -> str:
    """An agency code no other test uses (``T<6 hex>.01``): the session's ``dev_services``
    catalogue is shared by every test module, and agency codes and usernames are unique in it."""
    return f"T{uuid.uuid4().hex[:6].upper()}.01"


def username_for(role: str, code: str) -> str:
    """The username :func:`make_agency_with_users` gives the user of ``role`` in ``code``."""
    return f"{role}-{code.lower()}"


def password_for(role: str, code: str) -> str:
    return f"Mật khẩu {role} {code} đủ dài!"


def make_agency_with_users(
    services: Services,
    code: str,
    *,
    name: str | None = None,
    roles: Iterable[str] = ROLES,
    seal_key: bool = False,
    personal_key: bool = False,
    pin: str = PIN,
) -> dict[str, tuple[Principal, str]]:
    """Create agency ``code`` with one user per role (username ``<role>-<code lower>``):
    ``{role: (principal, password)}``. The principals are session principals with their one
    role; every user has ``pin`` as signing PIN.

    ``seal_key``: issue the agency an organisation certificate from the built-in PKI and make
    it the agency's seal key. ``personal_key``: issue the official a personal key (PKCS#12
    encrypted with ``pin``, bound to them; its reference is in
    ``services.accounts.keys_of(official.user_id)``)."""
    accounts = fast_accounts(services)
    name = name or f"Cơ quan thử nghiệm {code}"
    accounts.create_agency(code, name, actor=ACTOR)
    if seal_key:
        make_seal_key(services, code, name)
    users: dict[str, tuple[Principal, str]] = {}
    for role in roles:
        username = username_for(role, code)
        password = password_for(role, code)
        user_id = accounts.create_user(
            code,
            username,
            f"Người dùng {role} {code}",
            password=password,
            roles=[role],
            pin=pin,
            actor=ACTOR,
        )
        users[role] = (accounts.principal_for_user(user_id), password)
    if personal_key and "official" in users:
        issue_key(services, users["official"][0], pin=pin)
    return users


def make_user(
    services: Services,
    code: str,
    username: str,
    roles: Iterable[str],
    *,
    password: str = "Một mật khẩu khác đủ dài",
    pin: str | None = PIN,
) -> tuple[Principal, str]:
    """One more user of an existing agency, with several roles if wanted."""
    accounts = fast_accounts(services)
    user_id = accounts.create_user(
        code,
        username,
        f"Người dùng {username}",
        password=password,
        roles=roles,
        pin=pin,
        actor=ACTOR,
    )
    return accounts.principal_for_user(user_id), password


def make_seal_key(services: Services, code: str, name: str) -> str:
    """Issue an organisation certificate (server file store) and make it ``code``'s seal key;
    returns its key reference."""
    from kyso.certs import identity
    from kyso.certs.keys import slug_label

    issued = services.pki.issue(
        kind="org",
        subject=identity.organisation_subject(name, ids=[f"MST:01{next(_CODES):08d}"]),
        label=slug_label(f"seal-{code}-{uuid.uuid4().hex[:6]}"),
        key_type="ec-p256",
        public_url=services.settings.public_url,
        actor=ACTOR,
    )
    services.accounts.set_agency_key(code, issued.key_uri, actor=ACTOR)
    return issued.key_uri


def issue_key(services: Services, principal: Principal, *, pin: str = PIN) -> str:
    """Issue ``principal`` a personal key (PIN-encrypted PKCS#12, bound to them); returns its
    key reference (``personal:<label>``)."""
    issued = issue_personal_key(
        services,
        principal.user_id,
        pin=pin,
        ids=[f"CCCD:0010900{next(_CODES):05d}"],
        title="Chánh Văn phòng",
        key_type="ec-p256",
        actor=ACTOR,
    )
    return issued.key_uri


def login(client: Any, username: str, password: str) -> str:
    """Log ``client`` (a TestClient) in with a password: the session cookie stays in the
    client; returns the CSRF token to send as ``X-CSRF-Token`` on unsafe requests."""
    reply = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["csrf_token"])


def bearer(
    services: Services, principal: Principal, *, roles: Iterable[str] | None = None
) -> dict[str, str]:
    """Headers authenticating as ``principal`` with a fresh API token (its roles by default)."""
    _, token = services.accounts.create_token(
        principal.user_id,
        "test token",
        roles=list(roles) if roles is not None else sorted(principal.roles),
        actor=ACTOR,
    )
    return {"Authorization": f"Bearer {token}"}


def csrf_headers(csrf: str) -> dict[str, str]:
    return {"X-CSRF-Token": csrf}


__all__ = [
    "ACTOR",
    "FAST_HASHER",
    "PIN",
    "bearer",
    "catalog_on",
    "csrf_headers",
    "fast_accounts",
    "fresh_code",
    "issue_key",
    "login",
    "make_agency_with_users",
    "make_seal_key",
    "make_user",
    "password_for",
    "username_for",
    "with_catalog",
]
