"""The public verification page: drop a PDF, read the report.

No account is needed (verification needs no secret).  The PDF is checked with
:func:`kyso.signer.verify.verify` under kyso's trust (the presets and the operator's anchors),
exactly as ``kyso verify`` does, and the report is shown with the pieces of the HTML report
(:mod:`kyso.signer.verify.html_report`): the verdict in words, every signature, the pages with
each signature's box outlined (drawn by PDFium in a sandboxed child process) and the visual
diff of what changed after signing.  Rate limited per client address
(KYSO_VERIFY_RATE_LIMIT a minute), like ``POST /api/v1/verify``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from kyso.api.ratelimit import RateLimiter, app_limiter, client_address
from kyso.api.services import Services
from kyso.api.web import ui
from kyso.i18n import set_locale, t
from kyso.signer.verify import VerifyInputError, VerifyPolicy, verify
from kyso.signer.verify.html_report import build_view, diff_views, preview_pages
from kyso.signer.verify.model import VerificationReport
from kyso.signer.verify.render import data_uri

router = APIRouter(include_in_schema=False)


def limiter(request: Request) -> RateLimiter:
    """The app's limiter of public verifications on this page (one per app, in its state)."""
    return app_limiter(request, "verify-page", ui.services_of(request).settings.verify_rate_limit)


def report_context(
    report: VerificationReport, source: Path, locale: str, *, name: str
) -> dict[str, Any]:
    """Everything the report part of a page shows (run in a worker thread: it draws pages)."""
    view = build_view(report, locale)
    view.file_rows[0].value = name  # the name the user knows, not the temporary file's
    previews, notes = preview_pages(report, source, locale)
    diffs = diff_views(report, source, locale)
    return {
        "view": view,
        "previews": [
            {
                "page": p.page,
                "caption": p.caption,
                "alt": p.alt,
                "note": p.note,
                "uri": data_uri(p.png) if p.png else None,
            }
            for p in previews
        ],
        "preview_notes": notes,
        "diffs": [
            {
                "title": d.title,
                "summary": d.summary,
                "notes": d.notes,
                "unchanged": d.unchanged,
                "no_visible_change": d.no_visible_change,
                "pages": [
                    {
                        "text": p.text,
                        "tone": p.tone,
                        "uri": data_uri(p.png) if p.png else None,
                        "detail_uri": data_uri(p.detail_png) if p.detail_png else None,
                    }
                    for p in d.pages
                ],
            }
            for d in diffs
        ],
    }


def verify_file(services: Services, source: Path, locale: str, name: str) -> dict[str, Any]:
    """Verify ``source`` under kyso's trust and build the report's view."""
    policy = VerifyPolicy.from_services(services)
    report = verify(source, policy)
    context = report_context(report, source, locale, name=name)
    context["indication"] = report.indication
    return context


@router.get("/verify")
async def verify_form(request: Request) -> Response:
    await run_in_threadpool(ui.visitor, request)  # the menu shows who is signed in
    return ui.render(
        request, "verify.html.j2", title=t("web.verify.title", locale=ui.request_locale(request))
    )


@router.post("/verify")
async def verify_upload(request: Request) -> Response:
    locale = ui.request_locale(request)
    services = ui.services_of(request)
    title = t("web.verify.title", locale=locale)
    set_locale(locale)
    await run_in_threadpool(ui.visitor, request)

    def failed(status: int, message: str) -> Response:
        return ui.render(request, "verify.html.j2", status=status, title=title, error=message)

    # in the thread pool: with Redis (shared limits) it is a network round trip
    if not await run_in_threadpool(limiter(request).allow, client_address(request)):
        return failed(429, t("web.verify.rate_limited", locale=locale))
    limit_mb = services.settings.upload_max_bytes // (1 << 20)
    if not ui.content_length_ok(request):
        return failed(413, t("web.upload.too_large", locale=locale, limit=limit_mb))
    with ui.work_folder() as tmp:
        try:
            form = await request.form(max_files=1, max_fields=10)
            upload = form.get("file")
            source = await ui.save_upload(request, upload, Path(tmp))
        except ui.UploadTooLarge:
            return failed(413, t("web.upload.too_large", locale=locale, limit=limit_mb))
        except ui.NoFile:
            return failed(422, t("web.upload.no_file", locale=locale))
        name = ui.display_name(upload)
        try:
            context = await run_in_threadpool(verify_file, services, source, locale, name)
        except VerifyInputError as exc:
            return failed(422, t("web.verify.not_pdf", locale=locale, reason=exc.message(locale)))
    return ui.render(request, "verify.html.j2", title=title, report=context, file_name=name)
