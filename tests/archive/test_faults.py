"""Faults during ingest: the store down, a process killed halfway, objects altered behind
kyso's back.  Nothing may half-happen; what did is found."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import sqlalchemy as sa

from kyso.archive.catalog import Catalog
from kyso.archive.errors import ObjectCorrupt, StoreUnavailable
from kyso.archive.ingest import CRASH_AFTER_OBJECT_WRITE, Archive
from kyso.archive.models import AuditEvent, Document, DocumentVersion
from kyso.archive.storage import LocalStore, ObjectStore, StoredObject, open_store
from tests.archive.conftest import _free_port
from tests.archive.test_ingest import _count, fake_report, meta, pdf
from tests.archive.test_migrations import DATABASES, catalog_for


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with catalog_for("sqlite", tmp_path) as c:
        yield c


@pytest.fixture(params=DATABASES)
def any_catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    """SQLite, and the real PostgreSQL (a fresh schema of its own)."""
    with catalog_for(request.param, tmp_path) as c:
        yield c


def _schema(catalog: Catalog) -> str:
    """The PostgreSQL schema the catalogue works in ("" for SQLite), for a child process."""
    if catalog.dialect != "postgresql":
        return ""
    with catalog.engine.connect() as conn:
        return str(conn.execute(sa.text("SELECT current_schema()")).scalar())


def _nothing_catalogued(catalog: Catalog) -> None:
    assert _count(catalog, Document) == 0
    assert _count(catalog, DocumentVersion) == 0
    assert _count(catalog, AuditEvent) == 0


def test_s3_down_during_put(any_catalog: Catalog, s3_store: ObjectStore, tmp_path: Path) -> None:
    catalog = any_catalog
    port = _free_port()  # nothing listens there
    down = open_store(
        f"s3://k:s@127.0.0.1:{port}/kyso-down?secure=false&retries=0&connect_timeout=1"
    )
    source = pdf(tmp_path, "qd.pdf")
    with pytest.raises(StoreUnavailable) as info:
        Archive(catalog, down, verifier=fake_report).put(source, meta(), actor="vanthu")
    assert "127.0.0.1" in info.value.message("en")
    _nothing_catalogued(catalog)
    # the store is back: the same put succeeds
    archive = Archive(catalog, s3_store, verifier=fake_report)
    result = archive.put(source, meta(), actor="vanthu")
    assert result.created and s3_store.exists(result.object_key)
    assert archive.reconcile().ok


class _FailSecondPut:
    """A store whose second write fails (the report's JSON, after the PDF was written)."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner
        self.puts = 0

    def put(self, source: BinaryIO | Path, **kw: Any) -> StoredObject:
        self.puts += 1
        if self.puts == 2:
            raise StoreUnavailable(store="test", detail="connection reset")
        return self.inner.put(source, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_store_error_between_two_writes(
    catalog: Catalog, local_store: LocalStore, tmp_path: Path
) -> None:
    flaky = _FailSecondPut(local_store)
    archive = Archive(catalog, flaky, verifier=fake_report)
    source = pdf(tmp_path, "qd.pdf")
    with pytest.raises(StoreUnavailable):
        archive.put(source, meta(), actor="vanthu")
    _nothing_catalogued(catalog)
    assert len(archive.reconcile().orphans) == 1  # the PDF, found
    result = archive.put(source, meta(), actor="vanthu")  # the retry adopts it
    assert result.created
    assert archive.reconcile().ok


CHILD = textwrap.dedent(
    """
    import datetime as dt, sys
    from pathlib import Path
    from kyso.archive.catalog import Catalog
    from kyso.archive.ingest import Archive
    from kyso.archive.metadata import DocumentMetadata
    from kyso.archive.storage import LocalStore

    db, schema, root, source = sys.argv[1:5]
    archive = Archive(
        Catalog(db, schema=schema or None),
        LocalStore(root),
        verifier=lambda p: {"indication": "TOTAL_PASSED", "signatures": []},
    )
    archive.put(
        Path(source),
        DocumentMetadata(
            organ_id="G06.01", code_number=3, code_notation="QĐ-BNV",
            issued_date=dt.date(2025, 3, 1), type_name="Quyết định",
            organ_name="Bộ Nội vụ", subject="Quyết định bị ngắt giữa chừng",
        ),
        actor="vanthu",
    )
    print("done")
    """
)


def test_process_killed_between_object_write_and_catalog_insert(
    any_catalog: Catalog, local_store: LocalStore, tmp_path: Path
) -> None:
    catalog = any_catalog
    source = pdf(tmp_path, "killed.pdf")
    db = catalog.url.render_as_string(hide_password=False)
    schema = _schema(catalog)
    env = {**os.environ, CRASH_AFTER_OBJECT_WRITE: "1"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, db, schema, str(local_store.root), str(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 137, proc.stderr
    assert "done" not in proc.stdout
    _nothing_catalogued(catalog)
    archive = Archive(catalog, local_store, verifier=fake_report)
    found = archive.reconcile()
    assert len(found.orphans) == 2 and not found.missing  # the PDF and its report's JSON
    # without the fault the same child completes, adopting the object
    env.pop(CRASH_AFTER_OBJECT_WRITE)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, db, schema, str(local_store.root), str(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert archive.reconcile().ok


def test_object_corrupted_behind_kysos_back(
    catalog: Catalog, local_store: LocalStore, tmp_path: Path
) -> None:
    archive = Archive(catalog, local_store, verifier=fake_report)
    source = pdf(tmp_path, "qd.pdf")
    result = archive.put(source, meta(), actor="vanthu")
    path = local_store.root / result.object_key
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01  # one bit
    path.write_bytes(bytes(data))
    target = tmp_path / "out.pdf"
    with pytest.raises(ObjectCorrupt) as info:
        archive.get(result.document_id, target, actor="luutru")
    assert result.object_key in info.value.message("en")
    assert not target.exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".out.pdf")] == []
    report = archive.fixity()
    assert report.corrupt == [result.object_key] and report.ok == 1
    with catalog.session() as s:
        last = s.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq.desc())).first()
    assert last is not None and last.action == "fixity.run"


def test_corrupted_s3_object_is_detected(
    catalog: Catalog, s3_store: ObjectStore, tmp_path: Path
) -> None:
    """Someone with bucket access writes other bytes under the key (a newer S3 version)."""
    import base64
    import hashlib

    archive = Archive(catalog, s3_store, verifier=fake_report)
    result = archive.put(pdf(tmp_path, "s3.pdf"), meta(), actor="vanthu")
    bogus = b"%PDF-1.7 not the archived bytes"
    client = s3_store.client  # type: ignore[attr-defined]
    client._put_object(
        s3_store.bucket,  # type: ignore[attr-defined]
        result.object_key,
        bogus,
        {"Content-MD5": base64.b64encode(hashlib.md5(bogus).digest()).decode()},
    )
    with pytest.raises(ObjectCorrupt):
        archive.get(result.document_id, tmp_path / "out.pdf", actor="luutru")
    assert archive.fixity().corrupt == [result.object_key]
