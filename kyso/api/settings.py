"""Settings: environment variables prefixed ``KYSO_`` (and a ``.env`` file), every one with a
safe embedded default. Built by :func:`get_settings`, never at import time."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KYSO_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Field(Path("./var"), description="Where the PKI, keys and state live.")
    public_url: str = Field(
        "http://127.0.0.1:8000",
        description="Base URL written into certificates (OCSP, CRL, CA issuers).",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    locale: Literal["vi", "en"] = "vi"
    log_level: str = "info"

    key_passphrase: SecretStr | None = Field(
        None, description="Passphrase of the PKCS#12 key files; prompted for when unset."
    )
    pkcs11_module: str = "/usr/lib/softhsm/libsofthsm2.so"
    pkcs11_token: str | None = Field(None, description="Token label; PKCS#11 is off when unset.")
    pkcs11_pin: SecretStr | None = None

    ca_key_type: Literal["rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384"] = "rsa-3072"
    service_key_type: Literal["rsa-2048", "rsa-3072", "ec-p256", "ec-p384"] = "ec-p256"

    tsa_policy_oid: str = "1.3.6.1.4.1.55555.2.1"
    tsa_accepted_policies: list[str] = Field(default_factory=list)
    tsa_accuracy_ms: int = Field(1000, ge=1)
    tsa_clock_synchronised: bool = Field(
        True, description="Set to false to make the TSA refuse to issue (clock not trusted)."
    )
    tsa_max_request_bytes: int = 16 * 1024
    tsa_urls: list[str] = Field(
        default_factory=list,
        description="External TSAs for signing, tried in order (JSON list); empty: built-in TSA.",
    )
    tsa_timeout: float = Field(10.0, gt=0, description="Seconds to wait for an external TSA.")
    tsa_retries: int = Field(2, ge=0, description="Retries per external TSA URL.")
    ocsp_max_request_bytes: int = 16 * 1024

    archive_db: str | None = Field(
        None,
        description="Catalogue database URL (postgresql://… in production); "
        "default: SQLite at <data>/archive/catalog.sqlite3.",
    )
    archive_store: str | None = Field(
        None,
        description="Object store: a directory, file:///…, or s3://KEY:SECRET@host/bucket; "
        "default: <data>/archive/objects.",
    )
    archive_retention_years: int = Field(
        10,
        ge=0,
        description="Retention of an object whose record has no retention period of its own "
        "(0: no retention at all).",
    )
    archive_permanent_retention_years: int = Field(
        100, ge=1, description="Retention of records kept permanently (Maintenance 'Vĩnh viễn')."
    )
    archive_retention_mode: Literal["GOVERNANCE", "COMPLIANCE"] = "GOVERNANCE"
    archive_verify_offline: bool = Field(
        False,
        description="Verify at ingest with only what the PDF embeds (fetch no revocation data).",
    )

    # -- the service (accounts, sessions, jobs, web UI, operations) ---------------------------
    secret_key: SecretStr | None = Field(
        None,
        description="Signs session cookies and CSRF tokens. Required in production; in "
        "development a random one is made and kept at <data>/secret_key.",
    )
    session_hours: float = Field(8.0, gt=0, description="A web session's lifetime.")
    cookie_secure: bool | None = Field(
        None, description="Send cookies over HTTPS only (default: on in production)."
    )
    upload_max_bytes: int = Field(
        100 * 1024 * 1024, gt=0, description="Largest PDF the API and the web UI accept."
    )
    verify_rate_limit: int = Field(
        30, ge=1, description="Public verifications per client address per minute."
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker (redis://… or amqp://…); unset: jobs run in-process in a "
        "thread pool.",
    )
    rate_limit_url: str | None = Field(
        None,
        description="Redis (redis://…) where every replica counts the public rate limits "
        "together; default: the broker when it is Redis; memory: each process alone.",
    )
    job_threads: int = Field(2, ge=1, description="Threads of the in-process job runner.")
    job_max_retries: int = Field(5, ge=0, description="Retries of a failing job item.")
    log_format: Literal["text", "json"] = "text"
    metrics: bool = Field(True, description="Serve Prometheus metrics at /metrics.")

    @field_validator("rate_limit_url")
    @classmethod
    def _redis_or_memory(cls, v: str | None) -> str | None:
        if v is None or v == "" or v == "memory":
            return v or None
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("a redis://, rediss:// or unix:// URL, or memory")
        return v

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def trust_dir(self) -> Path:
        """Trust anchors the operator added with ``kyso trust add``."""
        return self.data_dir / "trust"

    @property
    def archive_dir(self) -> Path:
        return self.data_dir / "archive"

    @property
    def archive_db_url(self) -> str:
        if self.archive_db:
            return self.archive_db
        return f"sqlite:///{(self.archive_dir / 'catalog.sqlite3').absolute()}"

    @property
    def archive_store_url(self) -> str:
        return self.archive_store or str((self.archive_dir / "objects").absolute())

    @property
    def tsa_serials_path(self) -> Path:
        return self.data_dir / "tsa" / "serials.sqlite3"


def get_settings() -> Settings:
    """Read the settings from the environment now."""
    return Settings()
