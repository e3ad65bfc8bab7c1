"""``POST /api/v1/verify``: anyone may verify a PDF (verification needs no secret), without an
account; rate limited per client address (``KYSO_VERIFY_RATE_LIMIT`` a minute, 429 with
``Retry-After``).  The answer is the report of ``kyso verify --offline --json``
(``?format=html|pdf`` for the rendered report): revocation comes from what the file embeds
(PAdES B-LT and up), never from URLs an anonymous file names.  A damaged PDF gets a report
(TOTAL_FAILED / INDETERMINATE), not an error; only a file that is not a PDF at all is refused
(422 ``bad-pdf``).  Nothing is stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from kyso.api.problems import Problem
from kyso.api.ratelimit import RateLimiter, app_limiter, client_address, too_many
from kyso.api.routes.documents import ServicesDep, call, multipart_body, receive_upload
from kyso.api.services import Services
from kyso.i18n import current_locale, t

router = APIRouter(prefix="/api/v1", tags=["verification"])

FORMATS = ("json", "html", "pdf")


def _limiter(request: Request, services: Services) -> RateLimiter:
    return app_limiter(request, "verify-api", services.settings.verify_rate_limit)


def _verify(services: Services, path: Path, fmt: str, locale: str) -> bytes | dict[str, Any]:
    from kyso.api.cli_verify import Format, render
    from kyso.api.observability import record_verification
    from kyso.signer.verify import VerifyPolicy, verify

    # Offline: only what the PDF embeds (and kyso's trust anchors). Fetching the OCSP, CRL
    # and CA-issuer URLs that an anonymous caller's file names would let anyone make this
    # server send requests to hosts of their choosing.
    policy = VerifyPolicy.from_services(services, offline=True)
    report = verify(path, policy)
    record_verification(report.indication)
    if fmt == "json":
        return report.to_dict(locale)
    return render(report, Format(fmt), path, locale, visual_diff=False)


@router.post(
    "/verify",
    summary="Verify a signed PDF (public, no account)",
    openapi_extra=multipart_body({}),
    responses={
        200: {
            "description": "The verification report",
            "content": {"application/json": {}, "text/html": {}, "application/pdf": {}},
        },
        429: {"description": "Too many verifications from this address"},
    },
)
async def verify_public(
    request: Request,
    services: ServicesDep,
    format: str = Query("json", description="json (default), html or pdf"),
    lang: str | None = Query(None, description="vi or en (default: the server's)"),
) -> Response:
    fmt = format.lower()
    if fmt not in FORMATS:
        raise Problem(
            422, "validation", t("workflow.format", value=format, choices=", ".join(FORMATS))
        )
    locale = lang if lang in ("vi", "en") else current_locale()
    limit = services.settings.verify_rate_limit
    # in the thread pool: with Redis (shared limits) it is a network round trip
    wait = await run_in_threadpool(_limiter(request, services).hit, client_address(request))
    if wait:
        return too_many(
            wait, lambda seconds: t("workflow.verify.rate_limited", limit=limit, seconds=seconds)
        )
    upload = await receive_upload(request, services.settings.upload_max_bytes)
    try:
        result = await call(_verify, services, upload.named(), fmt, locale)
    finally:
        upload.cleanup()
    if isinstance(result, dict):
        return JSONResponse(result)
    media = "text/html; charset=utf-8" if fmt == "html" else "application/pdf"
    return Response(result, media_type=media)
