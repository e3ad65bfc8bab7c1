"""``/api/v1/documents``: upload, the person's signature (server-held key or two-phase with a
token), the clerk's number and date, the agency seal, verification, extension, download.

The routes are thin: each calls one function of :mod:`kyso.api.workflow` in the thread pool
(pyhanko's sync API runs its own event loop, MEASURED.md #3) and turns the library's errors
into problem+json with stable types.  Uploads are streamed to a temporary file and cut off at
``KYSO_UPLOAD_MAX_BYTES`` (413) before the rest is read, by the reader of every form with
files (:mod:`kyso.api.uploads`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from kyso.api import uploads, workflow
from kyso.api.auth import CurrentPrincipal
from kyso.api.problems import Problem
from kyso.api.services import Services
from kyso.archive.ingest import IngestResult
from kyso.archive.models import AuditEvent, Document, DocumentVersion, VerificationReport
from kyso.errors import KysoError
from kyso.i18n import t

router = APIRouter(prefix="/api/v1", tags=["documents"])

T = TypeVar("T")


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

MAX_ID = 2**31 - 1
"""Ids are 32-bit integers in the catalogue: a larger one is refused (422), never sent to SQL."""
DocumentId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="Document id")]
VersionSeq = Annotated[int, PathParam(ge=1, le=MAX_ID, description="Version number")]
ReportId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="Report id")]


# -- errors ---------------------------------------------------------------------------------------


def problem_of(exc: KysoError) -> Problem | None:
    """The problem+json for a library error of the workflow (None: the app's default)."""
    from kyso.archive.catalog import CatalogError, NotFoundError, VersionOrderError
    from kyso.archive.errors import StorageError
    from kyso.archive.export import ExportError
    from kyso.signer.errors import (
        AppearanceError,
        BadInputError,
        CertificateRefusedError,
        SigningError,
        TimestampUnavailableError,
    )
    from kyso.signer.external import HandleError
    from kyso.signer.verify import VerifyInputError

    detail = exc.message()
    if isinstance(exc, AppearanceError):
        return Problem(422, "validation", detail, code=exc.code)
    if isinstance(exc, NotFoundError | HandleError):
        return Problem(404, "not-found", detail)
    if isinstance(exc, VersionOrderError):
        return Problem(409, "conflict", detail)
    if isinstance(exc, BadInputError | VerifyInputError):
        return Problem(422, "bad-pdf", detail)
    if isinstance(exc, TimestampUnavailableError):
        return Problem(503, "tsa", detail)
    if isinstance(exc, StorageError):
        return Problem(503, "storage", detail)
    if exc.code == "archive.catalog.case.exists":
        return Problem(409, "conflict", detail)
    if isinstance(exc, CertificateRefusedError | SigningError | CatalogError | ExportError):
        return Problem(422, "validation", detail, code=exc.code)
    return None


@contextmanager
def problems() -> Iterator[None]:
    """Library errors raised inside the block become problem+json."""
    try:
        yield
    except KysoError as exc:
        mapped = problem_of(exc)
        if mapped is None:
            raise
        raise mapped from None
    except sa.exc.DataError:
        # a value the database cannot hold (a NUL character, a number out of range)
        raise Problem(422, "validation", t("workflow.bad_value")) from None


async def call(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """``fn`` in the thread pool, its library errors as problems."""

    def run() -> T:
        with problems():
            return fn(*args, **kw)

    return await run_in_threadpool(run)


# -- uploads ------------------------------------------------------------------------------------

MAX_FIELDS = 64
MAX_TEXT_BYTES = 128 * 1024
"""The metadata fields of a form with one PDF, all together."""
NAME_BYTES = 240
"""A file name written to disk stays under the file systems' 255 bytes."""


@dataclass
class Upload:
    """A multipart body read by :func:`receive_upload`: the one file (on disk) and the text
    fields (the last value of a repeated name)."""

    directory: Path
    path: Path
    filename: str
    """The client's file name made safe (:func:`kyso.api.uploads.safe_name`), "" without one."""
    fields: dict[str, str]

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def named(self) -> Path:
        """The file under the client's (safe) file name, ``document.pdf`` without one: what a
        report shows as the file."""
        name = self.filename or "document.pdf"
        if len(name.encode()) > NAME_BYTES:  # 200 Vietnamese letters can take 600 bytes
            suffix = Path(name).suffix
            suffix = suffix if len(suffix.encode()) <= 16 else ""
            room = NAME_BYTES - len(suffix.encode())
            stem = name[: len(name) - len(suffix)].encode()[:room].decode("utf-8", "ignore")
            name = stem.rstrip(" .") + suffix
        target = self.directory / name
        if target != self.path:
            self.path = self.path.replace(target)
        return self.path


async def receive_upload(request: Request, limit: int) -> Upload:
    """Stream ``multipart/form-data`` into a temporary folder (by
    :func:`kyso.api.uploads.read_form`): the PDF in ``file`` (413 ``too-large`` past ``limit``
    bytes, before the rest is read; the PDF check judges its content, whatever its name or
    size), other parts as short text fields; 422 without the file.  The caller removes the
    folder (``Upload.cleanup``)."""
    rules = uploads.FormRules(
        limit,
        file_field="file",
        max_files=1,
        max_fields=MAX_FIELDS,
        text_limit=MAX_TEXT_BYTES,
        named_files=False,
    )
    form = await uploads.read_form(request, rules)
    if not form.files:
        form.cleanup()
        raise Problem(422, "validation", t("workflow.upload.no_file"))
    received = form.files[0]
    path = received.path.replace(form.directory / "upload.pdf")
    return Upload(form.directory, path, received.name, dict(form.fields))


def multipart_body(fields: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` of a multipart form with a PDF in ``file``."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            **fields,
                        },
                    }
                }
            },
        }
    }


# -- responses ------------------------------------------------------------------------------------


def ingest_body(result: IngestResult) -> dict[str, Any]:
    body = result.as_dict()
    body["links"] = {
        "document": f"/api/v1/documents/{result.document_id}",
        "content": f"/api/v1/documents/{result.document_id}/versions/{result.version_seq}/content",
    }
    return body


def document_body(services: Services, doc: Document) -> dict[str, Any]:
    """Metadata, versions with their reports, the register entry, history and accesses."""
    data: dict[str, Any] = {
        "id": doc.id,
        "direction": doc.direction,
        "agency_id": doc.agency_id,
        "document_id": doc.document_id,
        "organ_id": doc.organ_id,
        "organ_name": doc.organ_name,
        "type_name": doc.type_name,
        "code_number": doc.code_number,
        "code_notation": doc.code_notation,
        "number": doc.number_symbol,
        "issued_date": doc.issued_date.isoformat() if doc.issued_date else None,
        "subject": doc.subject,
        "language": doc.language,
        "page_amount": doc.page_amount,
        "description": doc.description,
        "signer_position": doc.signer_position,
        "signer_full_name": doc.signer_full_name,
        "to": doc.recipients,
        "urgency": doc.urgency,
        "secrecy": doc.secrecy,
        "due_date": doc.due_date.isoformat() if doc.due_date else None,
        "case_file": doc.case_file.file_code if doc.case_file else None,
        "created_at": doc.created_at.isoformat(),
        "created_by": doc.created_by,
        "register": workflow.register_plan(services, doc.id),
        "stage": doc.versions[-1].kind if doc.versions else None,
    }
    data["versions"] = [
        {
            "seq": v.seq,
            "kind": v.kind,
            "sha256": v.sha256,
            "size": v.size,
            "created_at": v.created_at.isoformat(),
            "created_by": v.created_by,
            "content": f"/api/v1/documents/{doc.id}/versions/{v.seq}/content",
            "reports": [
                {
                    "id": r.id,
                    "indication": r.indication,
                    "sub_indication": r.sub_indication,
                    "created_at": r.created_at.isoformat(),
                    "created_by": r.created_by,
                    "href": f"/api/v1/documents/{doc.id}/reports/{r.id}",
                }
                for r in v.reports
            ],
        }
        for v in doc.versions
    ]
    catalog = services.catalog
    data["access"] = [
        {
            "at": a.at.isoformat(),
            "actor": a.actor,
            "action": a.action,
            "purpose": a.purpose,
            "version_id": a.version_id,
        }
        for a in catalog.access_history(doc.id)
    ]
    subject = f"document:{doc.id}"
    with catalog.session() as s:
        events = s.scalars(
            sa.select(AuditEvent)
            .where(sa.or_(AuditEvent.subject == subject, AuditEvent.subject.like(subject + "/%")))
            .order_by(AuditEvent.seq)
        )
        data["history"] = [
            {
                "seq": e.seq,
                "at": e.at,
                "actor": e.actor,
                "action": e.action,
                "subject": e.subject,
                "details": json.loads(e.details_json),
            }
            for e in events
        ]
    return data


# -- request bodies -------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Placement(_Body):
    box: tuple[float, float, float, float] | None = Field(
        None, description="x1, y1, x2, y2 in PDF points (user space)"
    )
    page: int | None = Field(
        None, ge=-10_000, le=10_000, description="0 = first page, -1 = last (default: last)"
    )
    field: str | None = Field(None, description="An existing empty signature field")
    anchor: str | None = Field(None, description="Place the signature at this printed text")
    anchor_mode: str | None = Field(None, description="above (default) or over")


class SignBody(_Body):
    key: str = Field(description="Label of a key bound to the caller")
    pin: str = Field(description="The caller's signing PIN (asked for every signature)")
    placement: Placement | None = None
    level: str = Field("B-T", description="B-B, B-T, B-LT or B-LTA")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"key": "nguyen-van-a", "pin": "123456", "level": "B-T"}]},
    )


class PrepareBody(_Body):
    certificate: str = Field(
        description="PEM: the signer's certificate then its issuers (or base64 of one DER)"
    )
    level: str = Field("B-T", description="B-B, B-T, B-LT or B-LTA")


class CompleteBody(_Body):
    handle: str = Field(max_length=64)
    signature: str | None = Field(None, description="base64 signature over signed_attributes")
    cms: str | None = Field(None, description="or base64 of a whole CMS SignedData")


class RegisterBody(_Body):
    number: int | None = Field(
        None, ge=1, le=99_999, description="Default: the next of the register"
    )
    date: dt.date | None = Field(None, description="Issue date (default: today in Vietnam)")
    symbol: str | None = Field(None, description="Ký hiệu, e.g. QĐ-UBND (default: as planned)")
    place: str | None = Field(None, description="Địa danh, e.g. Hà Nội (default: as planned)")

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"symbol": "QĐ-UBND", "place": "Hà Nội"}]}
    )


class LevelBody(_Body):
    level: str | None = Field(None, description="B-LT or B-LTA")


class VerifyBody(_Body):
    version: int | None = Field(None, ge=1, le=MAX_ID, description="Default: the latest version")


def _b64(value: str | None, name: str) -> bytes | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Problem(422, "validation", t("workflow.external.bad_base64", field=name)) from None


# -- routes ---------------------------------------------------------------------------------------

_META_FIELDS = {
    "metadata": {"type": "string", "description": "JSON object of Appendix VI fields"},
    "case": {"type": "string", "description": "Case file (FileCode or id)"},
    "organ_name": {"type": "string"},
    "type_name": {"type": "string"},
    "subject": {"type": "string"},
    "code_notation": {"type": "string", "description": "Planned symbol, e.g. QĐ-UBND"},
    "place": {"type": "string", "description": "Planned place of issue"},
}


@router.post(
    "/documents",
    status_code=201,
    summary="Upload a draft (or a received document) with its metadata",
    openapi_extra=multipart_body(_META_FIELDS),
)
async def upload_document(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> JSONResponse:
    """Multipart: ``file`` (the PDF) and the metadata, as form fields (Appendix VI names or
    the CLI's short ones: ``agency_name``, ``type``, ``subject``, ``symbol``, ``place``...)
    or as one JSON part ``metadata``; ``case`` puts it in a case file."""
    upload = await receive_upload(request, services.settings.upload_max_bytes)
    try:
        fields = dict(upload.fields)
        case: Any = fields.pop("case", None) or None
        metadata: dict[str, Any] = {}
        raw = fields.pop("metadata", None)
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError as exc:
                raise Problem(
                    422, "validation", t("workflow.upload.bad_metadata", reason=str(exc))
                ) from None
            if not isinstance(parsed, dict):
                raise Problem(
                    422, "validation", t("workflow.upload.bad_metadata", reason="not an object")
                )
            metadata.update(parsed)
            case = case or metadata.pop("case", None)
        fields.pop("csrf_token", None)
        metadata.update(fields)
        result = await call(workflow.upload, services, principal, upload.path, metadata, case=case)
    finally:
        upload.cleanup()
    return JSONResponse(
        ingest_body(result),
        status_code=201 if result.created else 200,
        headers={"Location": f"/api/v1/documents/{result.document_id}"},
    )


@router.get("/documents/{document_id}", summary="A document: metadata, versions, history")
def show_document(
    document_id: DocumentId, principal: CurrentPrincipal, services: ServicesDep
) -> dict[str, Any]:
    with problems():
        doc = workflow.get_document(services, principal, document_id)
        return document_body(services, doc)


@router.post("/documents/{document_id}/sign", summary="Sign as the competent person")
def sign_document(
    document_id: DocumentId, body: SignBody, principal: CurrentPrincipal, services: ServicesDep
) -> dict[str, Any]:
    """With a server-held key bound to the caller (official), unlocked by their PIN."""
    with problems():
        result = workflow.sign_as_person(
            services,
            principal,
            document_id,
            key=body.key,
            pin=body.pin,
            placement=body.placement.model_dump(exclude_none=True) if body.placement else None,
            level=body.level,
        )
    return ingest_body(result)


@router.post(
    "/documents/{document_id}/sign/prepare",
    summary="Two-phase signing, step 1: what the token must sign",
)
def prepare_signature(
    document_id: DocumentId, body: PrepareBody, principal: CurrentPrincipal, services: ServicesDep
) -> dict[str, Any]:
    text = body.certificate.strip()
    data = text.encode() if text.startswith("-----BEGIN") else _b64(text, "certificate")
    assert data is not None
    with problems():
        prepared = workflow.prepare_external(
            services, principal, document_id, certificate=data, level=body.level
        )
    return prepared.as_dict()


@router.post(
    "/documents/{document_id}/sign/complete",
    summary="Two-phase signing, step 2: the token's signature",
)
def complete_signature(
    document_id: DocumentId, body: CompleteBody, principal: CurrentPrincipal, services: ServicesDep
) -> dict[str, Any]:
    signature = _b64(body.signature, "signature")
    cms = _b64(body.cms, "cms")
    with problems():
        result = workflow.complete_external(
            services, principal, document_id, handle=body.handle, signature=signature, cms=cms
        )
    return ingest_body(result)


@router.post("/documents/{document_id}/register", summary="Number and date (clerk)")
def register_document(
    document_id: DocumentId,
    principal: CurrentPrincipal,
    services: ServicesDep,
    body: RegisterBody | None = None,
) -> dict[str, Any]:
    body = body or RegisterBody()
    with problems():
        result = workflow.register(
            services,
            principal,
            document_id,
            number=body.number,
            date=body.date,
            symbol=body.symbol,
            place=body.place,
        )
    data = ingest_body(result)
    data["register"] = workflow.register_plan(services, document_id)
    return data


@router.post("/documents/{document_id}/seal", summary="The agency's seal (clerk)")
def seal_document(
    document_id: DocumentId,
    principal: CurrentPrincipal,
    services: ServicesDep,
    body: LevelBody | None = None,
) -> dict[str, Any]:
    level = (body.level if body else None) or "B-LT"
    with problems():
        result = workflow.seal(services, principal, document_id, level=level)
    return ingest_body(result)


@router.post("/documents/{document_id}/verify", summary="Verify a version now")
def verify_stored(
    document_id: DocumentId,
    principal: CurrentPrincipal,
    services: ServicesDep,
    body: VerifyBody | None = None,
) -> dict[str, Any]:
    """The report (``kyso verify --json``) is kept with the version."""
    with problems():
        outcome = workflow.verify_version(
            services, principal, document_id, version=body.version if body else None
        )
    return {
        "document_id": document_id,
        "version": outcome.version,
        "report_id": outcome.report_id,
        "report": outcome.report,
    }


@router.post("/documents/{document_id}/extend", summary="Raise to B-LT/B-LTA (new version)")
def extend_document(
    document_id: DocumentId,
    principal: CurrentPrincipal,
    services: ServicesDep,
    body: LevelBody | None = None,
) -> dict[str, Any]:
    level = (body.level if body else None) or "B-LTA"
    with problems():
        result = workflow.extend(services, principal, document_id, level=level)
    return ingest_body(result)


@router.get(
    "/documents/{document_id}/versions/{seq}/content",
    summary="Download a version, bit-identical",
    response_class=FileResponse,
    responses={200: {"content": {"application/pdf": {}}}},
)
def download_version(
    document_id: DocumentId, seq: VersionSeq, principal: CurrentPrincipal, services: ServicesDep
) -> FileResponse:
    folder = Path(tempfile.mkdtemp(prefix="kyso-download-"))
    target = folder / "document.pdf"
    try:
        with problems():
            chosen = workflow.download(services, principal, document_id, target, version=seq)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(
        target,
        media_type="application/pdf",
        filename=f"document-{document_id}-v{chosen.seq}-{chosen.kind}.pdf",
        headers={"ETag": f'"{chosen.sha256}"', "X-Content-SHA256": chosen.sha256},
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )


@router.get("/documents/{document_id}/reports/{report_id}", summary="A kept verification report")
def show_report(
    document_id: DocumentId, report_id: ReportId, principal: CurrentPrincipal, services: ServicesDep
) -> dict[str, Any]:
    with problems():
        workflow.get_document(services, principal, document_id)
    with services.catalog.session() as s:
        row = s.execute(
            sa.select(VerificationReport, DocumentVersion.seq)
            .join(DocumentVersion, DocumentVersion.id == VerificationReport.version_id)
            .where(VerificationReport.id == report_id, DocumentVersion.document_id == document_id)
        ).first()
    if row is None:
        raise Problem(404, "not-found", t("workflow.report.not_found", id=report_id))
    report, seq = row
    return {
        "id": report.id,
        "document_id": document_id,
        "version": seq,
        "created_at": report.created_at.isoformat(),
        "created_by": report.created_by,
        "report": json.loads(report.report_json),
    }
