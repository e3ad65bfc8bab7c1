"""Trust-service endpoints: timestamp authority, OCSP, CRLs, CA certificates."""

from __future__ import annotations

from typing import Annotated

from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from kyso.api.problems import Problem
from kyso.api.services import Services
from kyso.i18n import t

router = APIRouter(tags=["trust services"])


async def get_services(request: Request) -> Services:
    # async on purpose: FastAPI runs a plain-def dependency in the thread pool (a hop per call)
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

TSQ = "application/timestamp-query"
TSR = "application/timestamp-reply"
OCSP_REQ = "application/ocsp-request"
OCSP_RESP = "application/ocsp-response"
CRL = "application/pkix-crl"
CERT = "application/pkix-cert"


async def _read_body(request: Request, limit: int, media_type: str) -> bytes:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != media_type:
        raise Problem(415, "unsupported-media-type", t("trust.media_type", expected=media_type))
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise Problem(413, "too-large", t("trust.too_large", limit=limit))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Problem(413, "too-large", t("trust.too_large", limit=limit))
    if not body:
        raise Problem(400, "empty-request", t("trust.empty"))
    return bytes(body)


@router.post(
    "/tsa",
    summary="RFC 3161 timestamp authority",
    response_class=Response,
    responses={200: {"content": {TSR: {}}, "description": "TimeStampResp (also rejections)"}},
)
async def timestamp(request: Request, services: ServicesDep) -> Response:
    """POST a DER TimeStampReq as application/timestamp-query; get a TimeStampResp back.

    Rejections (unknown hash, unaccepted policy, malformed request, clock not synchronised)
    are TimeStampResp with PKIStatus rejection and a failInfo, as RFC 3161 §2.4.2 wants."""
    body = await _read_body(request, services.settings.tsa_max_request_bytes, TSQ)
    # The TSA's hot path (bench/tsa.py, BENCHMARKS.md). With a key in memory and a serial in
    # hand, respond() is pure CPU holding the GIL (~0.2 ms with EC P-256, ~0.7 ms with
    # RSA-2048): a worker thread would add a hand-off and no parallelism, so it runs here.
    # A token/HSM key, or a serial-block reservation in SQLite, waits on I/O: thread pool.
    if services.tsa_key_in_memory and services.tsa.serial_in_hand():
        reply = services.tsa.respond(body)
    else:
        reply = await run_in_threadpool(services.tsa.respond, body)
    return Response(reply, media_type=TSR)


@router.post(
    "/ocsp",
    summary="RFC 6960 OCSP responder (POST)",
    response_class=Response,
    responses={200: {"content": {OCSP_RESP: {}}}},
)
async def ocsp_post(request: Request, services: ServicesDep) -> Response:
    """POST a DER OCSPRequest as application/ocsp-request."""
    body = await _read_body(request, services.settings.ocsp_max_request_bytes, OCSP_REQ)
    reply = await run_in_threadpool(services.ocsp.respond, body)
    return Response(reply, media_type=OCSP_RESP)


@router.get(
    "/ocsp/{encoded:path}",
    summary="RFC 6960 OCSP responder (GET, appendix A)",
    response_class=Response,
    responses={200: {"content": {OCSP_RESP: {}}}},
)
async def ocsp_get(encoded: str, services: ServicesDep) -> Response:
    """GET /ocsp/{url-encoded base64 of the DER OCSPRequest}."""
    if len(encoded) > services.settings.ocsp_max_request_bytes:
        raise Problem(
            413, "too-large", t("trust.too_large", limit=services.settings.ocsp_max_request_bytes)
        )
    reply = await run_in_threadpool(services.ocsp.respond_get, encoded)
    return Response(reply, media_type=OCSP_RESP, headers={"Cache-Control": "max-age=60"})


@router.get(
    "/crl/{issuer}.crl",
    summary="Current CRL of the root or the issuing CA (DER)",
    response_class=Response,
    responses={200: {"content": {CRL: {}}}},
)
async def crl(issuer: str, services: ServicesDep) -> Response:
    if issuer not in ("root", "issuing"):
        raise Problem(404, "not-found", t("trust.unknown_ca", name=issuer))
    der = await run_in_threadpool(services.pki.crl_der, issuer)  # type: ignore[arg-type]
    return Response(der, media_type=CRL)


_CERTS = {"root": "root_cert", "issuing": "issuing_cert", "tsa": "tsa_cert", "ocsp": "ocsp_cert"}


@router.get(
    "/ca/{name}.crt",
    summary="A certificate of the built-in PKI (DER): root, issuing, tsa, ocsp",
    response_class=Response,
    responses={200: {"content": {CERT: {}}}},
)
async def ca_cert(name: str, services: ServicesDep) -> Response:
    attr = _CERTS.get(name)
    if attr is None:
        raise Problem(404, "not-found", t("trust.unknown_ca", name=name))
    cert = getattr(services.pki, attr)
    return Response(cert.public_bytes(Encoding.DER), media_type=CERT)


@router.get(
    "/ca/chain.pem",
    summary="Issuing CA and root certificates as one PEM bundle",
    response_class=Response,
    responses={200: {"content": {"application/x-pem-file": {}}}},
)
async def ca_chain(services: ServicesDep) -> Response:
    pki = services.pki
    pem = pki.issuing_cert.public_bytes(Encoding.PEM) + pki.root_cert.public_bytes(Encoding.PEM)
    return Response(pem, media_type="application/x-pem-file")
