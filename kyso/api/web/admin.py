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
from collections.abc import Iterable
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from fastapi import Request
from fastapi.responses import Response
from starlette.datastructures import FormData

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
from kyso.api.web import forms, ui
from kyso.errors import KysoError
from kyso.i18n import t

router = forms.page_router()


# -- helpers ------------------------------------------------------------------------------------


async def _admin(request: Request) -> forms.Page:
    """The signed-in administrator's page, else :class:`~kyso.api.web.forms.Answer` with the
    login redirect or the 403 page."""
    return await forms.signed_in(request, "admin")


async def _posted(request: Request) -> tuple[forms.Page, FormData]:
    """The administrator's page and the posted form, its CSRF token checked."""
    return await forms.posted(request, "admin")


def _not_found(request: Request) -> Response:
    return ui.not_found_page(request, t("web.admin.not_found", locale=ui.request_locale(request)))


def _refused(exc: KysoError, locale: str) -> dict[str, Any]:
    """How a page is shown again after the account store refused a change: 409 for a
    conflict (a taken name, one's own admin role), else 422; the store's message."""
    status = 409 if isinstance(exc, AccountConflict) else 422
    return {"status": status, "error": exc.message(locale)}


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
    page: forms.Page,
    *,
    status: int = 200,
    error: str | None = None,
    values: dict[str, Any] | None = None,
) -> Response:
    locale, accounts, agency_code = page.locale, page.services.accounts, page.principal.agency
    names = role_names(locale)
    users = accounts.list_users(agency_code)
    agency = accounts.get_agency(agency_code)
    extra = {} if error is None else {"error": error}
    return ui.render(
        page.request,
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
    await _admin(request)
    return ui.redirect("/admin/users")


@router.get("/admin/users")
async def users_page(request: Request) -> Response:
    page = await _admin(request)
    return await forms.call(_users_page, page)


@router.post("/admin/users")
async def create_user(request: Request) -> Response:
    page, form = await _posted(request)
    principal = page.principal
    username = forms.field(form, "username", 80)
    full_name = forms.field(form, "full_name", 250)
    roles = _roles(form)
    password = forms.secret(form, "password", 256)
    values = {"username": username, "full_name": full_name, "roles": roles}
    if password != forms.secret(form, "password_again", 256):
        error = t("web.setup.password_mismatch", locale=page.locale)
        return await forms.call(_users_page, page, status=422, error=error, values=values)
    try:
        user_id = await forms.call(
            page.services.accounts.create_user,
            principal.agency,
            username,
            full_name,
            password=password,
            roles=roles,
            actor=principal.actor,
        )
    except KysoError as exc:
        return await forms.call(_users_page, page, **_refused(exc, page.locale), values=values)
    return ui.redirect(f"/admin/users/{user_id}", done="admin_user_created")


def _user_page(
    page: forms.Page, user_id: int, *, status: int = 200, error: str | None = None
) -> Response:
    locale, services = page.locale, page.services
    user = services.accounts.get_user(user_id, agency=page.principal.agency)
    names = role_names(locale)
    extra = {} if error is None else {"error": error}
    return ui.render(
        page.request,
        "admin_user.html.j2",
        status=status,
        title=t("web.admin.user.title", locale=locale, name=user.full_name),
        user=_user_row(user, locale, names),
        key_names=key_labels(services, user.keys, locale),
        keys=list(user.keys),
        role_names=names,
        role_helps=role_helps(locale),
        is_self=user.id == page.principal.user_id,
        **extra,
    )


@router.get("/admin/users/{user_id}")
async def user_page(user_id: int, request: Request) -> Response:
    page = await _admin(request)
    try:
        return await forms.call(_user_page, page, user_id)
    except AccountNotFound:
        return _not_found(request)


@router.post("/admin/users/{user_id}/roles")
async def change_roles(user_id: int, request: Request) -> Response:
    page, form = await _posted(request)
    principal, accounts = page.principal, page.services.accounts
    roles = _roles(form)
    try:
        await forms.call(accounts.get_user, user_id, agency=principal.agency)
        if user_id == principal.user_id and "admin" not in roles:
            raise AccountConflict("web.admin.keep_own_admin")
        await forms.call(
            accounts.set_roles, user_id, roles, agency=principal.agency, actor=principal.actor
        )
    except AccountNotFound:
        return _not_found(request)
    except KysoError as exc:
        return await forms.call(_user_page, page, user_id, **_refused(exc, page.locale))
    return ui.redirect(f"/admin/users/{user_id}", done="admin_roles_changed")


@router.post("/admin/users/{user_id}/state")
async def change_state(user_id: int, request: Request) -> Response:
    page, form = await _posted(request)
    principal, accounts = page.principal, page.services.accounts
    action = forms.field(form, "action", 10)
    try:
        await forms.call(accounts.get_user, user_id, agency=principal.agency)
        if action not in ("disable", "enable"):
            raise AccountInvalid("web.admin.bad_action")
        if user_id == principal.user_id and action == "disable":
            raise AccountConflict("web.admin.keep_own_account")
        await forms.call(
            accounts.set_disabled,
            user_id,
            action == "disable",
            agency=principal.agency,
            actor=principal.actor,
        )
    except AccountNotFound:
        return _not_found(request)
    except KysoError as exc:
        return await forms.call(_user_page, page, user_id, **_refused(exc, page.locale))
    done = "admin_user_disabled" if action == "disable" else "admin_user_enabled"
    return ui.redirect(f"/admin/users/{user_id}", done=done)


# -- personal signing keys ------------------------------------------------------------------------


def _key_page(
    page: forms.Page,
    user_id: int,
    *,
    status: int = 200,
    error: str | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    locale, services = page.locale, page.services
    user = services.accounts.get_user(user_id, agency=page.principal.agency)
    extra = {} if error is None else {"error": error}
    return ui.render(
        page.request,
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
    page = await _admin(request)
    try:
        return await forms.call(_key_page, page, user_id)
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
    page, form = await _posted(request)
    principal, services = page.principal, page.services
    number = forms.field(form, "id_number", 40).replace(" ", "")
    title = forms.field(form, "title", 200) or None
    unit = forms.field(form, "unit", 200) or None
    pin = forms.secret(form, "pin", 256)
    values = {"id_number": number, "title": title or "", "unit": unit or ""}
    try:
        await forms.call(services.accounts.get_user, user_id, agency=principal.agency)
        if pin != forms.secret(form, "pin_again", 256):
            raise AccountInvalid("web.admin.key.pin_mismatch")
        if not number:
            raise AccountInvalid("web.admin.key.id_missing")
        ids = [number if ":" in number else f"CCCD:{number}"]
        await forms.call(
            _issue, services, principal, user_id, pin=pin, ids=ids, title=title, unit=unit
        )
    except AccountNotFound:
        return _not_found(request)
    except (KysoError, Problem) as exc:
        status = getattr(exc, "status", 422)
        status = status if status in (403, 409, 422, 429) else 422
        error = ui.error_message(exc, page.locale)
        return await forms.call(_key_page, page, user_id, status=status, error=error, values=values)
    return ui.redirect(f"/admin/users/{user_id}", done="admin_key_issued")


# -- API tokens -----------------------------------------------------------------------------------


def _tokens_page(
    page: forms.Page,
    *,
    status: int = 200,
    error: str | None = None,
    created: dict[str, Any] | None = None,
) -> Response:
    locale = page.locale
    names = role_names(locale)
    tokens = page.services.accounts.list_tokens(page.principal.agency)
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
        page.request,
        "admin_tokens.html.j2",
        status=status,
        title=t("web.admin.tokens.title", locale=locale),
        tokens=rows,
        own_roles=[r for r in ROLES if r in page.principal.roles],
        role_names=names,
        role_helps=role_helps(locale),
        **extra,
    )


@router.get("/admin/tokens")
async def tokens_page(request: Request) -> Response:
    page = await _admin(request)
    return await forms.call(_tokens_page, page)


@router.post("/admin/tokens")
async def create_token(request: Request) -> Response:
    page, form = await _posted(request)
    principal = page.principal
    name = forms.field(form, "name", 200)
    roles = _roles(form)
    try:
        token_id, plaintext = await forms.call(
            page.services.accounts.create_token,
            principal.user_id,
            name,
            roles=roles,
            actor=principal.actor,
        )
    except KysoError as exc:
        return await forms.call(_tokens_page, page, **_refused(exc, page.locale))
    # shown this once (the page is not cached: Cache-Control no-store), never stored in clear
    created = {"id": token_id, "name": name, "token": plaintext}
    return await forms.call(_tokens_page, page, created=created)


@router.post("/admin/tokens/{token_id}/revoke")
async def revoke_token(token_id: int, request: Request) -> Response:
    page, _ = await _posted(request)
    principal = page.principal
    try:
        await forms.call(
            page.services.accounts.revoke_token,
            token_id,
            agency=principal.agency,
            actor=principal.actor,
        )
    except AccountNotFound:
        return _not_found(request)
    return ui.redirect("/admin/tokens", done="admin_token_revoked")
