"""The composition root: builds the library objects from :class:`Settings`, once per process."""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.sign.timestamps.api import TimeStamper

from kyso.api.settings import Settings
from kyso.certs.errors import KeyStoreError, TrustStoreError
from kyso.certs.keys import FileKeyHandle, FileKeyStore, KeyRegistry, PKCS11KeyStore
from kyso.certs.pki import BuiltinPKI, write_atomic
from kyso.certs.revocation import OCSPResponder
from kyso.certs.trust import PRESETS, TrustStore, is_ca, load_certificates
from kyso.certs.tsa import SQLiteSerialSource, TimeStampAuthority, TSAPolicy
from kyso.certs.tsa_client import FailoverTimeStamper
from kyso.errors import KysoError
from kyso.i18n import t
from kyso.signer.sign import DocumentSigner, RevocationContext
from kyso.signer.timestamps import LocalTimeStamper

if TYPE_CHECKING:
    from kyso.api.accounts import AccountStore
    from kyso.api.jobs import JobRunner
    from kyso.archive.catalog import Catalog
    from kyso.archive.ingest import Archive
    from kyso.archive.storage import ObjectStore

log = logging.getLogger(__name__)


def passphrase_source(settings: Settings, *, confirm: bool = False) -> bytes:
    """The key-file passphrase: KYSO_KEY_PASSPHRASE, else asked on the terminal."""
    if settings.key_passphrase is not None:
        value = settings.key_passphrase.get_secret_value()
        if not value:
            raise KeyStoreError(detail=t("svc.passphrase.empty"))
        return value.encode()
    if not sys.stdin.isatty():
        raise KeyStoreError(detail=t("svc.passphrase.missing"))
    first = getpass.getpass(t("svc.passphrase.prompt"))
    if not first:
        raise KeyStoreError(detail=t("svc.passphrase.empty"))
    if confirm and getpass.getpass(t("svc.passphrase.confirm")) != first:
        raise KeyStoreError(detail=t("svc.passphrase.mismatch"))
    return first.encode()


def pin_source(settings: Settings) -> str:
    if settings.pkcs11_pin is not None:
        return settings.pkcs11_pin.get_secret_value()
    if not sys.stdin.isatty():
        raise KeyStoreError(detail=t("svc.pin.missing"))
    return getpass.getpass(t("svc.pin.prompt"))


@dataclass
class Services:
    """Everything the CLI and the HTTP app need, built lazily from the settings."""

    settings: Settings
    confirm_new_passphrase: bool = False
    _tsa: TimeStampAuthority | None = field(default=None, init=False)

    @cached_property
    def file_keys(self) -> FileKeyStore:
        confirm = self.confirm_new_passphrase and not self.settings.keys_dir.exists()
        return FileKeyStore(
            self.settings.keys_dir,
            passphrase=lambda: passphrase_source(self.settings, confirm=confirm),
        )

    @cached_property
    def token(self) -> PKCS11KeyStore | None:
        if not self.settings.pkcs11_token:
            return None
        return PKCS11KeyStore(
            self.settings.pkcs11_module,
            self.settings.pkcs11_token,
            user_pin=lambda: pin_source(self.settings),
        )

    @cached_property
    def keys(self) -> KeyRegistry:
        stores: list[FileKeyStore | PKCS11KeyStore] = [self.file_keys]
        if self.token is not None:
            stores.append(self.token)
        return KeyRegistry(stores)

    @cached_property
    def pki(self) -> BuiltinPKI:
        return BuiltinPKI(self.settings.pki_dir, self.file_keys)

    def ensure_pki(self, *, actor: str = "system") -> bool:
        """Create the built-in PKI if the data directory has none. True when it was created."""
        if self.pki.exists():
            return False
        self.pki.init(
            public_url=self.settings.public_url,
            ca_key_type=self.settings.ca_key_type,
            service_key_type=self.settings.service_key_type,
            actor=actor,
        )
        return True

    def trust_store(self, *presets: str) -> TrustStore:
        """The presets asked for, plus every anchor the operator added (``kyso trust add``)."""
        store = TrustStore()
        for name in presets:
            if name == "dev" and not self.pki.exists():
                continue  # no built-in PKI here: nothing to trust under that name
            store = store + TrustStore.preset(name, dev_root=self.pki.root_path)
        return store + self.operator_anchors()

    def operator_anchors(self) -> TrustStore:
        """Anchors added with ``kyso trust add``: only files named by their certificate's
        SHA-256 and holding a CA certificate count; anything else dropped in the folder is
        ignored (and logged), so a stray file cannot become trusted."""
        folder = self.settings.trust_dir
        certs: list[x509.Certificate] = []
        for path in sorted(folder.glob("*.pem")) if folder.is_dir() else ():
            try:
                [cert] = load_certificates(path)
            except (KysoError, ValueError):
                log.warning("ignoring unreadable trust file %s", path)
                continue
            if path.stem != cert.fingerprint(hashes.SHA256()).hex() or not is_ca(cert):
                log.warning("ignoring %s: not a CA certificate added by 'kyso trust add'", path)
                continue
            certs.append(cert)
        return TrustStore.from_certificates(certs)

    def add_trust_anchors(self, path: Path) -> list[x509.Certificate]:
        """Copy the CA certificates in ``path`` into the operator's trust folder."""
        certs = load_certificates(path)
        not_ca = [c.subject.rfc4514_string() for c in certs if not is_ca(c)]
        if not_ca:
            raise TrustStoreError(
                "certs.trust.not_ca_anchor", detail=f"not a CA certificate: {'; '.join(not_ca)}"
            )
        folder = self.settings.trust_dir
        folder.mkdir(parents=True, exist_ok=True)
        for cert in certs:
            name = cert.fingerprint(hashes.SHA256()).hex() + ".pem"
            write_atomic(folder / name, cert.public_bytes(Encoding.PEM))
        return certs

    @cached_property
    def tsa_policy(self) -> TSAPolicy:
        s = self.settings
        accepted = frozenset({s.tsa_policy_oid, *s.tsa_accepted_policies})
        return TSAPolicy(
            policy_oid=s.tsa_policy_oid,
            accepted_policies=accepted,
            accuracy=dt.timedelta(milliseconds=s.tsa_accuracy_ms),
            clock_synchronised=s.tsa_clock_synchronised,
        )

    @cached_property
    def tsa(self) -> TimeStampAuthority:
        self.settings.tsa_serials_path.parent.mkdir(parents=True, exist_ok=True)
        return TimeStampAuthority(
            key=self.pki.tsa_key(),
            policy=self.tsa_policy,
            serials=SQLiteSerialSource(self.settings.tsa_serials_path),
        )

    # -- signing -------------------------------------------------------------------------------
    def revocation_context(self) -> RevocationContext:
        """Trust anchors (dev root, Government root, the operator's) and revocation sources:
        the built-in PKI's data in-process, anything else fetched from the certificates' URLs."""
        pki = self.pki
        return RevocationContext(
            trust_roots=list(self.trust_store(*PRESETS).certificates),
            other_certs=[pki.issuing_cert] if pki.exists() else [],
            material=pki.revocation_material if pki.exists() else None,
            local=pki.issued_here if pki.exists() else None,
            fetch=True,
        )

    def timestamper(self) -> TimeStamper:
        """External TSAs with failover when KYSO_TSA_URLS is set, else the built-in TSA."""
        s = self.settings
        if s.tsa_urls:
            return FailoverTimeStamper(
                s.tsa_urls, timeout=s.tsa_timeout, retries=s.tsa_retries, backoff=0.5
            )
        return LocalTimeStamper(self.tsa)

    def pending_dir(self) -> Path:
        """Where prepared two-phase signatures wait for their signature value."""
        path = self.settings.data_dir / "pending"
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def image_path(self, label: str) -> Path:
        """The signature (person) or seal (agency) image kept for key ``label``."""
        return self.settings.data_dir / "images" / f"{label}.png"

    def document_signer(self, key: str | None) -> DocumentSigner:
        """A signer for the key named ``key`` (a label or URI), opened once; None for
        operations that sign only with the TSA (extension, document timestamps)."""
        return DocumentSigner(
            key=self.keys.resolve(key) if key is not None else None,
            revocation=self.revocation_context(),
            timestamper=self.timestamper(),
        )

    @cached_property
    def tsa_key_in_memory(self) -> bool:
        """Whether the TSA signs with a key held in this process (not on a token)."""
        return isinstance(self.pki.tsa_key(), FileKeyHandle)

    @cached_property
    def ocsp(self) -> OCSPResponder:
        return self.pki.ocsp_responder()

    # -- archive -------------------------------------------------------------------------------
    @cached_property
    def catalog(self) -> Catalog:
        """The archive catalogue (KYSO_ARCHIVE_DB), its schema migrated on first use."""
        from kyso.archive.catalog import Catalog

        if not self.settings.archive_db:
            self.settings.archive_dir.mkdir(parents=True, exist_ok=True)
        catalog = Catalog(self.settings.archive_db_url)
        catalog.migrate()
        return catalog

    @cached_property
    def store(self) -> ObjectStore:
        """The archive's object store (KYSO_ARCHIVE_STORE)."""
        from kyso.archive.storage import open_store

        return open_store(self.settings.archive_store_url)

    def archive_verifier(self) -> Any:
        """Verification of a PDF at ingest: kyso's trust (presets + operator anchors)."""
        from kyso.signer.verify import VerifyPolicy, verify

        policy = VerifyPolicy.from_services(self, offline=self.settings.archive_verify_offline)

        def run(path: Path) -> dict[str, Any]:
            return verify(path, policy).to_dict()

        return run

    @cached_property
    def archive(self) -> Archive:
        from kyso.archive.ingest import Archive

        return Archive(
            self.catalog,
            self.store,
            verifier=self.archive_verifier(),
            retention_years=self.settings.archive_retention_years,
            retention_mode=self.settings.archive_retention_mode,
            permanent_retention_years=self.settings.archive_permanent_retention_years,
        )

    def audit_timestamper(self) -> Any:
        """What anchors the audit chain: the configured TSAs (KYSO_TSA_URLS), else the
        built-in TSA."""
        s = self.settings
        if s.tsa_urls:
            from kyso.certs.tsa_client import TSAClient

            return TSAClient(s.tsa_urls, timeout=s.tsa_timeout, retries=s.tsa_retries)
        return self.tsa

    # -- the service ------------------------------------------------------------------------------
    @cached_property
    def secret_key(self) -> bytes:
        """Signs session cookies and CSRF tokens: KYSO_SECRET_KEY, else (development only) a
        random key kept at ``<data>/secret_key``. Production refuses to start without one."""
        s = self.settings
        if s.secret_key is not None:
            value = s.secret_key.get_secret_value()
            if len(value) < 32:
                raise KysoError("svc.secret_key.short")
            return value.encode()
        if s.environment == "production":
            raise KysoError("svc.secret_key.missing")
        path = s.data_dir / "secret_key"
        if not path.exists():
            import secrets

            write_atomic(path, secrets.token_urlsafe(48).encode())
            path.chmod(0o600)
        return path.read_bytes().strip()

    @property
    def cookie_secure(self) -> bool:
        s = self.settings
        return s.cookie_secure if s.cookie_secure is not None else s.environment == "production"

    @cached_property
    def accounts(self) -> AccountStore:
        """Agencies, users, roles, API tokens and web sessions (in the catalogue's database)."""
        from kyso.api.accounts import AccountStore

        return AccountStore(self.catalog)

    @cached_property
    def jobs(self) -> JobRunner:
        """Background jobs: Celery when KYSO_BROKER_URL is set, else an in-process pool."""
        from kyso.api.jobs import make_runner

        return make_runner(self)
