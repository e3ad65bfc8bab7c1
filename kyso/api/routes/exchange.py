"""``/api/v1/exchange``: documents between agencies (:mod:`kyso.api.exchange`).

For people and systems of an agency (authenticated, scoped to the caller's agency; clerks
send, recall and answer):

* ``POST /send`` ``{"document_id", "recipients": [codes], "business": "new"|"update"|"replace",
  "reason"}`` → 202, the outgoing messages; or the same as ``multipart/form-data`` with files
  in ``attachments`` (and optional ``descriptions``), sent with the document
  (:mod:`kyso.api.uploads`: at most 20 files, KYSO_UPLOAD_MAX_BYTES in all);
* ``GET /outbox`` (``?state=``), ``GET /outbox/{id}`` (with its status history),
  ``GET /outbox/{id}/receipts/{n}`` (the signed status message, ``application/xml``),
  ``POST /outbox/{id}/recall``, ``POST /outbox/{id}/requeue``;
* ``GET /inbox``, ``GET /inbox/{id}`` (with its ``attachments``),
  ``GET /inbox/{id}/attachments/{n}`` (a file as it arrived), ``POST /inbox/{id}/status``
  ``{"code", "description"}``.

For other kyso instances (no account: the message's XML signature authenticates it, checked
against the configured peer's certificates; mTLS in front where configured):

* ``POST /inbox`` (``?to=CODE``), body an edXML message → 200 and the receiving agency's signed
  status message (01 arrived or 02 rejected, with the reasons), ``application/xml``;
* ``POST /status``, body a signed status message about a document sent from here → 200.

Both are rate limited per client address (``KYSO_EXCHANGE_INBOX_RATE_LIMIT`` messages a
minute, together; 429 with ``Retry-After``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from kyso.api import exchange, uploads
from kyso.api.auth import CurrentPrincipal
from kyso.api.principal import Principal
from kyso.api.problems import Problem
from kyso.api.ratelimit import app_limiter, client_address, too_many
from kyso.api.services import Services
from kyso.exchange.codes import BusinessDocType
from kyso.i18n import t

router = APIRouter(prefix="/api/v1/exchange", tags=["exchange"])

XML = "application/xml"
MAX_ID = 2**31 - 1
MessageId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="Message id")]


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


class SendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_id: int = Field(ge=1, le=MAX_ID)
    recipients: list[str] = Field(min_length=1, max_length=200)
    business: Literal["new", "update", "replace"] = "new"
    reason: str | None = Field(None, max_length=2000)


class RecallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=2000)


class StatusRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=2)
    description: str | None = Field(None, max_length=2000)


_BUSINESS = {
    "new": BusinessDocType.NEW,
    "update": BusinessDocType.UPDATE,
    "replace": BusinessDocType.REPLACE,
}


JSON_BODY_MAX = 1024 * 1024
"""A JSON request to send is a few hundred bytes (200 recipients and a reason at most)."""

_SEND_FIELDS = {"document_id", "recipients", "business", "reason", "descriptions", "csrf_token"}
"""``csrf_token``: a signed-in browser session's token, for a form posted without the header."""

_MULTIPART_SEND = {
    "type": "object",
    "required": ["document_id", "recipients"],
    "properties": {
        "document_id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
        "recipients": {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 1,
            "maxItems": 200,
            "description": "Agency codes: the field repeated, or one comma-separated value.",
        },
        "business": {"type": "string", "enum": ["new", "update", "replace"], "default": "new"},
        "reason": {"type": "string", "maxLength": 2000},
        "attachments": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "maxItems": uploads.MAX_FILES,
            "description": "Files sent with the document (each with a file name, not empty; "
            "all together at most KYSO_UPLOAD_MAX_BYTES).",
        },
        "descriptions": {
            "type": "array",
            "items": {"type": "string", "maxLength": uploads.DESCRIPTION_CHARS},
            "maxItems": uploads.MAX_FILES,
            "description": "Optional: the description of each file, in the same order.",
        },
        "csrf_token": {
            "type": "string",
            "description": "Signed-in browser sessions only, when the X-CSRF-Token header is "
            "not sent.",
        },
    },
    "additionalProperties": False,
}


def _validation(error: ValidationError) -> RequestValidationError:
    """A body's validation errors as FastAPI reports them (422 problem with ``errors``)."""
    return RequestValidationError(
        [{**e, "loc": ("body", *e.get("loc", ()))} for e in error.errors(include_url=False)]
    )


async def _json_send(request: Request) -> SendRequest:
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > JSON_BODY_MAX:
            raise Problem(413, "too-large", t("exchange_service.api.too_large", max=JSON_BODY_MAX))
    try:
        return SendRequest.model_validate_json(bytes(raw))
    except ValidationError as exc:
        raise _validation(exc) from None


def _form_send(form: uploads.ReceivedForm) -> SendRequest:
    unknown = sorted(form.names() - _SEND_FIELDS)
    if unknown:
        raise RequestValidationError(
            [{"loc": ("body", name), "msg": "Extra inputs are not permitted"} for name in unknown]
        )
    body: dict[str, Any] = {
        "recipients": [
            code.strip()
            for value in form.getlist("recipients")
            for code in value.split(",")
            if code.strip()
        ]
    }
    for name in ("document_id", "business", "reason"):
        values = form.getlist(name)
        if len(values) > 1:
            raise RequestValidationError(
                [{"loc": ("body", name), "msg": "Only one value is allowed"}]
            )
        if values and (name != "reason" or values[0].strip()):
            body[name] = values[0].strip() if name != "reason" else values[0]
    try:
        return SendRequest.model_validate(body)
    except ValidationError as exc:
        raise _validation(exc) from None


async def _send(
    services: Services, principal: Principal, body: SendRequest, attachments: list[Any]
) -> JSONResponse:
    messages = await run_in_threadpool(
        exchange.send,
        services,
        principal,
        body.document_id,
        body.recipients,
        attachments=attachments,
        business=_BUSINESS[body.business],
        reason=body.reason,
    )
    return JSONResponse({"messages": messages}, status_code=202)


@router.post(
    "/send",
    status_code=202,
    summary="Send a sealed document to other agencies, with attachments or without",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": SendRequest.model_json_schema()},
                "multipart/form-data": {"schema": _MULTIPART_SEND},
            },
        }
    },
    responses={
        202: {"description": "The outgoing messages, one per recipient"},
        413: {"description": "The attachments exceed KYSO_UPLOAD_MAX_BYTES"},
        415: {"description": "Neither JSON nor multipart/form-data"},
    },
)
async def send(request: Request, principal: CurrentPrincipal, services: ServicesDep) -> Any:
    """JSON (no attachment) or ``multipart/form-data`` with files in ``attachments``; see
    :mod:`kyso.api.uploads` for the limits."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind in ("", "application/json") or kind.endswith("+json"):
        return await _send(services, principal, await _json_send(request), [])
    if kind != "multipart/form-data":
        raise Problem(
            415,
            "unsupported-media-type",
            t("trust.media_type", expected="application/json, multipart/form-data"),
        )
    # a caller who may not send is told before their files are read
    if not principal.has(*exchange.CLERKS):
        raise Problem(
            403, "forbidden", t("exchange_service.forbidden", roles=", ".join(exchange.CLERKS))
        )
    async with uploads.receive_form(
        request,
        limit=services.settings.upload_max_bytes,
        file_limit=uploads.ATTACHMENT_MAX_BYTES,
    ) as form:
        body = _form_send(form)
        attachments = form.attachments(form.getlist("descriptions"))
        return await _send(services, principal, body, attachments)


@router.get("/outbox")
async def outbox(
    principal: CurrentPrincipal,
    services: ServicesDep,
    state: Annotated[
        Literal["queued", "sending", "delivered", "failed", "dead"] | None, Query()
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    return {
        "messages": await run_in_threadpool(
            exchange.outbox, services, principal, state=state, limit=limit
        )
    }


@router.get("/outbox/{message_id}")
async def outgoing_message(
    message_id: MessageId, principal: CurrentPrincipal, services: ServicesDep
) -> Any:
    return await run_in_threadpool(exchange.message, services, principal, message_id)


@router.get("/outbox/{message_id}/receipts/{index}")
async def receipt(
    message_id: MessageId,
    index: Annotated[int, PathParam(ge=0, le=10_000)],
    principal: CurrentPrincipal,
    services: ServicesDep,
) -> Response:
    data = await run_in_threadpool(exchange.receipt, services, principal, message_id, index)
    return Response(data, media_type=XML)


@router.post("/outbox/{message_id}/recall", status_code=202)
async def recall(
    message_id: MessageId,
    principal: CurrentPrincipal,
    services: ServicesDep,
    body: RecallRequest | None = None,
) -> Any:
    result = await run_in_threadpool(
        exchange.recall, services, principal, message_id, reason=body.reason if body else None
    )
    return JSONResponse(result, status_code=202)


@router.post("/outbox/{message_id}/requeue", status_code=202)
async def requeue(message_id: MessageId, principal: CurrentPrincipal, services: ServicesDep) -> Any:
    result = await run_in_threadpool(exchange.requeue, services, principal, message_id)
    return JSONResponse(result, status_code=202)


@router.get("/inbox")
async def inbox(
    principal: CurrentPrincipal,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    return {"messages": await run_in_threadpool(exchange.inbox, services, principal, limit=limit)}


@router.get("/inbox/{message_id}")
async def incoming_message(
    message_id: MessageId, principal: CurrentPrincipal, services: ServicesDep
) -> Any:
    return await run_in_threadpool(exchange.incoming_message, services, principal, message_id)


@router.get(
    "/inbox/{message_id}/attachments/{index}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def incoming_attachment(
    message_id: MessageId,
    index: Annotated[int, PathParam(ge=0, le=10_000, description="As listed in attachments")],
    principal: CurrentPrincipal,
    services: ServicesDep,
) -> FileResponse:
    """A file of a document the caller's agency received (the document itself is index 0),
    byte for byte as it arrived (checked against its SHA-256)."""
    info, path = await run_in_threadpool(
        exchange.incoming_attachment_file, services, principal, message_id, index
    )
    return FileResponse(
        path,
        media_type=info.get("content_type") or "application/octet-stream",
        filename=info["name"],
        headers={"X-Content-SHA256": info["sha256"]},
        background=BackgroundTask(path.unlink, missing_ok=True),
    )


@router.post("/inbox/{message_id}/status", status_code=202)
async def set_status(
    message_id: MessageId, body: StatusRequest, principal: CurrentPrincipal, services: ServicesDep
) -> Any:
    result = await run_in_threadpool(
        exchange.set_status, services, principal, message_id, body.code, body.description
    )
    return JSONResponse(result, status_code=202)


# -- machine to machine -------------------------------------------------------------------------


async def _body_to_file(request: Request, limit: int, target: Path) -> None:
    """The request body into ``target``, refused with 413 past ``limit`` bytes (announced or
    actual), 415 unless XML."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in ("application/xml", "text/xml"):
        raise Problem(415, "unsupported-media-type", t("exchange_service.api.xml_only"))
    announced = request.headers.get("content-length")
    if announced is not None and announced.isdigit() and int(announced) > limit:
        raise Problem(413, "too-large", t("exchange_service.api.too_large", max=limit))
    size = 0
    with target.open("wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Problem(413, "too-large", t("exchange_service.api.too_large", max=limit))
            out.write(chunk)
    if size == 0:
        raise Problem(400, "empty-request", t("exchange_service.api.empty"))


async def _over_rate(request: Request, services: Services) -> Response | None:
    """The 429 answer when this client address sent more than ``inbox_rate_limit`` messages
    (documents and statuses together) in the last minute, before its body is read.  A kyso
    that sends treats 429 as transient and retries later (``exchange._TRANSIENT_HTTP``)."""
    limit = exchange.exchange_settings(services).inbox_rate_limit
    limiter = app_limiter(request, "exchange-inbox", limit)
    # in the thread pool: with Redis (shared limits) it is a network round trip
    wait = await run_in_threadpool(limiter.hit, client_address(request))
    if not wait:
        return None
    return too_many(
        wait, lambda seconds: t("api.exchange.rate_limited", limit=limit, seconds=seconds)
    )


_RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {"description": "Too many messages from this address (Retry-After)"}
}


@router.post("/inbox", response_class=Response, responses=_RATE_LIMITED)
async def receive(
    request: Request,
    services: ServicesDep,
    to: Annotated[str | None, Query(max_length=35)] = None,
) -> Response:
    """An edXML message from another instance; the answer is the signed status message."""
    refused = await _over_rate(request, services)
    if refused is not None:
        return refused
    limit = exchange.exchange_settings(services).max_message_bytes
    with tempfile.TemporaryDirectory(prefix="kyso-inbox-") as tmp:
        path = Path(tmp) / "message.edxml"
        await _body_to_file(request, limit, path)
        received = await run_in_threadpool(
            exchange.receive, services, path, via="http", recipient=to
        )
    return Response(
        received.answer,
        media_type=XML,
        headers={"X-Kyso-Status": received.code, "X-Kyso-Incoming": str(received.incoming_id)},
    )


@router.post("/status", responses=_RATE_LIMITED)
async def receive_status(request: Request, services: ServicesDep) -> Any:
    """A signed status message about a document sent from here."""
    refused = await _over_rate(request, services)
    if refused is not None:
        return refused
    with tempfile.TemporaryDirectory(prefix="kyso-status-") as tmp:
        path = Path(tmp) / "status.xml"
        await _body_to_file(request, 4 * 1024 * 1024, path)
        data = path.read_bytes()
    return await run_in_threadpool(exchange.accept_status, services, data, via="http")
