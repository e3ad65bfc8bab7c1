"""The FastAPI application, built by :func:`create_app` (never at import time)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from kyso import __version__
from kyso.api import observability, problems, web
from kyso.api.routes import (
    admin,
    archive,
    auth,
    documents,
    exchange,
    health,
    jobs,
    trust,
    verify,
)
from kyso.api.services import Services
from kyso.api.settings import Settings, get_settings


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """A kyso app. The PKI must exist; keys are opened once, at startup."""
    services = services or Services(settings or get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Open every key now, in the main thread: a prompt or a wrong passphrase shows at start,
        # not on the first request, and each key is parsed once per process.
        services.pki.check()  # refuse to serve from tampered files or unfit service certs
        _ = services.tsa, services.ocsp
        _ = services.secret_key  # production refuses to start without KYSO_SECRET_KEY
        # the job runner starts now: jobs a previous process left unfinished are failed at
        # once, not at the first request
        jobs = services.jobs
        # without Celery beat, the exchange's due deliveries are retried in this process
        from kyso.api.exchange import start_retry_loop

        stop_exchange = start_retry_loop(services) if not services.settings.broker_url else None
        yield
        if stop_exchange is not None:
            stop_exchange()
        jobs.close()
        counts = getattr(app.state, "kyso_rate_limit_counts", None)
        if counts is not None:  # the shared rate limits' Redis pool (kyso.api.ratelimit)
            counts.close()
            app.state.kyso_rate_limit_counts = None
        # a later start of the same app (a second TestClient, a reload) gets a new runner
        services.__dict__.pop("jobs", None)

    app = FastAPI(
        title="kyso",
        version=__version__,
        summary="Ký số: signing, timestamping and verifying official documents",
        lifespan=lifespan,
    )
    app.state.services = services
    problems.install(app)
    observability.install(app)
    app.include_router(health.router)
    app.include_router(trust.router)
    app.include_router(auth.router)
    app.include_router(admin.router)
    app.include_router(documents.router)
    app.include_router(verify.router)
    app.include_router(archive.router)
    app.include_router(jobs.router)
    app.include_router(exchange.router)
    app.include_router(web.router)
    return app


def create_app_from_environment() -> FastAPI:
    """The app of each ``kyso serve --workers N`` process (``uvicorn --factory``): settings
    from the environment, logging set up as ``kyso serve`` does in a single process."""
    settings = get_settings()
    observability.configure_logging(settings)
    return create_app(settings)
