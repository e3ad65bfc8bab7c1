"""An RFC 3161 / RFC 5816 time-stamping authority: a pure ``TimeStampReq -> TimeStampResp`` core.

No HTTP, no settings, an injected clock (the shape of Certomancer's TSA, with a product's
policy): serial numbers are unique and persistent (:class:`SQLiteSerialSource`), requests
asking for a policy we do not run are refused, weak or unknown hash algorithms are refused,
and an unsynchronised clock refuses every request rather than issuing a wrong time.

:meth:`TimeStampAuthority.respond` takes the DER of a ``TimeStampReq`` and always returns the
DER of a ``TimeStampResp``; bad input is answered with a rejection carrying a ``failInfo`` and a
``statusString``, never an exception.  RFC 3161 over HTTP answers every query, granted or not,
with ``200 application/timestamp-reply``; :func:`response_status` lets the HTTP layer log
the outcome without parsing the whole token.

Speed: everything constant (certificates, ``SignerIdentifier``, algorithm identifiers, the
ESSCertIDv2 attribute) is encoded once with asn1crypto at construction; per request only the
small variable parts (TSTInfo, messageDigest, the signature) are DER-encoded by hand and
spliced between the precomputed bytes.  Tests load every token strictly with asn1crypto and
check that re-encoding it gives the same bytes, so the hand encoding is held to DER.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import itertools
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from kyso.certs.errors import TSAError

__all__ = [
    "DEV_TSA_POLICY_OID",
    "DIGEST_SIZES",
    "FailureInfo",
    "MemorySerialSource",
    "SQLiteSerialSource",
    "SerialSource",
    "TSAPolicy",
    "TSAResponseStatus",
    "TSASigningKey",
    "TimeStampAuthority",
    "TimeStampResponse",
    "response_status",
]

logger = logging.getLogger(__name__)

#: Policy OID of the development TSA (private-use arc, "not a real TSA").
DEV_TSA_POLICY_OID = "1.3.6.1.4.1.55555.2.1"

#: Digest sizes of the hash algorithms a TSA may accept (asn1crypto names).  SHA-1 and MD5
#: are deliberately absent: they are never accepted.
DIGEST_SIZES: dict[str, int] = {
    "sha224": 28,
    "sha256": 32,
    "sha384": 48,
    "sha512": 64,
    "sha512_224": 28,
    "sha512_256": 32,
    "sha3_224": 28,
    "sha3_256": 32,
    "sha3_384": 48,
    "sha3_512": 64,
}


# --------------------------------------------------------------------------------------------
# Collaborators


@runtime_checkable
class TSASigningKey(Protocol):
    """What the TSA needs from a key handle (``kyso.certs.keys`` provides one)."""

    @property
    def certificate(self) -> x509.Certificate:
        """The TSA certificate."""
        ...

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """The issuers of :attr:`certificate`, nearest first (issuing CA, ..., root)."""
        ...

    @property
    def key_algorithm(self) -> str:
        """``"rsa"`` or ``"ec"``."""
        ...

    def sign(self, data: bytes, hash_name: str = "sha256") -> bytes:
        """Hash ``data`` with ``hash_name`` and sign it (RSA PKCS#1 v1.5, or DER ECDSA)."""
        ...


class SerialSource(Protocol):
    """Hands out unique serial numbers for time-stamp tokens."""

    def next_serial(self) -> int:
        """A serial number never handed out before (positive)."""
        ...


class MemorySerialSource:
    """Serials 1, 2, 3... in memory: for tests and benchmarks only (restarts reuse serials)."""

    def __init__(self, start: int = 1) -> None:
        self._counter = itertools.count(start)
        self._lock = threading.Lock()

    def next_serial(self) -> int:
        with self._lock:
            return next(self._counter)


class SQLiteSerialSource:
    """Unique, persistent serials from an SQLite file, safe across threads and processes.

    The file holds one number, the high-water mark: the first serial no process has reserved
    yet.  A process reserves a block of ``block_size`` serials in one ``BEGIN IMMEDIATE``
    transaction (which takes the write lock, so two processes never get the same block) and
    then hands them out from memory under a lock.  Serials left over when a process stops
    are never reused, so there are gaps but never duplicates; within one instance serials are
    strictly increasing, and every block starts past every block reserved before it.

    A forked child never reuses its parent's block: the block (and the connection, which must
    not cross a fork) is dropped when the process id changes.
    """

    def __init__(self, path: Path | str, block_size: int = 1000, *, timeout: float = 30.0) -> None:
        if block_size < 1:
            raise ValueError("block_size must be at least 1")
        self.path = Path(path)
        self.block_size = block_size
        self._timeout = timeout
        self._lock = threading.Lock()
        self._next = 0
        self._end = 0  # exclusive end of the block in hand; empty when _next >= _end
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = None
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS tsa_serial ("
            " id INTEGER PRIMARY KEY CHECK (id = 1),"
            " next_serial INTEGER NOT NULL CHECK (next_serial >= 1))"
        )
        conn.execute("INSERT OR IGNORE INTO tsa_serial (id, next_serial) VALUES (1, 1)")
        self._conn = conn
        return conn

    def _reserve_block(self) -> None:
        if self._pid != os.getpid() or self._conn is None:
            # Forked (or closed): the parent's block and connection are not ours.
            self._pid = os.getpid()
            self._next = self._end = 0
            self._connect()
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            (start,) = conn.execute("SELECT next_serial FROM tsa_serial WHERE id = 1").fetchone()
            conn.execute(
                "UPDATE tsa_serial SET next_serial = ? WHERE id = 1", (start + self.block_size,)
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._next, self._end = start, start + self.block_size

    def next_serial(self) -> int:
        with self._lock:
            if self._next >= self._end or self._pid != os.getpid():
                self._reserve_block()
            serial = self._next
            self._next += 1
            return serial

    def in_hand(self) -> bool:
        """Whether the next serial comes from memory (no database round trip).

        A hint for callers that want to keep file I/O off an event loop: it is read without
        the lock, so a concurrent caller may take the last serial in between."""
        return self._next < self._end and self._pid == os.getpid()

    def close(self) -> None:
        """Close the database connection (unused serials of the block are abandoned)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._next = self._end = 0


# --------------------------------------------------------------------------------------------
# Policy and status


@dataclass(frozen=True)
class TSAPolicy:
    """How the TSA answers: which policies, hashes and accuracy it offers."""

    policy_oid: str = DEV_TSA_POLICY_OID
    """The TSA policy written into tokens when the request names none."""

    accepted_policies: frozenset[str] = field(default_factory=frozenset)
    """Policies a request may ask for (``reqPolicy``); empty means ``{policy_oid}``."""

    accuracy: dt.timedelta | None = dt.timedelta(seconds=1)
    """Accuracy claimed in tokens (None: omitted); below one second genTime has a fraction."""

    hash_algorithms: frozenset[str] = frozenset({"sha256", "sha384", "sha512"})
    """Message imprint algorithms accepted (asn1crypto names, see :data:`DIGEST_SIZES`)."""

    clock_synchronised: bool = True
    """False refuses every request with ``timeNotAvailable`` (the clock cannot be trusted)."""

    ordering: bool = False
    """Whether tokens claim RFC 3161 ordering."""

    include_tsa_name: bool = True
    """Whether tokens carry the TSA certificate subject in the ``tsa`` field."""

    def __post_init__(self) -> None:
        core.ObjectIdentifier(self.policy_oid)  # raises ValueError on a malformed OID
        if not self.accepted_policies:
            object.__setattr__(self, "accepted_policies", frozenset({self.policy_oid}))
        elif self.policy_oid not in self.accepted_policies:
            raise ValueError("accepted_policies must include policy_oid")
        unknown = set(self.hash_algorithms) - DIGEST_SIZES.keys()
        if unknown or not self.hash_algorithms:
            raise ValueError(
                f"unsupported hash algorithms {sorted(unknown)}; choose from {sorted(DIGEST_SIZES)}"
            )
        if self.accuracy is not None and self.accuracy <= dt.timedelta(0):
            raise ValueError("accuracy must be positive (or None)")


class TSAResponseStatus(enum.IntEnum):
    """PKIStatus values of RFC 3161 §2.4.2."""

    GRANTED = 0
    GRANTED_WITH_MODS = 1
    REJECTION = 2
    WAITING = 3
    REVOCATION_WARNING = 4
    REVOCATION_NOTIFICATION = 5


class FailureInfo(enum.Enum):
    """PKIFailureInfo bits a TSA reports (values are asn1crypto's names)."""

    BAD_ALG = "bad_alg"
    BAD_REQUEST = "bad_request"
    BAD_DATA_FORMAT = "bad_data_format"
    TIME_NOT_AVAILABLE = "time_not_available"
    UNACCEPTED_POLICY = "unaccepted_policy"
    UNACCEPTED_EXTENSION = "unaccepted_extensions"
    SYSTEM_FAILURE = "system_failure"


class TimeStampResponse(core.Sequence):
    """``TimeStampResp`` as RFC 3161 defines it: the token is OPTIONAL.

    asn1crypto 1.5.1's :class:`asn1crypto.tsp.TimeStampResp` declares ``timeStampToken``
    mandatory, so it cannot parse a rejection (which must not carry a token).  Load responses
    with this class instead.
    """

    _fields = [  # noqa: RUF012 (asn1crypto's declaration style)
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


def response_status(response_der: bytes) -> TSAResponseStatus:
    """The PKIStatus of a DER ``TimeStampResp`` (for logging/metrics in the HTTP layer)."""
    resp = TimeStampResponse.load(response_der)
    return TSAResponseStatus(int(resp["status"]["status"]))


class _Rejected(Exception):
    """Internal: the request is refused with ``failure`` and ``text``."""

    def __init__(self, failure: FailureInfo, text: str) -> None:
        super().__init__(text)
        self.failure = failure
        self.text = text


# --------------------------------------------------------------------------------------------
# Minimal DER writer for the per-request parts


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _len(len(content)) + content


def _int(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def _generalized_time(when: dt.datetime, fraction: bool) -> bytes:
    text = when.strftime("%Y%m%d%H%M%S")
    if fraction and when.microsecond:
        text += "." + f"{when.microsecond:06d}".rstrip("0")
    return _tlv(0x18, (text + "Z").encode("ascii"))


def _der_set(elements: Iterable[bytes], tag: int = 0x31) -> bytes:
    """A DER SET OF: elements sorted by their encodings (X.690 §11.6)."""
    return _tlv(tag, b"".join(sorted(elements)))


def _attribute(attr_type: str, value_der: bytes) -> bytes:
    oid = cms.CMSAttributeType(attr_type).dump()
    return _tlv(0x30, oid + _tlv(0x31, value_der))


_OID_SIGNED_DATA = cms.ContentType("signed_data").dump()
_OID_TST_INFO = cms.ContentType("tst_info").dump()
_GRANTED = _tlv(0x30, _int(0))
_HASHLIB = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


def _accuracy(accuracy: dt.timedelta) -> bytes:
    micros_total = accuracy // dt.timedelta(microseconds=1)
    seconds, rest = divmod(micros_total, 1_000_000)
    millis, micros = divmod(rest, 1000)
    body = b""
    if seconds:
        body += _int(seconds)
    if millis:
        body += _tlv(0x80, _int(millis)[2:])
    if micros:
        body += _tlv(0x81, _int(micros)[2:])
    return _tlv(0x30, body)


# --------------------------------------------------------------------------------------------
# The authority


@dataclass(frozen=True)
class _Request:
    imprint_der: bytes
    policy_oid: str
    nonce_der: bytes | None
    cert_req: bool


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _check_tsa_certificate(cert: x509.Certificate) -> None:
    """RFC 3161 §2.3: the only EKU is id-kp-timeStamping, and it is critical."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        eku = None
    if eku is None or not eku.critical or list(eku.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        raise TSAError(
            detail="the TSA certificate must have id-kp-timeStamping as its only, critical, "
            "extended key usage (RFC 3161 §2.3)"
        )


class TimeStampAuthority:
    """Issues RFC 3161 time-stamp tokens signed by ``key`` under ``policy``.

    Thread-safe as long as ``key.sign`` and ``serials.next_serial`` are.
    """

    def __init__(
        self,
        *,
        key: TSASigningKey,
        policy: TSAPolicy,
        serials: SerialSource,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        cert = key.certificate
        _check_tsa_certificate(cert)
        self._key = key
        self.policy = policy
        self._serials = serials
        self._clock = clock
        self._not_before = cert.not_valid_before_utc
        self._not_after = cert.not_valid_after_utc

        # Signature and digest algorithms follow the key (sha384 for P-384, sha512 for P-521).
        if key.key_algorithm == "ec":
            public_key = cert.public_key()
            assert isinstance(public_key, ec.EllipticCurvePublicKey)
            size = public_key.curve.key_size
            self._hash_name = "sha256" if size <= 256 else "sha384" if size <= 384 else "sha512"
            sig_alg = f"{self._hash_name}_ecdsa"
        elif key.key_algorithm == "rsa":
            self._hash_name = "sha256"
            sig_alg = "rsassa_pkcs1v15"
        else:
            raise TSAError(detail=f"unsupported TSA key algorithm {key.key_algorithm!r}")
        self._hash = _HASHLIB[self._hash_name]

        asn1_cert = asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))
        chain = [asn1_x509.Certificate.load(c.public_bytes(Encoding.DER)) for c in key.chain]
        digest_alg = algos.DigestAlgorithm({"algorithm": self._hash_name}).dump()
        sig_alg_der = algos.SignedDigestAlgorithm({"algorithm": sig_alg}).dump()
        issuer_serial = cms.IssuerAndSerialNumber(
            {"issuer": asn1_cert.issuer, "serial_number": asn1_cert.serial_number}
        ).dump()
        ess = tsp.SigningCertificateV2(
            {
                "certs": [
                    {
                        # hash_algorithm left out: its DEFAULT is sha256 (RFC 5035)
                        "cert_hash": hashlib.sha256(asn1_cert.dump()).digest(),
                        "issuer_serial": {
                            "issuer": [asn1_x509.GeneralName({"directory_name": asn1_cert.issuer})],
                            "serial_number": asn1_cert.serial_number,
                        },
                    }
                ]
            }
        ).dump()

        # Constant pieces, in the order they are spliced together.
        self._const_attrs = (
            _attribute("content_type", _OID_TST_INFO),
            _attribute("signing_certificate_v2", ess),
        )
        self._md_attr_prefix = cms.CMSAttributeType("message_digest").dump()
        self._sd_head = _int(3) + _tlv(0x31, digest_alg)
        self._certs_der = _der_set([asn1_cert.dump(), *(c.dump() for c in chain)], tag=0xA0)
        self._si_head = _int(1) + issuer_serial + digest_alg
        self._sig_alg_der = sig_alg_der
        self._tsa_name = (
            _tlv(0xA0, asn1_x509.GeneralName({"directory_name": asn1_cert.subject}).dump())
            if policy.include_tsa_name
            else b""
        )
        self._accuracy = _accuracy(policy.accuracy) if policy.accuracy is not None else b""
        self._fraction = policy.accuracy is not None and policy.accuracy < dt.timedelta(seconds=1)
        self._ordering = _tlv(0x01, b"\xff") if policy.ordering else b""
        self._policy_der = {
            oid: core.ObjectIdentifier(oid).dump() for oid in policy.accepted_policies
        }

    # -- public API ----------------------------------------------------------------------

    def respond(self, request_der: bytes) -> bytes:
        """Answer a DER ``TimeStampReq`` with a DER ``TimeStampResp`` (never raises)."""
        try:
            if not self.policy.clock_synchronised:
                raise _Rejected(FailureInfo.TIME_NOT_AVAILABLE, "the TSA clock is not synchronised")
            request = self._parse(request_der)
            return self._grant(request)
        except _Rejected as r:
            return self.rejection(r.failure, r.text)
        except Exception as e:
            # Log the type and message only: never the request, the key or key material.
            logger.error("TSA internal failure: %s: %s", type(e).__name__, e)
            return self.rejection(FailureInfo.SYSTEM_FAILURE, "internal TSA failure")

    def serial_in_hand(self) -> bool:
        """Whether the next token's serial needs no I/O (see :meth:`SQLiteSerialSource.in_hand`);
        False when the serial source cannot tell."""
        in_hand = getattr(self._serials, "in_hand", None)
        return bool(in_hand()) if callable(in_hand) else False

    @staticmethod
    def rejection(failure: FailureInfo, text: str) -> bytes:
        """A DER ``TimeStampResp`` refusing a request with ``failure`` and ``text``."""
        status = tsp.PKIStatusInfo(
            {
                "status": "rejection",
                "status_string": [text],
                "fail_info": tsp.PKIFailureInfo({failure.value}),
            }
        )
        return _tlv(0x30, status.dump())

    # -- internals -----------------------------------------------------------------------

    def _parse(self, der: bytes) -> _Request:
        try:
            req = tsp.TimeStampReq.load(der, strict=True)
            version = req["version"].native
            imprint = req["message_imprint"]
            hash_name = imprint["hash_algorithm"]["algorithm"].native
            # parsed here so that a malformed parameters field is refused, not copied into the
            # token (the imprint is echoed byte for byte)
            hash_params = imprint["hash_algorithm"]["parameters"].native
            hashed = imprint["hashed_message"].native
            req_policy = req["req_policy"].native
            nonce = req["nonce"]
            nonce_value = nonce.native
            cert_req = bool(req["cert_req"].native)
            extensions = req["extensions"].native
            imprint_der = imprint.dump()
        except Exception as e:
            raise _Rejected(
                FailureInfo.BAD_DATA_FORMAT, "the request is not a DER TimeStampReq"
            ) from e
        if hash_params is not None:
            raise _Rejected(
                FailureInfo.BAD_DATA_FORMAT, "hash algorithm parameters must be absent or NULL"
            )
        if version != "v1":
            raise _Rejected(FailureInfo.BAD_DATA_FORMAT, f"unsupported request version {version}")
        if hash_name not in self.policy.hash_algorithms:
            accepted = ", ".join(sorted(self.policy.hash_algorithms))
            raise _Rejected(
                FailureInfo.BAD_ALG,
                f"hash algorithm {hash_name} is not accepted; use one of {accepted}",
            )
        if len(hashed) != DIGEST_SIZES[hash_name]:
            raise _Rejected(
                FailureInfo.BAD_DATA_FORMAT,
                f"a {hash_name} imprint has {DIGEST_SIZES[hash_name]} bytes, not {len(hashed)}",
            )
        if req_policy is None:
            policy_oid = self.policy.policy_oid
        elif req_policy in self.policy.accepted_policies:
            policy_oid = req_policy
        else:
            raise _Rejected(FailureInfo.UNACCEPTED_POLICY, f"policy {req_policy} is not offered")
        if extensions:
            raise _Rejected(
                FailureInfo.UNACCEPTED_EXTENSION, "request extensions are not supported"
            )
        nonce_der = _tlv(0x02, nonce.contents) if nonce_value is not None else None
        return _Request(imprint_der, policy_oid, nonce_der, cert_req)

    def _grant(self, request: _Request) -> bytes:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the TSA clock returned a naive datetime")
        now = now.astimezone(dt.UTC)
        if not self._fraction:
            now = now.replace(microsecond=0)
        if not self._not_before <= now <= self._not_after:
            logger.error("TSA certificate not valid at %s: refusing to issue tokens", now)
            raise _Rejected(
                FailureInfo.SYSTEM_FAILURE, "the TSA certificate is not valid at this time"
            )
        tst_info = _tlv(
            0x30,
            b"".join(
                (
                    b"\x02\x01\x01",  # version v1
                    self._policy_der[request.policy_oid],
                    request.imprint_der,
                    _int(self._serials.next_serial()),
                    _generalized_time(now, self._fraction),
                    self._accuracy,
                    self._ordering,
                    request.nonce_der or b"",
                    self._tsa_name,
                )
            ),
        )
        md_attr = _tlv(
            0x30,
            self._md_attr_prefix + _tlv(0x31, _tlv(0x04, self._hash(tst_info).digest())),
        )
        attrs = sorted((*self._const_attrs, md_attr))
        signed_attrs = b"".join(attrs)
        signature = self._key.sign(_tlv(0x31, signed_attrs), self._hash_name)
        signer_info = _tlv(
            0x30,
            self._si_head + _tlv(0xA0, signed_attrs) + self._sig_alg_der + _tlv(0x04, signature),
        )
        signed_data = _tlv(
            0x30,
            self._sd_head
            + _tlv(0x30, _OID_TST_INFO + _tlv(0xA0, _tlv(0x04, tst_info)))
            + (self._certs_der if request.cert_req else b"")
            + _tlv(0x31, signer_info),
        )
        token = _tlv(0x30, _OID_SIGNED_DATA + _tlv(0xA0, signed_data))
        return _tlv(0x30, _GRANTED + token)
