"""``/api/v1/jobs``: submit a background job, follow its progress, cancel what has not started.

Thin: each route calls :attr:`Services.jobs` (``kyso.api.jobs``) in the thread pool.  Who may
submit which kind is decided there (``ROLES_FOR``); a job of another agency is answered 404,
like an unknown one.  Items are ids and options (``{"document_id": 12}``), never file bytes;
a ``sign`` item carries the PIN, which is kept in the API process's memory only.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from kyso.api.auth import CurrentPrincipal
from kyso.api.jobs import KINDS, MAX_ITEMS, ROLES_FOR
from kyso.api.problems import Problem
from kyso.api.services import Services
from kyso.i18n import t

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
JobId = Annotated[str, PathParam(min_length=1, max_length=64, description="Job id")]


class JobRequest(BaseModel):
    """A job: its kind and its items (ids and options)."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(max_length=20, description=f"One of: {', '.join(KINDS)}")
    items: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_ITEMS,
        description='e.g. [{"document_id": 12}, {"document_id": 13, "version": 2}]',
    )


@router.post("", status_code=202)
async def submit_job(
    body: JobRequest, principal: CurrentPrincipal, services: ServicesDep
) -> JSONResponse:
    """Start a job; 202 with its status and ``Location``."""
    runner = services.jobs
    job_id = await run_in_threadpool(runner.submit, body.kind, body.items, principal=principal)
    status = await run_in_threadpool(runner.status, job_id, agency=principal.agency)
    return JSONResponse(
        status.as_dict(), status_code=202, headers={"Location": f"/api/v1/jobs/{job_id}"}
    )


@router.get("")
async def list_jobs(
    principal: CurrentPrincipal,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """The caller's agency's latest jobs, newest first (without their items)."""
    jobs = await run_in_threadpool(services.jobs.list, principal.agency, limit)
    return {"jobs": [j.as_dict(with_items=False) for j in jobs]}


@router.get("/{job_id}")
async def job_status(
    job_id: JobId, principal: CurrentPrincipal, services: ServicesDep
) -> dict[str, Any]:
    """A job with its progress (``done``/``total``) and every item's state, result or error
    (in the caller's language)."""
    status = await run_in_threadpool(services.jobs.status, job_id, agency=principal.agency)
    return status.as_dict()


@router.post("/{job_id}/cancel")
async def cancel_job(
    job_id: JobId, principal: CurrentPrincipal, services: ServicesDep
) -> dict[str, Any]:
    """Cancel the items not started yet (those running finish); for those who may submit
    that kind, and the agency's admins."""
    runner = services.jobs
    status = await run_in_threadpool(runner.status, job_id, agency=principal.agency)
    if not principal.has(*ROLES_FOR.get(status.kind, ()), "admin"):
        raise Problem(403, "forbidden", t("jobs.kind.forbidden", kind=status.kind))
    cancelled = await run_in_threadpool(
        runner.cancel, job_id, agency=principal.agency, actor=principal.actor
    )
    return cancelled.as_dict()
