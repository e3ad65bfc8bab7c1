"""Routes: the caller's agency, its users and roles (admins), API tokens, key bindings.

Everything is scoped to the caller's agency: another agency's user or token id answers 404,
exactly like an id that does not exist.

* ``GET /api/v1/agencies/me`` — the caller's agency (any role).
* ``GET|POST /api/v1/users``, ``GET /api/v1/users/{id}``, ``PUT /api/v1/users/{id}/roles``,
  ``POST /api/v1/users/{id}/disable|enable`` — admins of the agency.
* ``POST /api/v1/tokens`` — a person (web session) creates a token for themselves, with some
  of their roles; the plaintext is in this answer only. ``GET /api/v1/tokens`` — one's own
  tokens (admins: every token of the agency). ``DELETE /api/v1/tokens/{id}`` — revoke one's
  own token (admins: any of the agency's), effective on the next request.
* ``GET /api/v1/keys`` — the agency's seal key and the keys bound to users (admins: all
  users; others: their own).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, Field

from kyso.api.accounts import AccountError, AccountNotFound
from kyso.api.auth import CurrentPrincipal, require
from kyso.api.principal import Principal
from kyso.api.problems import Problem
from kyso.api.services import Services
from kyso.i18n import t

router = APIRouter(prefix="/api/v1", tags=["admin"])

Admin = Annotated[Principal, require("admin")]
#: ids are PostgreSQL ``integer`` columns: outside 1..2**31-1 an id names nothing (422)
MAX_ID = 2**31 - 1
UserId = Annotated[int, Path(ge=1, le=MAX_ID, description="User id")]
TokenId = Annotated[int, Path(ge=1, le=MAX_ID, description="Token id")]


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


class UserIn(BaseModel):
    username: str = Field(min_length=2, max_length=64)
    full_name: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024)
    roles: list[str] = Field(min_length=1, max_length=5)
    pin: str | None = Field(None, max_length=128)


class RolesIn(BaseModel):
    roles: list[str] = Field(min_length=1, max_length=5)


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    roles: list[str] | None = Field(None, max_length=5)


@router.get("/agencies/me")
def my_agency(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    agency = _services(request).accounts.get_agency(principal.agency)
    return agency.to_dict()


# -- users ----------------------------------------------------------------------------------------


@router.get("/users")
def list_users(request: Request, principal: Admin) -> dict[str, Any]:
    users = _services(request).accounts.list_users(principal.agency)
    return {"items": [u.to_dict() for u in users]}


@router.post("/users", status_code=201)
def create_user(body: UserIn, request: Request, principal: Admin) -> dict[str, Any]:
    accounts = _services(request).accounts
    try:
        user_id = accounts.create_user(
            principal.agency,
            body.username,
            body.full_name,
            password=body.password,
            roles=body.roles,
            pin=body.pin or None,
            actor=principal.actor,
        )
        return accounts.get_user(user_id, agency=principal.agency).to_dict()
    except AccountError as e:
        raise e.problem() from None


@router.get("/users/{user_id}")
def get_user(user_id: UserId, request: Request, principal: Admin) -> dict[str, Any]:
    try:
        return _services(request).accounts.get_user(user_id, agency=principal.agency).to_dict()
    except AccountError as e:
        raise e.problem() from None


@router.put("/users/{user_id}/roles")
def set_roles(user_id: UserId, body: RolesIn, request: Request, principal: Admin) -> dict[str, Any]:
    accounts = _services(request).accounts
    try:
        if user_id == principal.user_id and "admin" not in body.roles:
            raise Problem(409, "conflict", t("accounts.user.self"))
        info = accounts.set_roles(
            user_id, body.roles, agency=principal.agency, actor=principal.actor
        )
        return info.to_dict()
    except AccountError as e:
        raise e.problem() from None


def _set_disabled(request: Request, principal: Principal, user_id: int, disabled: bool) -> Any:
    accounts = _services(request).accounts
    try:
        accounts.get_user(user_id, agency=principal.agency)  # 404 before anything else
        if disabled and user_id == principal.user_id:
            raise Problem(409, "conflict", t("accounts.user.self"))
        info = accounts.set_disabled(
            user_id, disabled, agency=principal.agency, actor=principal.actor
        )
        return info.to_dict()
    except AccountError as e:
        raise e.problem() from None


@router.post("/users/{user_id}/disable")
def disable_user(user_id: UserId, request: Request, principal: Admin) -> dict[str, Any]:
    result: dict[str, Any] = _set_disabled(request, principal, user_id, True)
    return result


@router.post("/users/{user_id}/enable")
def enable_user(user_id: UserId, request: Request, principal: Admin) -> dict[str, Any]:
    result: dict[str, Any] = _set_disabled(request, principal, user_id, False)
    return result


# -- tokens ---------------------------------------------------------------------------------------


@router.post("/tokens", status_code=201)
def create_token(body: TokenIn, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    """A token for the caller, with ``roles`` among the caller's (default: all of them)."""
    if principal.via != "session":
        raise Problem(403, "forbidden", t("accounts.token.people_only"))
    accounts = _services(request).accounts
    roles = body.roles if body.roles is not None else sorted(principal.roles)
    extra = sorted(set(roles) - principal.roles)
    if extra:
        raise Problem(422, "validation", t("accounts.token.roles", roles=", ".join(extra)))
    try:
        token_id, plaintext = accounts.create_token(
            principal.user_id, body.name, roles=roles, actor=principal.actor
        )
        info = accounts.get_token(token_id, agency=principal.agency).to_dict()
    except AccountError as e:
        raise e.problem() from None
    return {**info, "token": plaintext}


@router.get("/tokens")
def list_tokens(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    accounts = _services(request).accounts
    user_id = None if principal.has("admin") else principal.user_id
    tokens = accounts.list_tokens(principal.agency, user_id=user_id)
    return {"items": [tk.to_dict() for tk in tokens]}


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: TokenId, request: Request, principal: CurrentPrincipal) -> Response:
    accounts = _services(request).accounts
    try:
        info = accounts.get_token(token_id, agency=principal.agency)
        if info.user_id != principal.user_id and not principal.has("admin"):
            raise AccountNotFound("accounts.token.not_found", token=str(token_id))
        accounts.revoke_token(token_id, agency=principal.agency, actor=principal.actor)
    except AccountError as e:
        raise e.problem() from None
    return Response(status_code=204)


# -- keys -----------------------------------------------------------------------------------------


@router.get("/keys")
def list_keys(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    accounts = _services(request).accounts
    user_id = None if principal.has("admin") else principal.user_id
    return {
        "seal_key": accounts.agency_key(principal.agency),
        "bindings": accounts.key_bindings(principal.agency, user_id=user_id),
    }
