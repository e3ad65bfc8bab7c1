"""The short paths of the stores and of ``Archive.get`` (fewer requests, fsyncs and catalogue
writes), and that each still keeps its guarantee: a conditional PUT instead of HEAD + PUT,
the version described by the read-back GET or by what a single PUT sent, one GET per
``S3Store.get``, the local store's one-pass write with one folder fsync, one access row per
``Archive.get``."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kyso.archive.catalog import Catalog, NotFoundError
from kyso.archive.errors import ObjectCorrupt, ObjectMissing
from kyso.archive.ingest import Archive
from kyso.archive.storage import LocalStore, Retention, S3Store, StoredObject, key_for, open_store
from tests.archive.test_ingest import fake_report, meta, pdf
from tests.archive.test_migrations import catalog_for

from .conftest import Clock, moto_url


def _doc(tag: bytes = b"") -> bytes:
    return b"%PDF-1.7\n" + tag + os.urandom(3000) + b"\n%%EOF\n"


class Requests:
    """Every HTTP request a store's client makes: (method, query string)."""

    def __init__(self, store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        http = store.client._http
        real = http.urlopen

        def counting(method: str, url: str, *args: Any, **kw: Any) -> Any:
            query = url.split("?", 1)[1] if "?" in url else ""
            headers = {k.lower(): str(v) for k, v in (kw.get("headers") or {}).items()}
            self.seen.append((method, query, headers))
            return real(method, url, *args, **kw)

        monkeypatch.setattr(http, "urlopen", counting)

    def methods(self) -> list[str]:
        return [m for m, _, _ in self.seen]

    def clear(self) -> None:
        self.seen.clear()


def _s3(endpoint: str, options: str = "") -> S3Store:
    store = open_store(moto_url(endpoint) + options)
    assert isinstance(store, S3Store)
    store.ensure_bucket()
    return store


def _versions(store: S3Store, key: str) -> int:
    found = store.client.list_objects(store.bucket, prefix=key, include_version=True)
    return sum(1 for o in found if not o.is_delete_marker)


# ------------------------------------------------------------------ S3: conditional put


def test_s3_new_object_is_one_conditional_put(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    trusting = _s3(moto_endpoint, "&readback=false")
    careful = _s3(moto_endpoint)
    calls = Requests(trusting, monkeypatch)
    data = _doc()
    obj = trusting.put(io.BytesIO(data))
    assert calls.methods() == ["PUT"]
    assert calls.seen[0][2].get("if-none-match") == "*"
    assert obj == trusting.stat(obj.key, version_id=obj.version_id)

    read_back = Requests(careful, monkeypatch)
    obj = careful.put(io.BytesIO(data))
    assert read_back.methods() == ["PUT", "GET"]  # the read-back GET replaces both HEADs
    assert obj == careful.stat(obj.key, version_id=obj.version_id)


def test_s3_same_bytes_again_are_refused_by_the_server_and_make_no_version(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    store = _s3(moto_endpoint)
    data = _doc()
    first = store.put(io.BytesIO(data))
    calls = Requests(store, monkeypatch)
    second = store.put(io.BytesIO(data))
    assert second == first
    assert calls.methods() == ["PUT", "HEAD"]  # 412, then the existing object is read
    assert _versions(store, first.key) == 1
    # a retention asked with the same bytes still reaches the existing version
    until = clock.now + timedelta(days=2)
    third = store.put(io.BytesIO(data), retention=Retention("GOVERNANCE", until))
    assert third.retention == Retention("GOVERNANCE", until)
    assert third.version_id == first.version_id and _versions(store, first.key) == 1


def test_s3_without_conditional_put_asks_first(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _s3(moto_endpoint, "&conditional_put=false&readback=false")
    assert not store.conditional_put
    calls = Requests(store, monkeypatch)
    data = _doc()
    first = store.put(io.BytesIO(data))
    assert calls.methods() == ["HEAD", "PUT"]
    assert "if-none-match" not in calls.seen[1][2]
    calls.clear()
    assert store.put(io.BytesIO(data)) == first
    assert calls.methods() == ["HEAD"]
    assert _versions(store, first.key) == 1


def test_s3_object_of_another_size_under_the_key_gets_a_new_version(
    moto_endpoint: str, tmp_path: Path
) -> None:
    store = _s3(moto_endpoint)
    data = _doc()
    key = key_for(hashlib.sha256(data).hexdigest())
    store.client.put_object(store.bucket, key, io.BytesIO(b"truncated"), 9)  # behind kyso
    obj = store.put(io.BytesIO(data))
    assert obj.size == len(data) and _versions(store, key) == 2
    got = store.get(key, tmp_path / "back.pdf")
    assert (tmp_path / "back.pdf").read_bytes() == data and got.version_id == obj.version_id


def test_s3_trusting_put_reports_what_the_server_holds(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    """readback=false: a single PUT's retention and legal hold are taken as sent (no HEAD),
    and that is what the server then answers."""
    store = _s3(moto_endpoint, "&readback=false")
    retention = Retention("COMPLIANCE", clock.now + timedelta(days=1))
    calls = Requests(store, monkeypatch)
    obj = store.put(io.BytesIO(_doc()), retention=retention, legal_hold=True)
    assert calls.methods() == ["PUT"]
    assert (obj.retention, obj.legal_hold) == (retention, True)
    assert store.stat(obj.key, version_id=obj.version_id) == obj


def test_s3_put_reads_a_default_retention_back(moto_endpoint: str) -> None:
    """A bucket with a default retention rule: a put without retention reports the one the
    server applied (read with a HEAD) instead of assuming none."""
    from minio.commonconfig import GOVERNANCE
    from minio.objectlockconfig import DAYS, ObjectLockConfig

    first = _s3(moto_endpoint, "&readback=false")
    first.client.set_object_lock_config(first.bucket, ObjectLockConfig(GOVERNANCE, 1, DAYS))
    store = open_store(
        moto_url(moto_endpoint, first.bucket) + "&readback=false"
    )  # a process that starts with the rule in place
    assert isinstance(store, S3Store)
    obj = store.put(io.BytesIO(_doc()))
    assert obj.retention is not None and obj.retention.mode == "GOVERNANCE"
    assert store.stat(obj.key, version_id=obj.version_id) == obj


# ------------------------------------------------------------------ S3: one GET per get


def test_s3_get_is_one_request_and_describes_the_version(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clock: Clock
) -> None:
    store = _s3(moto_endpoint)
    retention = Retention("GOVERNANCE", clock.now + timedelta(days=3))
    held = store.put(io.BytesIO(_doc(b"held")), retention=retention, legal_hold=True)
    plain = store.put(io.BytesIO(_doc(b"plain")))
    calls = Requests(store, monkeypatch)
    for obj in (held, plain):
        calls.clear()
        got = store.get(obj.key, tmp_path / "out.pdf")
        assert calls.methods() == ["GET"]
        assert got == obj == store.stat(obj.key)


def test_s3_get_asks_the_legal_hold_when_the_object_does_not_say(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An object written without kyso's explicit ``legal-hold: OFF`` (an older kyso, another
    tool): its GET does not tell the hold, which is then asked separately."""
    store = _s3(moto_endpoint)
    data = _doc()
    key = key_for(hashlib.sha256(data).hexdigest())
    store.client.put_object(
        store.bucket, key, io.BytesIO(data), len(data), metadata={"x-amz-meta-sha256": key[10:]}
    )
    calls = Requests(store, monkeypatch)
    got = store.get(key, tmp_path / "out.pdf")
    assert calls.methods() == ["GET", "GET"] and "legal-hold" in calls.seen[1][1]
    assert got.legal_hold is False and (tmp_path / "out.pdf").read_bytes() == data


def test_s3_get_refuses_an_object_stored_under_another_hash(
    moto_endpoint: str, tmp_path: Path
) -> None:
    store = _s3(moto_endpoint)
    data = _doc()
    key = key_for(hashlib.sha256(data).hexdigest())
    store.client.put_object(
        store.bucket, key, io.BytesIO(data), len(data), metadata={"x-amz-meta-sha256": "0" * 64}
    )
    with pytest.raises(ObjectCorrupt):
        store.get(key, tmp_path / "out.pdf")
    assert not (tmp_path / "out.pdf").exists()
    with pytest.raises(ObjectMissing):
        store.get(key_for("1" * 64), tmp_path / "out.pdf")


# ------------------------------------------------------------------ local: one pass, one dir fsync


@pytest.mark.parametrize(("from_path", "retained"), [(True, True), (False, True), (True, False)])
def test_local_put_syncs_data_sidecar_and_folder_once_each(
    local_store: LocalStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
    from_path: bool,
    retained: bool,
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, Path.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(self: Path, target: Any) -> Any:
        events.append("rename-meta" if str(target).endswith(".meta.json") else "rename-data")
        return real_replace(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Path, "replace", replace)
    data = _doc()
    source: Any = tmp_path / "in.pdf"
    source.write_bytes(data)
    if not from_path:
        source = io.BytesIO(data)
    retention = Retention("GOVERNANCE", clock.now + timedelta(days=1)) if retained else None
    obj = local_store.put(source, retention=retention)
    # data and sidecar each synced, the sidecar renamed first, one folder fsync at the end;
    # a sidecar that says no more than the file itself (no retention, no hold) is not synced
    sidecar_sync = ["fsync-file"] if retained else []
    assert events == ["fsync-file", *sidecar_sync, "rename-meta", "rename-data", "fsync-dir"]
    assert local_store.stat(obj.key) == obj and obj.retention == retention
    assert list((local_store.root / ".tmp").iterdir()) == []
    events.clear()
    assert local_store.put(io.BytesIO(data)) == obj  # idempotent: nothing written
    assert events == [] and list((local_store.root / ".tmp").iterdir()) == []


def test_local_sidecar_left_without_its_object_is_harmless(
    local_store: LocalStore, tmp_path: Path, clock: Clock
) -> None:
    """A crash between the sidecar's rename and the object's: the object is missing (no read
    sees the sidecar) and the next put writes both."""
    data = _doc()
    digest = hashlib.sha256(data).hexdigest()
    key = key_for(digest)
    (local_store.root / key).parent.mkdir(parents=True, exist_ok=True)
    stale = Retention("GOVERNANCE", clock.now + timedelta(days=9))
    local_store._write_meta(StoredObject(key, digest, len(data), None, stale, True))
    assert not local_store.exists(key)
    with pytest.raises(ObjectMissing):
        local_store.stat(key)
    assert [o.key for o in local_store.iter_objects()] == []
    obj = local_store.put(io.BytesIO(data))
    assert (obj.retention, obj.legal_hold) == (None, False)
    assert local_store.stat(key) == obj
    local_store.get(key, tmp_path / "out.pdf")
    assert (tmp_path / "out.pdf").read_bytes() == data


def test_local_unsynced_sidecar_lost_or_torn_reads_the_same(local_store: LocalStore) -> None:
    """What a crash can leave of a sidecar that was not fsynced (no retention, no hold):
    missing, empty or cut short; each reads exactly as the sidecar itself would."""
    obj = local_store.put(io.BytesIO(_doc()))
    meta_path = local_store.root / f"{obj.key}.meta.json"
    whole = meta_path.read_bytes()
    for damaged in (None, b"", whole[: len(whole) // 2]):
        meta_path.chmod(0o644)
        if damaged is None:
            meta_path.unlink()
        else:
            meta_path.write_bytes(damaged)
        assert local_store.stat(obj.key) == obj
        with local_store.open(obj.key) as stream:
            assert hashlib.sha256(stream.read()).hexdigest() == obj.sha256
        meta_path.unlink(missing_ok=True)
        meta_path.write_bytes(whole)


def test_local_put_with_a_wrong_announced_hash_leaves_nothing(
    local_store: LocalStore, tmp_path: Path
) -> None:
    from kyso.archive.errors import ChecksumMismatch

    with pytest.raises(ChecksumMismatch):
        local_store.put(io.BytesIO(_doc()), sha256="0" * 64)
    assert list((local_store.root / ".tmp").iterdir()) == []
    assert list(local_store.iter_objects()) == []


# ------------------------------------------------------------------ Archive.get: one access row


@pytest.fixture
def sqlite_catalog(tmp_path: Path) -> Iterator[Catalog]:
    with catalog_for("sqlite", tmp_path) as c:
        yield c


def test_archive_get_logs_one_row_and_an_attempt_that_failed(
    sqlite_catalog: Catalog, local_store: LocalStore, tmp_path: Path
) -> None:
    archive = Archive(sqlite_catalog, local_store, verifier=fake_report)
    result = archive.put(pdf(tmp_path, "a.pdf"), meta(), actor="vanthu")
    doc = result.document_id

    def history() -> list[tuple[str, str, int | None, str | None]]:
        return [
            (e.actor, e.action, e.version_id, e.purpose) for e in sqlite_catalog.access_history(doc)
        ]

    chosen = archive.get(doc, tmp_path / "out.pdf", actor="luutru", purpose="export")
    assert chosen.seq == 1 and chosen.reports[0].indication == "INDETERMINATE"
    assert history() == [("luutru", "download", result.version_id, "export")]
    archive.get(doc, tmp_path / "out2.pdf", actor="luutru")
    assert history()[-1] == ("luutru", "download", result.version_id, "download")

    with pytest.raises(NotFoundError):  # no such version: the read is on record
        archive.get(doc, tmp_path / "none.pdf", version=7, actor="khach")
    assert history()[-1] == ("khach", "read", None, "download")

    path = local_store.root / result.object_key  # corrupt behind kyso's back
    path.chmod(0o644)
    path.write_bytes(b"%PDF-1.7 something else")
    with pytest.raises(ObjectCorrupt):
        archive.get(doc, tmp_path / "bad.pdf", actor="khach", purpose="verify")
    assert not (tmp_path / "bad.pdf").exists()
    assert history()[-1] == ("khach", "read", None, "verify")

    before = len(history())
    with pytest.raises(NotFoundError):  # no such document: nothing to log it against
        archive.get(doc + 100, tmp_path / "x.pdf", actor="khach")
    assert len(history()) == before
