"""Two kyso instances on loopback for the exchange service's tests.

Instance A: SQLite catalogue, its own data directory, PKI and object store; agencies H41 and
H43.  Instance B: a schema of its own on the real PostgreSQL, its own data directory, PKI and
store; agency H42.  Each serves the whole app with uvicorn in a thread of this process on its
own port (stopped and restarted by the tests), trusts the other's root (``kyso trust add``)
and knows the other's agency as a peer (endpoint and seal certificate).  Deliveries are not
dispatched in the background (``dispatch="none"``): the tests run them, as beat would.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from cryptography.hazmat.primitives.serialization import Encoding

from kyso.api import exchange, workflow
from kyso.api.app import create_app
from kyso.api.principal import Principal
from kyso.api.services import Services
from kyso.archive.catalog import Catalog
from tests.api.service_helpers import PIN, bearer, make_agency_with_users
from tests.conftest import free_port, make_settings
from tests.signer.helpers import make_pdf

A1 = "000.00.00.H41"
A2 = "000.00.00.H43"
B1 = "000.00.00.H42"

META = {
    "type": "Công văn",
    "subject": "Về việc triển khai trao đổi văn bản điện tử giữa các cơ quan",
    "symbol": "UBND-VP",
    "place": "Hà Nội",
    "signer": "Nguyễn Văn An",
    "position": "Chủ tịch",
}


class Server:
    """uvicorn in a thread, serving ``create_app(services)`` on ``port``."""

    def __init__(self, services: Services, port: int) -> None:
        self.services = services
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        config = uvicorn.Config(
            create_app(services=self.services),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(15)
        self._server = None
        self._thread = None


@dataclass
class Instance:
    name: str
    services: Services
    server: Server
    users: dict[str, dict[str, Principal]]
    _headers: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def user(self, agency: str, role: str) -> Principal:
        return self.users[agency][role]

    def auth(self, agency: str, role: str) -> dict[str, str]:
        key = (agency, role)
        if key not in self._headers:
            self._headers[key] = bearer(self.services, self.users[agency][role])
        return self._headers[key]

    def api(self, method: str, path: str, agency: str, role: str, **kw: Any) -> httpx.Response:
        return httpx.request(
            method, f"{self.url}/api/v1/exchange{path}", headers=self.auth(agency, role), **kw
        )

    def sealed_document(self, agency: str, **fields: Any) -> int:
        """A fresh document of ``agency``: uploaded, signed, registered, sealed (B-LT)."""
        services = self.services
        official = self.user(agency, "official")
        clerk = self.user(agency, "clerk")
        path = services.settings.data_dir / f"upload-{uuid.uuid4().hex}.pdf"
        path.write_bytes(make_pdf(1) + f"\n% {uuid.uuid4().hex}\n".encode())
        doc = workflow.upload(services, official, path, {**META, **fields}).document_id
        [key] = services.accounts.keys_of(official.user_id)
        workflow.sign_as_person(services, official, doc, key=key, pin=PIN, level="B-B")
        workflow.register(services, clerk, doc)
        workflow.seal(services, clerk, doc, level="B-LT")
        return doc

    def seal_certificate_pem(self, agency: str) -> str:
        ref = self.services.accounts.agency_key(agency)
        assert ref is not None
        cert = self.services.keys.resolve(ref).certificate
        return cert.public_bytes(Encoding.PEM).decode()

    def message_bytes(self, outgoing_id: int) -> bytes:
        """The signed message an outgoing row names, as archived."""
        with self.services.catalog.session() as s:
            key = s.scalar(
                sa.select(exchange.outgoing.c.object_key).where(
                    exchange.outgoing.c.id == outgoing_id
                )
            )
        with self.services.store.open(str(key)) as fh:
            return fh.read()

    def count(self, table: sa.Table, **where: Any) -> int:
        query = sa.select(sa.func.count()).select_from(table)
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        with self.services.catalog.session() as s:
            return int(s.scalar(query) or 0)


def _instance(
    name: str, root: Path, codes: tuple[str, ...], catalog: Catalog | None = None
) -> Instance:
    port = free_port()
    services = Services(
        make_settings(
            root / name,
            public_url=f"http://127.0.0.1:{port}",
            ca_key_type="ec-p256",
            archive_verify_offline=True,
        )
    )
    services.ensure_pki()
    if catalog is not None:
        services.__dict__["catalog"] = catalog
    services.__dict__["exchange_settings"] = exchange.ExchangeSettings(
        _env_file=None,
        dispatch="none",
        backoff=0.05,
        backoff_max=0.2,
        max_attempts=3,
        timeout=10,
    )
    users: dict[str, dict[str, Principal]] = {}
    for code in codes:
        made = make_agency_with_users(services, code, seal_key=True, personal_key=True)
        users[code] = {role: p for role, (p, _) in made.items()}
    return Instance(name=name, services=services, server=Server(services, port), users=users)


@pytest.fixture(scope="package")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Instance, Instance]]:
    """Instance A (SQLite; H41, H43) and instance B (PostgreSQL; H42), both serving."""
    root = tmp_path_factory.mktemp("exchange")
    base = os.environ.get("KYSO_TEST_POSTGRES_URL")
    if not base:
        pytest.fail("KYSO_TEST_POSTGRES_URL is not set (run the tests through .ci/run)")
    schema = f"kyso_test_{uuid.uuid4().hex[:12]}"
    admin = Catalog(base).engine
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    pg = Catalog(base, schema=schema)
    pg.migrate()
    a = _instance("a", root, (A1, A2))
    b = _instance("b", root, (B1,), catalog=pg)
    a.services.add_trust_anchors(b.services.pki.root_path)
    b.services.add_trust_anchors(a.services.pki.root_path)
    a.server.start()
    b.server.start()
    for here, there, codes in ((a, b, (B1,)), (b, a, (A1, A2))):
        for code in codes:
            exchange.add_peer(
                here.services,
                code,
                f"{there.url}/api/v1/exchange",
                there.seal_certificate_pem(code),
                name=f"Cơ quan {code}",
                actor="test:setup",
            )
    try:
        yield a, b
    finally:
        a.server.stop()
        b.server.stop()
        a.services.catalog.close()
        pg.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
