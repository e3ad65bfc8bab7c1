"""A whole service for the document API tests: a built-in PKI, a catalogue (SQLite, or a
schema of its own on the real PostgreSQL), an object store (local, or a bucket on the moto S3
server), two agencies with one user per role (A's official with a personal key, both agencies
with a seal key), API tokens, and the FastAPI app in a TestClient."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from kyso.api.app import create_app
from kyso.api.principal import Principal
from kyso.api.services import Services
from kyso.archive.catalog import Catalog
from tests.api.service_helpers import PIN, bearer, make_agency_with_users
from tests.conftest import make_settings
from tests.signer.helpers import make_pdf

META = {
    "type": "Quyết định",
    "subject": "Quyết định về việc phê duyệt kế hoạch chuyển đổi số năm 2026",
    "symbol": "QĐ-UBND",
    "place": "Hà Nội",
    "signer": "Nguyễn Văn An",
    "position": "Chủ tịch",
}


@dataclass
class Stack:
    services: Services
    client: TestClient
    codes: tuple[str, str]
    users: dict[str, dict[str, Principal]]
    _headers: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    @property
    def a(self) -> str:
        return self.codes[0]

    @property
    def b(self) -> str:
        return self.codes[1]

    def auth(self, agency: str, role: str) -> dict[str, str]:
        """Bearer headers of ``role``'s user in ``agency`` (one token per user, cached)."""
        key = (agency, role)
        if key not in self._headers:
            self._headers[key] = bearer(self.services, self.users[agency][role])
        return self._headers[key]

    def key(self, agency: str) -> str:
        [ref] = self.services.accounts.keys_of(self.users[agency]["official"].user_id)
        return ref

    def upload(self, agency: str, *, data: bytes | None = None, **fields: Any) -> dict[str, Any]:
        """A fresh draft uploaded by ``agency``'s official (201 expected)."""
        body = data if data is not None else fresh_pdf()
        reply = self.client.post(
            "/api/v1/documents",
            files={"file": ("du-thao.pdf", body, "application/pdf")},
            data={**META, **fields},
            headers=self.auth(agency, "official"),
        )
        assert reply.status_code == 201, reply.text
        result: dict[str, Any] = reply.json()
        return result

    def sign(self, agency: str, doc: int, level: str = "B-B") -> dict[str, Any]:
        reply = self.client.post(
            f"/api/v1/documents/{doc}/sign",
            json={"key": self.key(agency), "pin": PIN, "level": level},
            headers=self.auth(agency, "official"),
        )
        assert reply.status_code == 200, reply.text
        result: dict[str, Any] = reply.json()
        return result

    def to_stage(self, agency: str, stage: str) -> int:
        """A document of ``agency`` brought to ``stage`` (draft ... sealed) over HTTP."""
        doc = int(self.upload(agency)["document_id"])
        steps = ["person_signed", "registered", "sealed"]
        for step in steps[: steps.index(stage) + 1] if stage != "draft" else []:
            if step == "person_signed":
                self.sign(agency, doc)
            else:
                path = "register" if step == "registered" else "seal"
                reply = self.client.post(
                    f"/api/v1/documents/{doc}/{path}", headers=self.auth(agency, "clerk")
                )
                assert reply.status_code == 200, reply.text
        return doc


def fresh_pdf(pages: int = 1) -> bytes:
    """A small PDF with bytes of its own (the archive de-duplicates by content)."""
    return make_pdf(pages) + f"\n% {uuid.uuid4().hex}\n".encode()


def postgres_url() -> str:
    url = os.environ.get("KYSO_TEST_POSTGRES_URL")
    if not url:
        pytest.fail("KYSO_TEST_POSTGRES_URL is not set (run the tests through .ci/run)")
    return url


@contextmanager
def stack(
    root: Path,
    *,
    catalog: str = "sqlite",
    s3_url: str | None = None,
    codes: tuple[str, str] = ("000.00.00.H41", "000.00.00.H42"),
    **settings: Any,
) -> Iterator[Stack]:
    """The service on ``catalog`` (``sqlite`` or ``postgresql``) and a local store, or the S3
    bucket ``s3_url`` names."""
    services = Services(
        make_settings(root, ca_key_type="ec-p256", archive_verify_offline=True, **settings)
    )
    services.ensure_pki()
    admin: sa.Engine | None = None
    schema = None
    if catalog == "postgresql":
        url = postgres_url()
        schema = f"kyso_test_{uuid.uuid4().hex[:12]}"
        admin = Catalog(url).engine
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        pg = Catalog(url, schema=schema)
        pg.migrate()
        services.__dict__["catalog"] = pg
    if s3_url is not None:
        from kyso.archive.storage import S3Store, open_store

        store = open_store(s3_url)
        assert isinstance(store, S3Store)
        store.ensure_bucket()
        services.__dict__["store"] = store
    try:
        users: dict[str, dict[str, Principal]] = {}
        for code in codes:
            made = make_agency_with_users(services, code, seal_key=True, personal_key=True)
            users[code] = {role: p for role, (p, _) in made.items()}
        with TestClient(create_app(services=services)) as client:
            yield Stack(services=services, client=client, codes=codes, users=users)
    finally:
        services.catalog.close()
        if admin is not None:
            with admin.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()


def problem(reply: Any, status: int, slug: str) -> dict[str, Any]:
    """Assert ``reply`` is an RFC 9457 problem of ``status`` and type ``slug``."""
    assert reply.status_code == status, (reply.status_code, reply.text)
    assert reply.headers["content-type"].startswith("application/problem+json"), reply.headers
    body: dict[str, Any] = reply.json()
    assert body["type"].endswith("/" + slug), body
    assert body["status"] == status
    return body
