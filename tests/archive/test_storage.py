"""The object-store contract on both backends, kyso's own retention rules, and what the
moto S3 server enforces by itself.

Measured on moto 5.2.5 (server mode, minio 7.2.20 client): moto DOES enforce

* a put with retention or legal hold needs ``Content-MD5`` or ``x-amz-sdk-checksum-algorithm``
  (``MissingUploadObjectWithObjectLockHeaders``), which is why kyso sends both a SHA-256
  checksum and Content-MD5;
* deleting a version under COMPLIANCE retention or under legal hold (``AccessDenied``);
* making a bucket with object lock turns versioning on; an overwrite makes a new version.

moto does NOT enforce (so no test here "proves" them on moto; the local backend's tests
and kyso's own checks in ``S3Store`` cover them):

* shortening a COMPLIANCE retention or turning it into GOVERNANCE (accepted);
* GOVERNANCE shortening without ``x-amz-bypass-governance-retention`` (accepted);
* the value of ``x-amz-checksum-sha256`` (a wrong one is accepted) and multipart uploads
  without any checksum under retention (accepted);
* object-lock headers sent with ``CreateMultipartUpload`` (ignored: the object ends up with
  no retention and no hold, so kyso sets them on the new version after the upload);
* ``GetObjectRetention`` (answers bytes minio cannot parse), so kyso reads retention from
  the ``x-amz-object-lock-*`` headers of HEAD.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from minio.error import S3Error
from minio.retention import COMPLIANCE
from minio.retention import Retention as MinioRetention

from kyso.archive.errors import (
    ChecksumMismatch,
    InvalidKey,
    ObjectCorrupt,
    ObjectMissing,
    RetentionViolation,
    StorageError,
    StoreUnavailable,
)
from kyso.archive.storage import (
    PART_SIZE,
    LocalStore,
    ObjectStore,
    Retention,
    S3Store,
    key_for,
    open_store,
)

from .conftest import Clock, moto_url

PDF = b"%PDF-1.7\n" + "Quyết định số 12/QĐ-UBND".encode() + os.urandom(2000) + b"\n%%EOF\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tamper(store: ObjectStore, key: str, data: bytes) -> None:
    """Change the stored bytes behind kyso's back."""
    if isinstance(store, LocalStore):
        path = store.root / key
        path.chmod(0o644)
        path.write_bytes(data)
    else:
        assert isinstance(store, S3Store)
        store.client.put_object(store.bucket, key, io.BytesIO(data), len(data))


# ------------------------------------------------------------------ contract, both backends


def test_round_trip_is_bit_identical(store: ObjectStore, tmp_path: Path) -> None:
    obj = store.put(io.BytesIO(PDF))
    assert obj.key == key_for(_sha(PDF)) == f"sha256/{_sha(PDF)[:2]}/{_sha(PDF)}"
    assert (obj.sha256, obj.size, obj.legal_hold, obj.retention) == (
        _sha(PDF),
        len(PDF),
        False,
        None,
    )
    with store.open(obj.key) as stream:
        assert stream.read() == PDF
    target = tmp_path / "out" / "doc.pdf"
    got = store.get(obj.key, target)
    assert target.read_bytes() == PDF
    assert got.sha256 == obj.sha256
    assert [p.name for p in target.parent.iterdir()] == ["doc.pdf"]  # no temp file left


def test_put_from_a_path_with_the_announced_hash(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "in.pdf"
    src.write_bytes(PDF)
    obj = store.put(src, sha256=_sha(PDF).upper())
    assert obj.key == key_for(_sha(PDF))
    with pytest.raises(ChecksumMismatch):
        store.put(src, sha256="0" * 64)


def test_put_is_idempotent(store: ObjectStore) -> None:
    first = store.put(io.BytesIO(PDF))
    second = store.put(io.BytesIO(PDF))
    assert second == first  # same key, and no new version on S3
    assert [o.key for o in store.iter_objects()] == [first.key]


def test_large_file_streams_without_buffering(
    store: ObjectStore, tmp_path: Path, clock: Clock
) -> None:
    src = tmp_path / "big.pdf"
    digest = hashlib.sha256()
    with src.open("wb") as out:
        for i in range(20):
            block = os.urandom(1024 * 1024) if i % 5 == 0 else bytes([i]) * (1024 * 1024)
            digest.update(block)
            out.write(block)
    target = tmp_path / "back.pdf"
    retention = Retention("GOVERNANCE", clock.now + timedelta(days=1))
    tracemalloc.start()
    try:
        obj = store.put(src, retention=retention, legal_hold=True)
        store.get(obj.key, target)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert obj.sha256 == digest.hexdigest() and obj.size == 20 * 1024 * 1024
    assert (obj.retention, obj.legal_hold) == (retention, True)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == obj.sha256
    # one S3 part (5 MiB) and its copy at most, never the 20 MB file
    assert peak < 2 * PART_SIZE + 2 * 1024 * 1024, peak


def test_tampered_object_is_reported_corrupt(store: ObjectStore, tmp_path: Path) -> None:
    obj = store.put(io.BytesIO(PDF))
    bad = PDF.replace(b"12/", b"13/")
    tamper(store, obj.key, bad)
    with pytest.raises(ObjectCorrupt), store.open(obj.key) as stream:
        while stream.read(1000):
            pass
    target = tmp_path / "out" / "x.pdf"
    with pytest.raises(ObjectCorrupt):
        store.get(obj.key, target)
    assert list(target.parent.iterdir()) == []  # neither the target nor a temp file


def test_stat_exists_and_missing(store: ObjectStore) -> None:
    obj = store.put(io.BytesIO(PDF))
    assert store.exists(obj.key)
    assert store.stat(obj.key).size == len(PDF)
    other = key_for(_sha(b"other"))
    assert not store.exists(other)
    with pytest.raises(ObjectMissing):
        store.stat(other)
    with pytest.raises(ObjectMissing), store.open(other):
        pass
    with pytest.raises(InvalidKey):
        store.stat("../../etc/passwd")


def test_iter_objects_lists_every_object(store: ObjectStore) -> None:
    blobs = [PDF, PDF + b"1", PDF + b"2"]
    keys = {store.put(io.BytesIO(b)).key for b in blobs}
    listed = {o.key: o for o in store.iter_objects()}
    assert set(listed) == keys
    assert all(listed[key_for(_sha(b))].size == len(b) for b in blobs)


def test_delete_refused_under_retention_and_hold(store: ObjectStore, clock: Clock) -> None:
    until = clock.now + timedelta(days=30)
    kept = store.put(io.BytesIO(PDF), retention=Retention("COMPLIANCE", until))
    assert kept.retention == Retention("COMPLIANCE", until)
    with pytest.raises(RetentionViolation) as caught:
        store.delete(kept.key, version_id=kept.version_id)
    assert "COMPLIANCE" in caught.value.message("en")
    assert "lưu giữ" in caught.value.message("vi")

    held = store.put(io.BytesIO(PDF + b"hold"), legal_hold=True)
    assert store.stat(held.key).legal_hold
    with pytest.raises(RetentionViolation):
        store.delete(held.key, version_id=held.version_id)
    store.set_legal_hold(held.key, False, version_id=held.version_id)
    assert not store.stat(held.key).legal_hold
    store.delete(held.key, version_id=held.version_id)
    assert not store.exists(held.key)

    free = store.put(io.BytesIO(PDF + b"free"))
    store.delete(free.key, version_id=free.version_id)
    assert not store.exists(free.key)


def test_compliance_can_only_be_lengthened(store: ObjectStore, clock: Clock) -> None:
    until = clock.now + timedelta(days=30)
    obj = store.put(io.BytesIO(PDF), retention=Retention("COMPLIANCE", until))
    with pytest.raises(RetentionViolation):
        store.extend_retention(obj.key, until - timedelta(days=1), version_id=obj.version_id)
    with pytest.raises(RetentionViolation):
        store.extend_retention(
            obj.key, until + timedelta(days=1), mode="GOVERNANCE", version_id=obj.version_id
        )
    with pytest.raises(RetentionViolation):
        store.extend_retention(
            obj.key, until, bypass=True, version_id=obj.version_id, mode="GOVERNANCE"
        )
    store.extend_retention(obj.key, until + timedelta(days=365), version_id=obj.version_id)
    assert store.stat(obj.key).retention == Retention("COMPLIANCE", until + timedelta(days=365))
    # putting the same bytes again with a shorter period never shortens it
    again = store.put(io.BytesIO(PDF), retention=Retention("COMPLIANCE", until))
    assert again.retention == Retention("COMPLIANCE", until + timedelta(days=365))


def test_governance_shortening_needs_bypass(store: ObjectStore, clock: Clock) -> None:
    until = clock.now + timedelta(days=30)
    obj = store.put(io.BytesIO(PDF), retention=Retention("GOVERNANCE", until))
    with pytest.raises(RetentionViolation):
        store.extend_retention(obj.key, until - timedelta(days=10), version_id=obj.version_id)
    store.extend_retention(
        obj.key, until - timedelta(days=10), bypass=True, version_id=obj.version_id
    )
    assert store.stat(obj.key).retention == Retention("GOVERNANCE", until - timedelta(days=10))
    # GOVERNANCE → COMPLIANCE (stronger) needs no bypass
    store.extend_retention(obj.key, until, mode="COMPLIANCE", version_id=obj.version_id)
    assert store.stat(obj.key).retention == Retention("COMPLIANCE", until)


def test_errors_have_vietnamese_and_english_messages(store: ObjectStore) -> None:
    missing = key_for(_sha(b"nothing"))
    with pytest.raises(ObjectMissing) as caught:
        store.stat(missing)
    assert "Không có" in caught.value.message("vi")
    assert missing in caught.value.message("en")
    assert isinstance(caught.value, StorageError)


# ------------------------------------------------------------------ local backend


def test_local_files_are_read_only_and_writes_atomic(local_store: LocalStore) -> None:
    obj = local_store.put(
        io.BytesIO(PDF), retention=Retention("GOVERNANCE", local_store._now() + timedelta(days=1))
    )
    path = local_store.root / obj.key
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    meta = local_store.root / f"{obj.key}.meta.json"
    assert stat.S_IMODE(meta.stat().st_mode) == 0o444
    assert list((local_store.root / ".tmp").iterdir()) == []
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, meta.name]


def test_local_failed_write_leaves_nothing(local_store: LocalStore) -> None:
    class Boom(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: object) -> int:
            raise OSError("disk gone")

    with pytest.raises(OSError):
        local_store.put(Boom())  # type: ignore[arg-type]
    assert list(local_store.iter_objects()) == []
    assert list((local_store.root / ".tmp").iterdir()) == []


def test_local_retention_expires(local_store: LocalStore, clock: Clock) -> None:
    obj = local_store.put(
        io.BytesIO(PDF), retention=Retention("COMPLIANCE", clock.now + timedelta(days=1))
    )
    with pytest.raises(RetentionViolation):
        local_store.delete(obj.key)
    clock.advance(days=1, seconds=1)
    local_store.delete(obj.key)
    assert not local_store.exists(obj.key)


def test_local_has_no_versions(local_store: LocalStore) -> None:
    obj = local_store.put(io.BytesIO(PDF))
    assert obj.version_id is None
    with pytest.raises(ObjectMissing):
        local_store.stat(obj.key, version_id="v1")


def test_local_tampered_sidecar_is_corrupt(local_store: LocalStore) -> None:
    obj = local_store.put(io.BytesIO(PDF))
    meta = local_store.root / f"{obj.key}.meta.json"
    meta.chmod(0o644)
    meta.write_text(meta.read_text().replace(obj.sha256, "0" * 64))
    with pytest.raises(ObjectCorrupt):
        local_store.stat(obj.key)


def test_open_store_urls(tmp_path: Path, moto_endpoint: str) -> None:
    assert isinstance(open_store(f"file://{tmp_path}/a"), LocalStore)
    assert isinstance(open_store(str(tmp_path / "b")), LocalStore)
    assert isinstance(open_store(tmp_path / "c"), LocalStore)
    s3 = open_store(moto_url(moto_endpoint, "kyso-url-test"))
    assert isinstance(s3, S3Store)
    assert (s3.endpoint, s3.bucket, s3.secure) == (moto_endpoint, "kyso-url-test", False)
    with pytest.raises(ValueError):
        open_store("ftp://host/x")


# ------------------------------------------------------------------ S3 backend on moto


def test_s3_bucket_has_object_lock_and_versions(s3_store: S3Store) -> None:
    assert s3_store.object_lock is True
    obj = s3_store.put(io.BytesIO(PDF))
    assert obj.version_id
    # an overwrite behind kyso's back makes a new version; the old one is still readable
    tamper(s3_store, obj.key, b"not the document")
    with pytest.raises(ObjectCorrupt), s3_store.open(obj.key) as stream:
        stream.read()
    with s3_store.open(obj.key, version_id=obj.version_id) as stream:
        assert stream.read() == PDF


def test_moto_itself_denies_deleting_a_locked_version(s3_store: S3Store, clock: Clock) -> None:
    """What the server enforces without kyso's checks (raw client)."""
    until = clock.now + timedelta(days=1)
    kept = s3_store.put(io.BytesIO(PDF), retention=Retention("COMPLIANCE", until))
    held = s3_store.put(io.BytesIO(PDF + b"h"), legal_hold=True)
    for obj in (kept, held):
        with pytest.raises(S3Error) as caught:
            s3_store.client.remove_object(s3_store.bucket, obj.key, version_id=obj.version_id)
        assert caught.value.code == "AccessDenied"
    # a put with retention but no checksum header is refused by the server
    with pytest.raises(S3Error) as refused:
        s3_store.client.put_object(
            s3_store.bucket,
            "raw/x",
            io.BytesIO(b"x"),
            1,
            retention=MinioRetention(COMPLIANCE, until),
        )
    assert refused.value.code == "MissingUploadObjectWithObjectLockHeaders"


def test_s3_server_refusal_maps_to_retention_violation(s3_store: S3Store, clock: Clock) -> None:
    held = s3_store.put(io.BytesIO(PDF), legal_hold=True)
    # skip kyso's own check and let the server answer
    with pytest.raises(RetentionViolation), s3_store._calls(held.key):
        s3_store.client.remove_object(s3_store.bucket, held.key, version_id=held.version_id)


def test_s3_down_is_unavailable_quickly() -> None:
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = open_store(
        f"s3://a:b@127.0.0.1:{port}/kyso-down?secure=false&connect_timeout=1&retries=1"
    )
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        store.put(io.BytesIO(PDF))
    assert time.monotonic() - started < 5
    text = caught.value.message("en")
    assert "unavailable" in text and "Traceback" not in text
    assert "không sẵn sàng" in caught.value.message("vi")
    with pytest.raises(StoreUnavailable):
        store.exists(key_for(_sha(PDF)))


def test_s3_readback_catches_a_server_that_stores_other_bytes(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto accepts a PUT whose bytes do not match its ``x-amz-checksum-sha256`` (AWS S3 and
    MinIO refuse it): with read-back on (the default) the put fails; with ``readback=false``
    (for servers that verify checksums themselves) it does not, and the next read does."""
    careful = open_store(moto_url(moto_endpoint, "kyso-readback-on"))
    trusting = open_store(moto_url(moto_endpoint, "kyso-readback-off") + "&readback=false")
    assert isinstance(careful, S3Store) and isinstance(trusting, S3Store)
    assert careful.verify_readback and not trusting.verify_readback
    for store in (careful, trusting):
        real = store.client._put_object

        def lying(bucket: str, key: str, data: bytes, headers: Any, **kw: Any) -> Any:
            if "x-amz-checksum-sha256" in headers:  # the object, not a multipart part
                data = data[:-1] + bytes([data[-1] ^ 1])
            return real(bucket, key, data, headers, **kw)

        monkeypatch.setattr(store.client, "_put_object", lying)
    body = b"%PDF-1.7\n" + os.urandom(256)
    with pytest.raises(ObjectCorrupt):
        careful.put(io.BytesIO(body))
    stored = trusting.put(io.BytesIO(body))  # nothing read back: not detected here …
    with pytest.raises(ObjectCorrupt):  # … but by every read (and so by the fixity sweep)
        trusting.get(stored.key, tmp_path / "out.pdf")
    assert not (tmp_path / "out.pdf").exists()
