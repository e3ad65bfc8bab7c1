"""``/api/v1/search`` and ``/api/v1/cases``: the archive of the caller's agency.

Search takes the filters of ``kyso archive search`` and never leaves the caller's agency
(``documents.agency_id``); a case file of another agency answers 404 like an unknown one.
Exports reuse :mod:`kyso.archive.export` (listing PDF, Appendix VI XML, BagIt ZIP).
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from kyso.api import workflow
from kyso.api.auth import CurrentPrincipal
from kyso.api.principal import Principal
from kyso.api.problems import Problem
from kyso.api.routes.documents import ServicesDep, problems
from kyso.archive.catalog import MAX_PER_PAGE
from kyso.archive.metadata import CaseFileMetadata
from kyso.archive.models import CaseFile, Document
from kyso.i18n import t

router = APIRouter(prefix="/api/v1", tags=["archive"])

CASE_EDITORS = ("clerk", "archivist")
EXPORTERS = ("clerk", "archivist")
EXPORT_FORMATS = ("pdf", "xml", "zip")


def _date(value: str | None) -> dt.date | None:
    if value is None or not value.strip():
        return None
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise Problem(422, "validation", t("workflow.search.bad_date", value=value)) from None


def _row(doc: Document) -> dict[str, Any]:
    return {
        "id": doc.id,
        "direction": doc.direction,
        "document_id": doc.document_id,
        "number": doc.number_symbol,
        "issued_date": doc.issued_date.isoformat() if doc.issued_date else None,
        "organ_id": doc.organ_id,
        "organ_name": doc.organ_name,
        "type_name": doc.type_name,
        "subject": doc.subject,
        "signer": doc.signer_full_name,
        "case_file_id": doc.case_file_id,
        "href": f"/api/v1/documents/{doc.id}",
    }


def _require(principal: Principal, roles: tuple[str, ...]) -> None:
    if not principal.has(*roles):
        raise Problem(403, "forbidden", t("workflow.forbidden", roles=", ".join(roles)))


@router.get("/search", summary="Search the agency's archive")
def search(
    principal: CurrentPrincipal,
    services: ServicesDep,
    q: str | None = Query(None, description="Words of the subject (accents optional)"),
    number: str | None = Query(None, description="Số"),
    symbol: str | None = Query(None, description="Ký hiệu"),
    agency: str | None = Query(None, description="Issuing agency code (OrganId)"),
    type: str | None = Query(None, description="Document type, e.g. Quyết định"),
    date_from: str | None = Query(None, alias="from", description="Issued on or after"),
    date_to: str | None = Query(None, alias="to", description="Issued on or before"),
    signer: str | None = Query(None, description="Signer's name (part, accents optional)"),
    case: str | None = Query(None, description="Case file (FileCode or id)"),
    direction: str | None = Query(None, pattern="^(outgoing|incoming)$"),
    page: int = Query(1, ge=1, le=1_000_000),
    per_page: int = Query(20, ge=1, le=MAX_PER_PAGE),
) -> dict[str, Any]:
    """Newest first; every filter given must match; only the caller's agency's records."""
    with problems():
        case_id = workflow.check_case(services, principal, case) if case else None
        result = services.catalog.search(
            q,
            number=number,
            symbol=symbol,
            agency=agency,
            type=type,
            date_from=_date(date_from),
            date_to=_date(date_to),
            signer=signer,
            case=case_id,
            direction=direction,
            tenant=principal.agency,
            page=page,
            per_page=per_page,
        )
    return {
        "total": result.total,
        # false: counting stopped at a cap, there are more than `total` matches
        "total_exact": result.total_exact,
        "page": result.page,
        "per_page": result.per_page,
        "pages": result.pages,
        "has_next": result.has_next,
        "items": [_row(d) for d in result.items],
    }


def _case_row(case: CaseFile, count: int) -> dict[str, Any]:
    return {
        "id": case.id,
        "file_code": case.file_code,
        "organ_id": case.organ_id,
        "file_catalog": case.file_catalog,
        "file_notation": case.file_notation,
        "title": case.title,
        "maintenance": case.maintenance,
        "rights": case.rights,
        "creator": case.creator,
        "language": case.language,
        "start_date": case.start_date.isoformat() if case.start_date else None,
        "end_date": case.end_date.isoformat() if case.end_date else None,
        "description": case.description,
        "documents": count,
        "export": f"/api/v1/cases/{case.file_code}/export",
    }


@router.get("/cases", summary="The agency's case files")
def list_cases(
    principal: CurrentPrincipal,
    services: ServicesDep,
    year: int | None = Query(None, ge=1945, le=9999, description="FileCatalog"),
    page: int = Query(1, ge=1, le=1_000_000),
    per_page: int = Query(20, ge=1, le=MAX_PER_PAGE),
) -> dict[str, Any]:
    conditions: list[Any] = [CaseFile.agency_id == principal.agency]
    if year is not None:
        conditions.append(CaseFile.file_catalog == year)
    counts = (
        sa.select(Document.case_file_id, sa.func.count(Document.id).label("n"))
        .group_by(Document.case_file_id)
        .subquery()
    )
    with services.catalog.session() as s:
        total = s.scalar(sa.select(sa.func.count(CaseFile.id)).where(*conditions)) or 0
        rows = s.execute(
            sa.select(CaseFile, sa.func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.case_file_id == CaseFile.id)
            .where(*conditions)
            .order_by(CaseFile.file_catalog.desc(), CaseFile.id.desc())
            .limit(per_page)
            .offset((page - 1) * per_page)
        ).all()
    return {
        "total": total,
        "page": page,
        "per_page": per_page,
        "pages": max(1, -(-total // per_page)),
        "items": [_case_row(case, int(n)) for case, n in rows],
    }


class CaseBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "year": 2026,
                    "notation": "01",
                    "title": "Hồ sơ ban hành quyết định năm 2026",
                    "maintenance": "Vĩnh viễn",
                }
            ]
        },
    )

    year: int = Field(ge=1945, le=9999, description="FileCatalog: the year of the file list")
    notation: str = Field(max_length=20, description="FileNotation: number in the list")
    title: str = Field(max_length=1000)
    maintenance: str = Field("Vĩnh viễn", max_length=30, description="Retention period")
    rights: str = Field("Hạn chế", max_length=30, description="Access regime")
    creator: str | None = Field(None, max_length=200)
    language: str = Field("Tiếng Việt", max_length=100)
    start_date: dt.date | None = None
    end_date: dt.date | None = None
    description: str | None = Field(None, max_length=500)


@router.post("/cases", status_code=201, summary="Open a case file (hồ sơ)")
def create_case(
    body: CaseBody, principal: CurrentPrincipal, services: ServicesDep
) -> dict[str, Any]:
    _require(principal, CASE_EDITORS)
    meta = CaseFileMetadata(
        organ_id=principal.agency,
        file_catalog=body.year,
        file_notation=body.notation,
        title=body.title,
        maintenance=body.maintenance,
        rights=body.rights,
        creator=body.creator,
        language=body.language,
        start_date=body.start_date,
        end_date=body.end_date,
        description=body.description,
    )
    with problems():
        case_id = services.catalog.add_case(meta, actor=principal.actor)
    with services.catalog.session() as s:
        case = s.get(CaseFile, case_id)
        assert case is not None
    return _case_row(case, 0)


@router.get(
    "/cases/{code}/export",
    summary="Export a case file: listing PDF, Appendix VI XML or archival package (ZIP)",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/pdf": {}, "application/xml": {}, "application/zip": {}}}
    },
)
def export_case(
    code: str,
    principal: CurrentPrincipal,
    services: ServicesDep,
    format: str = Query("pdf", description="pdf, xml or zip (BagIt package)"),
) -> FileResponse:
    from kyso.archive.export import export_case_file, export_package

    _require(principal, EXPORTERS)
    fmt = format.lower()
    if fmt not in EXPORT_FORMATS:
        raise Problem(
            422, "validation", t("workflow.format", value=format, choices=", ".join(EXPORT_FORMATS))
        )
    with problems():
        case_id = workflow.check_case(services, principal, code)
    folder = Path(tempfile.mkdtemp(prefix="kyso-export-"))
    try:
        with problems():
            if fmt == "zip":
                summary = export_package(
                    services.catalog,
                    services.store,
                    case_id,
                    folder / "package.zip",
                    fmt="zip",
                    actor=principal.actor,
                )
                path, media = summary.path, "application/zip"
                name = f"{summary.bag_name}.zip"
            else:
                pdf, xml = export_case_file(
                    services.catalog, services.store, case_id, folder, actor=principal.actor
                )
                path = pdf if fmt == "pdf" else xml
                media = "application/pdf" if fmt == "pdf" else "application/xml"
                name = path.name
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(
        path,
        media_type=media,
        filename=name,
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )
