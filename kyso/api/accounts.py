"""Agencies, users, roles, API tokens, web sessions and signing-key bindings.

:class:`AccountStore` keeps them in the catalogue's database (tables of migration 0002, models
below on their own declarative base).  Nothing secret is stored: passwords and signing PINs are
argon2id hashes (argon2-cffi), API tokens (``kyso_<id>_<secret>``) and web session ids are kept
as the SHA-256 of their random part.  Every change appends an event to the catalogue's
hash-chained audit log (:func:`kyso.archive.audit.append`) in the same transaction; no event
ever carries a password, PIN, token or session id.

Tenancy: a user belongs to one agency; the methods that take ``agency=`` answer
:class:`AccountNotFound` for another agency's ids (the API turns that into a 404, so an id of
another agency is indistinguishable from one that does not exist).

Signing keys: :func:`open_signing_key` opens only keys bound to the principal and asks for the
user's PIN every time.  A *personal* key (``personal:<label>``, made by
:func:`issue_personal_key`) is a PKCS#12 file encrypted with that PIN, so the server cannot
sign with it unless the user types the PIN; for other keys bound to a user (a PKCS#11 token
object, a server file key) the PIN is checked against its argon2 hash.
:func:`open_agency_key` opens the agency's seal key for clerks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from kyso.api.principal import ROLES, Principal
from kyso.archive import audit
from kyso.archive.metadata import MetadataError, parse_agency_code
from kyso.errors import KysoError

if TYPE_CHECKING:
    from kyso.api.problems import Problem
    from kyso.api.services import Services
    from kyso.archive.catalog import Catalog
    from kyso.certs.keys import KeyHandle
    from kyso.certs.pki import IssuedCertificate

__all__ = [
    "AccountConflict",
    "AccountError",
    "AccountInvalid",
    "AccountNotFound",
    "AccountStore",
    "AgencyInfo",
    "AuthenticationFailed",
    "LockedOut",
    "TokenInfo",
    "UserInfo",
    "canonical_key_ref",
    "check_password",
    "check_pin_strength",
    "issue_personal_key",
    "open_agency_key",
    "open_signing_key",
    "personal_keys_dir",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

TOKEN_PREFIX = "kyso_"  # noqa: S105 (the visible prefix of every API token)
PERSONAL_PREFIX = "personal:"
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{1,63}")
_TOKEN = re.compile(r"kyso_([0-9]{1,12})_([A-Za-z0-9_-]{20,128})")
_LAST_USE_RESOLUTION = dt.timedelta(seconds=60)
PASSWORD_MIN = 10
PIN_MIN = 6


# -- errors ---------------------------------------------------------------------------------------


class AccountError(KysoError):
    """An account operation failed; ``status`` and ``slug`` say how the API answers it."""

    code = "accounts.error"
    status: ClassVar[int] = 400
    slug: ClassVar[str] = "error"

    def problem(self) -> Problem:
        """This error as the API's problem (RFC 9457)."""
        from kyso.api.problems import Problem
        from kyso.i18n import current_locale

        return Problem(self.status, self.slug, self.message(current_locale()))


class AuthenticationFailed(AccountError):
    """Wrong username or password, or a disabled user (one answer for all: no user oracle)."""

    code = "accounts.login.failed"
    status = 401
    slug = "unauthenticated"


class LockedOut(AccountError):
    """Too many failures for this name: wait ``seconds``."""

    code = "accounts.login.locked"
    status = 429
    slug = "rate-limited"


class AccountNotFound(AccountError, LookupError):
    code = "accounts.not_found"
    status = 404
    slug = "not-found"


class AccountConflict(AccountError):
    code = "accounts.conflict"
    status = 409
    slug = "conflict"


class AccountInvalid(AccountError, ValueError):
    code = "accounts.invalid"
    status = 422
    slug = "validation"


class PinError(AccountError):
    code = "accounts.pin.wrong"
    status = 403
    slug = "bad-pin"


# -- models ---------------------------------------------------------------------------------------

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class AccountsBase(DeclarativeBase):
    """The accounts' tables (created by migration 0002 with the catalogue's schema)."""

    metadata = sa.MetaData(naming_convention=NAMING)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes: they are UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


class Agency(AccountsBase):
    __tablename__ = "agencies"

    code: Mapped[str] = mapped_column(sa.String(35), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(300))
    seal_key: Mapped[str | None] = mapped_column(sa.String(300))
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(200))


class User(AccountsBase):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    agency: Mapped[str] = mapped_column(sa.String(35), sa.ForeignKey("agencies.code"), index=True)
    username: Mapped[str] = mapped_column(sa.String(64), unique=True)
    full_name: Mapped[str] = mapped_column(sa.String(200))
    password_hash: Mapped[str] = mapped_column(sa.String(200))
    pin_hash: Mapped[str | None] = mapped_column(sa.String(200))
    disabled: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(200))


class UserRole(AccountsBase):
    __tablename__ = "user_roles"
    __table_args__ = (
        sa.CheckConstraint(
            "role IN ('official', 'clerk', 'verifier', 'archivist', 'admin')", name="role"
        ),
    )

    user_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(sa.String(20), primary_key=True)


class ApiToken(AccountsBase):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    secret_sha256: Mapped[str] = mapped_column(sa.String(64))
    roles: Mapped[str] = mapped_column(sa.String(200))
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(200))
    last_used_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    revoked_by: Mapped[str | None] = mapped_column(sa.String(200))


class WebSession(AccountsBase):
    __tablename__ = "web_sessions"

    id_sha256: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True))
    ended_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))


class KeyBinding(AccountsBase):
    __tablename__ = "key_bindings"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("users.id"), index=True)
    key_ref: Mapped[str] = mapped_column(sa.String(300), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), default=_utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(200))


class LoginThrottle(AccountsBase):
    __tablename__ = "login_throttle"

    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    failures: Mapped[int] = mapped_column(sa.Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))


# -- what the store hands out ---------------------------------------------------------------------


@dataclass(frozen=True)
class AgencyInfo:
    code: str
    name: str
    seal_key: str | None
    created_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "seal_key": self.seal_key,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class UserInfo:
    id: int
    username: str
    agency: str
    full_name: str
    roles: tuple[str, ...]
    disabled: bool
    has_pin: bool
    created_at: dt.datetime
    keys: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "agency": self.agency,
            "full_name": self.full_name,
            "roles": list(self.roles),
            "disabled": self.disabled,
            "has_pin": self.has_pin,
            "keys": list(self.keys),
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class TokenInfo:
    id: int
    user_id: int
    username: str
    agency: str
    name: str
    roles: tuple[str, ...]
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "username": self.username,
            "name": self.name,
            "roles": list(self.roles),
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


# -- policies -------------------------------------------------------------------------------------


def check_password(password: str, username: str = "") -> None:
    """Refuse an empty or weak password (AccountInvalid)."""
    if not password or not password.strip():
        raise AccountInvalid("accounts.password.empty")
    if (
        len(password) < PASSWORD_MIN
        or len(set(password)) < 5
        or (username and username.lower() in password.lower())
    ):
        raise AccountInvalid("accounts.password.weak", min=PASSWORD_MIN)


def check_pin_strength(pin: str) -> None:
    """Refuse an empty or too simple signing PIN (AccountInvalid)."""
    if not pin:
        raise AccountInvalid("accounts.pin.empty")
    if len(pin) < PIN_MIN or len(set(pin)) < 3 or len(pin) > 128:
        raise AccountInvalid("accounts.pin.weak", min=PIN_MIN)


def _check_roles(roles: Iterable[str]) -> tuple[str, ...]:
    wanted = tuple(sorted(set(roles)))
    unknown = [r for r in wanted if r not in ROLES]
    if unknown or not wanted:
        raise AccountInvalid("accounts.roles.invalid", roles=", ".join(unknown) or "-")
    return wanted


def normalise_username(username: str) -> str:
    return (username or "").strip().lower()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_token(plaintext: str) -> tuple[int, str] | None:
    """``(id, secret)`` of a well-formed API token, else None."""
    match = _TOKEN.fullmatch((plaintext or "").strip())
    if match is None:
        return None
    return int(match.group(1)), match.group(2)


# -- the store ------------------------------------------------------------------------------------


class AccountStore:
    """Accounts in the catalogue's database (see the module's docstring)."""

    #: Failed logins (or wrong PINs) in a row that lock a name, and for how long.
    max_failures: int = 5
    lockout: dt.timedelta = dt.timedelta(minutes=5)

    def __init__(self, catalog: Catalog, *, hasher: PasswordHasher | None = None) -> None:
        self.catalog = catalog
        self.hasher = hasher or PasswordHasher()
        # the schema includes migration 0002 (Catalog.migrate upgrades to head); check it is
        # there, so a store on an old database fails here and not on the first login
        tables = set(sa.inspect(catalog.engine).get_table_names())
        if not set(AccountsBase.metadata.tables) <= tables:
            catalog.migrate()

    @contextmanager
    def _session(self, *, write: bool = False) -> Iterator[Session]:
        """A transaction. ``write``: on SQLite, take the write lock first (BEGIN IMMEDIATE), so
        that the audit chain's head read here is still the head when the event is appended (two
        deferred writers would read the same head and one would fail on its primary key)."""
        with self.catalog.session() as s:
            if write and self.catalog.dialect == "sqlite":
                s.connection().exec_driver_sql("BEGIN IMMEDIATE")
            yield s

    @cached_property
    def _dummy_hash(self) -> str:
        """Verified against when a username is unknown, so both cases take as long."""
        return self.hasher.hash(secrets.token_urlsafe(16))

    def _verify(self, hashed: str | None, secret: str) -> bool:
        try:
            return self.hasher.verify(hashed or self._dummy_hash, secret)
        except (VerificationError, InvalidHashError):
            return False

    # -- agencies ---------------------------------------------------------------------------------
    def create_agency(
        self, code: str, name: str, *, actor: str, seal_key: str | None = None
    ) -> None:
        """A new agency (tenant) under its code (13-character or dotted OrganId form)."""
        try:
            code = parse_agency_code(code, "code")
        except MetadataError as e:
            raise AccountInvalid("accounts.agency.bad_code", code=str(code)) from e
        name = (name or "").strip()
        if not name or len(name) > 300:
            raise AccountInvalid("accounts.agency.bad_name")
        with self._session(write=True) as s:
            if s.get(Agency, code) is not None:
                raise AccountConflict("accounts.agency.exists", code=code)
            s.add(Agency(code=code, name=name, created_by=actor))
            s.flush()
            audit.append(s, actor, "agency.create", f"agency:{code}", {"name": name})
            if seal_key is not None:
                self._set_agency_key(s, code, seal_key, actor)

    def get_agency(self, code: str) -> AgencyInfo:
        with self._session() as s:
            row = s.get(Agency, code)
            if row is None:
                raise AccountNotFound("accounts.agency.not_found", code=code)
            return _agency_info(row)

    def list_agencies(self) -> list[AgencyInfo]:
        with self._session() as s:
            return [_agency_info(a) for a in s.scalars(sa.select(Agency).order_by(Agency.code))]

    def set_agency_key(self, code: str, key_ref: str | None, *, actor: str) -> None:
        """The key the agency's clerks seal with (a reference :meth:`KeyRegistry.resolve`
        accepts); None removes it."""
        with self._session(write=True) as s:
            if s.get(Agency, code) is None:
                raise AccountNotFound("accounts.agency.not_found", code=code)
            self._set_agency_key(s, code, key_ref, actor)

    def _set_agency_key(self, s: Session, code: str, key_ref: str | None, actor: str) -> None:
        agency = s.get(Agency, code)
        assert agency is not None
        if key_ref is not None:
            key_ref = key_ref.strip()
            if not key_ref or key_ref.startswith(PERSONAL_PREFIX):
                raise AccountInvalid("accounts.key.bad_ref", ref=key_ref)
            other = s.scalar(
                sa.select(Agency.code).where(Agency.seal_key == key_ref, Agency.code != code)
            )
            bound = s.scalar(sa.select(KeyBinding.id).where(KeyBinding.key_ref == key_ref))
            if other is not None or bound is not None:
                raise AccountConflict("accounts.key.in_use", ref=key_ref)
        agency.seal_key = key_ref
        audit.append(s, actor, "agency.seal_key", f"agency:{code}", {"key": key_ref})

    def agency_key(self, code: str) -> str | None:
        return self.get_agency(code).seal_key

    # -- users ------------------------------------------------------------------------------------
    def create_user(
        self,
        agency: str,
        username: str,
        full_name: str,
        *,
        password: str,
        roles: Iterable[str],
        pin: str | None = None,
        actor: str,
    ) -> int:
        """A new user of ``agency``; returns the user id."""
        username = normalise_username(username)
        if not _USERNAME.fullmatch(username):
            raise AccountInvalid("accounts.user.bad_username", username=username)
        full_name = (full_name or "").strip()
        if not full_name or len(full_name) > 200:
            raise AccountInvalid("accounts.user.bad_full_name")
        wanted = _check_roles(roles)
        check_password(password, username)
        if pin is not None:
            check_pin_strength(pin)
        password_hash = self.hasher.hash(password)
        pin_hash = self.hasher.hash(pin) if pin is not None else None
        with self._session(write=True) as s:
            if s.get(Agency, agency) is None:
                raise AccountNotFound("accounts.agency.not_found", code=agency)
            if s.scalar(sa.select(User.id).where(User.username == username)) is not None:
                raise AccountConflict("accounts.user.exists", username=username)
            user = User(
                agency=agency,
                username=username,
                full_name=full_name,
                password_hash=password_hash,
                pin_hash=pin_hash,
                disabled=False,
                created_by=actor,
            )
            s.add(user)
            s.flush()
            s.add_all(UserRole(user_id=user.id, role=r) for r in wanted)
            audit.append(
                s,
                actor,
                "user.create",
                f"user:{user.id}",
                {"username": username, "agency": agency, "roles": list(wanted)},
            )
            return user.id

    def _user(self, s: Session, user_id: int, agency: str | None) -> User:
        user = s.get(User, user_id)
        if user is None or (agency is not None and user.agency != agency):
            raise AccountNotFound("accounts.user.not_found", user=str(user_id))
        return user

    def _user_info(self, s: Session, user: User) -> UserInfo:
        roles = tuple(
            s.scalars(
                sa.select(UserRole.role).where(UserRole.user_id == user.id).order_by(UserRole.role)
            )
        )
        keys = tuple(
            s.scalars(
                sa.select(KeyBinding.key_ref)
                .where(KeyBinding.user_id == user.id)
                .order_by(KeyBinding.id)
            )
        )
        created = _aware(user.created_at)
        assert created is not None
        return UserInfo(
            id=user.id,
            username=user.username,
            agency=user.agency,
            full_name=user.full_name,
            roles=roles,
            disabled=user.disabled,
            has_pin=user.pin_hash is not None,
            created_at=created,
            keys=keys,
        )

    def get_user(self, user_id: int, *, agency: str | None = None) -> UserInfo:
        """The user ``user_id`` (AccountNotFound if it belongs to another ``agency``)."""
        with self._session() as s:
            return self._user_info(s, self._user(s, user_id, agency))

    def user_by_name(self, username: str, *, agency: str | None = None) -> UserInfo:
        with self._session() as s:
            user = s.scalar(sa.select(User).where(User.username == normalise_username(username)))
            if user is None or (agency is not None and user.agency != agency):
                raise AccountNotFound("accounts.user.not_found", user=username)
            return self._user_info(s, user)

    def list_users(self, agency: str) -> list[UserInfo]:
        with self._session() as s:
            rows = s.scalars(sa.select(User).where(User.agency == agency).order_by(User.username))
            return [self._user_info(s, u) for u in rows]

    def set_roles(
        self, user_id: int, roles: Iterable[str], *, agency: str | None, actor: str
    ) -> UserInfo:
        wanted = _check_roles(roles)
        with self._session(write=True) as s:
            user = self._user(s, user_id, agency)
            s.execute(sa.delete(UserRole).where(UserRole.user_id == user.id))
            s.add_all(UserRole(user_id=user.id, role=r) for r in wanted)
            s.flush()
            audit.append(s, actor, "user.roles", f"user:{user.id}", {"roles": list(wanted)})
            return self._user_info(s, user)

    def set_disabled(
        self, user_id: int, disabled: bool, *, agency: str | None, actor: str
    ) -> UserInfo:
        """Disable (or enable again) a user: a disabled user's sessions end at once and their
        tokens stop working."""
        with self._session(write=True) as s:
            user = self._user(s, user_id, agency)
            user.disabled = disabled
            if disabled:
                s.execute(
                    sa.update(WebSession)
                    .where(WebSession.user_id == user.id, WebSession.ended_at.is_(None))
                    .values(ended_at=_utcnow())
                )
            audit.append(
                s, actor, "user.disable" if disabled else "user.enable", f"user:{user.id}", {}
            )
            return self._user_info(s, user)

    def set_password(self, user_id: int, password: str, *, agency: str | None, actor: str) -> None:
        with self._session(write=True) as s:
            user = self._user(s, user_id, agency)
            check_password(password, user.username)
            user.password_hash = self.hasher.hash(password)
            audit.append(s, actor, "user.password", f"user:{user.id}", {})

    def set_pin(self, user_id: int, pin: str, *, actor: str) -> None:
        """Set the user's signing PIN (its argon2 hash)."""
        check_pin_strength(pin)
        hashed = self.hasher.hash(pin)
        with self._session(write=True) as s:
            user = self._user(s, user_id, None)
            user.pin_hash = hashed
            audit.append(s, actor, "user.pin", f"user:{user.id}", {})

    def check_pin(self, user_id: int, pin: str) -> bool:
        """Whether ``pin`` is the user's signing PIN (False when none is set)."""
        with self._session() as s:
            user = self._user(s, user_id, None)
            hashed = user.pin_hash
        if hashed is None:
            self._verify(None, pin or "-")  # same time as a wrong PIN
            return False
        return bool(pin) and self._verify(hashed, pin)

    # -- authentication ---------------------------------------------------------------------------
    def _locked(self, s: Session, name: str, now: dt.datetime) -> int:
        """Seconds ``name`` stays locked (0: not locked)."""
        row = s.get(LoginThrottle, name)
        until = _aware(row.locked_until) if row is not None else None
        if until is None or until <= now:
            return 0
        return max(1, int((until - now).total_seconds() + 0.999))

    def _failed(self, s: Session, name: str, now: dt.datetime) -> bool:
        """Count a failure for ``name``; True when it locks the name now."""
        # concurrent failures for one name must neither fail on the primary key nor lose a
        # count: insert-if-absent, then update the row under a lock (PostgreSQL)
        from sqlalchemy.dialects import postgresql, sqlite

        dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
        insert: Any = dialect.insert
        s.execute(
            insert(LoginThrottle)
            .values(name=name, failures=0)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        row = s.get(LoginThrottle, name, with_for_update=True, populate_existing=True)
        assert row is not None
        row.failures = (row.failures or 0) + 1
        if row.failures >= self.max_failures:
            row.failures = 0
            row.locked_until = now + self.lockout
            return True
        return False

    @staticmethod
    def _cleared(s: Session, name: str) -> None:
        s.execute(sa.delete(LoginThrottle).where(LoginThrottle.name == name))

    def authenticate(self, username: str, password: str) -> Principal:
        """The principal for a correct username and password; :class:`AuthenticationFailed`
        otherwise (unknown user, wrong password and disabled user look the same), or
        :class:`LockedOut` after :attr:`max_failures` failures in a row for that name."""
        name = normalise_username(username)[:64]
        throttle = f"login:{name}"
        now = _utcnow()
        with self._session() as s:
            locked_for = self._locked(s, throttle, now)
            user = None if locked_for else s.scalar(sa.select(User).where(User.username == name))
            user_id = user.id if user is not None and not user.disabled else None
            hashed = user.password_hash if user is not None else None
        if locked_for:
            self._write(
                lambda s: audit.append(s, "anonymous", "auth.login_refused", f"login:{name}", {})
            )
            raise LockedOut(seconds=locked_for)
        # argon2 runs outside any transaction (it takes a while, on purpose)
        ok = self._verify(hashed, password or "") and user_id is not None

        def success(s: Session) -> Principal:
            user = s.get(User, user_id)
            assert user is not None and hashed is not None
            self._cleared(s, throttle)
            if self.hasher.check_needs_rehash(hashed):
                user.password_hash = self.hasher.hash(password)
            principal = self._principal(s, user, via="session")
            audit.append(s, principal.actor, "auth.login", f"user:{user.id}", {})
            return principal

        def failure(s: Session) -> None:
            locks = self._failed(s, throttle, _utcnow())
            audit.append(s, "anonymous", "auth.login_failed", f"login:{name}", {"locked": locks})

        if ok:
            return self._write(success)
        self._write(failure)
        log.info("failed login for %r", name)
        raise AuthenticationFailed()

    def _write(self, body: Callable[[Session], T]) -> T:
        with self._session(write=True) as s:
            return body(s)

    def _principal(
        self,
        s: Session,
        user: User,
        *,
        via: str,
        token_id: int | None = None,
        only: Iterable[str] | None = None,
    ) -> Principal:
        roles = frozenset(s.scalars(sa.select(UserRole.role).where(UserRole.user_id == user.id)))
        if only is not None:
            roles = roles & frozenset(only)
        return Principal(
            user_id=user.id,
            username=user.username,
            agency=user.agency,
            roles=roles,
            via=via,  # type: ignore[arg-type]
            token_id=token_id,
            full_name=user.full_name,
        )

    def principal_for_user(self, user_id: int) -> Principal:
        """A principal with every role of ``user_id`` (for jobs acting for that user)."""
        with self._session() as s:
            user = self._user(s, user_id, None)
            if user.disabled:
                raise AccountNotFound("accounts.user.not_found", user=str(user_id))
            return self._principal(s, user, via="session")

    # -- tokens -----------------------------------------------------------------------------------
    def create_token(
        self, user_id: int, name: str, *, roles: Iterable[str] | None = None, actor: str
    ) -> tuple[int, str]:
        """A new API token of ``user_id`` limited to ``roles`` (a subset of the user's; None:
        all of them). Returns ``(token id, plaintext)``: the plaintext is shown once, only its
        hash is kept."""
        name = (name or "").strip()
        if not name or len(name) > 100:
            raise AccountInvalid("accounts.token.bad_name")
        secret = secrets.token_urlsafe(32)
        with self._session(write=True) as s:
            user = self._user(s, user_id, None)
            if user.disabled:
                raise AccountConflict("accounts.user.disabled", username=user.username)
            held = set(s.scalars(sa.select(UserRole.role).where(UserRole.user_id == user.id)))
            wanted = _check_roles(held if roles is None else roles)
            extra = [r for r in wanted if r not in held]
            if extra:
                raise AccountInvalid("accounts.token.roles", roles=", ".join(extra))
            row = ApiToken(
                user_id=user.id,
                name=name,
                secret_sha256=_sha256(secret),
                roles=",".join(wanted),
                created_by=actor,
            )
            s.add(row)
            s.flush()
            audit.append(
                s,
                actor,
                "token.create",
                f"token:{row.id}",
                {"user": user.username, "name": name, "roles": list(wanted)},
            )
            return row.id, f"{TOKEN_PREFIX}{row.id}_{secret}"

    def _token_info(self, row: ApiToken, user: User) -> TokenInfo:
        created = _aware(row.created_at)
        assert created is not None
        return TokenInfo(
            id=row.id,
            user_id=user.id,
            username=user.username,
            agency=user.agency,
            name=row.name,
            roles=tuple(r for r in row.roles.split(",") if r),
            created_at=created,
            last_used_at=_aware(row.last_used_at),
            revoked_at=_aware(row.revoked_at),
        )

    def get_token(self, token_id: int, *, agency: str | None) -> TokenInfo:
        with self._session() as s:
            found = s.execute(
                sa.select(ApiToken, User)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.id == token_id)
            ).first()
            if found is None or (agency is not None and found[1].agency != agency):
                raise AccountNotFound("accounts.token.not_found", token=str(token_id))
            return self._token_info(found[0], found[1])

    def list_tokens(
        self, agency: str | None, *, user_id: int | None = None, include_revoked: bool = True
    ) -> list[TokenInfo]:
        query = sa.select(ApiToken, User).join(User, User.id == ApiToken.user_id)
        if agency is not None:
            query = query.where(User.agency == agency)
        if user_id is not None:
            query = query.where(ApiToken.user_id == user_id)
        if not include_revoked:
            query = query.where(ApiToken.revoked_at.is_(None))
        with self._session() as s:
            return [self._token_info(t, u) for t, u in s.execute(query.order_by(ApiToken.id))]

    def revoke_token(self, token_id: int, *, agency: str | None, actor: str) -> None:
        """Revoke a token of ``agency`` (None: any agency; the CLI): effective at once."""
        with self._session(write=True) as s:
            row = s.get(ApiToken, token_id)
            user = s.get(User, row.user_id) if row is not None else None
            if row is None or user is None or (agency is not None and user.agency != agency):
                raise AccountNotFound("accounts.token.not_found", token=str(token_id))
            if row.revoked_at is not None:
                return
            row.revoked_at = _utcnow()
            row.revoked_by = actor
            audit.append(s, actor, "token.revoke", f"token:{row.id}", {"user": user.username})

    def principal_for_token(self, plaintext: str) -> Principal | None:
        """The principal an API token stands for (its roles, within the user's current ones);
        None for a malformed, unknown, wrong, revoked token or a disabled user."""
        parsed = parse_token(plaintext)
        if parsed is None:
            return None
        token_id, secret = parsed
        now = _utcnow()
        with self._session() as s:
            row = s.get(ApiToken, token_id)
            if row is None or not hmac.compare_digest(row.secret_sha256, _sha256(secret)):
                return None
            if row.revoked_at is not None:
                return None
            user = s.get(User, row.user_id)
            if user is None or user.disabled:
                return None
            last = _aware(row.last_used_at)
            if last is None or now - last >= _LAST_USE_RESOLUTION:
                row.last_used_at = now
            return self._principal(s, user, via="token", token_id=row.id, only=row.roles.split(","))

    # -- web sessions -----------------------------------------------------------------------------
    def create_session(self, principal: Principal, *, hours: float = 8.0) -> tuple[str, str]:
        """A new web session for ``principal``: ``(session id, csrf token)``. Only the hash of
        the session id is stored."""
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = _utcnow()
        with self._session(write=True) as s:
            user = self._user(s, principal.user_id, None)
            if user.disabled:
                raise AuthenticationFailed()
            s.add(
                WebSession(
                    id_sha256=_sha256(session_id),
                    user_id=user.id,
                    csrf_token=csrf,
                    created_at=now,
                    expires_at=now + dt.timedelta(hours=hours),
                )
            )
            audit.append(s, principal.actor, "session.start", f"user:{user.id}", {"hours": hours})
        return session_id, csrf

    def principal_for_session(self, session_id: str) -> tuple[Principal, str] | None:
        """The principal of a live session and its CSRF token; None when the session is
        unknown, ended, expired, or its user disabled."""
        if not session_id or len(session_id) > 128:
            return None
        now = _utcnow()
        with self._session() as s:
            row = s.get(WebSession, _sha256(session_id))
            if row is None or row.ended_at is not None:
                return None
            expires = _aware(row.expires_at)
            if expires is None or expires <= now:
                return None
            user = s.get(User, row.user_id)
            if user is None or user.disabled:
                return None
            return self._principal(s, user, via="session"), row.csrf_token

    def end_session(self, session_id: str) -> None:
        """End a session now (logout): the cookie no longer works, even if replayed."""
        if not session_id:
            return
        with self._session(write=True) as s:
            row = s.get(WebSession, _sha256(session_id))
            if row is None or row.ended_at is not None:
                return
            row.ended_at = _utcnow()
            user = s.get(User, row.user_id)
            actor = f"user:{user.username}@{user.agency}" if user else "anonymous"
            audit.append(s, actor, "session.end", f"user:{row.user_id}", {})

    # -- signing keys -----------------------------------------------------------------------------
    def bind_key(self, user_id: int, key_ref: str, *, actor: str) -> None:
        """Let ``user_id`` sign with ``key_ref`` (and nobody else: a key is bound once)."""
        key_ref = (key_ref or "").strip()
        if not key_ref or len(key_ref) > 300:
            raise AccountInvalid("accounts.key.bad_ref", ref=key_ref)
        with self._session(write=True) as s:
            user = self._user(s, user_id, None)
            bound = s.scalar(sa.select(KeyBinding).where(KeyBinding.key_ref == key_ref))
            if bound is not None:
                if bound.user_id == user.id:
                    return
                raise AccountConflict("accounts.key.in_use", ref=key_ref)
            if s.scalar(sa.select(Agency.code).where(Agency.seal_key == key_ref)) is not None:
                raise AccountConflict("accounts.key.in_use", ref=key_ref)
            s.add(KeyBinding(user_id=user.id, key_ref=key_ref, created_by=actor))
            s.flush()
            audit.append(s, actor, "key.bind", f"user:{user.id}", {"key": key_ref})

    def unbind_key(self, user_id: int, key_ref: str, *, agency: str | None, actor: str) -> None:
        with self._session(write=True) as s:
            user = self._user(s, user_id, agency)
            row = s.scalar(
                sa.select(KeyBinding).where(
                    KeyBinding.user_id == user.id, KeyBinding.key_ref == key_ref
                )
            )
            if row is None:
                raise AccountNotFound("accounts.key.not_bound", ref=key_ref)
            s.delete(row)
            audit.append(s, actor, "key.unbind", f"user:{user.id}", {"key": key_ref})

    def keys_of(self, user_id: int) -> list[str]:
        with self._session() as s:
            return list(
                s.scalars(
                    sa.select(KeyBinding.key_ref)
                    .where(KeyBinding.user_id == user_id)
                    .order_by(KeyBinding.id)
                )
            )

    def key_bindings(self, agency: str, *, user_id: int | None = None) -> list[dict[str, Any]]:
        """Every key bound to a user of ``agency`` (or to ``user_id`` only)."""
        query = (
            sa.select(KeyBinding, User)
            .join(User, User.id == KeyBinding.user_id)
            .where(User.agency == agency)
        )
        if user_id is not None:
            query = query.where(User.id == user_id)
        with self._session() as s:
            return [
                {
                    "user_id": u.id,
                    "username": u.username,
                    "key": b.key_ref,
                    "kind": key_kind(b.key_ref),
                    "created_at": (_aware(b.created_at) or _utcnow()).isoformat(),
                }
                for b, u in s.execute(query.order_by(KeyBinding.id))
            ]

    def pin_locked(self, user_id: int) -> int:
        """Seconds the user's PIN stays locked after too many wrong PINs (0: not locked)."""
        with self._session() as s:
            return self._locked(s, f"pin:{user_id}", _utcnow())

    def record_pin(self, principal: Principal, key_ref: str, *, ok: bool) -> None:
        """Count (and audit) a wrong PIN, or clear the count after a right one."""
        name = f"pin:{principal.user_id}"
        with self._session(write=True) as s:
            if ok:
                self._cleared(s, name)
                audit.append(
                    s, principal.actor, "key.unlock", f"user:{principal.user_id}", {"key": key_ref}
                )
            else:
                locks = self._failed(s, name, _utcnow())
                audit.append(
                    s,
                    principal.actor,
                    "key.pin_failed",
                    f"user:{principal.user_id}",
                    {"key": key_ref, "locked": locks},
                )


def _agency_info(row: Agency) -> AgencyInfo:
    created = _aware(row.created_at)
    assert created is not None
    return AgencyInfo(code=row.code, name=row.name, seal_key=row.seal_key, created_at=created)


def key_kind(key_ref: str) -> str:
    """``personal`` (PIN-encrypted file), ``pkcs11`` (token) or ``file`` (server file store)."""
    if key_ref.startswith(PERSONAL_PREFIX):
        return "personal"
    if key_ref.startswith("pkcs11:"):
        return "pkcs11"
    return "file"


# -- signing keys: opening and issuing ------------------------------------------------------------


def personal_keys_dir(services: Services) -> Path:
    """Where personal keys (PKCS#12 files encrypted with their user's PIN) are kept."""
    return services.settings.data_dir / "personal-keys"


def _pin_store(services: Services, pin: str) -> Any:
    from kyso.certs.keys import FileKeyStore

    secret = pin.encode("utf-8")
    return FileKeyStore(personal_keys_dir(services), passphrase=lambda: secret)


class _PersonalKeyMaker:
    """A key store for :meth:`BuiltinPKI.issue`: creates the key in memory and writes it, with
    its certificate, to a PKCS#12 file encrypted with the user's PIN."""

    def __init__(self, services: Services, pin: str, key_type: str) -> None:
        self._store = _pin_store(services, pin)
        self._key_type = key_type
        self._pending: dict[str, Any] = {}

    def generate(self, label: str, key_type: str = "rsa-2048") -> PublicKeyTypes:
        from kyso.certs.builders import new_private_key

        key = new_private_key(key_type)
        self._pending[label] = key
        return key.public_key()

    def store_certificate(
        self, label: str, certificate: x509.Certificate, chain: Sequence[x509.Certificate] = ()
    ) -> None:
        self._store.save(label, self._pending.pop(label), certificate, chain)

    def has(self, label: str) -> bool:
        return bool(self._store.has(label))

    def uri(self, label: str) -> str:
        return PERSONAL_PREFIX + label


def canonical_key_ref(services: Services, ref: str) -> str:
    """The one name of the key ``ref`` names (``file:…``, ``pkcs11:…`` or ``personal:…``),
    after checking it exists; the built-in PKI's own keys are refused."""
    from kyso.certs.keys import validate_label
    from kyso.certs.pki import INFRA_LABELS

    ref = (ref or "").strip()
    if ref.startswith(PERSONAL_PREFIX):
        label = validate_label(ref[len(PERSONAL_PREFIX) :])
        if not (personal_keys_dir(services) / f"{label}.p12").is_file():
            raise AccountNotFound("accounts.key.unknown", ref=ref)
        return PERSONAL_PREFIX + label
    handle = services.keys.resolve(ref)
    if handle.label in INFRA_LABELS:
        raise AccountInvalid("accounts.key.infrastructure", ref=ref)
    return handle.uri


def issue_personal_key(
    services: Services,
    user_id: int,
    *,
    pin: str,
    ids: Sequence[str],
    title: str | None = None,
    unit: str | None = None,
    key_type: str = "rsa-2048",
    days: int = 730,
    actor: str,
) -> IssuedCertificate:
    """Issue a personal signing certificate from the built-in PKI for ``user_id``, keep its key
    in a PKCS#12 file encrypted with the user's signing ``pin`` and bind it to the user.

    The PIN becomes the user's signing PIN when they have none yet; otherwise it must be it."""
    from kyso.certs import identity
    from kyso.certs.keys import slug_label

    accounts = services.accounts
    user = accounts.get_user(user_id)
    agency = accounts.get_agency(user.agency)
    if user.has_pin:
        if not accounts.check_pin(user.id, pin):
            raise PinError("accounts.pin.wrong")
    else:
        check_pin_strength(pin)
    subject = identity.person_subject(
        user.full_name, ids=ids, title=title, organisation=agency.name, unit=unit
    )
    base = slug_label(f"{user.agency}-{user.username}")[:56]
    maker = _PersonalKeyMaker(services, pin, key_type)
    label, n = base, 1
    while maker.has(label) or _bound(accounts, PERSONAL_PREFIX + label):
        n += 1
        label = f"{base}-{n}"
    if not user.has_pin:
        accounts.set_pin(user.id, pin, actor=actor)
    issued = services.pki.issue(
        kind="person",
        subject=subject,
        label=label,
        key_type=key_type,
        days=days,
        public_url=services.settings.public_url,
        token=maker,
        actor=actor,
    )
    accounts.bind_key(user.id, issued.key_uri, actor=actor)
    return issued


def _bound(accounts: AccountStore, key_ref: str) -> bool:
    with accounts.catalog.session() as s:
        return s.scalar(sa.select(KeyBinding.id).where(KeyBinding.key_ref == key_ref)) is not None


def _matching_ref(refs: Sequence[str], key: str) -> str | None:
    """The bound reference ``key`` names: the reference itself, or a bare label of one."""
    key = (key or "").strip()
    if key in refs:
        return key
    for ref in refs:
        if ref in (f"file:{key}", PERSONAL_PREFIX + key):
            return ref
        if ref.startswith("pkcs11:") and f"object={key}" in ref.split(";"):
            return ref
    return None


def open_signing_key(services: Services, principal: Principal, key: str, pin: str) -> KeyHandle:
    """The key ``key`` (a reference or label bound to ``principal``), opened with the user's
    ``pin``, which is asked for every time.

    Problems: 403 ``forbidden`` (not an official), 404 ``not-found`` (no such key bound to this
    user), 403 ``pin-required`` / ``bad-pin`` (wrong PINs are counted and audited; too many in a
    row lock the PIN for a while: 429 ``rate-limited``)."""
    from kyso.api.problems import Problem
    from kyso.certs.errors import WrongPassphraseError
    from kyso.i18n import t

    accounts = services.accounts
    if not principal.has("official"):
        raise Problem(403, "forbidden", t("accounts.key.officials_only"))
    ref = _matching_ref(accounts.keys_of(principal.user_id), key)
    if ref is None:
        raise Problem(404, "not-found", t("accounts.key.not_bound", ref=key))
    if not pin:
        raise Problem(403, "pin-required", t("accounts.pin.required"))
    locked = accounts.pin_locked(principal.user_id)
    if locked:
        raise LockedOut("accounts.pin.locked", seconds=locked).problem()
    if ref.startswith(PERSONAL_PREFIX):
        try:
            handle: KeyHandle = _pin_store(services, pin).load(ref[len(PERSONAL_PREFIX) :])
            handle.uri = ref  # not a key of the server's file store
            ok = True
        except WrongPassphraseError:
            ok = False
    else:
        ok = accounts.check_pin(principal.user_id, pin)
    accounts.record_pin(principal, ref, ok=ok)
    if not ok:
        raise Problem(403, "bad-pin", t("accounts.pin.wrong"))
    if not ref.startswith(PERSONAL_PREFIX):
        handle = services.keys.resolve(ref)
    return handle


def open_agency_key(services: Services, principal: Principal) -> KeyHandle:
    """The seal key of the principal's agency (clerks only): 403 ``forbidden`` for others,
    409 ``conflict`` when the agency has none."""
    from kyso.api.problems import Problem
    from kyso.i18n import t

    if not principal.has("clerk"):
        raise Problem(403, "forbidden", t("accounts.key.clerks_only"))
    ref = services.accounts.agency_key(principal.agency)
    if ref is None:
        raise Problem(409, "conflict", t("accounts.agency.no_seal_key", code=principal.agency))
    return services.keys.resolve(ref)
