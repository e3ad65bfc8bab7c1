"""The built-in (development/demo) PKI kept in a data directory.

Layout under ``<data dir>/pki``::

    root-ca.pem  issuing-ca.pem  tsa.pem  ocsp.pem     CA and service certificates
    config.json                                        public URL and key types chosen at init
    state.sqlite3                                      issued certificates, revocations, counters
    crl/root.crl  crl/issuing.crl                      the current signed CRLs (DER)

Private keys live in a key store (encrypted PKCS#12 files by default) under the labels
:data:`ROOT_LABEL`, :data:`ISSUING_LABEL`, :data:`TSA_LABEL` and :data:`OCSP_LABEL`; end-entity
keys under their own labels, in a file store or on a PKCS#11 token.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PublicKeyTypes,
)
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from kyso.certs import builders
from kyso.certs.errors import PKIError
from kyso.certs.keys import FileKeyStore, KeyHandle
from kyso.certs.revocation import CertStatus, OCSPResponder, RevokedEntry, build_crl

ROOT_LABEL = "kyso-root-ca"
ISSUING_LABEL = "kyso-issuing-ca"
TSA_LABEL = "kyso-tsa"
OCSP_LABEL = "kyso-ocsp"
INFRA_LABELS = (ROOT_LABEL, ISSUING_LABEL, TSA_LABEL, OCSP_LABEL)

Issuer = Literal["root", "issuing"]
Kind = Literal["root-ca", "issuing-ca", "tsa", "ocsp", "person", "org"]

#: How long a CRL is valid; it is re-signed after half of that, or at once on a revocation.
CRL_VALIDITY = dt.timedelta(days=7)

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class KeyGenerator(Protocol):
    """A key store that can create a key and later hold its certificate (PKCS#11 tokens)."""

    def generate(self, label: str, key_type: str = ...) -> PublicKeyTypes: ...

    def store_certificate(
        self, label: str, certificate: x509.Certificate, chain: Sequence[x509.Certificate] = ...
    ) -> None: ...

    def has(self, label: str) -> bool: ...

    def uri(self, label: str) -> str: ...


@dataclass(frozen=True)
class CertificateRecord:
    """One certificate the built-in PKI issued, as kept in its state database."""

    serial: int
    label: str
    kind: str
    issuer: str
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime
    key_uri: str
    revoked_at: dt.datetime | None
    reason: str | None  # RFC 5280 name, e.g. "keyCompromise"
    pem: str

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "X")

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.pem.encode())

    def status_at(self, when: dt.datetime) -> str:
        if self.revoked_at is not None and self.revoked_at <= when:
            return "revoked"
        if when > self.not_after:
            return "expired"
        if when < self.not_before:
            return "not-yet-valid"
        return "valid"


def parse_serial(text: str) -> int:
    """A serial number given as hex (``3A:F0...``, ``0x3af0``, ``3AF0``) or decimal (``d:1234``)."""
    s = text.strip()
    try:
        if s.lower().startswith("d:"):
            return int(s[2:], 10)
        s = s.replace(":", "").replace(" ", "")
        if s.lower().startswith("0x"):
            s = s[2:]
        return int(s, 16)
    except ValueError:
        raise PKIError("certs.pki.bad_serial", text=text) from None


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS certificates (
        serial TEXT PRIMARY KEY, label TEXT NOT NULL, kind TEXT NOT NULL,
        issuer TEXT NOT NULL, subject TEXT NOT NULL, not_before TEXT NOT NULL,
        not_after TEXT NOT NULL, key_uri TEXT NOT NULL, pem TEXT NOT NULL,
        issued_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS revocations (
        serial TEXT PRIMARY KEY REFERENCES certificates(serial),
        revoked_at TEXT NOT NULL, reason TEXT NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
        serial TEXT, detail TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL)""",
)

GENESIS = "0" * 64


@dataclass(frozen=True)
class PKIEvent:
    """One entry of the PKI's audit trail (hash-chained: each entry seals the one before)."""

    seq: int
    at: str  # ISO 8601, as sealed: kept as text so a tampered value cannot break reading
    actor: str
    action: str
    serial: str | None
    detail: str
    prev: str
    hash: str

    @staticmethod
    def digest(
        seq: int, at: str, actor: str, action: str, serial: str | None, detail: str, prev: str
    ) -> str:
        payload = json.dumps(
            [seq, at, actor, action, serial, detail, prev],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode()).hexdigest()


class PKIState:
    """The PKI's bookkeeping in SQLite: safe to share between processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        with self._tx() as db:
            for statement in _SCHEMA:
                db.execute(statement)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def add(
        self,
        *,
        cert: x509.Certificate,
        label: str,
        kind: str,
        issuer: str,
        key_uri: str,
        actor: str = "system",
    ) -> None:
        with self._tx() as db:
            self._event(
                db,
                actor=actor,
                action="issue",
                serial=format(cert.serial_number, "X"),
                detail=f"{kind} {label} ({key_uri}): {cert.subject.rfc4514_string()}",
            )
            db.execute(
                "INSERT INTO certificates VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    format(cert.serial_number, "X"),
                    label,
                    kind,
                    issuer,
                    cert.subject.rfc4514_string(),
                    cert.not_valid_before_utc.isoformat(),
                    cert.not_valid_after_utc.isoformat(),
                    key_uri,
                    cert.public_bytes(Encoding.PEM).decode(),
                    utc_now().isoformat(),
                ),
            )

    _SELECT = (
        "SELECT c.serial, c.label, c.kind, c.issuer, c.subject, c.not_before, c.not_after,"
        " c.key_uri, r.revoked_at, r.reason, c.pem FROM certificates c"
        " LEFT JOIN revocations r ON r.serial = c.serial"
    )

    @staticmethod
    def _record(row: tuple) -> CertificateRecord:
        return CertificateRecord(
            serial=int(row[0], 16),
            label=row[1],
            kind=row[2],
            issuer=row[3],
            subject=row[4],
            not_before=dt.datetime.fromisoformat(row[5]),
            not_after=dt.datetime.fromisoformat(row[6]),
            key_uri=row[7],
            revoked_at=dt.datetime.fromisoformat(row[8]) if row[8] else None,
            reason=row[9],
            pem=row[10],
        )

    def records(self) -> list[CertificateRecord]:
        rows = self._conn().execute(self._SELECT + " ORDER BY c.issued_at, c.serial").fetchall()
        return [self._record(r) for r in rows]

    def get(self, serial: int) -> CertificateRecord | None:
        row = (
            self._conn()
            .execute(self._SELECT + " WHERE c.serial = ?", (format(serial, "X"),))
            .fetchone()
        )
        return self._record(row) if row else None

    def revoke(
        self, serial: int, *, at: dt.datetime, reason: x509.ReasonFlags, actor: str = "system"
    ) -> None:
        with self._tx() as db:
            key = format(serial, "X")
            if db.execute("SELECT 1 FROM certificates WHERE serial=?", (key,)).fetchone() is None:
                raise PKIError("certs.pki.no_such_serial", serial=key)
            if db.execute("SELECT 1 FROM revocations WHERE serial=?", (key,)).fetchone():
                raise PKIError("certs.pki.already_revoked", serial=key)
            db.execute(
                "INSERT INTO revocations VALUES (?,?,?)", (key, at.isoformat(), reason.value)
            )
            self._event(db, actor=actor, action="revoke", serial=key, detail=reason.value)

    def record_event(
        self, *, actor: str, action: str, detail: str, serial: str | None = None
    ) -> None:
        """Append an entry to the audit trail on its own."""
        with self._tx() as db:
            self._event(db, actor=actor, action=action, serial=serial, detail=detail)

    @staticmethod
    def _event(
        db: sqlite3.Connection, *, actor: str, action: str, serial: str | None, detail: str
    ) -> None:
        # inside the caller's BEGIN IMMEDIATE transaction: no other writer can interleave
        last = db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        at = utc_now().isoformat()
        digest = PKIEvent.digest(seq, at, actor, action, serial, detail, prev)
        db.execute(
            "INSERT INTO events VALUES (?,?,?,?,?,?,?,?)",
            (seq, at, actor, action, serial, detail, prev, digest),
        )

    def events(self) -> list[PKIEvent]:
        rows = self._conn().execute("SELECT * FROM events ORDER BY seq").fetchall()
        return [
            PKIEvent(
                seq=r[0],
                at=r[1],
                actor=r[2],
                action=r[3],
                serial=r[4],
                detail=r[5],
                prev=r[6],
                hash=r[7],
            )
            for r in rows
        ]

    def verify_events(self) -> int | None:
        """The sequence number of the first entry whose seal is broken, or None when intact."""
        prev = GENESIS
        expected_seq = 1
        for row in self._conn().execute("SELECT * FROM events ORDER BY seq"):
            seq, at, actor, action, serial, detail, stored_prev, stored = row
            ok = (
                seq == expected_seq
                and stored_prev == prev
                and PKIEvent.digest(seq, at, actor, action, serial, detail, prev) == stored
            )
            if not ok:
                return int(seq)
            prev, expected_seq = stored, expected_seq + 1
        return None

    def revoked(self, issuer: str) -> list[RevokedEntry]:
        rows = (
            self._conn()
            .execute(
                "SELECT r.serial, r.revoked_at, r.reason FROM revocations r"
                " JOIN certificates c ON c.serial = r.serial WHERE c.issuer = ?",
                (issuer,),
            )
            .fetchall()
        )
        return [
            RevokedEntry(
                serial=int(s, 16),
                revoked_at=dt.datetime.fromisoformat(at),
                reason=x509.ReasonFlags(reason),
            )
            for s, at, reason in rows
        ]

    def crl_snapshot(self, issuer: str) -> tuple[list[RevokedEntry], int]:
        """The revocations of ``issuer`` and the next CRL number, read in one transaction."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT r.serial, r.revoked_at, r.reason FROM revocations r"
                " JOIN certificates c ON c.serial = r.serial WHERE c.issuer = ?",
                (issuer,),
            ).fetchall()
            name = f"crl:{issuer}"
            row = db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
            number = (row[0] if row else 0) + 1
            db.execute("INSERT OR REPLACE INTO counters VALUES (?,?)", (name, number))
        entries = [
            RevokedEntry(
                serial=int(serial, 16),
                revoked_at=dt.datetime.fromisoformat(at),
                reason=x509.ReasonFlags(reason),
            )
            for serial, at, reason in rows
        ]
        return entries, int(number)

    def next_counter(self, name: str) -> int:
        with self._tx() as db:
            row = db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
            value = (row[0] if row else 0) + 1
            db.execute("INSERT OR REPLACE INTO counters VALUES (?,?)", (name, value))
            return int(value)


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.PEM)


@dataclass(frozen=True)
class IssuedCertificate:
    """What :meth:`BuiltinPKI.issue` hands back."""

    label: str
    key_uri: str
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]


class BuiltinPKI:
    """Root CA → issuing CA → TSA, OCSP responder and signer certificates, on disk."""

    def __init__(self, directory: Path, keys: FileKeyStore, *, clock: Clock = utc_now) -> None:
        self.directory = Path(directory)
        self.keys = keys
        self.clock = clock
        self._state: PKIState | None = None
        self._crl_lock = threading.Lock()
        self._certs: dict[str, x509.Certificate] = {}

    # -- creation ---------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.directory / "config.json").is_file()

    def init(
        self,
        *,
        public_url: str,
        ca_key_type: str = "rsa-3072",
        service_key_type: str = "ec-p256",
        actor: str = "system",
    ) -> None:
        """Create the PKI. Refuses to touch an existing one."""
        if self.exists():
            raise PKIError("certs.pki.exists", path=str(self.directory))
        for label in INFRA_LABELS:
            if self.keys.has(label):
                raise PKIError("certs.pki.infra_key_exists", label=label)
        existed = self.directory.exists()
        try:
            self._create(
                public_url=public_url,
                ca_key_type=ca_key_type,
                service_key_type=service_key_type,
                actor=actor,
            )
        except BaseException:
            # Leave nothing half-made behind, so that init can simply be run again.
            self._state = None
            self._certs.clear()
            for label in INFRA_LABELS:
                self.keys.path(label).unlink(missing_ok=True)
            if not existed:
                shutil.rmtree(self.directory, ignore_errors=True)
            else:
                (self.directory / "config.json").unlink(missing_ok=True)
            raise

    def _create(
        self, *, public_url: str, ca_key_type: str, service_key_type: str, actor: str
    ) -> None:
        material = builders.build_dev_pki(
            now=self.clock(),
            public_url=public_url,
            ca_key_type=ca_key_type,
            service_key_type=service_key_type,
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        chain_i = (material.root_cert,)
        chain_s = (material.issuing_cert, material.root_cert)
        self.keys.save(ROOT_LABEL, material.root_key, material.root_cert, ())
        self.keys.save(ISSUING_LABEL, material.issuing_key, material.issuing_cert, chain_i)
        self.keys.save(TSA_LABEL, material.tsa_key, material.tsa_cert, chain_s)
        self.keys.save(OCSP_LABEL, material.ocsp_key, material.ocsp_cert, chain_s)
        state = self.state
        state.record_event(actor=actor, action="init", detail=f"development PKI for {public_url}")
        for label, kind, issuer, cert in (
            (ROOT_LABEL, "root-ca", "root", material.root_cert),
            (ISSUING_LABEL, "issuing-ca", "root", material.issuing_cert),
            (TSA_LABEL, "tsa", "issuing", material.tsa_cert),
            (OCSP_LABEL, "ocsp", "issuing", material.ocsp_cert),
        ):
            state.add(
                cert=cert,
                label=label,
                kind=kind,
                issuer=issuer,
                key_uri=f"file:{label}",
                actor=actor,
            )
        for name, cert in (
            ("root-ca.pem", material.root_cert),
            ("issuing-ca.pem", material.issuing_cert),
            ("tsa.pem", material.tsa_cert),
            ("ocsp.pem", material.ocsp_cert),
        ):
            write_atomic(self.directory / name, _pem(cert))
        config = {
            "public_url": public_url,
            "ca_key_type": ca_key_type,
            "service_key_type": service_key_type,
            "created": self.clock().isoformat(),
        }
        # config.json last: its presence is what says "the PKI exists".
        write_atomic(self.directory / "config.json", json.dumps(config, indent=2).encode())
        self._refresh_crl("root", force=True)
        self._refresh_crl("issuing", force=True)

    # -- reading ----------------------------------------------------------------------------
    def _require(self) -> None:
        if not self.exists():
            raise PKIError("certs.pki.missing", path=str(self.directory))

    @property
    def state(self) -> PKIState:
        if self._state is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._state = PKIState(self.directory / "state.sqlite3")
        return self._state

    @property
    def config(self) -> dict[str, str]:
        self._require()
        data: dict[str, str] = json.loads((self.directory / "config.json").read_text())
        return data

    def _cert(self, name: str) -> x509.Certificate:
        # The CA and service certificates never change once the PKI exists: read each once.
        cert = self._certs.get(name)
        if cert is None:
            self._require()
            cert = x509.load_pem_x509_certificate((self.directory / name).read_bytes())
            self._certs[name] = cert
        return cert

    @property
    def root_cert(self) -> x509.Certificate:
        return self._cert("root-ca.pem")

    @property
    def issuing_cert(self) -> x509.Certificate:
        return self._cert("issuing-ca.pem")

    @property
    def tsa_cert(self) -> x509.Certificate:
        return self._cert("tsa.pem")

    @property
    def ocsp_cert(self) -> x509.Certificate:
        return self._cert("ocsp.pem")

    @property
    def root_path(self) -> Path:
        return self.directory / "root-ca.pem"

    def ca_cert(self, issuer: Issuer) -> x509.Certificate:
        return self.root_cert if issuer == "root" else self.issuing_cert

    def _ca_key(self, issuer: Issuer) -> CertificateIssuerPrivateKeyTypes:
        key = self.keys.load(ROOT_LABEL if issuer == "root" else ISSUING_LABEL).private_key()
        return key  # type: ignore[return-value]

    def tsa_key(self) -> KeyHandle:
        self._require()
        return self.keys.load(TSA_LABEL)

    def records(self) -> list[CertificateRecord]:
        self._require()
        return self.state.records()

    def status(self, serial: int) -> CertStatus:
        """Revocation status of a certificate the issuing CA issued (for the OCSP responder)."""
        record = self.state.get(serial)
        if record is None or record.issuer != "issuing":
            return CertStatus(kind="unknown")
        if record.revoked_at is not None:
            return CertStatus(
                kind="revoked",
                revoked_at=record.revoked_at,
                reason=x509.ReasonFlags(record.reason or "unspecified"),
            )
        return CertStatus(kind="good")

    # -- issuing ----------------------------------------------------------------------------
    def issue(
        self,
        *,
        kind: Literal["person", "org"],
        subject: x509.Name,
        label: str,
        key_type: str = "rsa-2048",
        days: float = 730,
        public_url: str | None = None,
        token: KeyGenerator | None = None,
        emails: tuple[str, ...] = (),
        actor: str = "system",
    ) -> IssuedCertificate:
        """Create a key (in the file store, or on ``token``) and certify it for signing."""
        self._require()
        if kind not in ("person", "org"):
            raise PKIError("certs.pki.bad_kind", kind=kind)
        if key_type not in ("rsa-2048", "rsa-3072", "ec-p256"):
            raise PKIError("certs.pki.bad_key_type", key_type=key_type)
        if label in INFRA_LABELS:
            raise PKIError("certs.pki.reserved_label", label=label)
        store_has = token.has(label) if token is not None else self.keys.has(label)
        if store_has:
            from kyso.certs.errors import KeyExistsError

            raise KeyExistsError(label=label)
        issuing_cert = self.issuing_cert
        issuing_key = self._ca_key("issuing")
        urls = builders.ServiceURLs.for_public_url(
            public_url or self.config["public_url"], "issuing"
        )
        private_key = None
        if token is None:
            private_key = builders.new_private_key(key_type)
            public_key: CertificatePublicKeyTypes = private_key.public_key()
        else:
            public_key = cast(CertificatePublicKeyTypes, token.generate(label, key_type))
        cert = builders.build_signer_certificate(
            public_key,
            subject,
            issuer_cert=issuing_cert,
            issuer_key=issuing_key,
            now=self.clock(),
            days=days,
            urls=urls,
            emails=emails,
        )
        chain = (issuing_cert, self.root_cert)
        if token is None:
            assert private_key is not None
            handle = self.keys.save(label, private_key, cert, chain)
            key_uri = handle.uri
        else:
            token.store_certificate(label, cert, chain)
            key_uri = token.uri(label)
        self.state.add(
            cert=cert, label=label, kind=kind, issuer="issuing", key_uri=key_uri, actor=actor
        )
        return IssuedCertificate(label=label, key_uri=key_uri, certificate=cert, chain=chain)

    def issued_here(self, cert: x509.Certificate) -> bool:
        """Whether ``cert`` is one this PKI issued (the very certificate, not a look-alike)."""
        record = self.state.get(cert.serial_number)
        return record is not None and record.pem.encode() == _pem(cert)

    def revocation_material(
        self, certificates: Sequence[x509.Certificate]
    ) -> tuple[list[bytes], list[bytes]]:
        """Fresh revocation data for the certificates this PKI issued, without HTTP: DER OCSP
        responses (from the local responder) for those of the issuing CA, and both CRLs.

        What a relying party would fetch from ``/ocsp`` and ``/crl``; the signer embeds it
        (PAdES B-LT) even when no server runs at the public URL."""
        self._require()
        issuing = self.issuing_cert
        responder = self.ocsp_responder()
        responses = []
        for cert in certificates:
            if cert.issuer != issuing.subject or self.state.get(cert.serial_number) is None:
                continue
            request = (
                ocsp.OCSPRequestBuilder()
                .add_certificate(cert, issuing, hashes.SHA1())  # noqa: S303 (RFC 5019 CertID)
                .build()
            )
            responses.append(responder.respond(request.public_bytes(Encoding.DER)))
        return responses, [self.crl_der("issuing"), self.crl_der("root")]

    # -- integrity and renewal ----------------------------------------------------------------
    _FILES = (
        ("root-ca.pem", ROOT_LABEL),
        ("issuing-ca.pem", ISSUING_LABEL),
        ("tsa.pem", TSA_LABEL),
        ("ocsp.pem", OCSP_LABEL),
    )

    def check(self) -> None:
        """Refuse to serve from a PKI whose files were tampered with or whose services are unfit.

        The PEM files are what relying parties download and what the ``dev`` trust preset
        trusts, but only the key store (encrypted with the passphrase) is authenticated: each
        PEM must equal the certificate stored with its key, each certificate must be signed by
        its issuer, and the TSA and OCSP certificates must be valid now and not revoked."""
        self._require()
        self._certs.clear()
        for name, label in self._FILES:
            if self._cert(name) != self.keys.load(label).certificate:
                raise PKIError("certs.pki.tampered", name=name, label=label)
        root, issuing = self.root_cert, self.issuing_cert
        for name, cert, issuer in (
            ("root-ca.pem", root, root),
            ("issuing-ca.pem", issuing, root),
            ("tsa.pem", self.tsa_cert, issuing),
            ("ocsp.pem", self.ocsp_cert, issuing),
        ):
            try:
                cert.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature):
                raise PKIError("certs.pki.bad_chain", name=name, issuer="root-ca.pem") from None
        now = self.clock()
        for service, cert in (("tsa", self.tsa_cert), ("ocsp", self.ocsp_cert)):
            if self.status(cert.serial_number).kind == "revoked":
                raise PKIError("certs.pki.service_revoked", name=service)
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise PKIError(
                    "certs.pki.service_expired",
                    name=service,
                    not_after=cert.not_valid_after_utc.isoformat(),
                )

    def renew_service(
        self,
        service: Literal["tsa", "ocsp"],
        *,
        public_url: str | None = None,
        actor: str = "system",
    ) -> x509.Certificate:
        """A new key and certificate for the TSA or the OCSP responder (the old key file is
        retired, not deleted). Running servers pick it up when restarted."""
        self._require()
        if service not in ("tsa", "ocsp"):
            raise PKIError("certs.pki.bad_service", name=service)
        label, name = (TSA_LABEL, "tsa.pem") if service == "tsa" else (OCSP_LABEL, "ocsp.pem")
        old = self._cert(name)
        issuing_cert = self.issuing_cert
        key = builders.new_private_key(self.config.get("service_key_type", "ec-p256"))
        subject, now = old.subject, self.clock()
        issuer_key = self._ca_key("issuing")
        if service == "tsa":
            cert = builders.build_tsa_certificate(
                key.public_key(),
                subject,
                issuer_cert=issuing_cert,
                issuer_key=issuer_key,
                now=now,
                urls=builders.ServiceURLs.for_public_url(
                    public_url or self.config["public_url"], "issuing"
                ),
            )
        else:
            cert = builders.build_ocsp_certificate(
                key.public_key(), subject, issuer_cert=issuing_cert, issuer_key=issuer_key, now=now
            )
        chain = (issuing_cert, self.root_cert)
        self.keys.replace_key(label, key, cert, chain, retire_as=format(old.serial_number, "X"))
        write_atomic(self.directory / name, _pem(cert))
        self._certs.pop(name, None)
        self.state.add(
            cert=cert,
            label=label,
            kind=service,
            issuer="issuing",
            key_uri=f"file:{label}",
            actor=actor,
        )
        return cert

    # -- revocation -------------------------------------------------------------------------
    def revoke(
        self,
        serial: int,
        *,
        reason: x509.ReasonFlags,
        at: dt.datetime | None = None,
        actor: str = "system",
    ) -> CertificateRecord:
        """Revoke a certificate issued here and re-sign its issuer's CRL at once."""
        self._require()
        record = self.state.get(serial)
        if record is None:
            raise PKIError("certs.pki.no_such_serial", serial=format(serial, "X"))
        if record.kind == "root-ca":
            raise PKIError("certs.pki.root_not_revocable")
        self.state.revoke(serial, at=at or self.clock(), reason=reason, actor=actor)
        self._refresh_crl(record.issuer, force=True)  # type: ignore[arg-type]
        revoked = self.state.get(serial)
        assert revoked is not None
        return revoked

    def crl_path(self, issuer: Issuer) -> Path:
        return self.directory / "crl" / f"{issuer}.crl"

    def _refresh_crl(self, issuer: Issuer, *, force: bool = False) -> bytes:
        """Re-sign the CRL of ``issuer`` if forced or past half its validity.

        Safe between processes (a server and a ``kyso pki revoke`` at once): the revocations
        and the CRL number are read in one transaction, so a higher number always means a
        snapshot at least as recent, and the file is replaced under a lock only by a CRL with
        a higher number than the one on disk."""
        path = self.crl_path(issuer)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._crl_lock, (path.parent / f".{issuer}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            now = self.clock()
            current = x509.load_der_x509_crl(path.read_bytes()) if path.is_file() else None
            if not force and current is not None:
                next_update = current.next_update_utc
                if next_update is not None and now < next_update - CRL_VALIDITY / 2:
                    return path.read_bytes()
            revoked, number = self.state.crl_snapshot(issuer)
            if current is not None and _crl_number(current) >= number:
                return path.read_bytes()  # a newer CRL was written meanwhile
            crl = build_crl(
                issuer_cert=self.ca_cert(issuer),
                issuer_key=self._ca_key(issuer),
                revoked=revoked,
                crl_number=number,
                this_update=now,
                next_update=now + CRL_VALIDITY,
            )
            der = crl.public_bytes(Encoding.DER)
            write_atomic(path, der)
            self.state.record_event(
                actor="system", action="crl", detail=f"{issuer} CRL number {number} signed"
            )
            return der

    def crl_der(self, issuer: Issuer) -> bytes:
        """The current CRL of ``issuer``, re-signed when it is past half its validity."""
        self._require()
        return self._refresh_crl(issuer)

    def ocsp_responder(self, *, clock: Clock | None = None) -> OCSPResponder:
        """An OCSP responder for certificates of the issuing CA, backed by the state database."""
        self._require()
        handle = self.keys.load(OCSP_LABEL)
        return OCSPResponder(
            issuer_cert=self.issuing_cert,
            responder_cert=handle.certificate,
            responder_key=handle.private_key(),  # type: ignore[arg-type]
            status=self.status,
            clock=clock or self.clock,
        )
