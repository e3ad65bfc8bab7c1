"""What every page of the web UI shares: the locale of the request, the templates, the
security headers, the static files, uploads and the signed-in user.

Pages are rendered on the server (Jinja2, autoescape on: document metadata and everything a
PDF brings are attacker-controlled) and work without JavaScript; a little plain JavaScript
(``static/kyso.js``, no CDN) adds the drop zone, the click-to-place signature and the progress
bars.  Every visible string goes through :func:`kyso.i18n.t` (``kyso/i18n/messages/web.toml``).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from kyso.api.principal import Principal
from kyso.api.services import Services
from kyso.errors import KysoError
from kyso.i18n import DEFAULT_LOCALE, LOCALES, catalogue, t

LANG_COOKIE = "kyso_lang"
LANG_COOKIE_MAX_AGE = 365 * 24 * 3600
CHUNK = 1 << 20

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

router = APIRouter(include_in_schema=False)


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# -- locale ---------------------------------------------------------------------------------


def _accept_language(header: str) -> str | None:
    """The first supported language of an ``Accept-Language`` header, by quality."""
    choices: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        pieces = part.strip().split(";")
        tag = pieces[0].strip().lower()
        quality = 1.0
        for param in pieces[1:]:
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        primary = tag.split("-")[0]
        if primary in LOCALES and quality > 0:
            choices.append((-quality, position, primary))
    return min(choices)[2] if choices else None


def request_locale(request: Request) -> str:
    """``?lang=``, else the ``kyso_lang`` cookie, else Accept-Language, else the setting."""
    for candidate in (request.query_params.get("lang"), request.cookies.get(LANG_COOKIE)):
        if candidate in LOCALES:
            return candidate
    chosen = _accept_language(request.headers.get("accept-language", ""))
    if chosen is not None:
        return chosen
    setting = services_of(request).settings.locale
    return setting if setting in LOCALES else DEFAULT_LOCALE


# -- the signed-in user ---------------------------------------------------------------------


@dataclass(frozen=True)
class Visitor:
    """Who is looking at the page: a signed-in person (with the session's CSRF token) or not."""

    principal: Principal | None
    csrf: str = ""

    @property
    def signed_in(self) -> bool:
        return self.principal is not None


def visitor(request: Request) -> Visitor:
    """The person behind the session cookie (the same cookie the API accepts), if any."""
    cached = getattr(request.state, "kyso_visitor", None)
    if isinstance(cached, Visitor):
        return cached
    from kyso.api.auth import session_id_of

    session_id = session_id_of(request)  # the signed cookie the API accepts too
    found = None
    if session_id:
        try:
            found = services_of(request).accounts.principal_for_session(session_id)
        except KysoError:
            found = None
    result = Visitor(*found) if found is not None else Visitor(None)
    request.state.kyso_visitor = result
    return result


def need(request: Request, *roles: str) -> Visitor | Response:
    """The signed-in visitor holding one of ``roles`` (any role when none given); else the
    answer to give instead: the login page (then back here), or a page saying the user's
    roles do not allow this (403)."""
    who = visitor(request)
    if who.principal is None:
        back = request.url.path
        if request.method == "GET" and request.url.query:
            back += "?" + request.url.query
        return redirect(with_query("/login", next=back))
    if roles and not who.principal.has(*roles):
        locale = request_locale(request)
        return message_page(
            request,
            403,
            t("web.forbidden.text", locale=locale),
            heading=t("web.forbidden.title", locale=locale),
        )
    return who


def check_csrf(request: Request, who: Visitor, submitted: Any) -> None:
    """A form posted with the session's CSRF token, else :class:`CSRFError`."""
    import hmac

    if not isinstance(submitted, str) or not who.csrf:
        raise CSRFError
    if not hmac.compare_digest(submitted.encode(), who.csrf.encode()):
        raise CSRFError


class CSRFError(Exception):
    """A form without the right CSRF token (an old page, or another site's form)."""


def safe_next(target: str | None, default: str = "/") -> str:
    """A local path to go back to after login (never another site)."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target:
        return default
    return target


# -- rendering ------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("kyso.api.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["static_version"] = _static_version()
    return env


def _static_version() -> str:
    """A short digest of the static files, appended to their URLs so browsers refetch them."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(static_files()):
        digest.update(name.encode())
        digest.update(static_files()[name])
    return digest.hexdigest()[:10]


@lru_cache(maxsize=1)
def static_files() -> dict[str, bytes]:
    folder = resources.files("kyso.api.web") / "static"
    files: dict[str, bytes] = {}
    for entry in folder.iterdir():
        if entry.is_file() and Path(entry.name).suffix in STATIC_TYPES:
            files[entry.name] = entry.read_bytes()
    return files


def with_query(path: str, **params: Any) -> str:
    """``path`` with ``params`` as its query string (None values left out)."""
    kept = {k: v for k, v in params.items() if v is not None and v != ""}
    return f"{path}?{urlencode(kept)}" if kept else path


def render(
    request: Request,
    template: str,
    *,
    status: int = 200,
    title: str | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page of the UI in the request's language, with the security headers."""
    locale = request_locale(request)
    who = visitor(request)
    translate: Callable[..., str] = partial(t, locale=locale)
    other = "en" if locale == "vi" else "vi"
    current = request.url.path
    query = {k: v for k, v in request.query_params.items() if k != "lang"}
    values = {
        "lang": locale,
        "other_lang": other,
        "switch_url": with_query(current, **query, lang=other),
        "t": translate,
        "who": who,
        "principal": who.principal,
        "csrf": who.csrf,
        "path": current,
        "title": title or translate("web.app.name"),
        "flash": _flash(request.query_params.get("done"), locale),
        **context,
    }
    html = environment().get_template(template).render(**values)
    response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
    remember_locale(request, response, locale)
    return response


def message_page(
    request: Request, status: int, text: str, *, heading: str | None = None
) -> HTMLResponse:
    """A page that only says what went wrong (heading "Error" unless another is given)."""
    heading = heading or t("web.error.title", locale=request_locale(request))
    return render(request, "message.html.j2", status=status, heading=heading, text=text, tone="bad")


def not_found_page(request: Request, text: str | None = None) -> HTMLResponse:
    """404 with ``text`` (by default: the page or document does not exist or is not the
    user's agency's, which is deliberately the same answer)."""
    locale = request_locale(request)
    text = text or t("web.notfound.text", locale=locale)
    return message_page(request, 404, text, heading=t("web.notfound.title", locale=locale))


def _flash(done: str | None, locale: str) -> str | None:
    """The confirmation shown after a form (``?done=<what>``), for known outcomes only."""
    if not done or not re.fullmatch(r"[a-z_]{1,40}", done):
        return None
    key = f"web.done.{done}"
    return t(key, locale=locale) if key in catalogue() else None


def remember_locale(request: Request, response: Response, locale: str) -> None:
    """Keep a language chosen with ``?lang=`` in the ``kyso_lang`` cookie."""
    if request.query_params.get("lang") in LOCALES and request.cookies.get(LANG_COOKIE) != locale:
        response.set_cookie(
            LANG_COOKIE,
            locale,
            max_age=LANG_COOKIE_MAX_AGE,
            httponly=True,
            samesite="lax",
            secure=services_of(request).cookie_secure,
            path="/",
        )


def redirect(url: str, *, done: str | None = None) -> RedirectResponse:
    """303 See Other after a form (the browser GETs the next page; reload posts nothing)."""
    return RedirectResponse(with_query(url, done=done) if done else url, status_code=303)


def error_message(exc: BaseException, locale: str) -> str:
    """What went wrong, in words, for a message box on the page."""
    from kyso.api.problems import Problem

    if isinstance(exc, KysoError):
        return exc.message(locale)
    if isinstance(exc, Problem):
        return exc.detail
    return t("web.error.unexpected", locale=locale)


# -- uploads --------------------------------------------------------------------------------


class UploadTooLarge(Exception):
    """The file is larger than KYSO_UPLOAD_MAX_BYTES."""


class NoFile(Exception):
    """The form was posted without a file."""


def content_length_ok(request: Request) -> bool:
    """False when the request announces more bytes than a PDF may have (plus the form)."""
    limit = services_of(request).settings.upload_max_bytes
    length = request.headers.get("content-length", "")
    return not (length.isdigit() and int(length) > limit + 64 * 1024)


async def save_upload(request: Request, upload: Any, folder: Path) -> Path:
    """Copy the uploaded file into ``folder`` (at most KYSO_UPLOAD_MAX_BYTES), as upload.pdf."""
    if not isinstance(upload, UploadFile) or not (upload.filename or upload.size):
        raise NoFile
    limit = services_of(request).settings.upload_max_bytes
    target = folder / "upload.pdf"
    size = 0
    with open(target, "wb") as out:
        while chunk := await upload.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise UploadTooLarge
            out.write(chunk)
    if size == 0:
        raise NoFile
    return target


def display_name(upload: Any) -> str:
    """The uploaded file's name as the user knows it (no folders), for the page only."""
    name = getattr(upload, "filename", None) or "document.pdf"
    name = re.split(r"[\\/]", name)[-1].strip() or "document.pdf"
    return name[:200]


def work_folder() -> tempfile.TemporaryDirectory[str]:
    """A private temporary folder for one request's files."""
    return tempfile.TemporaryDirectory(prefix="kyso-web-")


def human_size(size: int, locale: str) -> str:
    if size >= 1 << 20:
        text = f"{size / (1 << 20):.1f} MB"
    elif size >= 1024:
        text = f"{size / 1024:.0f} kB"
    else:
        text = f"{size} B"
    return text.replace(".", ",") if locale == "vi" else text


# -- static files and the language switch ----------------------------------------------------


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    data = static_files().get(name)
    if data is None:
        return Response(status_code=404)
    return Response(
        data,
        media_type=STATIC_TYPES[Path(name).suffix],
        headers={
            "Cache-Control": "public, max-age=86400",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/lang/{code}")
async def switch_language(code: str, request: Request, next: str | None = None) -> Response:
    """Choose the UI language (kept in a cookie) and go back to the page."""
    response = redirect(safe_next(next))
    if code in LOCALES:
        response.set_cookie(
            LANG_COOKIE,
            code,
            max_age=LANG_COOKIE_MAX_AGE,
            httponly=True,
            samesite="lax",
            secure=services_of(request).cookie_secure,
            path="/",
        )
    return response
