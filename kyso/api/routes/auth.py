"""Routes: logging in and out with a password (people), and who am I.

``POST /api/v1/auth/login`` takes JSON ``{username, password}`` (JSON only: a cross-site HTML
form cannot send it), sets the ``kyso_session`` cookie and answers
``{user, agency, roles, csrf_token}``; a wrong username or password is one 401 for all, and
too many failures in a row for a name lock it for a while (429).
``POST /api/v1/auth/logout`` ends the session server-side (the cookie stops working even if
replayed). ``GET /api/v1/auth/me`` describes the caller (session or API token).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from kyso.api.accounts import AccountError
from kyso.api.auth import (
    CurrentPrincipal,
    OptionalPrincipal,
    clear_session_cookie,
    session_id_of,
    set_session_cookie,
)
from kyso.api.principal import Principal
from kyso.api.services import Services

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def describe(services: Services, principal: Principal, csrf: str | None) -> dict[str, Any]:
    """What login and ``/me`` answer about ``principal``."""
    agency = services.accounts.get_agency(principal.agency)
    return {
        "user": {
            "id": principal.user_id,
            "username": principal.username,
            "full_name": principal.full_name,
        },
        "agency": {"code": agency.code, "name": agency.name},
        "roles": sorted(principal.roles),
        "via": principal.via,
        "token_id": principal.token_id,
        "csrf_token": csrf,
    }


@router.post("/login")
def login(body: LoginIn, request: Request, response: Response) -> dict[str, Any]:
    """Check the password, start a web session, set its cookie."""
    services = _services(request)
    accounts = services.accounts
    try:
        principal = accounts.authenticate(body.username, body.password)
    except AccountError as e:
        raise e.problem() from None
    old = session_id_of(request)
    if old is not None:
        accounts.end_session(old)
    session_id, csrf = accounts.create_session(principal, hours=services.settings.session_hours)
    set_session_cookie(response, services, session_id)
    response.headers["Cache-Control"] = "no-store"
    return describe(services, principal, csrf)


@router.post("/logout", status_code=204)
def logout(request: Request, principal: OptionalPrincipal) -> Response:
    """End the caller's web session (CSRF token required, as for every cookie POST)."""
    services = _services(request)
    session_id = session_id_of(request)
    if principal is not None and principal.via == "session" and session_id is not None:
        services.accounts.end_session(session_id)
    response = Response(status_code=204)
    clear_session_cookie(response, services)
    return response


@router.get("/me")
def me(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    csrf = getattr(request.state, "csrf_token", None) if principal.via == "session" else None
    return describe(_services(request), principal, csrf)
