"""Routes: liveness (``/healthz``), readiness (``/readyz``) and Prometheus ``/metrics``.

``/healthz`` touches nothing outside the process: an orchestrator restarts the container when
it fails. ``/readyz`` checks every dependency, each in its own thread with a short time limit,
and answers 503 problem+json naming the ones that failed: a load balancer stops sending traffic
until they are back. The reasons are logged, not shown (the endpoint is unauthenticated)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from kyso.api.observability import app_metrics
from kyso.api.problems import Problem, problem_response
from kyso.api.services import Services
from kyso.i18n import t

router = APIRouter(tags=["operations"])
log = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0  # seconds per dependency
# Checks run here, not in the request thread pool: a dependency that hangs (a black-holed
# database host) ties up at most these threads, never the ones that serve requests.
_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="kyso-readyz")


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


# -- liveness ---------------------------------------------------------------------------------


@router.get("/healthz", summary="Liveness (no dependencies)")
async def healthz(services: ServicesDep) -> dict[str, object]:
    """The process answers. Also reports the trust services' certificates and TSA clock, which
    are held in memory (opened at startup): nothing outside the process is contacted."""
    pki = services.pki
    now = pki.clock()

    def certificate(cert: Any) -> dict[str, object]:
        not_after = cert.not_valid_after_utc
        return {
            "serial": format(cert.serial_number, "X"),
            "not_after": not_after.isoformat(),
            "days_left": (not_after - now).days,
        }

    body: dict[str, object] = {"status": "ok", "pki": pki.exists()}
    if body["pki"]:
        body |= {
            "tsa": {
                "policy": services.tsa_policy.policy_oid,
                "clock_synchronised": services.tsa_policy.clock_synchronised,
                "certificate": certificate(pki.tsa_cert),
            },
            "ocsp": {"certificate": certificate(pki.ocsp_cert)},
            "ca": {"issuing": certificate(pki.issuing_cert), "root": certificate(pki.root_cert)},
        }
    return body


# -- readiness --------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _head_revision(script_location: str) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(script_location).get_current_head()


def check_catalog(services: Services) -> str:
    """The catalogue answers ``SELECT 1`` and its schema is at this code's head revision."""
    import sqlalchemy as sa

    catalog = services.catalog  # built (and migrated) on first use
    with catalog.engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
    current = catalog.revision()
    head = _head_revision(catalog.alembic_config().get_main_option("script_location"))
    if current != head:
        raise RuntimeError(f"schema at revision {current}, code expects {head}")
    return f"revision {current}"


def check_store(services: Services) -> str:
    """The object store is there: a writable directory, or an S3 bucket that exists."""
    from kyso.archive.storage import LocalStore, S3Store

    store = services.store
    if isinstance(store, LocalStore):
        if not store.root.is_dir() or not os.access(store.root, os.W_OK | os.X_OK):
            raise FileNotFoundError("store directory missing or not writable")
        return "local"
    if isinstance(store, S3Store):
        if not store.client.bucket_exists(store.bucket):
            raise FileNotFoundError("bucket missing")
        return "s3"
    raise TypeError(f"unknown store {type(store).__name__}")


def check_broker(services: Services) -> str:
    """The Celery broker accepts a connection."""
    from kombu import Connection

    url = services.settings.broker_url
    assert url is not None
    with Connection(url, connect_timeout=CHECK_TIMEOUT) as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=CHECK_TIMEOUT)
    return "connected"


def check_pki(services: Services) -> str:
    """The PKI exists and the TSA and OCSP keys are open (and the token, when one is set)."""
    if not services.pki.exists():
        raise FileNotFoundError("no PKI in the data directory")
    _ = services.tsa, services.ocsp  # opened at startup; cached
    token = services.token
    if token is not None:
        token.labels()  # opens (once) and uses the session
        return "loaded, token"
    return "loaded"


def _checks(services: Services) -> dict[str, Callable[[Services], str]]:
    checks: dict[str, Callable[[Services], str]] = {
        "catalog": check_catalog,
        "store": check_store,
        "pki": check_pki,
    }
    if services.settings.broker_url:
        checks["broker"] = check_broker
    return checks


async def _run(name: str, check: Callable[[Services], str], services: Services) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    try:
        context = contextvars.copy_context()  # the request id reaches the check's log lines
        info = await asyncio.wait_for(
            loop.run_in_executor(_executor, context.run, check, services), CHECK_TIMEOUT
        )
        result: dict[str, Any] = {"ok": True, "info": info}
    except TimeoutError:
        log.warning("readiness check %s timed out after %.1f s", name, CHECK_TIMEOUT)
        result = {"ok": False, "error": "timeout"}
    except Exception as exc:
        log.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
        result = {"ok": False, "error": type(exc).__name__}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


@router.get(
    "/readyz",
    summary="Readiness: catalogue, object store, broker and keys",
    responses={503: {"description": "A dependency is unavailable (problem+json)"}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    """200 when every dependency answers; 503 problem+json listing the ones that did not."""
    checks = _checks(services)
    results = await asyncio.gather(*(_run(n, c, services) for n, c in checks.items()))
    report = dict(zip(checks, results, strict=True))
    failed = [name for name, result in report.items() if not result["ok"]]
    if failed:
        return problem_response(
            503,
            "not-ready",
            t("ops.ready.title"),
            t("ops.ready.failed", checks=", ".join(failed)),
            checks=report,
        )
    return JSONResponse({"status": "ready", "checks": report})


# -- metrics ----------------------------------------------------------------------------------


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(request: Request, services: ServicesDep) -> Response:
    if not services.settings.metrics:
        raise Problem(404, "not-found", t("ops.metrics.off"))
    loop = asyncio.get_running_loop()
    # collecting may ask the broker for the queue depth: off the event loop
    body = await loop.run_in_executor(_executor, app_metrics(request.app).exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
