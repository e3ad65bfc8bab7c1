"""Object storage of the archive behind one interface: a local directory or S3/MinIO.

Every object is stored under its content address ``sha256/<hex[:2]>/<hex>``, so the same
bytes always land under the same key.  ``put`` is idempotent: putting bytes that are already
stored returns the stored object (no new S3 version is written); a retention given with it
only ever lengthens the stored one, and ``legal_hold=True`` turns the hold on.  Every read
verifies the SHA-256 named by the key while streaming (``ObjectCorrupt`` at the end of the
stream on mismatch); nothing is buffered whole: data moves in chunks of at most
:data:`PART_SIZE` bytes.

Retention rules (the same for both backends, checked by kyso before the store is asked, and
by the S3 server too when it enforces object lock):

* ``delete`` is refused while a retention runs or a legal hold is on;
* a COMPLIANCE retention can only be lengthened (never shortened, never turned into
  GOVERNANCE);
* a GOVERNANCE retention can be shortened, removed or changed only with ``bypass=True``.

``LocalStore`` is the embedded default: atomic writes (temp file, fsync, rename), files
read-only (0444), metadata in a JSON sidecar written the same way; enforcement is kyso's.
``S3Store`` uses the ``minio`` SDK against S3/MinIO with object lock.  The test S3 server
(moto) enforces only part of object lock (see ``tests/archive/test_storage.py``), which is
why kyso checks the rules itself as well.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import queue
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol, TypeVar, cast
from urllib.parse import parse_qs, unquote, urlsplit

from kyso.archive.errors import (
    ChecksumMismatch,
    InvalidKey,
    ObjectCorrupt,
    ObjectLockUnsupported,
    ObjectMissing,
    RetentionViolation,
    StorageError,
    StoreUnavailable,
)

__all__ = [
    "PART_SIZE",
    "LocalStore",
    "ObjectStore",
    "Retention",
    "RetentionMode",
    "S3Store",
    "StoredObject",
    "key_for",
    "open_store",
]

RetentionMode = Literal["COMPLIANCE", "GOVERNANCE"]
_T = TypeVar("_T")
CHUNK = 1024 * 1024
#: Size of one S3 multipart part, and the most any write or read holds in memory at once.
PART_SIZE = 5 * 1024 * 1024
#: Above this size, streams are hashed in a helper thread while they are copied.
PIPE_MIN = 4 * CHUNK
_KEY = re.compile(r"^sha256/([0-9a-f]{2})/([0-9a-f]{64})$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC, rounded *up* to the whole second (S3 keeps no finer time)."""
    if moment.tzinfo is None:
        raise ValueError("retention dates must be timezone-aware")
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
    return moment


@dataclass(frozen=True)
class Retention:
    """A retention period: the object cannot be deleted or changed before ``until``."""

    mode: RetentionMode
    until: datetime

    def __post_init__(self) -> None:
        if self.mode not in ("COMPLIANCE", "GOVERNANCE"):
            raise ValueError(f"unknown retention mode {self.mode!r}")
        object.__setattr__(self, "until", _utc(self.until))

    def active(self, now: datetime) -> bool:
        return self.until > now


@dataclass(frozen=True)
class StoredObject:
    key: str
    sha256: str
    size: int
    version_id: str | None
    retention: Retention | None
    legal_hold: bool


class ObjectStore(Protocol):
    """What the archive needs of an object store."""

    def put(
        self,
        source: BinaryIO | Path,
        *,
        sha256: str | None = None,
        retention: Retention | None = None,
        legal_hold: bool = False,
        content_type: str = "application/pdf",
    ) -> StoredObject: ...

    def open(
        self, key: str, *, version_id: str | None = None
    ) -> contextlib.AbstractContextManager[BinaryIO]: ...

    def get(self, key: str, target: Path, *, version_id: str | None = None) -> StoredObject: ...

    def stat(self, key: str, *, version_id: str | None = None) -> StoredObject: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str, *, version_id: str | None = None) -> None: ...

    def set_legal_hold(self, key: str, on: bool, *, version_id: str | None = None) -> None: ...

    def extend_retention(
        self,
        key: str,
        until: datetime,
        *,
        version_id: str | None = None,
        mode: RetentionMode | None = None,
        bypass: bool = False,
    ) -> None: ...

    def iter_objects(self) -> Iterator[StoredObject]: ...


# --------------------------------------------------------------------------- helpers


def key_for(sha256: str) -> str:
    """The content address of bytes whose SHA-256 (hex) is ``sha256``."""
    sha256 = sha256.lower()
    if not _HEX.match(sha256):
        raise InvalidKey(name=sha256)
    return f"sha256/{sha256[:2]}/{sha256}"


def _check_key(key: str) -> str:
    """The SHA-256 hex a valid key names."""
    match = _KEY.match(key)
    if not match or match.group(2)[:2] != match.group(1):
        raise InvalidKey(name=key)
    return match.group(2)


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _check_announced(announced: str | None, actual: str) -> None:
    if announced is not None and announced.lower() != actual:
        raise ChecksumMismatch(expected=announced.lower(), actual=actual)


def _check_change(
    key: str, current: Retention | None, new: Retention | None, now: datetime, bypass: bool
) -> None:
    """Refuse a retention change that would weaken a running retention."""
    if current is None or not current.active(now):
        return
    weaker = new is None or new.until < current.until
    if current.mode == "COMPLIANCE":
        if weaker or (new is not None and new.mode != "COMPLIANCE"):
            raise RetentionViolation(
                "archive.storage.retention.compliance_shorten",
                name=key,
                until=current.until.isoformat(),
            )
    elif weaker and not bypass:
        raise RetentionViolation(
            "archive.storage.retention.governance_shorten",
            name=key,
            until=current.until.isoformat(),
        )


def _check_deletable(obj: StoredObject, now: datetime) -> None:
    if obj.legal_hold:
        raise RetentionViolation("archive.storage.retention.legal_hold", name=obj.key)
    if obj.retention is not None and obj.retention.active(now):
        raise RetentionViolation(
            "archive.storage.retention.under_retention",
            name=obj.key,
            mode=obj.retention.mode,
            until=obj.retention.until.isoformat(),
        )


def _merge_retention(
    current: Retention | None, wanted: Retention | None, now: datetime
) -> Retention | None:
    """The retention to apply when ``wanted`` is asked of an object that has ``current``
    (never weaker than the current one); None when nothing needs to change."""
    if wanted is None:
        return None
    if current is None or not current.active(now):
        return wanted
    if current.mode == "COMPLIANCE" or wanted.mode == current.mode:
        return Retention(current.mode, wanted.until) if wanted.until > current.until else None
    # GOVERNANCE → COMPLIANCE: strengthen, never to an earlier date.
    return Retention("COMPLIANCE", max(wanted.until, current.until))


class _VerifyingReader(io.RawIOBase):
    """A read-only stream that hashes what passes through and checks it at EOF."""

    def __init__(
        self, raw: Any, key: str, sha256: str, size: int | None, close: Callable[[], None]
    ) -> None:
        super().__init__()
        self._raw = raw
        self._key = key
        self._expected = sha256
        self._size = size
        self._digest = hashlib.sha256()
        self._seen = 0
        self._done = False
        self._close = close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._raw.read(len(view)) if len(view) else b""
        if data:
            n = len(data)
            view[:n] = data
            self._digest.update(data)
            self._seen += n
            return n
        if len(view):
            self._check()
        return 0

    def _check(self) -> None:
        """At the end of the stream: the bytes seen must be the ones the key names."""
        if not self._done:
            self._done = True
            if self._digest.hexdigest() != self._expected or (
                self._size is not None and self._seen != self._size
            ):
                raise ObjectCorrupt(name=self._key)

    def copy_to(self, out: BinaryIO | None) -> None:
        """The rest of the stream into ``out`` (None: only hashed), in chunks of
        :data:`CHUNK` straight from the source (no copy through a buffer), then checked
        like a read to the end.  A large object is hashed in a helper thread, while the
        next chunk is read and this one written (:class:`_HashPipe`)."""
        big = self._size is not None and self._size > PIPE_MIN
        with _HashPipe(self._digest) if big else contextlib.nullcontext(None) as pipe:
            update = pipe.update if pipe is not None else self._digest.update
            while data := self._raw.read(CHUNK):
                update(data)
                self._seen += len(data)
                if out is not None:
                    out.write(data)
        self._check()

    def close(self) -> None:
        if not self.closed:
            try:
                self._close()
            finally:
                super().close()


class _HashPipe:
    """Feeds chunks, in order, to a hash object in a helper thread, so that hashing overlaps
    the reading and writing of the next chunk (hashlib, file and socket I/O all release the
    GIL).  At most four chunks wait.  Leaving the ``with`` block waits until every chunk
    is hashed (the digest is complete only then) and raises what the thread raised."""

    def __init__(self, digest: Any) -> None:
        self._digest = digest
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kyso-hash", daemon=True)

    def _run(self) -> None:
        try:
            while (chunk := self._queue.get()) is not None:
                self._digest.update(chunk)
        except BaseException as exc:  # handed to the caller by __exit__
            self._error = exc
            while self._queue.get() is not None:  # keep the producer from blocking
                pass

    def update(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def __enter__(self) -> _HashPipe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def _fsync_during(fd: int, work: Callable[[], _T], size: int) -> _T:
    """``os.fsync(fd)`` and ``work()`` (re-hashing the file just written), in parallel for a
    file above :data:`CHUNK` (the flush to disk and hashlib both release the GIL), one after
    the other for a small one (a thread would cost more than it saves).  Both always
    complete; the first error of either is raised."""
    if size <= CHUNK:
        os.fsync(fd)
        return work()
    errors: list[BaseException] = []

    def sync() -> None:
        try:
            os.fsync(fd)
        except BaseException as exc:  # handed to the caller below
            errors.append(exc)

    syncer = threading.Thread(target=sync, name="kyso-fsync", daemon=True)
    syncer.start()
    try:
        result = work()
    finally:
        syncer.join()
    if errors:
        raise errors[0]
    return result


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _copy_verified(reader: _VerifyingReader, target: Path) -> None:
    """Stream ``reader`` into a temp file beside ``target``; rename only when it verified."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            reader.copy_to(cast(BinaryIO, out))
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


@contextlib.contextmanager
def _source_file(
    source: BinaryIO | Path, spool_dir: Path | None
) -> Iterator[tuple[Path, str, int]]:
    """``source`` as a file on disk with its SHA-256 and size (a stream is spooled once)."""
    if isinstance(source, Path | str):
        path = Path(source)
        digest, size = _hash_file(path)
        yield path, digest, size
        return
    fd, name = tempfile.mkstemp(prefix=".spool-", dir=spool_dir)
    path = Path(name)
    try:
        hasher = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(CHUNK):
                hasher.update(chunk)
                out.write(chunk)
                size += len(chunk)
        yield path, hasher.hexdigest(), size
    finally:
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- local


class LocalStore:
    """Objects in a local directory: ``<root>/sha256/ab/<hex>`` (0444) and
    ``<hex>.meta.json`` beside it (retention, legal hold, sha256, size).

    There are no versions: ``version_id`` is always None.  Retention and legal hold are
    enforced by this class (a local directory has no WORM of its own; someone with write
    access to the disk can still change files, which every read then reports as corrupt).
    """

    def __init__(self, root: Path | str, *, now: Callable[[], datetime] | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._now = now or (lambda: datetime.now(UTC))
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # paths and metadata
    def _path(self, key: str) -> Path:
        _check_key(key)
        return self.root / key

    def _meta_path(self, key: str) -> Path:
        return self.root / f"{key}.meta.json"

    def _check_version(self, key: str, version_id: str | None) -> None:
        if version_id not in (None, "null"):
            raise ObjectMissing(name=key, version=version_id)

    def _read_meta(self, key: str) -> StoredObject:
        sha = _check_key(key)
        path, meta_path = self._path(key), self._meta_path(key)
        if not path.exists():
            raise ObjectMissing(name=key, version="-")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            # A lost sidecar: rebuild what the file itself tells (no retention, no hold).
            meta = {"sha256": sha, "size": path.stat().st_size}
        if meta.get("sha256") != sha:
            raise ObjectCorrupt(name=key)
        retention = None
        if meta.get("retention"):
            retention = Retention(
                meta["retention"]["mode"], datetime.fromisoformat(meta["retention"]["until"])
            )
        return StoredObject(
            key=key,
            sha256=sha,
            size=int(meta["size"]),
            version_id=None,
            retention=retention,
            legal_hold=bool(meta.get("legal_hold", False)),
        )

    def _write_meta(self, obj: StoredObject, *, sync_dir: bool = True) -> None:
        """Write the sidecar atomically (temp file, fsync, rename); ``sync_dir=False``: the
        caller fsyncs the folder itself before it returns.

        A sidecar without retention and legal hold says nothing more than what
        :meth:`_read_meta` rebuilds when the sidecar is missing, empty or unreadable (the hash
        from the key, the size from the file): its contents are not fsynced, since every state
        a crash can leave reads the same."""
        data = {
            "sha256": obj.sha256,
            "size": obj.size,
            "retention": (
                {"mode": obj.retention.mode, "until": obj.retention.until.isoformat()}
                if obj.retention
                else None
            ),
            "legal_hold": obj.legal_hold,
        }
        target = self._meta_path(obj.key)
        fd, name = tempfile.mkstemp(prefix=".meta-", dir=self._tmp)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, sort_keys=True)
            if obj.retention is not None or obj.legal_hold:
                out.flush()
                os.fsync(out.fileno())
        os.chmod(name, 0o444)
        Path(name).replace(target)
        if sync_dir:
            _fsync_dir(target.parent)

    # the interface
    def put(
        self,
        source: BinaryIO | Path,
        *,
        sha256: str | None = None,
        retention: Retention | None = None,
        legal_hold: bool = False,
        content_type: str = "application/pdf",
    ) -> StoredObject:
        # One pass over the source: copied into a temp file while hashed (no spooling, no
        # second read of the source), then the bytes that reached the file hashed again.
        fd, name = tempfile.mkstemp(prefix=".put-", dir=self._tmp)
        tmp = Path(name)
        renamed = False
        try:
            hasher = hashlib.sha256()
            size = 0
            with contextlib.ExitStack() as stack:
                out = stack.enter_context(os.fdopen(fd, "wb"))
                if isinstance(source, Path | str):
                    src: BinaryIO = stack.enter_context(Path(source).open("rb"))
                    big = os.fstat(src.fileno()).st_size > PIPE_MIN
                else:
                    src, big = source, False
                with _HashPipe(hasher) if big else contextlib.nullcontext(None) as pipe:
                    update = pipe.update if pipe is not None else hasher.update
                    while chunk := src.read(CHUNK):
                        update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                out.flush()
                digest = hasher.hexdigest()
                _check_announced(sha256, digest)
                key = key_for(digest)
                target = self._path(key)
                if target.exists():
                    return self._update_existing(key, retention, legal_hold)
                # verify what reached the file: hashed again while it is synced to disk
                written, written_size = _fsync_during(out.fileno(), lambda: _hash_file(tmp), size)
            os.chmod(tmp, 0o444)
            if written != digest or written_size != size:
                raise ChecksumMismatch(expected=digest, actual=written)
            target.parent.mkdir(parents=True, exist_ok=True)
            obj = StoredObject(key, digest, size, None, retention, legal_hold)
            # The sidecar first, then the object, then one fsync of their folder for both
            # renames.  A crash in between leaves at most a sidecar without its object,
            # which no read sees (the object is missing) and the next put replaces.
            self._write_meta(obj, sync_dir=False)
            tmp.replace(target)
            renamed = True
        finally:
            if not renamed:
                tmp.unlink(missing_ok=True)
        _fsync_dir(target.parent)
        return obj

    def _update_existing(
        self, key: str, retention: Retention | None, legal_hold: bool
    ) -> StoredObject:
        current = self._read_meta(key)
        merged = _merge_retention(current.retention, retention, self._now())
        hold = current.legal_hold or legal_hold
        if merged is None and hold == current.legal_hold:
            return current
        updated = StoredObject(
            key, current.sha256, current.size, None, merged or current.retention, hold
        )
        self._write_meta(updated)
        return updated

    @contextlib.contextmanager
    def open(self, key: str, *, version_id: str | None = None) -> Iterator[BinaryIO]:
        with self._opened(key, version_id) as (reader, _):
            yield cast(BinaryIO, io.BufferedReader(reader, CHUNK))

    @contextlib.contextmanager
    def _opened(
        self, key: str, version_id: str | None
    ) -> Iterator[tuple[_VerifyingReader, StoredObject]]:
        self._check_version(key, version_id)
        obj = self._read_meta(key)
        try:
            raw = self._path(key).open("rb")
        except FileNotFoundError:
            raise ObjectMissing(name=key, version="-") from None
        with _VerifyingReader(raw, key, obj.sha256, obj.size, raw.close) as reader:
            yield reader, obj

    def get(self, key: str, target: Path, *, version_id: str | None = None) -> StoredObject:
        # the sidecar read once, before the bytes (it was read again afterwards)
        with self._opened(key, version_id) as (reader, obj):
            _copy_verified(reader, Path(target))
        return obj

    def stat(self, key: str, *, version_id: str | None = None) -> StoredObject:
        self._check_version(key, version_id)
        return self._read_meta(key)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str, *, version_id: str | None = None) -> None:
        obj = self.stat(key, version_id=version_id)
        _check_deletable(obj, self._now())
        self._path(key).unlink(missing_ok=True)
        self._meta_path(key).unlink(missing_ok=True)
        _fsync_dir(self._path(key).parent)

    def set_legal_hold(self, key: str, on: bool, *, version_id: str | None = None) -> None:
        obj = self.stat(key, version_id=version_id)
        if obj.legal_hold != on:
            self._write_meta(StoredObject(obj.key, obj.sha256, obj.size, None, obj.retention, on))

    def extend_retention(
        self,
        key: str,
        until: datetime,
        *,
        version_id: str | None = None,
        mode: RetentionMode | None = None,
        bypass: bool = False,
    ) -> None:
        obj = self.stat(key, version_id=version_id)
        new = _new_retention(key, obj.retention, until, mode)
        _check_change(key, obj.retention, new, self._now(), bypass)
        self._write_meta(StoredObject(obj.key, obj.sha256, obj.size, None, new, obj.legal_hold))

    def iter_objects(self) -> Iterator[StoredObject]:
        base = self.root / "sha256"
        if not base.is_dir():
            return
        for folder in sorted(base.iterdir()):
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if path.name.endswith(".meta.json") or path.name.startswith("."):
                    continue
                key = f"sha256/{folder.name}/{path.name}"
                if _KEY.match(key):
                    with contextlib.suppress(ObjectMissing):
                        yield self._read_meta(key)


def _new_retention(
    key: str, current: Retention | None, until: datetime, mode: RetentionMode | None
) -> Retention:
    chosen = mode or (current.mode if current else None)
    if chosen is None:
        raise RetentionViolation("archive.storage.retention.mode_required", name=key)
    return Retention(chosen, until)


# --------------------------------------------------------------------------- S3


def _store_error(store: str, exc: BaseException) -> StorageError:
    """A kyso error for anything the S3 client raised (no traceback text for users)."""
    from minio.error import S3Error, ServerError

    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, S3Error):
        return StoreUnavailable(store=store, detail=f"{exc.code}: {exc.message}")
    if isinstance(exc, ServerError):
        return StoreUnavailable(store=store, detail=f"HTTP {exc.status_code}")
    detail = type(exc).__name__
    reason = getattr(exc, "reason", None)
    if reason is not None:
        detail = f"{detail}: {type(reason).__name__}"
    return StoreUnavailable(store=store, detail=detail)


def _s3_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status", None)


class S3Store:
    """Objects in an S3/MinIO bucket with object lock (``minio`` SDK).

    The bucket is created on first write with object lock (which turns versioning on); when
    the server refuses object lock the bucket is made versioned only, and any retention or
    legal hold asked of it raises :class:`ObjectLockUnsupported`.  Each put sends a
    SHA-256 checksum (``x-amz-checksum-sha256``) and Content-MD5, which object-lock buckets
    require (minio-py sends neither over plain HTTP); files above :data:`PART_SIZE` go as a
    multipart upload, one part in memory at a time, each part with its Content-MD5.
    """

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        secure: bool = True,
        region: str | None = "us-east-1",
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retries: int = 2,
        verify_readback: bool = True,
        conditional_put: bool = True,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        """:param verify_readback: after each new object, read it whole back and hash it
        (one GET of the object, whose headers also tell the version's retention and legal
        hold).  AWS S3 and MinIO verify the ``x-amz-checksum-sha256`` of a single PUT
        themselves and the Content-MD5 of every multipart part, refusing a mismatch
        (``BadDigest``), so against them this only doubles the traffic; a server that does
        not (moto, some S3 clones) needs it.  Off, an object corrupted later is still found
        by every read and by the fixity sweep, and the retention and legal hold of a single
        PUT are taken as sent (such a server applies object-lock headers or refuses the
        PUT); those of a multipart upload are still checked with a HEAD.
        :param conditional_put: write a new object (one that fits a single PUT) with
        ``If-None-Match: *`` instead of asking first with a HEAD whether it exists: the
        server refuses the PUT (412) when the key already has a current version, and only
        then is the existing object looked at.  AWS S3 (since 2024), MinIO and moto honour
        it; turn it off (``conditional_put=false`` in the URL) for a server that ignores
        the header, which would otherwise store identical bytes as a new version."""
        import urllib3
        from minio import Minio

        self.endpoint = endpoint
        self.verify_readback = verify_readback
        self.conditional_put = conditional_put
        self.bucket = bucket
        self.secure = secure
        self._now = now or (lambda: datetime.now(UTC))
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=urllib3.Retry(
                total=retries,
                backoff_factor=0.1,
                status_forcelist=[500, 502, 503, 504],
                allowed_methods=None,
                raise_on_status=False,
            ),
            maxsize=10,
        )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )
        self._ready = False
        self.object_lock: bool | None = None
        self._default_retention = False
        """The bucket has a default retention rule (seen by :meth:`ensure_bucket`)."""

    def __repr__(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"S3Store({scheme}://{self.endpoint}/{self.bucket})"

    @property
    def _name(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.endpoint}/{self.bucket}"

    @contextlib.contextmanager
    def _calls(self, key: str = "", version_id: str | None = None) -> Iterator[None]:
        """Map what the client raises to kyso's errors."""
        from minio.error import MinioException

        try:
            yield
        except StorageError:
            raise
        except MinioException as exc:
            code = getattr(exc, "code", None)
            if code in ("NoSuchKey", "NoSuchVersion", "NoSuchObject") or _s3_status(exc) == 404:
                raise ObjectMissing(name=key, version=version_id or "-") from None
            if code == "AccessDenied" and key:
                raise RetentionViolation(
                    "archive.storage.retention.denied_by_server", name=key, detail=code
                ) from None
            raise _store_error(self._name, exc) from None
        except (OSError, ValueError) as exc:  # urllib3 errors, decoding of odd answers
            raise _store_error(self._name, exc) from None
        except Exception as exc:
            import urllib3.exceptions

            if isinstance(exc, urllib3.exceptions.HTTPError):
                raise _store_error(self._name, exc) from None
            raise

    def ensure_bucket(self) -> None:
        """Create the bucket (object lock + versioning) unless it exists."""
        if self._ready:
            return
        from minio.commonconfig import ENABLED
        from minio.error import S3Error
        from minio.versioningconfig import VersioningConfig

        with self._calls():
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket, object_lock=True)
                    self.object_lock = True
                except S3Error as exc:
                    if exc.code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        self.object_lock = None
                    else:  # a server without object lock
                        self.client.make_bucket(self.bucket)
                        self.client.set_bucket_versioning(self.bucket, VersioningConfig(ENABLED))
                        self.object_lock = False
            if self.object_lock is None:
                try:
                    config = self.client.get_object_lock_config(self.bucket)
                    self.object_lock = config is not None
                    # a default rule gives objects put without retention one anyway: such
                    # puts then read the version's retention back instead of assuming none
                    self._default_retention = bool(config is not None and config.mode)
                except S3Error:
                    self.object_lock = False
        self._ready = True

    def _require_lock(self) -> None:
        self.ensure_bucket()
        if not self.object_lock:
            raise ObjectLockUnsupported(bucket=self.bucket)

    # reading metadata
    def _describe(
        self, key: str, headers: Any, version_id: str | None, size: int, *, hold: bool = True
    ) -> StoredObject:
        """The object a HEAD or GET answered with ``headers``: its version, retention and
        legal hold (asked separately only when the answer does not tell it and ``hold``),
        after checking the ``x-amz-meta-sha256`` kyso stored with it against the key."""
        sha = _check_key(key)
        found = {k.lower(): v for k, v in (headers or {}).items()}
        stored = found.get("x-amz-meta-sha256")
        if stored is not None and stored != sha:
            raise ObjectCorrupt(name=key)
        version = found.get("x-amz-version-id") or version_id
        retention = None
        mode = found.get("x-amz-object-lock-mode")
        until = found.get("x-amz-object-lock-retain-until-date")
        if mode in ("COMPLIANCE", "GOVERNANCE") and until:
            parsed = datetime.fromisoformat(until.replace("Z", "+00:00"))
            retention = Retention(cast(RetentionMode, mode), parsed)
        hold_header = found.get("x-amz-object-lock-legal-hold")
        if hold_header is not None:
            held = hold_header.upper() == "ON"
        elif self.object_lock is False or not hold:
            held = False
        else:
            with self._calls(key, version_id):
                held = self.client.is_object_legal_hold_enabled(
                    self.bucket, key, version_id=version
                )
        return StoredObject(
            key=key,
            sha256=sha,
            size=size,
            version_id=version,
            retention=retention,
            legal_hold=held,
        )

    def _stat(self, key: str, version_id: str | None, *, hold: bool = True) -> StoredObject:
        _check_key(key)
        with self._calls(key, version_id):
            info = self.client.stat_object(self.bucket, key, version_id=version_id)
        headers = dict(info.metadata or {})
        if info.version_id:
            headers["x-amz-version-id"] = info.version_id
        return self._describe(key, headers, version_id, int(info.size or 0), hold=hold)

    def stat(self, key: str, *, version_id: str | None = None) -> StoredObject:
        return self._stat(key, version_id)

    def exists(self, key: str) -> bool:
        try:
            self._stat(key, None, hold=False)  # one HEAD: the legal hold does not matter
        except ObjectMissing:
            return False
        return True

    # writing
    def put(
        self,
        source: BinaryIO | Path,
        *,
        sha256: str | None = None,
        retention: Retention | None = None,
        legal_hold: bool = False,
        content_type: str = "application/pdf",
    ) -> StoredObject:
        self.ensure_bucket()
        if (retention is not None or legal_hold) and not self.object_lock:
            raise ObjectLockUnsupported(bucket=self.bucket)
        with _source_file(source, None) as (path, digest, size):
            _check_announced(sha256, digest)
            key = key_for(digest)
            single = size <= PART_SIZE
            conditional = self.conditional_put and single
            if not conditional:
                current = self._current(key)
                if current is not None and current.size == size:
                    return self._update_existing(current, retention, legal_hold)
            try:
                version_id = self._upload(
                    path, key, digest, size, retention, legal_hold, content_type, conditional
                )
            except _AlreadyThere:
                # the key has a current version: the same bytes (idempotent put), unless its
                # size says otherwise (then a new version is written over it, as before)
                current = self._current(key)
                if current is not None and current.size == size:
                    return self._update_existing(current, retention, legal_hold)
                version_id = self._upload(
                    path, key, digest, size, retention, legal_hold, content_type, False
                )
            return self._settle(key, digest, size, version_id, retention, legal_hold, single)

    def _current(self, key: str) -> StoredObject | None:
        try:
            return self._stat(key, None)
        except ObjectMissing:
            return None

    def _settle(
        self,
        key: str,
        digest: str,
        size: int,
        version_id: str | None,
        retention: Retention | None,
        legal_hold: bool,
        single: bool,
    ) -> StoredObject:
        """The new version as the server now holds it, with the retention and legal hold
        asked for: read back (``verify_readback``: one GET that re-hashes the bytes and whose
        headers describe the version), else taken from what a single PUT sent (the server
        applied its object-lock headers or refused it), else (multipart, whose lock headers
        moto ignores, or a bucket whose default retention applies) one HEAD."""
        if self.verify_readback:
            with self._opened(key, version_id) as (reader, obj):
                reader.copy_to(None)
        elif single and (retention is not None or not self._default_retention):
            obj = StoredObject(key, digest, size, version_id, retention, legal_hold)
        else:
            obj = self._stat(key, version_id)
        # moto ignores object-lock headers on CreateMultipartUpload (measured): apply what
        # is missing on the new version explicitly, then look again.
        missing_retention = retention is not None and obj.retention != retention
        missing_hold = legal_hold and not obj.legal_hold
        if missing_retention:
            self._set_retention(key, retention, obj.version_id, bypass=False)
        if missing_hold:
            self.set_legal_hold(key, True, version_id=obj.version_id)
        if missing_retention or missing_hold:
            obj = self._stat(key, obj.version_id)
        if obj.size != size:
            raise ChecksumMismatch(expected=digest, actual=f"{obj.size} bytes")
        return obj

    def _upload(
        self,
        path: Path,
        key: str,
        digest: str,
        size: int,
        retention: Retention | None,
        legal_hold: bool,
        content_type: str,
        if_absent: bool = False,
    ) -> str | None:
        """Write the object; its version id.  ``if_absent`` (single PUT only): with
        ``If-None-Match: *``, raising :class:`_AlreadyThere` when the server refuses it."""
        from minio.datatypes import Part
        from minio.error import S3Error
        from minio.helpers import genheaders
        from minio.retention import Retention as MinioRetention

        lock = MinioRetention(retention.mode, retention.until) if retention else None
        headers = genheaders({"x-amz-meta-sha256": digest}, None, None, lock, legal_hold)
        headers["Content-Type"] = content_type
        if self.object_lock and not legal_hold:
            # stated, so that HEAD and GET answer it and no separate legal-hold call is needed
            headers["x-amz-object-lock-legal-hold"] = "OFF"
        with self._calls(key), path.open("rb") as src:
            if size <= PART_SIZE:
                data = src.read()
                headers.update(
                    {
                        "Content-MD5": base64.b64encode(hashlib.md5(data).digest()).decode(),  # noqa: S324
                        "x-amz-checksum-sha256": base64.b64encode(bytes.fromhex(digest)).decode(),
                        "x-amz-sdk-checksum-algorithm": "SHA256",
                    }
                )
                if if_absent:
                    headers["If-None-Match"] = "*"
                try:
                    result = self.client._put_object(self.bucket, key, data, headers)
                except S3Error as exc:
                    if if_absent and (exc.code == "PreconditionFailed" or _s3_status(exc) == 412):
                        raise _AlreadyThere from None
                    raise
                return cast(str | None, result.version_id)
            upload_id = self.client._create_multipart_upload(self.bucket, key, headers)
            try:
                parts = []
                number = 0
                while data := src.read(PART_SIZE):
                    number += 1
                    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324
                    result = self.client._put_object(
                        self.bucket,
                        key,
                        data,
                        {"Content-MD5": md5},
                        query_params={"partNumber": str(number), "uploadId": upload_id},
                    )
                    parts.append(Part(number, cast(str, result.etag)))
                    del data
                done = self.client._complete_multipart_upload(self.bucket, key, upload_id, parts)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.client._abort_multipart_upload(self.bucket, key, upload_id)
                raise
            return cast(str | None, done.version_id)

    def _update_existing(
        self, current: StoredObject, retention: Retention | None, legal_hold: bool
    ) -> StoredObject:
        merged = _merge_retention(current.retention, retention, self._now())
        if merged is not None:
            self._set_retention(current.key, merged, current.version_id, bypass=False)
        if legal_hold and not current.legal_hold:
            self.set_legal_hold(current.key, True, version_id=current.version_id)
        if merged is None and not (legal_hold and not current.legal_hold):
            return current
        return self._stat(current.key, current.version_id)

    def _set_retention(
        self, key: str, retention: Retention | None, version_id: str | None, *, bypass: bool
    ) -> None:
        from minio.retention import Retention as MinioRetention
        from minio.xml import marshal

        self._require_lock()
        if retention is None:
            body = b'<Retention xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></Retention>'
        else:
            body = marshal(MinioRetention(retention.mode, retention.until))
        headers = {"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode()}  # noqa: S324
        if bypass:
            headers["x-amz-bypass-governance-retention"] = "true"
        query = {"retention": ""}
        if version_id:
            query["versionId"] = version_id
        with self._calls(key, version_id):
            self.client._execute(
                "PUT",
                self.bucket,
                key,
                body=body,
                headers=cast(Any, headers),
                query_params=cast(Any, query),
            )

    @contextlib.contextmanager
    def _opened(
        self, key: str, version_id: str | None
    ) -> Iterator[tuple[_VerifyingReader, StoredObject]]:
        """One GET: the verifying stream of the bytes, and the object its headers describe
        (version, retention, legal hold; ``x-amz-meta-sha256`` checked against the key)."""
        sha = _check_key(key)
        with self._calls(key, version_id):
            response = self.client.get_object(self.bucket, key, version_id=version_id)

        def release() -> None:
            response.close()
            response.release_conn()

        try:
            length = response.headers.get("content-length")
            size = int(length) if length else None
            obj = self._describe(key, response.headers, version_id, size or 0)
        except BaseException:
            release()
            raise
        with _VerifyingReader(_MappedRead(response, self, key), key, sha, size, release) as reader:
            yield reader, obj

    @contextlib.contextmanager
    def open(self, key: str, *, version_id: str | None = None) -> Iterator[BinaryIO]:
        with self._opened(key, version_id) as (reader, _):
            yield cast(BinaryIO, io.BufferedReader(reader, CHUNK))

    def get(self, key: str, target: Path, *, version_id: str | None = None) -> StoredObject:
        # one GET: what was HEAD + GET (the version, retention and hash are in its headers)
        with self._opened(key, version_id) as (reader, obj):
            _copy_verified(reader, Path(target))
        return obj

    def delete(self, key: str, *, version_id: str | None = None) -> None:
        obj = self._stat(key, version_id)
        _check_deletable(obj, self._now())
        with self._calls(key, version_id):
            self.client.remove_object(self.bucket, key, version_id=version_id)

    def set_legal_hold(self, key: str, on: bool, *, version_id: str | None = None) -> None:
        self._require_lock()
        _check_key(key)
        with self._calls(key, version_id):
            if on:
                self.client.enable_object_legal_hold(self.bucket, key, version_id=version_id)
            else:
                self.client.disable_object_legal_hold(self.bucket, key, version_id=version_id)

    def extend_retention(
        self,
        key: str,
        until: datetime,
        *,
        version_id: str | None = None,
        mode: RetentionMode | None = None,
        bypass: bool = False,
    ) -> None:
        self._require_lock()
        obj = self._stat(key, version_id)
        new = _new_retention(key, obj.retention, until, mode)
        _check_change(key, obj.retention, new, self._now(), bypass)
        self._set_retention(key, new, obj.version_id, bypass=bypass)

    def iter_objects(self) -> Iterator[StoredObject]:
        """The latest version of every object under ``sha256/``."""
        self.ensure_bucket()
        with self._calls():
            names = [
                o.object_name
                for o in self.client.list_objects(self.bucket, prefix="sha256/", recursive=True)
                if o.object_name and not o.is_delete_marker
            ]
        for name in names:
            if _KEY.match(name):
                with contextlib.suppress(ObjectMissing):
                    yield self._stat(name, None)


class _AlreadyThere(Exception):
    """A conditional PUT was refused: the key already has a current version."""


class _MappedRead:
    """The HTTP body of a GET, with network errors mapped to ``StoreUnavailable``."""

    def __init__(self, response: Any, store: S3Store, key: str) -> None:
        self._response = response
        self._store = store
        self._key = key

    def read(self, n: int) -> bytes:
        with self._store._calls(self._key):
            return cast(bytes, self._response.read(n))


# --------------------------------------------------------------------------- factory


def open_store(url: str | Path, *, now: Callable[[], datetime] | None = None) -> ObjectStore:
    """The store a URL names.

    * ``file:///path`` or a plain path → :class:`LocalStore`;
    * ``s3://ACCESS:SECRET@host:port/bucket?secure=false&region=...`` → :class:`S3Store`
      (optional ``connect_timeout``, ``read_timeout``, ``retries``, ``readback=false`` to
      trust the server's checksum verification instead of reading each new object back,
      ``conditional_put=false`` for a server that ignores ``If-None-Match``: see
      :class:`S3Store`; ``secure``, ``readback`` and ``conditional_put`` default to true).
    """
    if isinstance(url, Path):
        return LocalStore(url, now=now)
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        return LocalStore(unquote(parts.path) if parts.scheme else url, now=now)
    if parts.scheme not in ("s3", "minio"):
        raise ValueError(f"unsupported store URL scheme {parts.scheme!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    bucket = parts.path.strip("/")
    if not bucket or not parts.hostname:
        raise ValueError("an S3 store URL needs a host and a bucket: s3://KEY:SECRET@host/bucket")
    endpoint = parts.hostname + (f":{parts.port}" if parts.port else "")
    return S3Store(
        endpoint,
        bucket,
        access_key=unquote(parts.username) if parts.username else None,
        secret_key=unquote(parts.password) if parts.password else None,
        secure=query.get("secure", "true").lower() not in ("false", "0", "no"),
        region=query.get("region", "us-east-1"),
        connect_timeout=float(query.get("connect_timeout", 5)),
        read_timeout=float(query.get("read_timeout", 60)),
        retries=int(query.get("retries", 2)),
        verify_readback=query.get("readback", "true").lower() not in ("false", "0", "no"),
        conditional_put=query.get("conditional_put", "true").lower() not in ("false", "0", "no"),
        now=now,
    )
