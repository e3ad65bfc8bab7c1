"""``/api/v1/exchange``: documents between agencies (:mod:`kyso.api.exchange`).

For people and systems of an agency (authenticated, scoped to the caller's agency; clerks
send, recall and answer):

* ``POST /send`` ``{"document_id", "recipients": [codes], "business": "new"|"update"|"replace",
  "reason"}`` → 202, the outgoing messages;
* ``GET /outbox`` (``?state=``), ``GET /outbox/{id}`` (with its status history),
  ``GET /outbox/{id}/receipts/{n}`` (the signed status message, ``application/xml``),
  ``POST /outbox/{id}/recall``, ``POST /outbox/{id}/requeue``;
* ``GET /inbox``, ``GET /inbox/{id}``, ``POST /inbox/{id}/status`` ``{"code", "description"}``.

For other kyso instances (no account: the message's XML signature authenticates it, checked
against the configured peer's certificates; mTLS in front where configured):

* ``POST /inbox`` (``?to=CODE``), body an edXML message → 200 and the receiving agency's signed
  status message (01 arrived or 02 rejected, with the reasons), ``application/xml``;
* ``POST /status``, body a signed status message about a document sent from here → 200.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from kyso.api import exchange
from kyso.api.auth import CurrentPrincipal
from kyso.api.problems import Problem
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


@router.post("/send", status_code=202)
async def send(body: SendRequest, principal: CurrentPrincipal, services: ServicesDep) -> Any:
    messages = await run_in_threadpool(
        exchange.send,
        services,
        principal,
        body.document_id,
        body.recipients,
        business=_BUSINESS[body.business],
        reason=body.reason,
    )
    return JSONResponse({"messages": messages}, status_code=202)


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


@router.post("/inbox", response_class=Response)
async def receive(
    request: Request,
    services: ServicesDep,
    to: Annotated[str | None, Query(max_length=35)] = None,
) -> Response:
    """An edXML message from another instance; the answer is the signed status message."""
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


@router.post("/status")
async def receive_status(request: Request, services: ServicesDep) -> Any:
    """A signed status message about a document sent from here."""
    with tempfile.TemporaryDirectory(prefix="kyso-status-") as tmp:
        path = Path(tmp) / "status.xml"
        await _body_to_file(request, 4 * 1024 * 1024, path)
        data = path.read_bytes()
    return await run_in_threadpool(exchange.accept_status, services, data, via="http")
