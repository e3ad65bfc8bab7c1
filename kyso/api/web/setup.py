"""First-run setup: the first agency, its seal key and its first administrator, from the web.

While no agency exists, ``/`` and ``/login`` lead to ``/setup``.  So that a stranger on the
network cannot claim a fresh instance first, the form asks for a one-time *setup code*:
``kyso serve`` creates it at start (:func:`ensure_setup_code`) when there is no agency yet and
prints it on its console; only its SHA-256 is kept, in ``<data>/setup-code`` (mode 0600),
and the file is deleted once setup is done.  The code carries 80 random bits, so its hash
cannot be reversed and guessing it over HTTP is hopeless (every refused code is audited).

The form creates, in this order and only after checking every field: the agency's seal key
(an organisation certificate from the built-in PKI, the key in the server's key store), the
agency with that key, and its first user with the role ``admin``.  Afterwards ``/setup``
answers 404 and the administrator goes on in ``/admin/users`` (see :mod:`kyso.api.web.admin`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
from pathlib import Path

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from kyso.api.accounts import _USERNAME, AccountInvalid, check_password, normalise_username
from kyso.api.services import Services
from kyso.api.web import forms, ui
from kyso.archive import audit
from kyso.archive.metadata import MetadataError, parse_agency_code
from kyso.errors import KysoError
from kyso.i18n import set_locale, t

router = forms.page_router()

SETUP_FILE = "setup-code"
SETUP_CSRF_COOKIE = "kyso_setup_csrf"
SETUP_CSRF = forms.DoubleSubmit(SETUP_CSRF_COOKIE, "/setup")
#: No 0/O, 1/I/L: a code read from a console and typed by hand.
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
GROUPS, GROUP_LEN = 4, 4
SEAL_KEY_TYPE = "rsa-2048"
SEAL_DAYS = 1825
_lock = threading.Lock()


# -- the setup code ---------------------------------------------------------------------------


def setup_code_path(services: Services) -> Path:
    return services.settings.data_dir / SETUP_FILE


def _normalise(code: str) -> str:
    return re.sub(r"[\s-]+", "", code or "").upper()


def _digest(code: str) -> str:
    return hashlib.sha256(_normalise(code).encode("ascii", "replace")).hexdigest()


def has_agencies(services: Services) -> bool:
    return bool(services.accounts.list_agencies())


def ensure_setup_code(services: Services) -> str | None:
    """A new one-time setup code when no agency exists yet (its hash replaces any earlier
    one in ``<data>/setup-code``); None when agencies exist (any leftover file is removed).

    ``kyso serve`` calls this at start and prints the code it returns."""
    path = setup_code_path(services)
    if has_agencies(services):
        path.unlink(missing_ok=True)
        return None
    groups = ("".join(secrets.choice(ALPHABET) for _ in range(GROUP_LEN)) for _ in range(GROUPS))
    new_code = "-".join(groups)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{SETUP_FILE}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(_digest(new_code) + "\n")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return new_code


def check_setup_code(services: Services, code: str) -> bool:
    """Whether ``code`` is the current setup code (False when there is none)."""
    try:
        stored = setup_code_path(services).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return False
    if not re.fullmatch(r"[0-9a-f]{64}", stored) or not code:
        return False
    return hmac.compare_digest(stored, _digest(code))


def setup_done(request: Request) -> bool:
    """Whether an agency exists (remembered once true: agencies are never deleted)."""
    state = request.app.state
    if getattr(state, "kyso_setup_done", False):
        return True
    services = ui.services_of(request)
    done = has_agencies(services)
    if done:  # e.g. an agency made with 'kyso agencies create': the code is useless now
        setup_code_path(services).unlink(missing_ok=True)
        state.kyso_setup_done = True
    return done


# -- what the form creates --------------------------------------------------------------------


class SetupForm:
    """The fields of the setup form, checked before anything is created."""

    def __init__(self, form: FormData) -> None:
        self.setup_code = forms.field(form, "setup_code", 64)
        self.agency_code = forms.field(form, "agency_code", 40)
        self.agency_name = forms.field(form, "agency_name", 400)
        self.tax_code = forms.field(form, "tax_code", 20)
        self.username = normalise_username(forms.field(form, "username", 80))
        self.full_name = forms.field(form, "full_name", 250)
        self.password = forms.secret(form, "password")
        self.password_again = forms.secret(form, "password_again")

    def values(self) -> dict[str, str]:
        """What the form shows again after an error (never the code or the password)."""
        return {
            "agency_code": self.agency_code,
            "agency_name": self.agency_name,
            "tax_code": self.tax_code,
            "username": self.username,
            "full_name": self.full_name,
        }

    def check(self) -> None:
        """Every field as the account store and the PKI will want it (KysoError if not)."""
        from kyso.certs import identity

        try:
            self.agency_code = parse_agency_code(self.agency_code, "code")
        except MetadataError as e:
            raise AccountInvalid("accounts.agency.bad_code", code=self.agency_code) from e
        if not self.agency_name or len(self.agency_name) > 300:
            raise AccountInvalid("accounts.agency.bad_name")
        identity.organisation_subject(self.agency_name, ids=self.ids())
        if not _USERNAME.fullmatch(self.username):
            raise AccountInvalid("accounts.user.bad_username", username=self.username)
        if not self.full_name or len(self.full_name) > 200:
            raise AccountInvalid("accounts.user.bad_full_name")
        check_password(self.password, self.username)
        if self.password != self.password_again:
            raise AccountInvalid("web.setup.password_mismatch")

    def ids(self) -> list[str]:
        if not self.tax_code:
            return []
        return [self.tax_code if ":" in self.tax_code else f"MST:{self.tax_code}"]


def complete_setup(services: Services, form: SetupForm, *, client: str) -> str:
    """Create the seal key, the agency and its administrator; returns the agency code.

    Raises :class:`SetupClosed` when an agency appeared meanwhile."""
    from kyso.certs import identity
    from kyso.certs.keys import slug_label
    from kyso.signer.appearance import demo_seal_png

    actor = f"setup:{client}"
    with _lock:
        if has_agencies(services):
            raise SetupClosed
        accounts = services.accounts
        base = slug_label(f"seal-{form.agency_code}")[:56]
        label, n = base, 1
        while services.pki.keys.has(label):
            n += 1
            label = f"{base}-{n}"
        issued = services.pki.issue(
            kind="org",
            subject=identity.organisation_subject(form.agency_name, ids=form.ids()),
            label=label,
            key_type=SEAL_KEY_TYPE,
            days=SEAL_DAYS,
            public_url=services.settings.public_url,
            actor=actor,
        )
        image = services.image_path(issued.label)
        if not image.exists():
            # a made-up seal so the first document can be sealed visibly; the real one
            # replaces it with 'kyso keys image'
            image.parent.mkdir(parents=True, exist_ok=True)
            image.write_bytes(demo_seal_png(form.agency_name))
        accounts.create_agency(
            form.agency_code, form.agency_name, actor=actor, seal_key=issued.key_uri
        )
        user_id = accounts.create_user(
            form.agency_code,
            form.username,
            form.full_name,
            password=form.password,
            roles=["admin"],
            actor=actor,
        )
        catalog = accounts.catalog
        with catalog.session() as s:
            if catalog.dialect == "sqlite":
                s.connection().exec_driver_sql("BEGIN IMMEDIATE")
            audit.append(
                s,
                actor,
                "setup.complete",
                f"agency:{form.agency_code}",
                {"admin": f"user:{user_id}", "seal_key": issued.key_uri, "client": client},
            )
        setup_code_path(services).unlink(missing_ok=True)
    return form.agency_code


class SetupClosed(Exception):
    """Setup was completed (by another request) in the meantime."""


def _audit_refused(services: Services, client: str) -> None:
    catalog = services.accounts.catalog
    with catalog.session() as s:
        if catalog.dialect == "sqlite":
            s.connection().exec_driver_sql("BEGIN IMMEDIATE")
        audit.append(s, f"setup:{client}", "setup.code_refused", "setup", {"client": client})


# -- pages ------------------------------------------------------------------------------------


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _not_found(request: Request) -> Response:
    return ui.not_found_page(request, t("web.setup.closed", locale=ui.request_locale(request)))


def _setup_page(
    request: Request,
    *,
    status: int = 200,
    error: str | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    locale = ui.request_locale(request)
    token = SETUP_CSRF.token(request)
    extra = {} if error is None else {"error": error}
    response = ui.render(
        request,
        "setup.html.j2",
        status=status,
        title=t("web.setup.title", locale=locale),
        setup_csrf=token,
        has_code=setup_code_path(ui.services_of(request)).is_file(),
        values=values or {},
        **extra,
    )
    SETUP_CSRF.set_cookie(request, response, token)
    return response


@router.get("/setup")
async def setup_form(request: Request) -> Response:
    if await run_in_threadpool(setup_done, request):
        return _not_found(request)
    return _setup_page(request)


@router.post("/setup")
async def setup(request: Request) -> Response:
    locale = ui.request_locale(request)
    set_locale(locale)
    services = ui.services_of(request)
    if await run_in_threadpool(setup_done, request):
        return _not_found(request)
    try:
        raw = await request.form(max_files=0, max_fields=20)
    except StarletteHTTPException:
        return _setup_page(request, status=400, error=t("web.error.csrf", locale=locale))
    form = SetupForm(raw)
    if not SETUP_CSRF.matches(request, raw.get("csrf_token")):
        return _setup_page(
            request, status=403, error=t("web.error.csrf", locale=locale), values=form.values()
        )
    client = _client(request)
    if not await run_in_threadpool(check_setup_code, services, form.setup_code):
        await run_in_threadpool(_audit_refused, services, client)
        return _setup_page(
            request, status=403, error=t("web.setup.bad_code", locale=locale), values=form.values()
        )
    try:
        form.check()
    except KysoError as exc:
        return _setup_page(request, status=422, error=exc.message(locale), values=form.values())
    try:
        await run_in_threadpool(complete_setup, services, form, client=client)
    except SetupClosed:
        return _not_found(request)
    except KysoError as exc:
        return _setup_page(request, status=422, error=exc.message(locale), values=form.values())
    request.app.state.kyso_setup_done = True
    response = ui.redirect("/login", done="setup_complete")
    SETUP_CSRF.forget(response)
    return response


# -- before setup, the start and login pages lead here ------------------------------------------


@router.get("/")
async def home_or_setup(request: Request) -> Response:
    if not await run_in_threadpool(setup_done, request):
        return ui.redirect("/setup")
    from kyso.api.web import documents

    return await documents.home(request)


@router.get("/login")
async def login_or_setup(request: Request, next: str = "/") -> Response:
    if not await run_in_threadpool(setup_done, request):
        return ui.redirect("/setup")
    from kyso.api.web import login

    return await login.login_form(request, next)
