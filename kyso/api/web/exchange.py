"""The pages of the exchange between agencies (issue 7): the outbox (what the agency sent,
each recipient's delivery state and signed status history, requeue of dead messages, recall,
the receipts), the inbox (what it received, the verdict, the buttons for the status answers
03/04/05/06 and 15/16) and the "send" form of a sealed document (with attachments:
:mod:`kyso.api.uploads`).

Every page calls :mod:`kyso.api.exchange` (the same functions as ``/api/v1/exchange``) with
the signed-in :class:`~kyso.api.principal.Principal`: roles, the agency scope (another
agency's message is "not found"), the audit log and the state checks are enforced there.
See docs/web-ui.md ("Exchange between agencies").
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import sqlalchemy as sa
from fastapi import Request
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from kyso.api import exchange, uploads
from kyso.api.principal import Principal
from kyso.api.problems import Problem
from kyso.api.routes.exchange import MAX_ID
from kyso.api.services import Services
from kyso.api.web import forms, ui
from kyso.api.web.documents import _date_text
from kyso.archive.models import Document
from kyso.exchange.codes import BusinessDocType
from kyso.exchange.edxml import Attachment
from kyso.i18n import catalogue, t
from kyso.signer.verify.model import Reason

router = forms.page_router()

LIMIT = 200
"""The pages show the newest 200 messages (the API pages further)."""
PROGRESS_CODES = ("03", "04", "05", "06")
RECALL_CODES = ("15", "16")
STATE_TONES = {
    "queued": "warn",
    "sending": "warn",
    "delivered": "good",
    "failed": "bad",
    "dead": "bad",
}
INDICATION_TONES = {"TOTAL_PASSED": "good", "TOTAL_FAILED": "bad", "INDETERMINATE": "warn"}
STATUS_TONES = {"01": "good", "02": "bad", "03": "good", "06": "good", "13": "warn", "16": "bad"}


# -- helpers ----------------------------------------------------------------------------------


def _label(prefix: str, value: object, locale: str) -> str:
    key = f"web.exchange.{prefix}.{value}"
    return t(key, locale=locale) if key in catalogue() else str(value)


def _when(value: str | None, locale: str) -> str:
    if not value:
        return "—"
    try:
        return _date_text(dt.datetime.fromisoformat(value), locale)
    except ValueError:
        return value


def _reason_texts(reasons: Any, locale: str) -> list[str]:
    texts: list[str] = []
    for item in reasons or []:
        if not isinstance(item, dict) or not isinstance(item.get("code"), str):
            continue
        if item["code"] in catalogue():
            try:
                texts.append(Reason.from_dict(item).message(locale))
                continue
            except (KeyError, IndexError, ValueError):
                pass
        texts.append(str(item.get("message") or item["code"]))
    return texts


def agency_names(services: Services) -> dict[str, str]:
    """Every agency this instance knows by code: its own agencies and the configured peers."""
    names = {p["code"]: p["name"] or p["code"] for p in exchange.list_peers(services)}
    names.update({a.code: a.name for a in services.accounts.list_agencies()})
    return names


def send_targets(services: Services, principal: Principal) -> list[dict[str, Any]]:
    """The agencies a clerk of ``principal.agency`` may send to: the other agencies of this
    instance, then the enabled peers (other kyso instances)."""
    local: list[dict[str, Any]] = [
        {"code": a.code, "name": a.name, "remote": False}
        for a in services.accounts.list_agencies()
        if a.code != principal.agency
    ]
    known = {item["code"] for item in local}
    remote: list[dict[str, Any]] = [
        {"code": p["code"], "name": p["name"] or p["code"], "remote": True}
        for p in exchange.list_peers(services)
        if p["enabled"] and p["code"] not in known and p["code"] != principal.agency
    ]
    return sorted(local, key=lambda a: a["code"]) + sorted(remote, key=lambda a: a["code"])


def _documents(services: Services, ids: set[int]) -> dict[int, Document]:
    if not ids:
        return {}
    with services.catalog.session() as s:
        rows = s.scalars(sa.select(Document).where(Document.id.in_(ids))).all()
        for doc in rows:
            s.expunge(doc)
    return {doc.id: doc for doc in rows}


def _status_rows(items: list[dict[str, Any]], locale: str) -> list[dict[str, Any]]:
    return [
        {
            "index": index,
            "code": item["code"],
            "label": _label("code", item["code"], locale),
            "tone": STATUS_TONES.get(item["code"], ""),
            "agency": item["agency"],
            "when": _when(item["stated_at"], locale),
            "description": item["description"] or "",
            "reasons": _reason_texts(item["reasons"], locale),
        }
        for index, item in enumerate(items)
    ]


# -- the outbox -------------------------------------------------------------------------------


def _outbox_page(services: Services, principal: Principal, locale: str) -> dict[str, Any]:
    messages = exchange.outbox(services, principal, limit=LIMIT)
    names = agency_names(services)
    docs = _documents(services, {m["document_id"] for m in messages if m["document_id"]})
    clerk = principal.has(*exchange.CLERKS)
    max_attempts = exchange.exchange_settings(services).max_attempts
    documents: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []
    for m in messages:
        doc = docs.get(m["document_id"]) if m["document_id"] else None
        recall_message = m["business_type"] == int(BusinessDocType.RECALL)
        state = m["state"]
        recalled = m["last_error"] == "recalled"
        item = {
            "id": m["id"],
            "recipient": m["recipient"],
            "recipient_name": names.get(m["recipient"], ""),
            "document_id": m["document_id"],
            "subject": doc.subject if doc is not None else "",
            "number": doc.number_symbol if doc is not None and doc.number_symbol else "",
            "edxml_document_id": m["edxml_document_id"],
            "business": _label("business", m["business_type"], locale),
            "state": state,
            "state_label": _label("state", "recalled" if recalled else state, locale),
            "tone": STATE_TONES.get(state, ""),
            "attempts": m["attempts"],
            "max_attempts": max_attempts,
            "last_error": m["last_error"] or "",
            "created": _when(m["created_at"], locale),
            "delivered": _when(m["delivered_at"], locale),
            "next_attempt": _when(m["next_attempt_at"], locale) if m["next_attempt_at"] else "",
            "status_code": m["status_code"] or "",
            "status_label": _label("code", m["status_code"], locale) if m["status_code"] else "",
            "can_requeue": clerk and state in ("dead", "failed") and not recalled,
            "can_recall": clerk
            and m["kind"] == "document"
            and not recall_message
            and not recalled
            and (m["delivered_at"] is not None or state in ("queued", "dead")),
        }
        if m["kind"] == "document":
            item["recall_message"] = recall_message
            item["statuses"] = (
                []
                if recall_message
                else _status_rows(
                    exchange.history(services, principal, m["edxml_document_id"], m["recipient"]),
                    locale,
                )
            )
            documents.append(item)
        else:
            answers.append(item)
    return {
        "documents": documents,
        "answers": answers,
        "dead": sum(1 for m in messages if m["state"] == "dead"),
    }


@router.get("/exchange/outbox")
async def outbox_page(request: Request) -> Response:
    page = await forms.signed_in(request, *exchange.READERS)
    facts = await page.run(_outbox_page, page.services, page.principal, page.locale)
    return ui.render(
        request,
        "exchange_outbox.html.j2",
        title=t("web.exchange.outbox.title", locale=page.locale),
        **facts,
    )


@router.get("/exchange/outbox/{message_id}/receipts/{index}")
async def receipt_download(message_id: int, index: int, request: Request) -> Response:
    """The signed status message (the receipt), exactly as received and archived."""
    page = await forms.signed_in(request, *exchange.READERS)
    if not (0 < message_id < 2**31 and 0 <= index <= 10_000):
        return ui.not_found_page(request)
    data = await page.run(exchange.receipt, page.services, page.principal, message_id, index)
    return Response(
        data,
        media_type="application/xml",
        headers={
            "Content-Disposition": f'attachment; filename="receipt-{message_id}-{index + 1}.xml"',
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


@router.post("/exchange/outbox/{message_id}/requeue")
async def requeue_post(message_id: int, request: Request) -> Response:
    page, _ = await forms.posted(request, *exchange.CLERKS, limits=forms.WITH_FILE)
    await page.run(exchange.requeue, page.services, page.principal, message_id)
    return ui.redirect("/exchange/outbox", done="exchange_requeued")


@router.post("/exchange/outbox/{message_id}/recall")
async def recall_post(message_id: int, request: Request) -> Response:
    page, form = await forms.posted(request, *exchange.CLERKS, limits=forms.WITH_FILE)
    reason = forms.field(form, "reason", 2000) or None
    await page.run(exchange.recall, page.services, page.principal, message_id, reason=reason)
    return ui.redirect("/exchange/outbox", done="exchange_recalled")


# -- sending a sealed document ------------------------------------------------------------------


def _codes(chosen: list[Any], typed: str) -> list[str]:
    """The ticked agencies, then the codes typed (separated by commas or semicolons)."""
    codes = [v.strip() for v in chosen if isinstance(v, str) and v.strip()]
    codes += [code.strip() for code in typed.replace(";", ",").split(",") if code.strip()]
    return codes


_BUSINESS = {
    "new": BusinessDocType.NEW,
    "update": BusinessDocType.UPDATE,
    "replace": BusinessDocType.REPLACE,
}


async def _send(
    page: forms.Page,
    document_id: int,
    chosen: list[str],
    attachments: list[Attachment],
    *,
    business: str = "new",
    reason: str = "",
) -> Response:
    if not chosen:
        text = t("web.exchange.send.none_chosen", locale=page.locale)
        return ui.message_page(page.request, 422, text)
    kind = _BUSINESS.get(business or "new")
    if kind is None:
        text = t("web.exchange.send.bad_business", locale=page.locale)
        return ui.message_page(page.request, 422, text)
    if kind is not BusinessDocType.NEW and not reason:
        text = t("web.exchange.send.reason_needed", locale=page.locale)
        return ui.message_page(page.request, 422, text)
    await page.run(
        exchange.send,
        page.services,
        page.principal,
        document_id,
        chosen[:200],
        attachments=attachments,
        business=kind,
        reason=reason if kind is not BusinessDocType.NEW else None,
    )
    return ui.redirect("/exchange/outbox", done="exchange_sent")


@router.post("/documents/{document_id}/send")
async def send_post(document_id: int, request: Request) -> Response:
    """The send form: ``multipart/form-data`` with the files of ``attachments`` (read by
    :func:`kyso.api.uploads.receive_form`, the same limits and messages as the API), or a
    plain form without files."""
    page = await forms.signed_in(request, *exchange.CLERKS)
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "multipart/form-data":
        form = await forms.read_form(request, page.who, forms.WITH_FILE)
        chosen = _codes(form.getlist("recipients"), forms.field(form, "other", 500))
        return await _send(
            page,
            document_id,
            chosen,
            [],
            business=forms.field(form, "business", 20),
            reason=forms.field(form, "reason", 2000),
        )
    try:
        async with uploads.receive_form(
            request,
            limit=page.services.settings.upload_max_bytes,
            file_limit=uploads.ATTACHMENT_MAX_BYTES,
        ) as received:
            try:
                ui.check_csrf(request, page.who, received.get("csrf_token"))
            except ui.CSRFError:
                return ui.message_page(request, 403, t("web.error.csrf", locale=page.locale))
            chosen = _codes(received.getlist("recipients"), (received.get("other") or "")[:500])
            # the files are read while the message is built, inside this block: the folder
            # is removed when it ends
            return await _send(
                page,
                document_id,
                chosen,
                received.attachments(),
                business=(received.get("business") or "").strip()[:20],
                reason=(received.get("reason") or "").strip()[:2000],
            )
    except Problem as exc:  # too large, too many files, a file without name, an empty one
        return forms.failure(request, exc)


# -- the inbox --------------------------------------------------------------------------------


def _received_files(
    incoming_id: int, attachments: list[dict[str, Any]], locale: str
) -> list[dict[str, Any]]:
    """The files of an accepted message as the inbox lists them (the document first), each
    with its download link and, for a PDF, the verdict on its signatures."""
    files = []
    for item in sorted(attachments, key=lambda a: (not a.get("main"), a.get("index", 0))):
        key = f"verify.indication.{item.get('indication')}"
        files.append(
            {
                "name": item.get("name") or f"#{item.get('index')}",
                "href": f"/exchange/inbox/{incoming_id}/attachments/{item.get('index')}",
                "size": ui.human_size(int(item.get("size") or 0), locale),
                "description": item.get("description") or "",
                "main": bool(item.get("main")),
                "indication": item.get("indication") or "",
                "tone": INDICATION_TONES.get(str(item.get("indication")), ""),
                "indication_label": t(key, locale=locale) if key in catalogue() else "",
            }
        )
    return files


def _inbox_page(services: Services, principal: Principal, locale: str) -> dict[str, Any]:
    rows = exchange.inbox(services, principal, limit=LIMIT)
    names = agency_names(services)
    docs = _documents(services, {r["document_id"] for r in rows if r["document_id"]})
    clerk = principal.has(*exchange.CLERKS)
    items = []
    for row in rows:
        full = exchange.incoming_message(services, principal, row["id"])
        own = _status_rows(full["statuses"], locale)
        doc = docs.get(row["document_id"]) if row["document_id"] else None
        verdict = row["verdict"] if isinstance(row["verdict"], dict) else {}
        indications = [
            t(f"verify.indication.{r['indication']}", locale=locale)
            for r in (verdict.get("reports") or {}).values()
            if isinstance(r, dict) and f"verify.indication.{r.get('indication')}" in catalogue()
        ]
        recall_row = row["business_type"] == int(BusinessDocType.RECALL)
        items.append(
            {
                "id": row["id"],
                "sender": row["sender"],
                "sender_name": names.get(row["sender"], ""),
                "edxml_document_id": row["edxml_document_id"],
                "business": _label("business", row["business_type"], locale),
                "document_id": row["document_id"],
                "subject": doc.subject if doc is not None else "",
                "number": doc.number_symbol if doc is not None and doc.number_symbol else "",
                "arrival_number": (doc.arrival_number or "—") if doc is not None else "—",
                "arrival_date": _date_text(doc.arrival_date, locale) if doc is not None else "—",
                "received": _when(row["received_at"], locale),
                "accepted": bool(row["accepted"]),
                "reasons": _reason_texts(verdict.get("reasons"), locale),
                "indications": indications,
                "files": _received_files(row["id"], full.get("attachments") or [], locale)
                if row["accepted"]
                else [],
                "state": row["state"],
                "state_label": _label("incoming", row["state"], locale),
                "statuses": own,
                "current": own[-1] if own else None,
                "can_progress": clerk
                and bool(row["accepted"])
                and row["state"] == "received"
                and not recall_row,
                "can_answer_recall": clerk and row["state"] == "recall_requested",
            }
        )
    return {"items": items}


@router.get("/exchange/inbox")
async def inbox_page(request: Request) -> Response:
    page = await forms.signed_in(request, *exchange.READERS)
    facts = await page.run(_inbox_page, page.services, page.principal, page.locale)
    return ui.render(
        request,
        "exchange_inbox.html.j2",
        title=t("web.exchange.inbox.title", locale=page.locale),
        progress_codes=PROGRESS_CODES,
        recall_codes=RECALL_CODES,
        code_labels={c: _label("code", c, page.locale) for c in PROGRESS_CODES + RECALL_CODES},
        **facts,
    )


def _number(value: str, high: int) -> int | None:
    """A path segment as an integer from 0 to ``high``, else None (the page is not found)."""
    if re.fullmatch(r"\d{1,10}", value) and int(value) <= high:
        return int(value)
    return None


@router.get("/exchange/inbox/{incoming_id}/attachments/{index}")
async def received_file(incoming_id: str, index: str, request: Request) -> Response:
    """A file of a message the agency received (the document itself is index 0), byte for
    byte as it arrived: checked against its SHA-256, the reading audited, by the function of
    ``GET /api/v1/exchange/inbox/{id}/attachments/{index}``.  Any id that is not a message of
    the agency, or an index it does not have, is "not found"."""
    page = await forms.signed_in(request, *exchange.READERS)
    message_id, number = _number(incoming_id, MAX_ID), _number(index, 10_000)
    if not message_id or number is None:
        return ui.not_found_page(request)
    info, path = await page.run(
        exchange.incoming_attachment_file, page.services, page.principal, message_id, number
    )
    return FileResponse(
        path,
        media_type=info.get("content_type") or "application/octet-stream",
        filename=info["name"],
        background=BackgroundTask(path.unlink, missing_ok=True),
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
    )


@router.post("/exchange/inbox/{incoming_id}/status")
async def status_post(incoming_id: int, request: Request) -> Response:
    page, form = await forms.posted(request, *exchange.CLERKS, limits=forms.WITH_FILE)
    code = forms.field(form, "code", 2)
    if code not in PROGRESS_CODES + RECALL_CODES:
        text = t("web.exchange.inbox.bad_code", locale=page.locale)
        return ui.message_page(request, 422, text)
    description = forms.field(form, "description", 2000) or None
    await page.run(
        exchange.set_status, page.services, page.principal, incoming_id, code, description
    )
    return ui.redirect("/exchange/inbox", done="exchange_status")
