"""The pages of a document's life: upload, the official's signature placed by a click, the
clerk's queue (number and date, then the agency seal), the archive search, downloads, the
verification of an archived version and the progress of background jobs.

Every page calls :mod:`kyso.api.workflow` (the same functions as the HTTP API and the job
handlers) with the signed-in :class:`~kyso.api.principal.Principal`: roles, the agency scope
(another agency's document is "not found"), the audit log and the order of the steps are
enforced there, not here.  Blocking work (signing, the archive, PDFium) runs in the thread
pool.  Errors are shown on the page in the user's language, never as a 500.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import Request
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask
from starlette.datastructures import FormData

from kyso.api import workflow
from kyso.api.principal import Principal
from kyso.api.problems import Problem
from kyso.api.services import Services
from kyso.api.web import forms, placement, ui
from kyso.api.web.admin import key_labels
from kyso.api.web.verify_page import verify_file
from kyso.archive.models import Document, DocumentVersion
from kyso.errors import KysoError
from kyso.i18n import catalogue, current_locale, t
from kyso.signer.register import today_vn
from kyso.signer.verify.render import data_uri

router = forms.page_router()

QUEUE_KINDS = ("person_signed", "registered")
DOCUMENT_TYPES = (
    "Quyết định",
    "Công văn",
    "Tờ trình",
    "Thông báo",
    "Kế hoạch",
    "Báo cáo",
    "Giấy mời",
    "Biên bản",
)
PER_PAGE = 20
RECENT = 10
QUEUE_MAX = 200
"""The queue shows the oldest 200 documents waiting (the rest come as those are done)."""


# -- helpers ----------------------------------------------------------------------------------


async def _posted(request: Request, *roles: str) -> tuple[forms.Page, FormData]:
    """The page of a user with one of ``roles`` and the form posted, its CSRF token checked."""
    return await forms.posted(request, *roles, limits=forms.WITH_FILE)


def _int(value: Any) -> int | None:
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,9}", value.strip()):
        return int(value.strip())
    return None


def _kind_label(kind: str | None, locale: str) -> str:
    key = f"web.status.{kind or 'none'}"
    return t(key, locale=locale) if key in catalogue() else (kind or "—")


def _date_text(value: dt.date | dt.datetime | None, locale: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        local = value.astimezone(dt.timezone(dt.timedelta(hours=7)))
        return local.strftime("%d/%m/%Y %H:%M" if locale == "vi" else "%Y-%m-%d %H:%M")
    return value.strftime("%d/%m/%Y" if locale == "vi" else "%Y-%m-%d")


def latest_versions(
    services: Services,
    agency: str,
    kinds: tuple[str, ...] | None = None,
    ids: list[int] | None = None,
    *,
    newest_first: bool = False,
    limit: int | None = None,
) -> list[tuple[Document, DocumentVersion]]:
    """The agency's documents with their latest version, optionally only those whose latest
    version is of ``kinds`` or whose id is in ``ids`` (oldest change first)."""
    newest = (
        sa.select(
            DocumentVersion.document_id.label("document_id"),
            sa.func.max(DocumentVersion.seq).label("seq"),
        )
        .group_by(DocumentVersion.document_id)
        .subquery()
    )
    query = (
        sa.select(Document, DocumentVersion)
        .join(newest, newest.c.document_id == Document.id)
        .join(
            DocumentVersion,
            sa.and_(
                DocumentVersion.document_id == newest.c.document_id,
                DocumentVersion.seq == newest.c.seq,
            ),
        )
        .where(Document.agency_id == agency)
    )
    if newest_first:
        query = query.order_by(DocumentVersion.created_at.desc(), Document.id.desc())
    else:
        query = query.order_by(DocumentVersion.created_at, Document.id)
    if limit is not None:
        query = query.limit(limit)
    if kinds is not None:
        query = query.where(DocumentVersion.kind.in_(kinds))
    if ids is not None:
        query = query.where(Document.id.in_(ids))
    with services.catalog.session() as s:
        return [(row[0], row[1]) for row in s.execute(query).all()]


def _row(doc: Document, version: DocumentVersion | None, locale: str) -> dict[str, Any]:
    return {
        "id": doc.id,
        "subject": doc.subject,
        "type": doc.type_name,
        "number": doc.number_symbol or "—",
        "issued": _date_text(doc.issued_date, locale),
        "signer": doc.signer_full_name or "—",
        "kind": version.kind if version is not None else None,
        "status": _kind_label(version.kind if version is not None else None, locale),
        "changed": _date_text(version.created_at if version is not None else None, locale),
    }


# -- home -------------------------------------------------------------------------------------


@router.get("/")
async def home(request: Request) -> Response:
    page = await forms.signed_in(request)
    agency = page.principal.agency
    rows = await forms.call(latest_versions, page.services, agency, newest_first=True, limit=RECENT)
    recent = [_row(d, v, page.locale) for d, v in rows]
    waiting = len(
        await forms.call(latest_versions, page.services, agency, QUEUE_KINDS, limit=QUEUE_MAX)
    )
    return ui.render(
        request,
        "home.html.j2",
        title=t("web.home.title", locale=page.locale),
        recent=recent,
        waiting=waiting,
    )


# -- upload -----------------------------------------------------------------------------------


def _upload_defaults(principal: Principal) -> dict[str, str]:
    return {
        "type": DOCUMENT_TYPES[0],
        "subject": "",
        "symbol": "",
        "agency_name": "",
        "place": "",
        "signer": principal.full_name if principal.has("official") else "",
        "position": "",
    }


@router.get("/documents/new")
async def upload_form(request: Request) -> Response:
    page = await forms.signed_in(request, *workflow.UPLOADERS)
    values = _upload_defaults(page.principal)
    try:
        agency = await forms.call(page.services.accounts.get_agency, page.principal.agency)
        values["agency_name"] = agency.name
    except KysoError:
        pass  # the field stays empty: the user types it
    return ui.render(
        request,
        "upload.html.j2",
        title=t("web.upload.title", locale=page.locale),
        values=values,
        types=DOCUMENT_TYPES,
    )


@router.post("/documents/new")
async def upload_post(request: Request) -> Response:
    page, form = await _posted(request, *workflow.UPLOADERS)
    principal, locale, services = page.principal, page.locale, page.services
    values = {name: forms.field(form, name) for name in _upload_defaults(principal)}

    def again(status: int, message: str) -> Response:
        return ui.render(
            request,
            "upload.html.j2",
            status=status,
            title=t("web.upload.title", locale=locale),
            values=values,
            types=DOCUMENT_TYPES,
            error=message,
        )

    with ui.work_folder() as tmp:
        try:
            source = await ui.save_upload(request, form.get("file"), Path(tmp))
        except ui.UploadTooLarge:
            limit = services.settings.upload_max_bytes // (1 << 20)
            return again(413, t("web.upload.too_large", locale=locale, limit=limit))
        except ui.NoFile:
            return again(422, t("web.upload.no_file", locale=locale))
        metadata = {k: v for k, v in values.items() if v}
        metadata.setdefault("agency_name", principal.agency)
        try:
            result = await forms.call(workflow.upload, services, principal, source, metadata)
        except (KysoError, Problem) as exc:
            status = exc.status if isinstance(exc, Problem) else 422
            return again(status, ui.error_message(exc, locale))
    following = (
        f"/documents/{result.document_id}/sign"
        if principal.has(*workflow.SIGNERS)
        else f"/documents/{result.document_id}"
    )
    return ui.redirect(following, done="uploaded")


# -- one document -----------------------------------------------------------------------------


def _document_page(
    services: Services, principal: Principal, document_id: int, locale: str
) -> dict[str, Any]:
    doc = workflow.get_document(services, principal, document_id)
    versions = sorted(doc.versions, key=lambda v: v.seq)
    latest = versions[-1] if versions else None
    plan = workflow.register_plan(services, document_id)
    facts = [
        (t("web.doc.type", locale=locale), doc.type_name),
        (t("web.doc.subject", locale=locale), doc.subject),
        (t("web.doc.number", locale=locale), doc.number_symbol or "—"),
        (t("web.doc.issued", locale=locale), _date_text(doc.issued_date, locale)),
        (t("web.doc.agency", locale=locale), f"{doc.organ_name} ({doc.organ_id})"),
        (t("web.doc.signer", locale=locale), doc.signer_full_name or "—"),
        (t("web.doc.position", locale=locale), doc.signer_position or "—"),
    ]
    if plan and plan.get("symbol") and not doc.code_number:
        facts.append((t("web.doc.planned_symbol", locale=locale), str(plan["symbol"])))
    history = []
    for version in versions:
        report = version.reports[-1] if version.reports else None
        history.append(
            {
                "seq": version.seq,
                "kind": _kind_label(version.kind, locale),
                "when": _date_text(version.created_at, locale),
                "by": version.created_by,
                "size": ui.human_size(version.size, locale),
                "sha256": version.sha256,
                "indication": (
                    t(f"verify.indication.{report.indication}", locale=locale)
                    if report is not None
                    else "—"
                ),
                "tone": (
                    {"TOTAL_PASSED": "good", "TOTAL_FAILED": "bad"}.get(report.indication, "warn")
                    if report is not None
                    else ""
                ),
            }
        )
    return {
        "doc": {"id": doc.id, "subject": doc.subject},
        "kind": latest.kind if latest else None,
        "status_text": _kind_label(latest.kind if latest else None, locale),
        "facts": facts,
        "history": history,
        "plan": plan,
    }


@router.get("/documents/{document_id}")
async def document_page(document_id: int, request: Request) -> Response:
    page = await forms.signed_in(request)
    principal, services = page.principal, page.services
    facts = await page.run(_document_page, services, principal, document_id, page.locale)
    send_targets = None
    if facts["kind"] in ("sealed", "ltv_extended") and principal.has("clerk"):
        from kyso.api.web.exchange import send_targets as targets_of  # imports this module

        send_targets = await forms.call(targets_of, services, principal)
    return ui.render(
        request,
        "document.html.j2",
        title=facts["doc"]["subject"],
        today=today_vn().isoformat(),
        send_targets=send_targets,
        **facts,
    )


def _download(
    services: Services, principal: Principal, document_id: int, version: int | None
) -> tuple[Path, str]:
    folder = Path(tempfile.mkdtemp(prefix="kyso-web-dl-"))
    try:
        target = folder / "document.pdf"
        chosen = workflow.download(services, principal, document_id, target, version=version)
        with services.catalog.session() as s:
            doc = s.get(Document, document_id)
            number = doc.number_symbol if doc is not None else None
        stem = (number or f"van-ban-{document_id}").replace("/", "-")
        return target, f"{stem}-v{chosen.seq}-{chosen.kind}.pdf"
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


@router.get("/documents/{document_id}/download")
async def download(document_id: int, request: Request, version: int | None = None) -> Response:
    page = await forms.signed_in(request)
    path, name = await page.run(_download, page.services, page.principal, document_id, version)
    return FileResponse(
        path,
        media_type="application/pdf",
        filename=name,
        background=BackgroundTask(shutil.rmtree, path.parent, ignore_errors=True),
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
    )


def _verify_archived(
    services: Services, principal: Principal, document_id: int, locale: str
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kyso-web-") as tmp:
        source = Path(tmp) / "document.pdf"
        chosen = workflow.download(services, principal, document_id, source)
        name = f"#{document_id} v{chosen.seq}"
        return {"report": verify_file(services, source, locale, name), "name": name}


@router.post("/documents/{document_id}/verify")
async def verify_archived(document_id: int, request: Request) -> Response:
    page, _ = await _posted(request)
    result = await page.run(
        _verify_archived, page.services, page.principal, document_id, page.locale
    )
    return ui.render(
        request,
        "report.html.j2",
        title=t("web.verify.report_for", locale=page.locale, name=result["name"]),
        report=result["report"],
        file_name=result["name"],
        document_id=document_id,
    )


# -- the official's signature, placed by a click ------------------------------------------------


def _sign_page(
    services: Services, principal: Principal, document_id: int, page: int | None
) -> dict[str, Any]:
    doc = workflow.get_document(services, principal, document_id)
    with tempfile.TemporaryDirectory(prefix="kyso-web-") as tmp:
        source = Path(tmp) / "document.pdf"
        workflow.download(services, principal, document_id, source)
        rendered = placement.render_page(source, page)
    keys = services.accounts.keys_of(principal.user_id)
    latest = max(doc.versions, key=lambda v: v.seq) if doc.versions else None
    return {
        "doc": {"id": doc.id, "subject": doc.subject, "signer": doc.signer_full_name or ""},
        "kind": latest.kind if latest else None,
        "rendered": rendered,
        "keys": keys,
        "key_names": key_labels(services, keys, current_locale()),
    }


@router.get("/documents/{document_id}/sign")
async def sign_form(document_id: int, request: Request, page: int | None = None) -> Response:
    signer = await forms.signed_in(request, *workflow.SIGNERS)
    index = page - 1 if page is not None and page >= 1 else None
    context = await signer.run(_sign_page, signer.services, signer.principal, document_id, index)
    return _render_sign(request, context, signer.locale)


def _render_sign(
    request: Request,
    context: dict[str, Any],
    locale: str,
    *,
    status: int = 200,
    error: str | None = None,
    chosen: tuple[int, int] | None = None,
    key: str | None = None,
) -> Response:
    rendered: placement.RenderedPage = context["rendered"]
    box_w, box_h = rendered.box_pixels
    extra: dict[str, Any] = {} if error is None else {"error": error}
    return ui.render(
        request,
        "sign.html.j2",
        status=status,
        title=t("web.sign.title", locale=locale),
        doc=context["doc"],
        kind=context["kind"],
        keys=context["keys"],
        key_names=context["key_names"],
        chosen_key=key or (context["keys"][0] if context["keys"] else ""),
        page={
            "number": rendered.index + 1,
            "count": rendered.page_count,
            "uri": data_uri(rendered.png) if rendered.png else None,
            "width": rendered.width,
            "height": rendered.height,
            "box_w": round(box_w, 1),
            "box_h": round(box_h, 1),
            "error": rendered.error,
        },
        chosen=chosen,
        **extra,
    )


def _sign(
    services: Services,
    principal: Principal,
    document_id: int,
    *,
    key: str,
    pin: str,
    page: int | None,
    click: tuple[int, int] | None,
) -> Any:
    where = None
    if click is not None and page is not None:
        workflow.get_document(services, principal, document_id)  # the agency's, or 404
        with tempfile.TemporaryDirectory(prefix="kyso-web-") as tmp:
            source = Path(tmp) / "document.pdf"
            workflow.download(services, principal, document_id, source)
            rendered = placement.render_page(source, page)
        if rendered.matrix is None or rendered.index != page:
            raise Problem(422, "validation", t("web.sign.page_unreadable", page=page + 1))
        box = rendered.box_at(*click)
        where = {"box": list(box), "page": rendered.index}
    return workflow.sign_as_person(
        services, principal, document_id, key=key, pin=pin, placement=where
    )


@router.post("/documents/{document_id}/sign")
async def sign_post(document_id: int, request: Request) -> Response:
    page, form = await _posted(request, *workflow.SIGNERS)
    principal, locale, services = page.principal, page.locale, page.services
    key = forms.field(form, "key", 200)
    pin = forms.secret(form, "pin")
    page_number = _int(form.get("page"))
    index = page_number - 1 if page_number is not None and page_number >= 1 else None
    x, y = _int(form.get("x")), _int(form.get("y"))
    click = (x, y) if x is not None and y is not None and x >= 0 and y >= 0 else None
    try:
        await forms.call(
            _sign,
            services,
            principal,
            document_id,
            key=key,
            pin=pin,
            page=index,
            click=click,
        )
    except (KysoError, Problem) as exc:
        if isinstance(exc, Problem) and exc.status == 404:
            return forms.failure(request, exc)
        context = await page.run(_sign_page, services, principal, document_id, index)
        status = exc.status if isinstance(exc, Problem) else 422
        return _render_sign(
            request,
            context,
            locale,
            status=status,
            error=ui.error_message(exc, locale),
            chosen=click,
            key=key,
        )
    return ui.redirect(f"/documents/{document_id}", done="signed")


# -- the clerk: number, date, seal --------------------------------------------------------------


@router.get("/queue")
async def queue(request: Request) -> Response:
    page = await forms.signed_in(request, *workflow.CLERKS)
    locale, services = page.locale, page.services
    rows = await forms.call(
        latest_versions, services, page.principal.agency, QUEUE_KINDS, limit=QUEUE_MAX
    )
    items = [_row(d, v, locale) for d, v in rows]
    plans = {}
    for item in items:
        plans[item["id"]] = await forms.call(workflow.register_plan, services, item["id"])
    for item in items:
        plan = plans[item["id"]] or {}
        item["symbol"] = plan.get("symbol") or ""
    return ui.render(
        request,
        "queue.html.j2",
        title=t("web.queue.title", locale=locale),
        to_number=[i for i in items if i["kind"] == "person_signed"],
        to_seal=[i for i in items if i["kind"] == "registered"],
        today=today_vn().isoformat(),
    )


@router.post("/documents/{document_id}/register")
async def register_post(document_id: int, request: Request) -> Response:
    page, form = await _posted(request, *workflow.CLERKS)
    await page.run(
        workflow.register,
        page.services,
        page.principal,
        document_id,
        number=forms.field(form, "number", 20) or None,
        date=forms.field(form, "date", 20) or None,
        symbol=forms.field(form, "symbol", 30) or None,
    )
    return ui.redirect(_back(form, document_id), done="registered")


@router.post("/documents/{document_id}/seal")
async def seal_post(document_id: int, request: Request) -> Response:
    page, form = await _posted(request, *workflow.CLERKS)
    await page.run(workflow.seal, page.services, page.principal, document_id)
    return ui.redirect(_back(form, document_id), done="sealed")


def _back(form: FormData, document_id: int) -> str:
    """Where the clerk goes after a step: back to the queue when it was done there."""
    return "/queue" if forms.field(form, "back") == "queue" else f"/documents/{document_id}"


# -- the archive: search, batch verification ----------------------------------------------------


def _parse_date(value: str | None) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        return None


def _search(
    services: Services, principal: Principal, criteria: dict[str, Any], page: int, locale: str
) -> dict[str, Any]:
    found = services.catalog.search(
        criteria["q"] or None,
        number=criteria["number"] or None,
        symbol=criteria["symbol"] or None,
        signer=criteria["signer"] or None,
        date_from=_parse_date(criteria["date_from"]),
        date_to=_parse_date(criteria["date_to"]),
        tenant=principal.agency,
        page=page,
        per_page=PER_PAGE,
    )
    ids = [d.id for d in found.items]
    latest = {d.id: v for d, v in latest_versions(services, principal.agency, ids=ids)}
    return {
        "rows": [_row(d, latest.get(d.id), locale) for d in found.items],
        # counting stops at a cap: then "more than N", and a link to the page after
        "total": found.total
        if found.total_exact
        else t("archive.search.more_than", locale=locale, count=found.total),
        "page": found.page,
        "pages": found.pages if found.total_exact else max(found.pages, found.page) + 1,
    }


SEARCH_FIELDS = ("q", "number", "symbol", "signer", "date_from", "date_to")


@router.get("/search")
async def search(request: Request, page: int = 1) -> Response:
    reader = await forms.signed_in(request)
    locale, services = reader.locale, reader.services
    criteria = {k: (request.query_params.get(k) or "").strip()[:200] for k in SEARCH_FIELDS}
    asked = any(criteria.values()) or "q" in request.query_params
    results = None
    error = None
    if asked:
        try:
            results = await forms.call(
                _search, services, reader.principal, criteria, max(1, page), locale
            )
        except KysoError as exc:
            error = exc.message(locale)
    pages = []
    if results is not None and results["pages"] > 1:
        for n in range(1, results["pages"] + 1):
            pages.append({"n": n, "url": ui.with_query("/search", **criteria, page=n)})
    extra: dict[str, Any] = {"error": error} if error else {}
    return ui.render(
        request,
        "search.html.j2",
        title=t("web.search.title", locale=locale),
        criteria=criteria,
        results=results,
        pages=pages,
        **extra,
    )


@router.post("/jobs/verify")
async def verify_batch(request: Request) -> Response:
    """Verify the chosen documents in the background (a ``verify`` job); show its progress."""
    page, form = await _posted(request)
    ids = sorted({i for i in (_int(v) for v in form.getlist("document")) if i and i > 0})
    if not ids:
        return ui.message_page(request, 422, t("web.jobs.none_chosen", locale=page.locale))
    items = [{"document_id": i} for i in ids[:500]]
    job_id = await page.run(page.services.jobs.submit, "verify", items, principal=page.principal)
    return ui.redirect(f"/jobs/{job_id}")


@router.get("/jobs/{job_id}")
async def job_page(job_id: str, request: Request) -> Response:
    page = await forms.signed_in(request)
    locale = page.locale
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", job_id):
        return ui.not_found_page(request)
    status = await page.run(page.services.jobs.status, job_id, agency=page.principal.agency)
    items = []
    for item in status.items:
        document = item.params.get("document_id")
        items.append(
            {
                "seq": item.seq,
                "document": document,
                "state": _job_state(item.state, locale),
                "error": item.error,
                "result": _job_result(item.result, locale),
            }
        )
    return ui.render(
        request,
        "job.html.j2",
        title=t("web.jobs.title", locale=locale),
        job={
            "id": status.id,
            "kind": t(f"web.jobs.kind.{status.kind}", locale=locale)
            if f"web.jobs.kind.{status.kind}" in catalogue()
            else status.kind,
            "state": _job_state(status.state, locale),
            "raw_state": status.state,
            "done": status.done,
            "total": status.total,
            "failed": status.failed,
        },
        items=items,
    )


def _job_state(state: str, locale: str) -> str:
    key = f"web.jobs.state.{state}"
    return t(key, locale=locale) if key in catalogue() else state


def _job_result(result: dict[str, Any] | None, locale: str) -> str:
    if not result:
        return ""
    indication = result.get("indication")
    if isinstance(indication, str):
        return t(f"verify.indication.{indication}", locale=locale)
    kind = result.get("kind")
    return _kind_label(kind, locale) if isinstance(kind, str) else ""
