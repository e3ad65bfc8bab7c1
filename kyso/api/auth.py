"""Who is calling: FastAPI dependencies for API tokens (systems) and web sessions (people).

Credentials, in this order:

* ``Authorization: Bearer kyso_<id>_<secret>``: an API token (:meth:`AccountStore.create_token`).
  A request with a bad, revoked or malformed token gets 401 even if it also has a cookie.
* the ``kyso_session`` cookie: a web session id signed with ``services.secret_key``
  (HttpOnly, SameSite=Lax, Secure per ``services.cookie_secure``); the session itself lives in
  the database, so logging out or disabling the user ends it everywhere at once.
  Cookie-authenticated unsafe requests (POST, PUT, PATCH, DELETE) must carry the session's CSRF
  token, in the ``X-CSRF-Token`` header or a ``csrf_token`` form field; token-authenticated
  requests need none (a browser never adds an ``Authorization`` header by itself).

Use in routes::

    @router.get("/api/v1/things")
    def things(principal: CurrentPrincipal) -> ...            # 401 problem when absent

    @router.post("/api/v1/admin-thing")
    def admin_thing(principal: Annotated[Principal, require("admin")]) -> ...   # 403 if not
"""

from __future__ import annotations

import hmac
import secrets
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request, Response
from itsdangerous import BadSignature, Signer, TimestampSigner
from starlette.concurrency import run_in_threadpool

from kyso.api.principal import Principal
from kyso.api.problems import Problem
from kyso.i18n import t

if TYPE_CHECKING:
    from kyso.api.services import Services

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "CurrentPrincipal",
    "OptionalPrincipal",
    "check_anonymous_csrf",
    "clear_session_cookie",
    "csrf_token",
    "current_principal",
    "optional_principal",
    "require",
    "session_id_of",
    "set_session_cookie",
]

SESSION_COOKIE = "kyso_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _signer(services: Services) -> Signer:
    return Signer(services.secret_key, salt="kyso.session")


def set_session_cookie(response: Response, services: Services, session_id: str) -> None:
    """Put the signed session id in the ``kyso_session`` cookie of ``response``."""
    value = _signer(services).sign(session_id.encode()).decode()
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=int(services.settings.session_hours * 3600),
        path="/",
        httponly=True,
        samesite="lax",
        secure=services.cookie_secure,
    )


def clear_session_cookie(response: Response, services: Services) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=services.cookie_secure
    )


def session_id_of(request: Request) -> str | None:
    """The session id in the request's cookie, if its signature is right."""
    value = request.cookies.get(SESSION_COOKIE)
    if not value or len(value) > 256:
        return None
    try:
        return _signer(_services(request)).unsign(value.encode()).decode()
    except (BadSignature, UnicodeDecodeError):
        return None


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Problem(401, "unauthenticated", t("accounts.auth.bad_token"))
    return value.strip()


async def _check_csrf(request: Request, expected: str) -> None:
    given = request.headers.get(CSRF_HEADER)
    if not given:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(_FORMS):
            # Starlette spools the whole form to find the token: only a body of announced,
            # bounded size is read (browsers always announce the length of a form post).
            limit = _services(request).settings.upload_max_bytes + (1 << 20)
            length = request.headers.get("content-length", "")
            if not length.isdigit() or int(length) > limit:
                raise Problem(403, "csrf", t("accounts.auth.csrf"))
            form = await request.form()
            value = form.get(CSRF_FIELD)
            given = value if isinstance(value, str) else None
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Problem(403, "csrf", t("accounts.auth.csrf"))


async def _resolve(request: Request) -> Principal | None:
    """The principal of the request (cached on ``request.state``), CSRF checked."""
    if hasattr(request.state, "principal"):
        cached: Principal | None = request.state.principal
        return cached
    accounts = _services(request).accounts
    principal: Principal | None = None
    token = _bearer(request)
    if token is not None:
        principal = await run_in_threadpool(accounts.principal_for_token, token)
        if principal is None:
            raise Problem(401, "unauthenticated", t("accounts.auth.bad_token"))
    else:
        session_id = session_id_of(request)
        if session_id is not None:
            found = await run_in_threadpool(accounts.principal_for_session, session_id)
            if found is not None:
                principal, csrf = found
                if request.method not in SAFE_METHODS:
                    await _check_csrf(request, csrf)
                request.state.csrf_token = csrf
    request.state.principal = principal
    return principal


async def current_principal(request: Request) -> Principal:
    """The authenticated caller; a 401 problem when there is none."""
    principal = await _resolve(request)
    if principal is None:
        raise Problem(401, "unauthenticated", t("accounts.auth.unauthenticated"))
    return principal


async def optional_principal(request: Request) -> Principal | None:
    """The authenticated caller, or None (a bad API token is still a 401)."""
    return await _resolve(request)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]


def require(*roles: str) -> Any:
    """A dependency (``Depends`` object) giving the caller when they hold one of ``roles``;
    a 403 problem ``forbidden`` otherwise (401 when not authenticated). Use it as
    ``Annotated[Principal, require("admin")]`` or in ``dependencies=[require("admin")]``."""
    wanted = tuple(roles)

    async def checker(request: Request) -> Principal:
        principal = await current_principal(request)
        if not principal.has(*wanted):
            raise Problem(403, "forbidden", t("accounts.auth.forbidden", roles=", ".join(wanted)))
        return principal

    return Depends(checker)


def csrf_token(request: Request) -> str:
    """The CSRF token to put in a page's forms: the session's when the caller has a session,
    else a signed, time-limited token for anonymous forms (the login form), checked with
    :func:`check_anonymous_csrf`."""
    token = getattr(request.state, "csrf_token", None)
    if isinstance(token, str):
        return token
    services = _services(request)
    session_id = session_id_of(request)
    if session_id is not None:
        found = services.accounts.principal_for_session(session_id)
        if found is not None:
            request.state.csrf_token = found[1]
            return found[1]
    signer = TimestampSigner(services.secret_key, salt="kyso.csrf.anonymous")
    return signer.sign(secrets.token_urlsafe(16).encode()).decode()


def check_anonymous_csrf(request: Request, token: str | None, *, max_age: int = 3600) -> bool:
    """Whether ``token`` is an anonymous CSRF token from :func:`csrf_token`, younger than
    ``max_age`` seconds."""
    if not token:
        return False
    signer = TimestampSigner(_services(request).secret_key, salt="kyso.csrf.anonymous")
    try:
        signer.unsign(token.encode(), max_age=max_age)
    except (BadSignature, UnicodeDecodeError):
        return False
    return True
