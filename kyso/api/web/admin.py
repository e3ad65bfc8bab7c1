"""Administration of an agency by its ``admin`` users: users and roles, signing keys of
officials, API tokens.

Every page is for the role ``admin`` and works on the administrator's own agency only: a user
or token id of another agency answers 404, exactly like one that does not exist.  Every change
goes through :class:`~kyso.api.accounts.AccountStore` (or
:func:`~kyso.api.accounts.issue_personal_key`), which audits it.  Passwords and PINs are only
passed on to the store (argon2 hashes; the personal key file is encrypted with the PIN); they
are never shown again, logged or kept in a page.  An API token is shown once, on the page that
answers its creation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from cryptography import x509
from cryptography.x509.oid import NameOID
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from kyso.api.accounts import (
    AccountConflict,
    AccountInvalid,
    AccountNotFound,
    UserInfo,
    issue_personal_key,
)
from kyso.api.principal import ROLES, Principal
from kyso.api.problems import Problem
from kyso.api.services import Services
from kyso.api.web import ui
from kyso.errors import KysoError
from kyso.i18n import set_locale, t

router = APIRouter(include_in_schema=False)

T = TypeVar("T")


# -- helpers ------------------------------------------------------------------------------------


async def _admin(request: Request) -> ui.Visitor | Response:
    """The signed-in administrator, else the login redirect or the 403 page."""
    set_locale(ui.request_locale(request))
    await run_in_threadpool(ui.visitor, request)
    return ui.need(request, "admin")


async def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await run_in_threadpool(fn, *args, **kwargs)


async def _form(request: Request, who: ui.Visitor) -> FormData | Response:
    """The posted form with the session's CSRF token checked; else the page saying so."""
    locale = ui.request_locale(request)
    try:
        form = await request.form(max_files=0, max_fields=40)
    except StarletteHTTPException:
        return _message(request, 400, t("web.error.csrf", locale=locale))
    try:
        ui.check_csrf(request, who, form.get("csrf_token"))
    except ui.CSRFError:
        return _message(request, 403, t("web.error.csrf", locale=locale))
    return form


def _message(request: Request, status: int, text: str, *, heading: str | None = None) -> Response:
    locale = ui.request_locale(request)
    return ui.render(
        request,
        "message.html.j2",
        status=status,
        heading=heading or t("web.error.title", locale=locale),
        text=text,
        tone="bad",
    )


def _not_found(request: Request) -> Response:
    locale = ui.request_locale(request)
    return _message(
        request,
        404,
        t("web.admin.not_found", locale=locale),
        heading=t("web.notfound.title", locale=locale),
    )


def _text(form: FormData, name: str, limit: int = 300) -> str:
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def _secret(form: FormData, name: str) -> str:
    value = form.get(name)
    return value[:256] if isinstance(value, str) else ""


def _roles(form: FormData) -> list[str]:
    return [r for r in form.getlist("roles") if isinstance(r, str) and r in ROLES]


def role_names(locale: str) -> dict[str, str]:
    return {role: t(f"web.admin.role.{role}", locale=locale) for role in ROLES}


def role_helps(locale: str) -> dict[str, str]:
    return {role: t(f"web.admin.role_help.{role}", locale=locale) for role in ROLES}


def _date(value: dt.datetime | None, locale: str) -> str:
    if value is None:
        return "—"
    local = value.astimezone(dt.timezone(dt.timedelta(hours=7)))
    return f"{local:%d/%m/%Y %H:%M}" if locale == "vi" else f"{local:%Y-%m-%d %H:%M}"


def _day(value: dt.datetime, locale: str) -> str:
    return f"{value:%d/%m/%Y}" if locale == "vi" else f"{value:%Y-%m-%d}"


# -- key labels (also used by the sign page) ----------------------------------------------------


def key_labels(services: Services, refs: Iterable[str], locale: str) -> dict[str, str]:
    """A human name for each key reference: its certificate's subject CN and validity (from
    the built-in PKI's records), else the reference itself."""
    wanted = set(refs)
    labels = {ref: ref for ref in wanted}
    if not wanted:
        return labels
    try:
        records = services.pki.records()
    except KysoError:
        return labels
    now = dt.datetime.now(dt.UTC)
    for record in records:  # oldest first: the newest certificate of a key wins
        if record.key_uri not in wanted:
            continue
        cert = record.certificate()
        labels[record.key_uri] = t(
            "web.admin.key_label",
            locale=locale,
            name=_common_name(cert) or record.label,
            end=_day(record.not_after, locale),
        )
        state = record.status_at(now)
        if state != "valid":
            labels[record.key_uri] += " — " + t(f"web.admin.key_state.{state}", locale=locale)
    return labels


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


# -- users --------------------------------------------------------------------------------------


def _user_row(user: UserInfo, locale: str, names: dict[str, str]) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "full_name": user.full_name,
        "roles": [names[r] for r in user.roles if r in names],
        "role_codes": list(user.roles),
        "disabled": user.disabled,
        "key_count": len(user.keys),
        "has_pin": user.has_pin,
        "created": _date(user.created_at, locale),
    }


def _users_page(
    request: Request,
    principal: Principal,
    *,
    status: int = 200,
    error: str | None = None,
    values: dict[str, Any] | None = None,
) -> Response:
    locale = ui.request_locale(request)
    services = ui.services_of(request)
    names = role_names(locale)
    users = services.accounts.list_users(principal.agency)
    agency = services.accounts.get_agency(principal.agency)
    extra = {} if error is None else {"error": error}
    return ui.render(
        request,
        "admin_users.html.j2",
        status=status,
        title=t("web.admin.users.title", locale=locale),
        agency=agency,
        users=[_user_row(u, locale, names) for u in users],
        role_names=names,
        role_helps=role_helps(locale),
        values=values or {"roles": ["official"]},
        **extra,
    )


@router.get("/admin")
async def admin_home(request: Request) -> Response:
    who = await _admin(request)
    if isinstance(who, Response):
        return who
    return ui.redirect("/admin/users")


@router.get("/admin/users")
async def users_page(request: Request) -> Response:
    who = await _admin(request)
    if isinstance(who, Response):
        return who
    assert who.principal is not None
    return await _call(_users_page, request, who.principal)


@router.post("/admin/users")
async def create_user(request: Request) -> Response:
    who = await _admin(request)
    if isinstance(who, Response):
        return who
    principal = who.principal
    assert principal is not None
    form = await _form(request, who)
    if isinstance(form, Response):
        return form
    locale = ui.request_locale(request)
    services = ui.services_of(request)
    username = _text(form, "username", 80)
    full_name = _text(form, "full_name", 250)
    roles = _roles(form)
    password = _secret(form, "password")
    values = {"username": username, "full_name": full_name, "roles": roles}
    if password != _secret(form, "password_again"):
        error = t("web.setup.password_mismatch", locale=locale)
        return await _call(_users_page, request, principal, status=422, error=error, values=values)
    try:
        user_id = await _call(
            services.accounts.create_user,
            principal.agency,
            username,
            full_name,
            password=password,
            roles=roles,
            actor=principal.actor,
        )
    except KysoError as exc:
        status = 409 if isinstance(exc, AccountConflict) else 422
        return await _call(
            _users_page, request, principal, status=status, error=exc.message(locale), values=values
        )
    return ui.redirect(f"/admin/users/{user_id}", done="admin_user_created")


def _user_page(
    request: Request,
    principal: Principal,
    user_id: int,
    *,
    status: int = 200,
    error: str | None = None,
) -> Response:
    locale = ui.request_locale(request)
    services = ui.services_of(request)
    user = services.accounts.get_user(user_id, agency=principal.agency)
    names = role_names(locale)
    extra = {} if error is None else {"error": error}
    return ui.render(
        request,
        "admin_user.html.j2",
        status=status,
        title=t("web.admin.user.title", locale=locale, name=user.full_name),
        user=_user_row(user, locale, names),
        key_names=key_labels(services, user.keys, locale),
        keys=list(user.keys),
        role_names=names,
        role_helps=role_helps(locale),
        is_self=user.id == principal.user_id,
        **extra,
    )


@router.get("/admin/users/{user_id}")
async def user_page(user_id: int, request: Request) -> Response:
    who = await _admin(request)
    if isinstance(who, Response):
        return who
    assert who.principal is not None
    try:
        return await _call(_user_page, request, who.principal, user_id)
    except AccountNotFound:
        return _not_found(request)


@router.post("/admin/users/{user_id}/roles")
async def change_roles(user_id: int, request: Request) -> Response:
    who = await _admin(request)
    if isinstance(who, Response):
        return who
    principal = who.principal
    assert principal is not None
    form = await _form(request, who)
    if isinstance(form, Response):
        return form
    locale = ui.request_locale(request)
    accounts = ui.services_of(request).accounts
    roles = _roles(form)
    try:
        await _call(accounts.get_user, user_id, agency=principal.agency)
        if user_id == principal.user_id and "admin" not in roles:
            raise AccountConflict("web.admin.keep_own_admin")
        await _call(
            accounts.set_roles, user_id, roles, agency=principal.agency, actor=principal.actor
        )
    except AccountNotFound:
        return _not_found(request)
    except KysoError as exc:
        status = 409 if isinstance(exc, AccountConflict) else 422
        return await _call(
            _user_page, request, principal, user_id, status=status, error=exc.message(locale)
        )
    return ui.redirect(f"/admin/users/{user_id}", done="admin_roles_changed")


@router.post("/admin/users/{user_id}/state")
async def change_state(user_id: int, request: Request) -> Response:
    who = await _admin(request)
    if isinstance(who, Response):
        return who
    principal = who.principal
    assert principal is not None
    form = await _form(request, who)
    if isinstance(form, Response):
        return form
    locale = ui.request_locale(request)
    accounts = ui.services_of(request).accounts
    action = _text(form, "action", 10)
    try:
        await _call(accounts.get_user, user_id, agency=principal.agency)
        if action not in ("disable", "enable"):
            raise AccountInvalid("web.admin.bad_action")
        if user_id == principal.user_id and action == "disable":
            raise AccountConflict("web.admin.keep_own_account")
        await _call(
            accounts.set_disabled,
            user_id,
            action == "disable",
            agency=principal.agency,
            actor=principal.actor,
        )
    except AccountNotFound:
        return _not_found(request)
    except KysoError as exc:
        status = 409 if isinstance(exc, AccountConflict) else 422
        return await _call(
            _user_page, request, principal, user_id, status=status, error=exc.message(locale)
        )
    done = "admin_user_disabled" if action == "disable" else "admin_user_enabled"
    return ui.redirect(f"/admin/users/{user_id}", done=done)


# -- personal signing keys ------------------------------------------------------------------------


def _key_page(
    request: Request,
    principal: Principal,
    user_id: int,
    *,
    status: int = 200,
    error: str | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    locale = ui.request_locale(request)
    services = ui.services_of(request)
    user = services.accounts.get_user(user_id, agency=principal.agency)
    extra = {} if error is None else {"error": error}
    return ui.render(
        request,
        "admin_key.html.j2",
        status=status,
        title=t("web.admin.key.title", locale=locale),
        user=_user_row(user, locale, role_names(locale)),
        keys=list(user.keys),
        key_names=key_labels(services, user.keys, locale),
        is_official="official" in user.roles,
        values=values or {},
        **extra,
    )


@router.get("/admin/users/{user_id}/key")
async def key_form(user_id: int, request: Request) -> Response:
    who = await _admin(request)
    if isinstance(who, Response):
        return who
    assert who.principal is not None
    try:
        return await _call(_key_page, request, who.principal, user_id)
    except AccountNotFound:
        return _not_found(request)


def _issue(
    services: Services,
    principal: Principal,
    user_id: int,
    *,
    pin: str,
    ids: list[str],
    title: str | None,
    unit: str | None,
) -> str:
    """Issue the key (the PKI, the PIN-encrypted file, the binding: audited by the store), and
    a made-up signature image for it when there is none yet; returns the key reference."""
    from kyso.signer.appearance import demo_signature_png

    user = services.accounts.get_user(user_id, agency=principal.agency)
    if "official" not in user.roles:
        raise AccountConflict("web.admin.key.not_official")
    issued = issue_personal_key(
        services, user.id, pin=pin, ids=ids, title=title, unit=unit, actor=principal.actor
    )
    image = services.image_path(issued.label)
    if not image.exists():
        # so that the official's first signature is visible; 'kyso keys image' replaces it
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(demo_signature_png(user.full_name))
    return issued.key_uri


@router.post("/admin/users/{user_id}/key")
async def issue_key(user_id: int, request: Request) -> Response:
    who = await _admin(request)
    if isinstance(who, Response):
        return who
    principal = who.principal
    assert principal is not None
    form = await _form(request, who)
    if isinstance(form, Response):
        return form
    locale = ui.request_locale(request)
    services = ui.services_of(request)
    number = _text(form, "id_number", 40).replace(" ", "")
    title = _text(form, "title", 200) or None
    unit = _text(form, "unit", 200) or None
    pin = _secret(form, "pin")
    values = {"id_number": number, "title": title or "", "unit": unit or ""}
    try:
        await _call(services.accounts.get_user, user_id, agency=principal.agency)
        if pin != _secret(form, "pin_again"):
            raise AccountInvalid("web.admin.key.pin_mismatch")
        if not number:
            raise AccountInvalid("web.admin.key.id_missing")
        ids = [number if ":" in number else f"CCCD:{number}"]
        await _call(_issue, services, principal, user_id, pin=pin, ids=ids, title=title, unit=unit)
    except AccountNotFound:
        return _not_found(request)
    except (KysoError, Problem) as exc:
        status = getattr(exc, "status", 422)
        status = status if status in (403, 409, 422, 429) else 422
        return await _call(
            _key_page,
            request,
            principal,
            user_id,
            status=status,
            error=ui.error_message(exc, locale),
            values=values,
        )
    return ui.redirect(f"/admin/users/{user_id}", done="admin_key_issued")


# -- API tokens -----------------------------------------------------------------------------------


def _tokens_page(
    request: Request,
    principal: Principal,
    *,
    status: int = 200,
    error: str | None = None,
    created: dict[str, Any] | None = None,
) -> Response:
    locale = ui.request_locale(request)
    services = ui.services_of(request)
    names = role_names(locale)
    tokens = services.accounts.list_tokens(principal.agency)
    rows = [
        {
            "id": tk.id,
            "username": tk.username,
            "name": tk.name,
            "roles": [names.get(r, r) for r in tk.roles],
            "created": _date(tk.created_at, locale),
            "last_used": _date(tk.last_used_at, locale),
            "revoked": _date(tk.revoked_at, locale) if tk.revoked_at else None,
        }
        for tk in reversed(tokens)
    ]
    extra: dict[str, Any] = {} if error is None else {"error": error}
    if created is not None:
        extra["created"] = created
    return ui.render(
        request,
        "admin_tokens.html.j2",
        status=status,
        title=t("web.admin.tokens.title", locale=locale),
        tokens=rows,
        own_roles=[r for r in ROLES if r in principal.roles],
        role_names=names,
        role_helps=role_helps(locale),
        **extra,
    )


@router.get("/admin/tokens")
async def tokens_page(request: Request) -> Response:
    who = await _admin(request)
    if isinstance(who, Response):
        return who
    assert who.principal is not None
    return await _call(_tokens_page, request, who.principal)


@router.post("/admin/tokens")
async def create_token(request: Request) -> Response:
    who = await _admin(request)
    if isinstance(who, Response):
        return who
    principal = who.principal
    assert principal is not None
    form = await _form(request, who)
    if isinstance(form, Response):
        return form
    locale = ui.request_locale(request)
    accounts = ui.services_of(request).accounts
    name = _text(form, "name", 200)
    roles = _roles(form)
    try:
        token_id, plaintext = await _call(
            accounts.create_token,
            principal.user_id,
            name,
            roles=roles,
            actor=principal.actor,
        )
    except KysoError as exc:
        status = 409 if isinstance(exc, AccountConflict) else 422
        return await _call(
            _tokens_page, request, principal, status=status, error=exc.message(locale)
        )
    # shown this once (the page is not cached: Cache-Control no-store), never stored in clear
    created = {"id": token_id, "name": name, "token": plaintext}
    return await _call(_tokens_page, request, principal, created=created)


@router.post("/admin/tokens/{token_id}/revoke")
async def revoke_token(token_id: int, request: Request) -> Response:
    who = await _admin(request)
    if isinstance(who, Response):
        return who
    principal = who.principal
    assert principal is not None
    form = await _form(request, who)
    if isinstance(form, Response):
        return form
    accounts = ui.services_of(request).accounts
    try:
        await _call(accounts.revoke_token, token_id, agency=principal.agency, actor=principal.actor)
    except AccountNotFound:
        return _not_found(request)
    return ui.redirect("/admin/tokens", done="admin_token_revoked")
