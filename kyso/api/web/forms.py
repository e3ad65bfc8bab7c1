"""The plumbing every page handler of the web UI shares, so that a handler reads as what is
its own: who may open the page, what the form sends, which library call it makes and where
the user goes next.

- :func:`signed_in` and :func:`posted` give the handler a :class:`Page` (the signed-in
  principal, the language, the services), and for a form its fields with the session's CSRF
  token checked.
- When the request cannot go on (not signed in: the login page; another role: 403; an old
  form: 403; the library refuses: its error page) these helpers raise :class:`Answer` with
  the page to show, and :class:`PageRoute` (the ``route_class`` of the web routers) answers
  with it.  This is the web UI's own ``HTTPException``: the answer is a page in the user's
  language, not JSON, and it never leaves the router.
- :class:`DoubleSubmit`: the CSRF protection of the forms posted before there is a session
  (login, first-run setup).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from kyso.api.principal import Principal
from kyso.api.problems import Problem
from kyso.api.services import Services
from kyso.api.web import ui
from kyso.errors import KysoError
from kyso.i18n import set_locale, t

T = TypeVar("T")


# -- answering early --------------------------------------------------------------------------


class Answer(Exception):
    """Stop the handler and answer with ``response`` (raised by the helpers of this module,
    answered by :class:`PageRoute`)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class PageRoute(APIRoute):
    """A route of the web UI: an :class:`Answer` raised by its handler is the response."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer_early(request: Request) -> Response:
            try:
                return await handler(request)
            except Answer as answer:
                return answer.response

        return answer_early


def page_router() -> APIRouter:
    """A router of web pages (not in the OpenAPI schema; :class:`Answer` understood)."""
    return APIRouter(include_in_schema=False, route_class=PageRoute)


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in the thread pool: the library blocks (database, signing,
    PDFium) and must not stall the event loop."""
    return await run_in_threadpool(fn, *args, **kwargs)


def failure(request: Request, exc: BaseException) -> Response:
    """A workflow error as a page: not found (404, also another agency's document), not
    allowed (403), out of order (409) or the library's own message (422)."""
    if isinstance(exc, Problem):
        if exc.status == 404:
            return ui.not_found_page(request)
        return ui.message_page(request, exc.status, exc.detail)
    return ui.message_page(request, 422, ui.error_message(exc, ui.request_locale(request)))


# -- the signed-in page -------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """A request of a signed-in user whose roles allow the page: what its handler works with."""

    request: Request
    who: ui.Visitor
    principal: Principal
    locale: str
    services: Services

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """:func:`call`, with the library's refusal (:class:`KysoError`, :class:`Problem`)
        answered by its error page (:func:`failure`)."""
        try:
            return await call(fn, *args, **kwargs)
        except (KysoError, Problem) as exc:
            raise Answer(failure(self.request, exc)) from exc


async def signed_in(request: Request, *roles: str) -> Page:
    """The page of a signed-in user holding one of ``roles`` (any role when none given);
    else :class:`Answer` with the login redirect (then back here) or the 403 page."""
    locale = ui.request_locale(request)
    # messages of the library (workflow problems, KysoError) in the user's language: the
    # context variable is copied into the worker threads that run the library
    set_locale(locale)
    await run_in_threadpool(ui.visitor, request)  # looks up the session; cached on the request
    who = ui.need(request, *roles)
    if isinstance(who, Response):
        raise Answer(who)
    assert who.principal is not None
    return Page(request, who, who.principal, locale, ui.services_of(request))


# -- posted forms -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FormLimits:
    """How much a form may carry: files (an upload) and fields."""

    files: int
    fields: int


PLAIN = FormLimits(files=0, fields=40)
"""A form without a file (the administration's)."""
WITH_FILE = FormLimits(files=1, fields=50)
"""The forms of the document pages (the upload carries one PDF) and of the exchange."""


async def read_form(request: Request, who: ui.Visitor, limits: FormLimits = PLAIN) -> FormData:
    """The posted form, its CSRF token checked; else :class:`Answer` with the page saying
    what to do (413 too large, 400 unreadable, 403 without the session's token)."""
    locale = ui.request_locale(request)
    if limits.files and not ui.content_length_ok(request):
        limit = ui.services_of(request).settings.upload_max_bytes // (1 << 20)
        text = t("web.upload.too_large", locale=locale, limit=limit)
        raise Answer(ui.message_page(request, 413, text))
    try:
        form = await request.form(max_files=limits.files, max_fields=limits.fields)
    except StarletteHTTPException as exc:
        # a form that may carry a file fails for reasons worth telling (too many files or
        # fields, a broken multipart body); a plain form only when forged or cut off
        text = (
            t("web.upload.bad_form", locale=locale, reason=str(exc.detail))
            if limits.files
            else t("web.error.csrf", locale=locale)
        )
        raise Answer(ui.message_page(request, 400, text)) from exc
    try:
        ui.check_csrf(request, who, form.get("csrf_token"))
    except ui.CSRFError:
        raise Answer(ui.message_page(request, 403, t("web.error.csrf", locale=locale))) from None
    return form


async def posted(
    request: Request, *roles: str, limits: FormLimits = PLAIN
) -> tuple[Page, FormData]:
    """:func:`signed_in`, then :func:`read_form`: the page and its posted fields."""
    page = await signed_in(request, *roles)
    return page, await read_form(request, page.who, limits)


def field(form: FormData, name: str, limit: int = 500) -> str:
    """A text field, trimmed and cut to ``limit`` characters ("" when missing)."""
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def secret(form: FormData, name: str, limit: int | None = None) -> str:
    """A password or PIN exactly as typed (never trimmed), cut to ``limit`` if given."""
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


# -- forms posted before there is a session -------------------------------------------------------


@dataclass(frozen=True)
class DoubleSubmit:
    """The CSRF protection of a form posted without a session (login, first-run setup): a
    random token in a cookie that only the form's own ``path`` receives (SameSite=Strict), put
    into the form too; the post must bring both, equal.  Another site can make a browser
    post the form but cannot read the cookie to fill in the field."""

    cookie: str
    path: str

    def token(self, request: Request) -> str:
        """The token of the browser's cookie, else a new one (for the form and the cookie)."""
        token = request.cookies.get(self.cookie) or ""
        return token if len(token) >= 32 else secrets.token_urlsafe(32)

    def set_cookie(self, request: Request, response: Response, token: str) -> None:
        response.set_cookie(
            self.cookie,
            token,
            httponly=True,
            samesite="strict",
            secure=ui.services_of(request).cookie_secure,
            path=self.path,
        )

    def matches(self, request: Request, submitted: Any) -> bool:
        """Whether the form's token is the cookie's."""
        expected = request.cookies.get(self.cookie) or ""
        return (
            isinstance(submitted, str)
            and len(expected) >= 32
            and hmac.compare_digest(submitted.encode(), expected.encode())
        )

    def forget(self, response: Response) -> None:
        """Drop the cookie once the form has done its work."""
        response.delete_cookie(self.cookie, path=self.path)
