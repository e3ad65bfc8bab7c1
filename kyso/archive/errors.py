"""Errors of the archive's object storage (``kyso.archive.storage``).

Each error carries a catalogue code (``kyso/i18n/messages/archive_storage.toml``) and the
parameters its message needs; no message ever contains a traceback or a raw server answer
beyond a short reason.
"""

from __future__ import annotations

from kyso.errors import KysoError


class StorageError(KysoError):
    """Anything that went wrong while storing or reading an archived object."""

    code = "archive.storage.error"


class StoreUnavailable(StorageError):
    """The store cannot be reached or answered with a server error (try again later)."""

    code = "archive.storage.unavailable"


class ObjectMissing(StorageError, LookupError):
    """No object (or no such version of it) under that key."""

    code = "archive.storage.missing"


class InvalidKey(StorageError, ValueError):
    """The key is not a content address ``sha256/<hex[:2]>/<hex>``."""

    code = "archive.storage.invalid_key"


class ChecksumMismatch(StorageError):
    """The bytes written are not the bytes announced (the SHA-256 differs)."""

    code = "archive.storage.checksum_mismatch"


class ObjectCorrupt(StorageError):
    """A stored object no longer has the SHA-256 its key names: it was altered or damaged."""

    code = "archive.storage.corrupt"


class RetentionViolation(StorageError):
    """The operation would break a retention period or a legal hold."""

    code = "archive.storage.retention_violation"


class ObjectLockUnsupported(StorageError):
    """Retention or legal hold was asked of a bucket without object lock."""

    code = "archive.storage.no_object_lock"
