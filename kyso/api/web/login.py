"""Logging in and out of the web UI.

The login form posts here; the password is checked by :meth:`AccountStore.authenticate`
(argon2, throttled and audited there) and a session is created with
:meth:`AccountStore.create_session`.  The session id goes into the same ``kyso_session``
cookie the HTTP API accepts (HttpOnly, SameSite=Lax, Secure in production); its CSRF token is
put into every form of the UI.  The login form itself is protected against login CSRF by a
double-submit token (a random cookie that must match the form's field).
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from kyso.api.accounts import LockedOut
from kyso.api.auth import clear_session_cookie, session_id_of, set_session_cookie
from kyso.api.web import forms, ui
from kyso.errors import KysoError
from kyso.i18n import t

router = forms.page_router()

LOGIN_CSRF_COOKIE = "kyso_login_csrf"
LOGIN_CSRF = forms.DoubleSubmit(LOGIN_CSRF_COOKIE, "/login")


def _login_page(
    request: Request,
    *,
    status: int = 200,
    username: str = "",
    next: str = "/",
    error: str | None = None,
) -> Response:
    locale = ui.request_locale(request)
    token = LOGIN_CSRF.token(request)
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
    LOGIN_CSRF.set_cookie(request, response, token)
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
    username = forms.field(form, "username", 64)
    password = forms.secret(form, "password")
    back = form.get("next")
    back = ui.safe_next(back if isinstance(back, str) else None)
    if not LOGIN_CSRF.matches(request, form.get("csrf_token")):
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
    LOGIN_CSRF.forget(response)
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
            csrf_text = t("web.error.csrf", locale=ui.request_locale(request))
            return ui.message_page(request, 403, csrf_text)
        session_id = session_id_of(request)
        if session_id is not None:
            await run_in_threadpool(ui.services_of(request).accounts.end_session, session_id)
    clear_session_cookie(response, ui.services_of(request))
    return response
