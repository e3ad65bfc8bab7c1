"""The newcomer's archive flow through the real CLI: sign, register, archive, find, get back,
check the audit log, then tamper with the catalogue and the object and see it caught."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from kyso.signer.register import today_vn
from tests.archive.conftest import moto_endpoint  # noqa: F401  (the moto server fixture)
from tests.conftest import kyso_cli
from tests.verify.test_engine import make_pdf

ENV = {"KYSO_ARCHIVE_VERIFY_OFFLINE": "true"}
META = [
    "--meta", "agency=H37.02",
    "--meta", "agency_name=UBND Quận Long Biên",
    "--meta", "type=Quyết định",
    "--meta", "subject=Quyết định phê duyệt kế hoạch chuyển đổi số năm 2025",
    "--meta", "signer=Nguyễn Văn An",
]  # fmt: skip


def cli(data: Path, *args: object, locale: str = "en") -> subprocess.CompletedProcess[str]:
    return kyso_cli(data, *args, env={**ENV, "KYSO_LOCALE": locale})


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-archive")
    data = root / "data"
    source = root / "draft.pdf"
    source.write_bytes(make_pdf(1))
    assert cli(data, "pki", "init").returncode == 0
    issued = cli(
        data, "pki", "issue", "person", "Nguyễn Văn An", "--id", "CCCD:001090000001",
        "--title", "Chủ tịch", "--org", "UBND Quận Long Biên", "--label", "an",
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    person = root / "signed.pdf"
    done = cli(data, "sign", source, person, "--key", "an")
    assert done.returncode == 0, done.stderr
    registered = root / "registered.pdf"
    done = cli(data, "register", person, registered, "--number", "12", "--symbol", "QĐ-UBND")
    assert done.returncode == 0, done.stderr
    return {"root": root, "data": data, "file": registered}


def test_the_archive_flow(signed: dict[str, Path]) -> None:
    data, root, file = signed["data"], signed["root"], signed["file"]
    # required metadata missing: a clear error, exit 3, nothing archived
    missing = cli(data, "archive", "put", file, "--meta", "agency=H37.02")
    assert missing.returncode == 3, missing.stdout + missing.stderr
    assert "organ_name" in missing.stderr and "Traceback" not in missing.stderr
    bad = cli(data, "archive", "put", file, "--meta", "colour=blue")
    assert bad.returncode == 3 and "colour" in bad.stderr

    put = cli(data, "archive", "put", file, "--json", *META, "--kind", "registered")
    assert put.returncode == 0, put.stdout + put.stderr
    result = json.loads(put.stdout)
    doc = result["document_id"]
    assert result["created"] and result["kind"] == "registered"
    assert result["indication"] in {"TOTAL_PASSED", "INDETERMINATE"}

    again = cli(data, "archive", "put", file, *META, locale="vi")
    assert again.returncode == 0, again.stderr  # already archived: idempotent
    assert f"Tệp này đã có trong kho: văn bản {doc}" in again.stdout

    for args in (("--number", "12"), ("--agency", "H37.02"), ("chuyen doi so",)):
        found = cli(data, "archive", "search", *args, "--json")
        assert found.returncode == 0, found.stderr
        items = json.loads(found.stdout)["items"]
        assert [i["id"] for i in items] == [doc], args
        assert items[0]["number"] == "12/QĐ-UBND"  # read from the PDF's register field
        assert items[0]["issued_date"] == today_vn().isoformat()
    nothing = cli(data, "archive", "search", "ngan sach", "--json")
    assert json.loads(nothing.stdout)["total"] == 0
    table = cli(data, "archive", "search", "--symbol", "QĐ-UBND", locale="vi")
    assert "Kết quả tìm kiếm: 1 văn bản" in table.stdout

    back = root / "back.pdf"
    got = cli(data, "archive", "get", str(doc), back)
    assert got.returncode == 0, got.stderr
    assert back.read_bytes() == file.read_bytes()

    show = cli(data, "archive", "show", str(doc), "--json")
    assert show.returncode == 0, show.stderr
    shown = json.loads(show.stdout)
    assert shown["subject"].startswith("Quyết định phê duyệt")
    [version] = shown["versions"]
    assert version["kind"] == "registered" and version["reports"][0]["indication"]
    assert [e["action"] for e in shown["history"]] == ["document.add", "version.add", "report.add"]
    assert "download" in [a["action"] for a in shown["access"]]
    text = cli(data, "archive", "show", str(doc), locale="vi")
    assert "Trích yếu" in text.stdout

    anchored = cli(data, "audit", "anchor")
    assert anchored.returncode == 0, anchored.stderr
    ok = cli(data, "audit", "verify", "--require-anchor")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "intact" in ok.stdout
    assert cli(data, "archive", "reconcile").returncode == 0
    fixity = cli(data, "archive", "fixity")
    assert fixity.returncode == 0, fixity.stdout + fixity.stderr
    assert "2 intact" in fixity.stdout

    # someone edits the catalogue behind kyso's back: the audit log names the link
    db = data / "archive" / "catalog.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit_events SET actor = 'someone else' WHERE seq = 2")
    broken = cli(data, "audit", "verify")
    assert broken.returncode == 1, broken.stdout
    assert "broken at event #2" in broken.stdout
    broken_vi = cli(data, "audit", "verify", "--json", locale="vi")
    assert json.loads(broken_vi.stdout)["first_broken"]["seq"] == 2

    # and the archived object is overwritten on disk
    obj = data / "archive" / "objects" / version["object_key"]
    obj.chmod(0o644)
    obj.write_bytes(file.read_bytes().replace(b"Trang 1", b"Trang 9"))
    lost = root / "lost.pdf"
    failed = cli(data, "archive", "get", str(doc), lost)
    assert failed.returncode == 1
    assert "was altered or damaged" in failed.stderr and "Traceback" not in failed.stderr
    assert not lost.exists()
    swept = cli(data, "archive", "fixity", "--json")
    assert swept.returncode == 1
    assert json.loads(swept.stdout)["corrupt"] == [version["object_key"]]


def test_export_and_renew_through_the_cli(tmp_path: Path) -> None:
    """A case file exported (listing PDF, XML, BagIt package checkable without kyso) and
    renewal listing what is due, from the command line."""
    data = tmp_path / "data"
    env = {"KYSO_ARCHIVE_VERIFY_OFFLINE": "true"}
    assert kyso_cli(data, "pki", "init").returncode == 0
    assert kyso_cli(
        data, "pki", "issue", "person", "Nguyễn Văn An", "--id", "CCCD:001090000001",
        "--label", "an",
    ).returncode == 0  # fmt: skip
    source = tmp_path / "cv.pdf"
    source.write_bytes(make_pdf())
    signed = tmp_path / "signed.pdf"
    assert kyso_cli(data, "sign", source, signed, "--key", "an", "--level", "B-LTA").returncode == 0
    opened = kyso_cli(
        data, "archive", "case", "000.00.00.G22", "2026", "01", "--title", "Hồ sơ thử nghiệm",
        "--maintenance", "10 năm",
    )  # fmt: skip
    assert opened.returncode == 0, opened.stdout + opened.stderr
    file_code = opened.stdout.strip()
    assert file_code == "000.00.00.G22.2026.01"
    put = kyso_cli(
        data, "archive", "put", signed,
        "--meta", "agency=000.00.00.G22", "--meta", "agency_name=UBND Quận Long Biên",
        "--meta", "type=Quyết định", "--meta", "subject=Quyết định thử nghiệm",
        "--meta", "number=15", "--meta", "symbol=QĐ-UBND", "--meta", "date=2026-11-20",
        "--case", file_code,
        env=env,
    )  # fmt: skip
    assert put.returncode == 0, put.stdout + put.stderr
    out = tmp_path / "out"
    exported = kyso_cli(data, "archive", "export", file_code, out, "--package", "bagit")
    assert exported.returncode == 0, exported.stdout + exported.stderr
    names = sorted(p.name for p in out.iterdir())
    assert any(n.endswith(".pdf") for n in names) and any(n.endswith(".xml") for n in names)
    bag = next(p for p in out.iterdir() if p.is_dir())
    for line in (bag / "manifest-sha256.txt").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        assert hashlib.sha256((bag / name).read_bytes()).hexdigest() == digest
    due = kyso_cli(data, "archive", "renew", "--within", "40y", "--dry-run", env=env)
    assert due.returncode == 0, due.stdout + due.stderr
    assert "1 documents due for renewal." in due.stdout
    none_due = kyso_cli(data, "archive", "renew", "--within", "0d", "--dry-run", env=env)
    assert "0 documents due for renewal." in none_due.stdout
    bad = kyso_cli(data, "archive", "renew", "--within", "mãi mãi", env=env)
    assert bad.returncode == 3 and "180d" in bad.stderr


# -- legal hold ----------------------------------------------------------------------------------


def _audit_actions(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT action, details_json FROM audit_events ORDER BY seq")
        return [(a, d) for a, d in rows]


def test_legal_hold_from_the_cli(tmp_path: Path) -> None:
    """``kyso archive hold``: on and off with a reason, audited; while on, the store refuses
    to delete the object; without --on/--off or a reason it is exit 3."""
    from kyso.archive.errors import RetentionViolation
    from kyso.archive.storage import LocalStore

    data = tmp_path / "data"
    source = tmp_path / "cv.pdf"
    source.write_bytes(make_pdf(1))
    put = cli(data, "archive", "put", source, "--json", "--no-verify", *META)
    assert put.returncode == 0, put.stdout + put.stderr
    doc = json.loads(put.stdout)["document_id"]
    key = json.loads(put.stdout)["object_key"]
    store = LocalStore(data / "archive" / "objects")
    db = data / "archive" / "catalog.sqlite3"
    before = len(_audit_actions(db))

    no_switch = cli(data, "archive", "hold", str(doc), "--reason", "x")
    assert no_switch.returncode == 3 and "--on" in no_switch.stderr

    reason = "Vụ án hành chính số 12/2026/HC-ST"
    on = cli(data, "archive", "hold", str(doc), "--on", "--reason", reason, "--json")
    assert on.returncode == 0, on.stdout + on.stderr
    [changed] = json.loads(on.stdout)["objects"]
    assert changed == {
        "document_id": doc,
        "version_seq": 1,
        "what": "version",
        "object_key": key,
        "changed": True,
    }
    assert store.stat(key).legal_hold
    with pytest.raises(RetentionViolation) as refused:
        store.delete(key)
    assert refused.value.code == "archive.storage.retention.legal_hold"
    action, details = _audit_actions(db)[-1]
    assert action == "legal_hold.on"
    assert json.loads(details) == {"object_key": key, "reason": reason, "what": "version"}
    assert len(_audit_actions(db)) == before + 1

    again = cli(data, "archive", "hold", str(doc), "--on", "--reason", reason, locale="vi")
    assert again.returncode == 0, again.stderr
    assert f"Đã đang phong tỏa pháp lý từ trước: văn bản {doc}, phiên bản 1" in again.stdout
    assert len(_audit_actions(db)) == before + 1  # no change, no event

    shown = json.loads(cli(data, "archive", "show", str(doc), "--json").stdout)
    assert shown["versions"][0]["legal_hold"] is True
    assert [e["action"] for e in shown["history"]][-1] == "legal_hold.on"

    off = cli(data, "archive", "hold", str(doc), "--off", "--reason", "Bản án có hiệu lực")
    assert off.returncode == 0, off.stderr
    assert f"Legal hold lifted: document {doc}, version 1, the document file" in off.stdout
    assert not store.stat(key).legal_hold
    assert _audit_actions(db)[-1][0] == "legal_hold.off"


def test_legal_hold_refusals(tmp_path: Path) -> None:
    """No reason, too long a reason, an unknown document or version: refused, nothing changed
    and nothing recorded (in-process: the CLI maps these errors to exit 3 and 1)."""
    from kyso.api.cli_archive import _is_bad_input, set_legal_hold
    from kyso.archive.catalog import Catalog, NotFoundError
    from kyso.archive.ingest import Archive
    from kyso.archive.metadata import MetadataError
    from kyso.archive.models import AuditEvent
    from kyso.archive.storage import LocalStore
    from tests.archive.test_ingest import _count, meta, pdf

    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
    catalog.migrate()
    try:
        store = LocalStore(tmp_path / "objects")
        result = Archive(catalog, store).put(pdf(tmp_path, "a.pdf"), meta(), actor="vanthu")
        events = _count(catalog, AuditEvent)
        doc = result.document_id
        for reason, code in (("  ", "reason_required"), ("x" * 501, "reason_long")):
            with pytest.raises(MetadataError) as bad:
                set_legal_hold(catalog, store, doc, on=True, reason=reason, actor="t")
            assert bad.value.code == f"archive.cli.hold.{code}" and _is_bad_input(bad.value)
        with pytest.raises(NotFoundError) as unknown:
            set_legal_hold(catalog, store, 999, on=True, reason="x", actor="t")
        assert "999" in unknown.value.message("en") and not _is_bad_input(unknown.value)
        with pytest.raises(NotFoundError) as no_version:
            set_legal_hold(catalog, store, doc, on=True, reason="x", actor="t", version=5)
        assert no_version.value.code == "archive.ingest.no_such_version"
        assert not store.stat(result.object_key).legal_hold
        assert _count(catalog, AuditEvent) == events
    finally:
        catalog.close()


def test_legal_hold_on_s3_with_object_lock(moto_endpoint: str, tmp_path: Path) -> None:  # noqa: F811
    """The same through the S3 store (moto, object-lock bucket): the hold is the server's
    legal hold, of every version and its report; a delete is refused while it is on."""
    from kyso.api.cli_archive import set_legal_hold
    from kyso.archive.catalog import Catalog
    from kyso.archive.errors import RetentionViolation
    from kyso.archive.ingest import Archive
    from kyso.archive.storage import S3Store, open_store
    from tests.archive.conftest import moto_url
    from tests.archive.test_ingest import fake_report, meta, pdf

    store = open_store(moto_url(moto_endpoint))
    assert isinstance(store, S3Store)
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
    catalog.migrate()
    try:
        archive = Archive(catalog, store, verifier=fake_report)
        first = archive.put(pdf(tmp_path, "v1.pdf"), meta(), actor="vanthu", kind="draft")
        second = archive.put(pdf(tmp_path, "v2.pdf"), document=first.document_id, actor="vanthu")
        changes = set_legal_hold(
            catalog, store, first.document_id, on=True, reason="Thanh tra", actor="cli:test"
        )
        keys = {first.object_key, second.object_key}
        reports = {first.report_object_key, second.report_object_key}
        assert {c.object_key for c in changes} == keys | reports
        assert all(c.changed for c in changes)
        for key in keys | reports:
            assert key is not None and store.stat(key).legal_hold
        with pytest.raises(RetentionViolation):
            store.delete(second.object_key)
        only = set_legal_hold(
            catalog,
            store,
            first.document_id,
            on=False,
            reason="Kết thúc thanh tra",
            actor="cli:test",
            version=2,
        )
        assert {c.object_key for c in only} == {second.object_key, second.report_object_key}
        assert not store.stat(second.object_key).legal_hold
        assert store.stat(first.object_key).legal_hold
    finally:
        catalog.close()
