"""Running it in production: liveness, readiness, metrics, request ids, JSON logs, secrets."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from kyso.api import observability
from kyso.api.app import create_app
from kyso.api.services import Services
from kyso.api.settings import Settings
from kyso.errors import KysoError
from tests.conftest import PASSPHRASE, free_port, kyso_cli, make_settings

PROBLEM = "application/problem+json"


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set (run the tests through .ci/run)")
    return value


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One built-in PKI, copied into each test's data directory (creating one costs seconds)."""
    data = tmp_path_factory.mktemp("ops-pki")
    Services(make_settings(data)).ensure_pki()
    return data


def _services(pki_dir: Path, target: Path, **overrides: object) -> Services:
    shutil.copytree(pki_dir, target)
    return Services(make_settings(target, **overrides))


@pytest.fixture(scope="module")
def client(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    services = _services(pki_dir, tmp_path_factory.mktemp("ops") / "data")
    with TestClient(create_app(services=services)) as c:
        yield c


def test_healthz_is_alive(client: TestClient) -> None:
    reply = client.get("/healthz")
    assert reply.status_code == 200
    assert reply.json()["status"] == "ok"


def test_readyz_checks_catalog_store_and_keys(client: TestClient) -> None:
    reply = client.get("/readyz")
    assert reply.status_code == 200, reply.text
    checks = reply.json()["checks"]
    assert set(checks) == {"catalog", "store", "pki"}  # no broker configured: not checked
    assert all(c["ok"] for c in checks.values())
    assert checks["catalog"]["info"].startswith("revision ")


def test_readyz_on_postgres_and_redis(pki_dir: Path, tmp_path: Path) -> None:
    base = sa.make_url(_env("KYSO_TEST_POSTGRES_URL"))
    name = f"kyso_ops_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(
        base.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        services = _services(
            pki_dir,
            tmp_path / "data",
            archive_db=base.set(database=name).render_as_string(hide_password=False),
            broker_url=_env("KYSO_TEST_REDIS_URL"),
        )
        with TestClient(create_app(services=services)) as c:
            reply = c.get("/readyz")
        assert reply.status_code == 200, reply.text
        checks = reply.json()["checks"]
        assert set(checks) == {"catalog", "store", "pki", "broker"}
        assert all(check["ok"] for check in checks.values()), checks
        services.catalog.close()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def test_readyz_503_when_the_catalogue_database_is_unreachable(
    pki_dir: Path, tmp_path: Path
) -> None:
    closed = free_port()
    services = _services(
        pki_dir,
        tmp_path / "data",
        archive_db=f"postgresql://postgres@127.0.0.1:{closed}/kyso",
        broker_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    with TestClient(create_app(services=services)) as c:
        reply = c.get("/readyz")
        assert c.get("/healthz").status_code == 200  # alive all the same
    assert reply.status_code == 503
    assert reply.headers["content-type"].startswith(PROBLEM)
    body = reply.json()
    assert body["type"].endswith("/not-ready") and body["status"] == 503
    assert not body["checks"]["catalog"]["ok"] and not body["checks"]["broker"]["ok"]
    assert body["checks"]["store"]["ok"] and body["checks"]["pki"]["ok"]
    assert "catalog" in body["detail"] and "broker" in body["detail"]
    assert str(closed) not in reply.text  # reasons go to the log, not to anonymous callers


def test_readyz_503_when_the_store_is_gone(pki_dir: Path, tmp_path: Path) -> None:
    services = _services(pki_dir, tmp_path / "data")
    with TestClient(create_app(services=services)) as c:
        assert c.get("/readyz").status_code == 200
        shutil.rmtree(services.settings.archive_dir / "objects")
        reply = c.get("/readyz")
    assert reply.status_code == 503
    checks = reply.json()["checks"]
    assert checks["store"] == {
        "ok": False,
        "error": "FileNotFoundError",
        "ms": checks["store"]["ms"],
    }
    assert checks["catalog"]["ok"]


def test_request_ids_are_made_echoed_and_sanitised(client: TestClient) -> None:
    made = client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert client.get("/healthz").headers["x-request-id"] != made
    given = "lb-7f3a:42"
    assert client.get("/healthz", headers={"X-Request-ID": given}).headers["x-request-id"] == given
    hostile = "x" * 300
    echoed = client.get("/healthz", headers={"X-Request-ID": hostile}).headers["x-request-id"]
    assert echoed != hostile and re.fullmatch(r"[0-9a-f]{32}", echoed)
    # errors carry it too
    missing = client.get("/no/such/page", headers={"X-Request-ID": "req-404"})
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "req-404"


def _samples(text: str, name: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name):
            series, value = line.rsplit(" ", 1)
            found[series] = float(value)
    return found


def test_metrics_have_the_request_histogram_and_domain_counters(client: TestClient) -> None:
    client.get("/healthz")
    client.get("/no/such/page")
    observability.record_verification("TOTAL_PASSED")
    observability.record_signature("ok")
    observability.record_job("verify", "ok", 0.25)
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    text = reply.text
    counts = _samples(text, "kyso_http_request_duration_seconds_count")
    assert (
        counts[
            'kyso_http_request_duration_seconds_count{method="GET",route="/healthz",status="200"}'
        ]
        >= 1
    )
    # unknown paths share one series, so scanners cannot blow up the series count
    assert 'route="<unmatched>",status="404"' in text and "/no/such/page" not in text
    assert (
        _samples(text, "kyso_verifications_total")[
            'kyso_verifications_total{indication="TOTAL_PASSED"}'
        ]
        >= 1
    )
    assert 'kyso_signatures_total{outcome="ok"}' in text
    assert 'kyso_jobs_total{kind="verify",outcome="ok"}' in text
    assert 'kyso_job_duration_seconds_bucket{kind="verify",le="0.5"}' in text


def test_two_apps_in_one_process_keep_their_own_request_metrics(
    client: TestClient, pki_dir: Path, tmp_path: Path
) -> None:
    other = create_app(services=_services(pki_dir, tmp_path / "data"))
    with TestClient(other) as c:
        before = c.get("/metrics").text
        assert 'route="/healthz"' not in before  # the module's client made those, not this app
        c.get("/healthz")
        assert 'route="/healthz"' in c.get("/metrics").text


def test_metrics_can_be_switched_off(pki_dir: Path, tmp_path: Path) -> None:
    services = _services(pki_dir, tmp_path / "data", metrics=False)
    with TestClient(create_app(services=services)) as c:
        reply = c.get("/metrics")
    assert reply.status_code == 404 and reply.headers["content-type"].startswith(PROBLEM)


@pytest.fixture()
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access_level = observability.access_log.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    observability.access_log.setLevel(access_level)


def test_json_logs_carry_the_request_id_and_never_a_secret(
    client: TestClient, restore_logging: None
) -> None:
    secret_key = "s3cr3t-signing-key-" + "x" * 32
    settings = Settings(
        _env_file=None,
        log_format="json",
        key_passphrase=PASSPHRASE,
        secret_key=secret_key,
        archive_db="postgresql://kyso:db-password-123@db/kyso",
    )
    out = io.StringIO()
    observability.configure_logging(settings, stream=out)
    bearer = "kyso_12_Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5"
    reply = client.get(
        "/healthz?token=query-secret-value",
        headers={
            "Authorization": f"Bearer {bearer}",
            "Cookie": "kyso_session=cookie-secret-value",
            "X-Request-ID": "req-json-1",
        },
    )
    assert reply.status_code == 200
    # something careless inside the app: the filter still masks it
    careless = logging.getLogger("kyso.api.somewhere")
    careless.warning("login with passphrase=%s", PASSPHRASE)
    careless.warning("headers %s", {"authorization": f"Bearer {bearer}", "accept": "*/*"})
    careless.warning("connecting to %s", settings.archive_db, extra={"pin": "123456"})
    careless.warning("key is %s", secret_key)
    try:
        raise ValueError(f"bad token {bearer}")
    except ValueError:
        careless.exception("failed")

    lines = [json.loads(line) for line in out.getvalue().splitlines()]  # every line is JSON
    access = [e for e in lines if e["logger"] == "kyso.access"]
    assert len(access) == 1
    entry = access[0]
    assert entry["request_id"] == "req-json-1" and entry["route"] == "/healthz"
    assert entry["method"] == "GET" and entry["status"] == 200 and entry["duration_ms"] >= 0
    assert entry["actor"] is None
    assert {e["message"] for e in lines} >= {"GET /healthz 200"}
    assert lines[-1]["exception"].startswith("Traceback")
    assert "headers {'authorization': '[REDACTED]', 'accept': '*/*'}" in out.getvalue()
    assert '"pin": "[REDACTED]"' in out.getvalue()
    text = out.getvalue()
    for secret in (
        bearer,
        PASSPHRASE,
        secret_key,
        "db-password-123",
        "query-secret-value",
        "cookie-secret-value",
    ):
        assert secret not in text


def test_text_logs_have_the_request_id_and_no_access_lines(
    client: TestClient, restore_logging: None
) -> None:
    out = io.StringIO()
    observability.configure_logging(Settings(_env_file=None), stream=out)
    client.get("/healthz", headers={"X-Request-ID": "req-text-1"})
    logging.getLogger("kyso.api.x").warning("outside a request")
    text = out.getvalue()
    assert "kyso.access" not in text  # text mode leaves access lines to uvicorn --access-log
    assert "[None] outside a request" in text


def test_production_without_a_secret_key_refuses_to_start(pki_dir: Path, tmp_path: Path) -> None:
    services = _services(pki_dir, tmp_path / "data", environment="production")
    with pytest.raises(KysoError) as caught, TestClient(create_app(services=services)):
        pass
    assert caught.value.code == "svc.secret_key.missing"


def test_kyso_serve_in_production_without_a_secret_key_exits_clearly(
    pki_dir: Path, tmp_path: Path
) -> None:
    shutil.copytree(pki_dir, tmp_path / "data")
    proc = kyso_cli(
        tmp_path / "data",
        "serve",
        "--port",
        str(free_port()),
        env={"KYSO_ENVIRONMENT": "production"},
        timeout=20,
    )
    assert proc.returncode != 0
    assert "KYSO_SECRET_KEY" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_hanging_dependency_is_cut_off_at_the_check_timeout(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from kyso.api.routes import health

    release = threading.Event()

    def hangs(services: Services) -> str:
        release.wait(10)
        return "late"

    monkeypatch.setattr(health, "CHECK_TIMEOUT", 0.3)
    monkeypatch.setattr(health, "check_store", hangs)
    try:
        started = time.perf_counter()
        reply = client.get("/readyz")
        elapsed = time.perf_counter() - started
    finally:
        release.set()
    assert reply.status_code == 503 and elapsed < 3
    store = reply.json()["checks"]["store"]
    assert store["ok"] is False and store["error"] == "timeout"


def test_a_worker_serves_its_job_metrics() -> None:
    import httpx

    port = free_port()
    server = observability.serve_worker_metrics(port, addr="127.0.0.1")
    try:
        observability.record_job("fixity", "failed", 1.5)
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()
    assert 'kyso_jobs_total{kind="fixity",outcome="failed"}' in text
    assert 'kyso_job_duration_seconds_bucket{kind="fixity",le="2.5"}' in text
    assert "kyso_http_request_duration_seconds" not in text  # requests are the api's


def test_kyso_db_upgrade_migrates_the_catalogue_to_head(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    from kyso.archive.catalog import Catalog

    proc = kyso_cli(tmp_path / "data", "db", "upgrade", timeout=120)
    assert proc.returncode == 0, proc.stderr
    catalog = Catalog(f"sqlite:///{tmp_path / 'data' / 'archive' / 'catalog.sqlite3'}")
    try:
        head = ScriptDirectory.from_config(catalog.alembic_config()).get_current_head()
        assert head is not None and catalog.revision() == head and head in proc.stdout
    finally:
        catalog.close()
    again = kyso_cli(tmp_path / "data", "db", "upgrade", timeout=120)  # idempotent
    assert again.returncode == 0 and head in again.stdout


def test_kyso_db_upgrade_fails_clearly_when_the_database_is_down(tmp_path: Path) -> None:
    url = f"postgresql://kyso:pw-not-shown@127.0.0.1:{free_port()}/kyso"
    proc = kyso_cli(tmp_path / "data", "db", "upgrade", env={"KYSO_ARCHIVE_DB": url}, timeout=60)
    assert proc.returncode == 1
    assert "connection" in proc.stderr.lower() and "Traceback" not in proc.stderr
    assert "pw-not-shown" not in proc.stdout + proc.stderr
