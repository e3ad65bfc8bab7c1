"""Two writers archiving the same file at the same moment make one record, not two: on SQLite
and on the real PostgreSQL, with two processes (each with its own connections), and with two
threads when the ingest lock is missing (then the database's unique index decides)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kyso.archive import ingest
from kyso.archive.catalog import Catalog
from kyso.archive.ingest import Archive, IngestResult
from kyso.archive.models import AuditEvent, Document, DocumentVersion, VerificationReport
from kyso.archive.storage import LocalStore
from tests.archive.test_ingest import _count, meta, pdf
from tests.archive.test_migrations import DATABASES, catalog_for

# Each child says it is ready, waits for the go file, then archives.  Its verifier sleeps, so
# both children are past the first "already archived?" check before either writes its rows,
# and the catalogue inserts are slowed down, so that both transactions overlap: without the
# ingest lock both would insert a record (the test fails when the lock is taken out).
CHILD = textwrap.dedent(
    """
    import datetime as dt, json, sys, time
    from pathlib import Path
    from kyso.archive.catalog import Catalog
    from kyso.archive.ingest import Archive
    from kyso.archive.metadata import DocumentMetadata
    from kyso.archive.storage import LocalStore

    url, schema, root, source, document, go, ready = sys.argv[1:8]

    def slow_verifier(path):
        time.sleep(0.5)
        return {"indication": "TOTAL_PASSED", "signatures": []}

    def slowed(method):
        def run(*args, **kwargs):
            time.sleep(0.5)
            return method(*args, **kwargs)
        return run

    catalog = Catalog(url, schema=schema or None)
    catalog.insert_document = slowed(catalog.insert_document)
    catalog.insert_version = slowed(catalog.insert_version)
    archive = Archive(catalog, LocalStore(root), verifier=slow_verifier)
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.005)
    if document:
        result = archive.put(Path(source), document=int(document), actor="vanthu")
    else:
        result = archive.put(
            Path(source),
            DocumentMetadata(
                organ_id="G06.01", code_number=7, code_notation="QĐ-BNV",
                issued_date=dt.date(2025, 3, 1), type_name="Quyết định",
                organ_name="Bộ Nội vụ", subject="Quyết định lưu trữ hai lần cùng lúc",
            ),
            actor="vanthu",
        )
    print(json.dumps({"document_id": result.document_id, "version_id": result.version_id,
                      "created": result.created}))
    """
)


@pytest.fixture(params=DATABASES)
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    with catalog_for(request.param, tmp_path) as c:
        yield c


def _schema(catalog: Catalog) -> str:
    if catalog.dialect != "postgresql":
        return ""
    with catalog.engine.connect() as conn:
        return str(conn.execute(sa.text("SELECT current_schema()")).scalar())


def _race(
    catalog: Catalog, store: LocalStore, source: Path, tmp_path: Path, document: int | None
) -> list[dict[str, Any]]:
    """Two processes archive ``source`` at once; their results."""
    go = tmp_path / f"go-{time.monotonic_ns()}"
    ready = [tmp_path / f"ready-{n}-{time.monotonic_ns()}" for n in range(2)]
    args = [
        catalog.url.render_as_string(hide_password=False),
        _schema(catalog),
        str(store.root),
        str(source),
        "" if document is None else str(document),
        str(go),
    ]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, *args, str(flag)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flag in ready
    ]
    deadline = time.monotonic() + 60
    while not all(flag.exists() for flag in ready):
        assert time.monotonic() < deadline and all(c.poll() is None for c in children)
        time.sleep(0.01)
    go.touch()
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_two_processes_archive_the_same_new_file(
    catalog: Catalog, local_store: LocalStore, tmp_path: Path
) -> None:
    source = pdf(tmp_path, "twice.pdf")
    results = _race(catalog, local_store, source, tmp_path, None)
    assert sorted(r["created"] for r in results) == [False, True]
    assert len({r["document_id"] for r in results}) == 1
    assert len({r["version_id"] for r in results}) == 1
    assert _count(catalog, Document) == 1
    assert _count(catalog, DocumentVersion) == 1
    # the loser's verification report (already stored as an object) is kept with the record,
    # so nothing is left orphaned in the store
    assert _count(catalog, VerificationReport) == 2
    archive = Archive(catalog, local_store)
    assert archive.reconcile().ok
    with catalog.session() as s:
        actions = list(s.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.seq)))
    assert actions == ["document.add", "version.add", "report.add", "report.add"]


def test_two_processes_add_the_same_version(
    catalog: Catalog, local_store: LocalStore, tmp_path: Path
) -> None:
    archive = Archive(catalog, local_store)
    first = archive.put(pdf(tmp_path, "draft.pdf"), meta(), actor="vanthu", kind="draft")
    source = pdf(tmp_path, "signed.pdf")
    results = _race(catalog, local_store, source, tmp_path, first.document_id)
    assert sorted(r["created"] for r in results) == [False, True]
    assert len({r["version_id"] for r in results}) == 1
    with catalog.session() as s:
        seqs = list(
            s.scalars(
                sa.select(DocumentVersion.seq)
                .where(DocumentVersion.document_id == first.document_id)
                .order_by(DocumentVersion.seq)
            )
        )
    assert seqs == [1, 2]


def test_without_the_lock_the_unique_index_decides(
    catalog: Catalog, local_store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that skips the ingest lock (two threads here) still cannot add the same bytes
    twice to a document: the database refuses the second row and put returns the first."""
    monkeypatch.setattr(ingest, "_lock_content", lambda *a, **k: None)
    barrier = threading.Barrier(2, timeout=30)

    def verifier(path: Path) -> dict[str, Any]:
        barrier.wait()  # both threads are past the "already archived?" check
        return {"indication": "TOTAL_PASSED", "signatures": []}

    archive = Archive(catalog, local_store, verifier=verifier)
    doc = Archive(catalog, local_store).put(
        pdf(tmp_path, "draft.pdf"), meta(), actor="vanthu", kind="draft"
    )
    source = pdf(tmp_path, "same.pdf")
    results: list[IngestResult] = []
    errors: list[BaseException] = []

    def put() -> None:
        try:
            results.append(archive.put(source, document=doc.document_id, actor="vanthu"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert sorted(r.created for r in results) == [False, True]
    assert len({r.version_id for r in results}) == 1
    assert _count(catalog, DocumentVersion) == 2  # the draft and one signed version


def test_the_unique_index_refuses_a_second_row(catalog: Catalog) -> None:
    digest = "ab" * 32
    doc = catalog.add_document(meta(), actor="vanthu")
    catalog.add_version(doc, "draft", "sha256/ab/" + digest, digest, 10, "vanthu")
    with pytest.raises(sa.exc.IntegrityError):
        catalog.add_version(doc, "draft", "sha256/ab/" + digest, digest, 10, "vanthu")
    other = catalog.add_document(meta(13), actor="vanthu")
    catalog.add_version(other, "draft", "sha256/ab/" + digest, digest, 10, "vanthu")  # allowed
