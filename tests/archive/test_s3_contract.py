"""The S3 backend's contract against any S3 endpoint.

Set ``KYSO_TEST_S3_URL`` (``s3://ACCESS:SECRET@host:9000/bucket?secure=false``) to run it
against a real MinIO (docker-compose) or S3; without it, it runs against the session's moto
server, so it always runs.  Every object written has random content (runs never collide) and
only short retention periods (seconds), so a real object-lock bucket frees them soon.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from minio.error import S3Error

from kyso.archive.errors import ObjectCorrupt, ObjectMissing, RetentionViolation
from kyso.archive.storage import PART_SIZE, Retention, S3Store, key_for, open_store

from .conftest import moto_url


@pytest.fixture
def contract_store(moto_endpoint: str) -> Iterator[S3Store]:
    url = os.environ.get("KYSO_TEST_S3_URL") or moto_url(moto_endpoint)
    store = open_store(url)
    assert isinstance(store, S3Store)
    store.ensure_bucket()
    yield store


def _doc(size: int = 4096) -> bytes:
    return b"%PDF-1.7\n" + os.urandom(size) + b"\n%%EOF\n"


def _raw_overwrite(store: S3Store, key: str, data: bytes) -> None:
    """Write ``data`` under ``key`` without kyso (with Content-MD5, which lock buckets need)."""
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    store.client._put_object(store.bucket, key, data, {"Content-MD5": md5})


def _versions(store: S3Store, key: str) -> list[str]:
    return [
        o.version_id or ""
        for o in store.client.list_objects(store.bucket, prefix=key, include_version=True)
        if not o.is_delete_marker
    ]


def test_bucket_has_object_lock(contract_store: S3Store) -> None:
    assert contract_store.object_lock is True


def test_small_and_multipart_round_trip_by_version(contract_store: S3Store, tmp_path: Path) -> None:
    until = datetime.now(UTC) + timedelta(seconds=20)
    for data in (_doc(), _doc(PART_SIZE + 123_456)):
        obj = contract_store.put(io.BytesIO(data), retention=Retention("GOVERNANCE", until))
        assert obj.key == key_for(hashlib.sha256(data).hexdigest())
        assert obj.version_id and obj.size == len(data)
        assert obj.retention == Retention("GOVERNANCE", until)
        target = tmp_path / "out.pdf"
        contract_store.get(obj.key, target, version_id=obj.version_id)
        assert target.read_bytes() == data
        with contract_store.open(obj.key, version_id=obj.version_id) as stream:
            assert stream.read() == data


def test_put_twice_writes_one_version(contract_store: S3Store) -> None:
    data = _doc()
    first = contract_store.put(io.BytesIO(data))
    assert contract_store.put(io.BytesIO(data)).version_id == first.version_id
    assert _versions(contract_store, first.key) == [first.version_id]


def test_overwrite_behind_kysos_back_is_corrupt(contract_store: S3Store) -> None:
    data = _doc()
    obj = contract_store.put(io.BytesIO(data))
    _raw_overwrite(contract_store, obj.key, b"forged " + data)
    with pytest.raises(ObjectCorrupt), contract_store.open(obj.key) as stream:
        stream.read()
    with contract_store.open(obj.key, version_id=obj.version_id) as stream:
        assert stream.read() == data


def test_legal_hold(contract_store: S3Store) -> None:
    obj = contract_store.put(io.BytesIO(_doc()), legal_hold=True)
    assert contract_store.stat(obj.key, version_id=obj.version_id).legal_hold
    with pytest.raises(RetentionViolation):
        contract_store.delete(obj.key, version_id=obj.version_id)
    with pytest.raises(S3Error):  # the server refuses too
        contract_store.client.remove_object(
            contract_store.bucket, obj.key, version_id=obj.version_id
        )
    contract_store.set_legal_hold(obj.key, False, version_id=obj.version_id)
    assert not contract_store.stat(obj.key, version_id=obj.version_id).legal_hold
    contract_store.delete(obj.key, version_id=obj.version_id)
    with pytest.raises(ObjectMissing):
        contract_store.stat(obj.key, version_id=obj.version_id)


def test_retention_rules(contract_store: S3Store) -> None:
    until = datetime.now(UTC) + timedelta(seconds=15)
    kept = contract_store.put(io.BytesIO(_doc()), retention=Retention("COMPLIANCE", until))
    with pytest.raises(RetentionViolation):
        contract_store.delete(kept.key, version_id=kept.version_id)
    with pytest.raises(RetentionViolation):
        contract_store.extend_retention(kept.key, until - timedelta(seconds=5))
    contract_store.extend_retention(kept.key, until + timedelta(seconds=5))
    assert contract_store.stat(kept.key).retention == Retention(
        "COMPLIANCE", until + timedelta(seconds=5)
    )

    gov = contract_store.put(io.BytesIO(_doc()), retention=Retention("GOVERNANCE", until))
    with pytest.raises(RetentionViolation):
        contract_store.extend_retention(gov.key, until - timedelta(seconds=10))
    contract_store.extend_retention(gov.key, until - timedelta(seconds=10), bypass=True)
    assert contract_store.stat(gov.key).retention == Retention(
        "GOVERNANCE", until - timedelta(seconds=10)
    )


def test_iter_objects_sees_what_was_put(contract_store: S3Store) -> None:
    obj = contract_store.put(io.BytesIO(_doc()))
    started = time.monotonic()
    assert obj.key in {o.key for o in contract_store.iter_objects()}
    assert time.monotonic() - started < 30
