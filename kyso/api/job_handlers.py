"""One handler per job kind: each runs one item of a job (``kyso.api.jobs.execute_item``).

Handlers are thin: they call the same functions as the HTTP routes and the CLI
(``kyso.api.workflow`` for an agency's documents, ``Archive.fixity``, ``kyso.archive.renew``,
``Catalog.anchor_audit``) and return the ids of what they made or found.  Those that add a
version go through :meth:`ItemContext.once`, so a retried item never signs twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from kyso.api import exchange, workflow
from kyso.api.jobs import ItemContext, ItemFailed, TransientError
from kyso.api.principal import Principal
from kyso.api.problems import Problem
from kyso.archive import audit
from kyso.archive.errors import ObjectCorrupt, ObjectMissing, StorageError
from kyso.archive.models import Document, DocumentVersion, VerificationReport
from kyso.i18n import t

__all__ = ["HANDLERS"]

_CHUNK = 1024 * 1024


def _user(ctx: ItemContext) -> Principal:
    if ctx.principal is None:  # refused at submission; a row edited by hand is not trusted
        raise Problem(422, "validation", t("jobs.kind.needs_user", kind="?"))
    return ctx.principal


def verify(ctx: ItemContext) -> dict[str, Any]:
    """Verify a document's version (default: the latest) and keep the report with it."""
    document_id = int(ctx.params["document_id"])
    outcome = workflow.verify_version(
        ctx.services, _user(ctx), document_id, version=ctx.params.get("version")
    )
    report = outcome.report
    return {
        "document_id": document_id,
        "version": outcome.version,
        "report_id": outcome.report_id,
        "indication": report.get("indication"),
        "sub_indication": report.get("sub_indication"),
    }


def sign(ctx: ItemContext) -> dict[str, Any]:
    """The official's own signature, with the PIN given in the submitting request (kept in
    this process's memory only)."""
    principal = _user(ctx)
    document_id = int(ctx.params["document_id"])
    if ctx.pin is None:
        raise Problem(403, "pin-required", t("jobs.sign.pin_required", seq=ctx.seq))
    pin = ctx.pin
    return ctx.once(
        document_id,
        ("person_signed",),
        lambda: workflow.sign_as_person(
            ctx.services,
            principal,
            document_id,
            key=str(ctx.params["key"]),
            pin=pin,
            placement=ctx.params.get("placement"),
            level=str(ctx.params.get("level", "B-T")),
        ),
    )


def seal(ctx: ItemContext) -> dict[str, Any]:
    """The agency's seal (clerk, the agency's key: no PIN, so it may run on a worker)."""
    principal = _user(ctx)
    document_id = int(ctx.params["document_id"])
    return ctx.once(
        document_id,
        ("sealed",),
        lambda: workflow.seal(
            ctx.services, principal, document_id, level=str(ctx.params.get("level", "B-LT"))
        ),
    )


def extend(ctx: ItemContext) -> dict[str, Any]:
    """Raise a sealed or received document to B-LT/B-LTA, as a new version."""
    principal = _user(ctx)
    document_id = int(ctx.params["document_id"])
    return ctx.once(
        document_id,
        ("ltv_extended",),
        lambda: workflow.extend(
            ctx.services, principal, document_id, level=str(ctx.params.get("level", "B-LTA"))
        ),
    )


def _document_keys(ctx: ItemContext, document_id: int) -> list[str]:
    """The object keys of a document of the submitter's agency: its versions and the stored
    copies of their verification reports."""
    with ctx.services.catalog.session() as s:
        doc = s.get(Document, document_id)
        if doc is None or (ctx.agency is not None and doc.agency_id != ctx.agency):
            raise Problem(404, "not-found", t("jobs.document.not_found", id=document_id))
        versions = s.scalars(
            sa.select(DocumentVersion.object_key).where(DocumentVersion.document_id == document_id)
        ).all()
        reports = s.scalars(
            sa.select(VerificationReport.report_object_key)
            .join(DocumentVersion, VerificationReport.version_id == DocumentVersion.id)
            .where(
                DocumentVersion.document_id == document_id,
                VerificationReport.report_object_key.is_not(None),
            )
        ).all()
    return sorted({*versions, *(k for k in reports if k)})


def fixity(ctx: ItemContext) -> dict[str, Any]:
    """Re-read and re-hash objects: one document's (any archivist), or a sweep of the whole
    archive (scheduled jobs: ``Archive.fixity``, optionally on a random sample)."""
    services = ctx.services
    document_id = ctx.params.get("document_id")
    if document_id is None:
        report = services.archive.fixity(
            sample=ctx.params.get("sample"), progress=ctx.progress, actor=ctx.actor
        )
        found = report.as_dict()
    else:
        keys = _document_keys(ctx, int(document_id))
        found = {
            "document_id": int(document_id),
            "total": len(keys),
            "checked": 0,
            "ok": 0,
            "bytes": 0,
            "missing": [],
            "corrupt": [],
            "errors": [],
        }
        for done, key in enumerate(keys, 1):
            found["checked"] += 1
            try:
                with services.store.open(key) as stream:
                    while chunk := stream.read(_CHUNK):
                        found["bytes"] += len(chunk)
                found["ok"] += 1
            except ObjectMissing:
                found["missing"].append(key)
            except ObjectCorrupt:
                found["corrupt"].append(key)
            except StorageError as exc:
                found["errors"].append({"key": key, "reason": exc.message()})
            except OSError as exc:
                found["errors"].append({"key": key, "reason": exc.strerror or type(exc).__name__})
            ctx.progress(done, len(keys))
        found["passed"] = not (found["missing"] or found["corrupt"] or found["errors"])
        with services.catalog.session() as s:
            audit.append(
                s,
                ctx.actor,
                "fixity.document",
                f"document:{document_id}",
                {
                    "job": ctx.job_id,
                    "checked": found["checked"],
                    "ok": found["ok"],
                    "missing": found["missing"],
                    "corrupt": found["corrupt"],
                    "errors": [e["key"] for e in found["errors"]],
                },
            )
    if found["missing"] or found["corrupt"]:
        raise ItemFailed(
            "jobs.fixity.damaged",
            result=found,
            missing=len(found["missing"]),
            corrupt=len(found["corrupt"]),
        )
    if found["errors"]:
        raise TransientError("jobs.fixity.unreadable", count=len(found["errors"]))
    return found


def _agency_documents(ctx: ItemContext, ids: set[int]) -> set[int]:
    if ctx.agency is None or not ids:
        return ids
    with ctx.services.catalog.session() as s:
        return set(
            s.scalars(
                sa.select(Document.id).where(Document.id.in_(ids), Document.agency_id == ctx.agency)
            )
        )


def renew(ctx: ItemContext) -> dict[str, Any]:
    """Renew the long-term proof of every due document (``kyso archive renew``): the
    submitter's agency's, or the whole archive's for a scheduled job."""
    from kyso.archive import renew as renewal
    from kyso.signer.verify import VerifyPolicy

    services = ctx.services
    policy = VerifyPolicy.from_services(services, offline=services.settings.archive_verify_offline)
    window = dt.timedelta(days=int(ctx.params.get("within_days", 180)))
    due = renewal.due_for_renewal(services.catalog, services.store, window, policy=policy)
    wanted = _agency_documents(ctx, {c.document_id for c in due})
    only = ctx.params.get("document_id")
    if only is not None:
        if not _agency_documents(ctx, {int(only)}):
            raise Problem(404, "not-found", t("jobs.document.not_found", id=only))
        wanted &= {int(only)}
    due = [c for c in due if c.document_id in wanted]
    report = renewal.renew(
        services.catalog,
        services.store,
        services,
        due,
        actor=ctx.actor,
        policy=policy,
        retention=services.archive.retention_for_document,
        progress=ctx.progress,
    )
    found = {
        "due": len(due),
        "renewed": [
            {
                "document_id": r.document_id,
                "version_id": r.new_version_id,
                "previous_version_id": r.old_version_id,
                "report_id": r.report_id,
                "sha256": r.sha256,
                "horizon": r.horizon_after.isoformat() if r.horizon_after else None,
            }
            for r in report.renewed
        ],
        "skipped": [{"document_id": s.document_id, "code": s.code} for s in report.skipped],
        "failed": [
            {"document_id": f.document_id, "code": f.code, "message": f.message()}
            for f in report.failed
        ],
    }
    if report.failed:
        raise ItemFailed("jobs.renew.failed", result=found, count=len(report.failed))
    return found


def anchor(ctx: ItemContext) -> dict[str, Any]:
    """Timestamp the audit chain's head (the configured TSAs, else the built-in TSA)."""
    seq = ctx.services.catalog.anchor_audit(ctx.services.audit_timestamper())
    return {"event_seq": seq}


HANDLERS: dict[str, Callable[[ItemContext], dict[str, Any]]] = {
    "verify": verify,
    "sign": sign,
    "seal": seal,
    "extend": extend,
    "fixity": fixity,
    "renew": renew,
    "anchor": anchor,
    "deliver": exchange.job_deliver,
}
