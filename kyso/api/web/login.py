"""Logging in and out of the web UI.

The login form posts here; the password is checked by :meth:`AccountStore.authenticate`
(argon2, throttled and audited there) and a session is created with
:meth:`AccountStore.create_session`.  The session id goes into the same ``kyso_session``
cookie the HTTP API accepts (HttpOnly, SameSite=Lax, Secure in production); its CSRF token is
put into every form of the UI.  The login form itself is protected against login CSRF by a
double-submit token (a random cookie that must match the form's field).
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from kyso.api.accounts import LockedOut
from kyso.api.auth import clear_session_cookie, session_id_of, set_session_cookie
from kyso.api.web import ui
from kyso.errors import KysoError
from kyso.i18n import t

router = APIRouter(include_in_schema=False)

LOGIN_CSRF_COOKIE = "kyso_login_csrf"


def _login_page(
    request: Request,
    *,
    status: int = 200,
    username: str = "",
    next: str = "/",
    error: str | None = None,
) -> Response:
    locale = ui.request_locale(request)
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    if len(token) < 32:
        token = secrets.token_urlsafe(32)
    extra = {} if error is None else {"error": error}
    response = ui.render(
        request,
        "login.html.j2",
        status=status,
        title=t("web.login.title", locale=locale),
        login_csrf=token,
        username=username,
        next=ui.safe_next(next),
        **extra,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=ui.services_of(request).cookie_secure,
        path="/login",
    )
    return response


@router.get("/login")
async def login_form(request: Request, next: str = "/") -> Response:
    await run_in_threadpool(ui.visitor, request)
    if ui.visitor(request).signed_in:
        return ui.redirect(ui.safe_next(next))
    return _login_page(request, next=next)


@router.post("/login")
async def login(request: Request) -> Response:
    locale = ui.request_locale(request)
    await run_in_threadpool(ui.visitor, request)
    try:
        form = await request.form(max_files=0, max_fields=10)
    except StarletteHTTPException:
        return _login_page(request, status=400, error=t("web.error.csrf", locale=locale))
    username = form.get("username")
    password = form.get("password")
    back = form.get("next")
    username = username.strip()[:64] if isinstance(username, str) else ""
    password = password if isinstance(password, str) else ""
    back = ui.safe_next(back if isinstance(back, str) else None)
    submitted = form.get("csrf_token")
    expected = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    if (
        not isinstance(submitted, str)
        or len(expected) < 32
        or not hmac.compare_digest(submitted.encode(), expected.encode())
    ):
        return _login_page(
            request,
            status=403,
            username=username,
            next=back,
            error=t("web.error.csrf", locale=locale),
        )
    services = ui.services_of(request)
    try:
        principal = await run_in_threadpool(services.accounts.authenticate, username, password)
        session_id, _csrf = await run_in_threadpool(
            services.accounts.create_session, principal, hours=services.settings.session_hours
        )
    except LockedOut as exc:
        return _login_page(
            request, status=429, username=username, next=back, error=exc.message(locale)
        )
    except KysoError:
        return _login_page(
            request,
            status=401,
            username=username,
            next=back,
            error=t("web.login.failed", locale=locale),
        )
    response = ui.redirect(back)
    set_session_cookie(response, services, session_id)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await run_in_threadpool(ui.visitor, request)
    who = ui.visitor(request)
    response = ui.redirect("/login", done="logged_out")
    if who.signed_in:
        form = await request.form(max_files=0, max_fields=10)
        try:
            ui.check_csrf(request, who, form.get("csrf_token"))
        except ui.CSRFError:
            return ui.render(
                request,
                "message.html.j2",
                status=403,
                heading=t("web.error.title", locale=ui.request_locale(request)),
                text=t("web.error.csrf", locale=ui.request_locale(request)),
                tone="bad",
            )
        session_id = session_id_of(request)
        if session_id is not None:
            await run_in_threadpool(ui.services_of(request).accounts.end_session, session_id)
    clear_session_cookie(response, ui.services_of(request))
    return response
