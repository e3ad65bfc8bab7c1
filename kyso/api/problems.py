"""RFC 9457 problem+json responses: every error the API returns goes through here."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kyso.archive.catalog import VersionOrderError
from kyso.certs.errors import CertsError, KeyStoreError, PKIError, TSAError
from kyso.errors import KysoError
from kyso.i18n import current_locale, t

log = logging.getLogger("kyso.api")

PROBLEM_BASE = "https://kyso.example/problems/"
MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """An error the web layer raises on purpose, with a stable ``type`` slug."""

    def __init__(self, status: int, slug: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.extra = extra


def problem_response(
    status: int, slug: str, title: str, detail: str | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": PROBLEM_BASE + slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE)


# The endpoints of this issue take no key, certificate or PKI name from the client: a key
# store or PKI failure while serving them is the server's fault (503), not the caller's.
_STATUS_OF: list[tuple[type[KysoError], int, str]] = [
    (KeyStoreError, 503, "key-store"),
    (PKIError, 503, "pki"),
    (TSAError, 503, "tsa"),
    (CertsError, 400, "certs"),
    (VersionOrderError, 409, "conflict"),
]


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem+json."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status, exc.slug, t(f"problem.{exc.slug}"), exc.detail, **exc.extra
        )

    @app.exception_handler(KysoError)
    async def _kyso(request: Request, exc: KysoError) -> JSONResponse:
        status, slug = next(
            ((status, slug) for cls, status, slug in _STATUS_OF if isinstance(exc, cls)),
            (400, "error"),
        )
        return problem_response(status, slug, t(f"problem.{slug}"), exc.message(current_locale()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = {404: "not-found", 405: "method-not-allowed", 413: "too-large"}.get(
            exc.status_code, "http"
        )
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem_response(exc.status_code, slug, t(f"problem.{slug}"), detail)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return problem_response(422, "validation", t("problem.validation"), errors=errors)

    @app.exception_handler(sa.exc.DataError)
    async def _data(request: Request, exc: sa.exc.DataError) -> JSONResponse:
        # a value the database cannot hold (a NUL character, an integer out of range) that
        # no validation caught before: bad input, not a fault of the server
        log.info("value refused by the database on %s %s", request.method, request.url.path)
        detail = t("workflow.bad_value")
        return problem_response(422, "validation", t("problem.validation"), detail)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "internal", t("problem.internal"))
