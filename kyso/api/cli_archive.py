"""``kyso archive put/get/search/show/hold/reconcile/fixity`` and ``kyso audit verify/anchor``.

Exit codes: 0 done (or nothing wrong found); 1 an error, or a problem found (a broken audit
chain, orphans or missing objects, missing or corrupt objects in a fixity sweep, a corrupt
object on ``get``); 3 bad input (metadata missing or invalid, a file that cannot be read, not
a PDF).

``--meta KEY=VALUE`` names a field of :class:`~kyso.archive.metadata.DocumentMetadata`
(Decree 30 Appendix VI, snake case), or one of these shorter names:

=============  =====================  ===============================================
short name     field                  meaning
=============  =====================  ===============================================
``agency``     ``organ_id``           the issuing agency's code (``G06.01``)
``agency_name`` ``organ_name``        the issuing agency's name
``number``     ``code_number``        số (read from the PDF's register field if absent)
``symbol``     ``code_notation``      ký hiệu (idem)
``date``       ``issued_date``        ngày ban hành, ``YYYY-MM-DD`` (idem)
``type``       ``type_name``          loại văn bản (``Quyết định``)
``signer``     ``signer_full_name``   người ký
``position``   ``signer_position``    chức vụ người ký
``to``         ``to``                 nơi nhận (repeatable; ``CODE|Name`` or ``Name``)
=============  =====================  ===============================================

Required: ``organ_id``, ``organ_name``, ``type_name``, ``subject``; ``issued_date`` when a
number is given.  Dates are ``YYYY-MM-DD``; ``page_amount``, ``issued_amount`` and
``doc_ordinal`` are integers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import getpass
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from kyso.api.progress import progress_bar
from kyso.api.services import PRESETS, Services
from kyso.api.settings import get_settings
from kyso.archive.catalog import Catalog, NotFoundError
from kyso.archive.ingest import IngestError
from kyso.archive.metadata import DocumentMetadata, MetadataError, Recipient
from kyso.archive.models import AuditEvent, Document, DocumentVersion
from kyso.archive.storage import ObjectStore
from kyso.errors import KysoError
from kyso.i18n import set_locale, t

out = Console(soft_wrap=True, markup=False, emoji=False, highlight=False)
err = Console(stderr=True, soft_wrap=True, markup=False, emoji=False, highlight=False)

EXIT_BAD_INPUT = 3

archive_app = typer.Typer(help="The archive: put, get, search, fixity.", no_args_is_help=True)
audit_app = typer.Typer(help="The archive's audit log.", no_args_is_help=True)

ALIASES = {
    "agency": "organ_id",
    "agency_name": "organ_name",
    "number": "code_number",
    "symbol": "code_notation",
    "date": "issued_date",
    "type": "type_name",
    "signer": "signer_full_name",
    "position": "signer_position",
}
REQUIRED = ("organ_id", "organ_name", "type_name", "subject")
_DATES = {"issued_date", "due_date", "arrival_date"}
_INTS = {"page_amount", "issued_amount", "doc_ordinal"}
_LISTS = {"to", "to_places"}
_FIELDS = {f.name for f in dataclasses.fields(DocumentMetadata)} - {"trace"}
_DATE_LINE = re.compile(r"ngày\s+(\d{1,2})\s+tháng\s+(\d{1,2})\s+năm\s+(\d{4})")

T = TypeVar("T")


def _services() -> Services:
    settings = get_settings()
    set_locale(settings.locale)
    return Services(settings)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _is_bad_input(exc: KysoError) -> bool:
    from kyso.signer.errors import BadInputError
    from kyso.signer.verify import VerifyInputError

    return isinstance(exc, MetadataError | IngestError | VerifyInputError | BadInputError)


def _fail(exc: KysoError) -> NoReturn:
    err.print(f"{t('cli.error')} {exc.message()}")
    raise typer.Exit(EXIT_BAD_INPUT if _is_bad_input(exc) else 1)


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except KysoError as exc:
        _fail(exc)


def _date(value: str, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise MetadataError("archive.ingest.bad_date", field=name, value=value) from None


# -- metadata ------------------------------------------------------------------------------------


def parse_meta(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as DocumentMetadata keyword arguments (MetadataError if bad)."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        name = ALIASES.get(key, key)
        if not sep or name not in _FIELDS:
            raise MetadataError("archive.ingest.bad_meta", field=key, value=pair)
        value = value.strip()
        if name in _DATES:
            values[name] = _date(value, name)
        elif name in _INTS:
            try:
                values[name] = int(value)
            except ValueError:
                raise MetadataError("archive.ingest.bad_int", field=name, value=value) from None
        elif name in _LISTS:
            code, bar, rest = value.partition("|")
            rcpt = Recipient(rest.strip(), code.strip()) if bar else Recipient(value)
            values.setdefault(name, []).append(rcpt)
        else:
            values[name] = value
    return values


def register_values(path: Path) -> dict[str, Any]:
    """Number, symbol and date from the PDF's register fields (nothing when absent)."""
    from kyso.signer.register import parse_register_number, read_register_fields

    try:
        number_line, date_line = read_register_fields(path)
    except (KysoError, OSError, ValueError):
        return {}
    found: dict[str, Any] = {}
    if number_line:
        try:
            number, symbol = parse_register_number(number_line)
            found.update(code_number=number, code_notation=symbol)
        except KysoError:
            pass
    if date_line:
        match = _DATE_LINE.search(date_line)
        if match:
            day, month, year = (int(g) for g in match.groups())
            with contextlib.suppress(ValueError):
                found["issued_date"] = dt.date(year, month, day)
    return found


def build_metadata(path: Path, pairs: list[str]) -> DocumentMetadata:
    values = parse_meta(pairs)
    for name, value in register_values(path).items():
        values.setdefault(name, value)
    for name in REQUIRED:
        if not str(values.get(name) or "").strip():
            raise MetadataError("archive.catalog.metadata.required", field=name)
    values.setdefault("code_number", None)
    values.setdefault("code_notation", None)
    values.setdefault("issued_date", None)
    return DocumentMetadata(**values).validate()


# -- archive -------------------------------------------------------------------------------------


@archive_app.command("put")
def put_command(
    file: Annotated[Path, typer.Argument(help="The PDF to archive")],
    meta: Annotated[
        list[str] | None,
        typer.Option("--meta", help="KEY=VALUE metadata (Appendix VI field names; repeatable)"),
    ] = None,
    case: Annotated[
        str | None, typer.Option("--case", help="Case file code (OrganId.Year.Notation)")
    ] = None,
    document: Annotated[
        int | None, typer.Option("--document", help="Add a version to this document")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="draft, person_signed, registered, sealed, ltv_extended, …"),
    ] = None,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Do not verify the PDF at ingest")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Archive a PDF: a new document with its metadata, or a new version of one."""
    services = _services()
    if not file.is_file():
        err.print(f"{t('cli.error')} {t('archive.ingest.no_file', path=str(file))}")
        raise typer.Exit(EXIT_BAD_INPUT)
    if document is None:
        metadata: DocumentMetadata | None = _guard(lambda: build_metadata(file, meta or []))
    else:
        if meta:
            err.print(f"{t('cli.error')} {t('archive.ingest.meta_with_document')}")
            raise typer.Exit(EXIT_BAD_INPUT)
        metadata = None
    result = _guard(
        lambda: services.archive.put(
            file,
            metadata,
            case=case,
            document=document,
            kind=kind,
            actor=_actor(),
            verify=not no_verify,
        )
    )
    for warning in result.duplicate_warnings:
        err.print(f"{t('archive.ingest.warning')} {warning.message()}")
    if as_json:
        out.print(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
        return
    key = "archive.ingest.stored" if result.created else "archive.ingest.already"
    out.print(
        t(key, id=result.document_id, seq=result.version_seq, kind=result.kind, sha=result.sha256)
    )
    if result.indication:
        verdict = t(f"verify.indication.{result.indication}")
        sub = f" ({result.sub_indication})" if result.sub_indication else ""
        out.print(f"  {t('archive.ingest.verdict', verdict=verdict + sub)}")


@archive_app.command("get")
def get_command(
    document: Annotated[int, typer.Argument(help="Document id")],
    target: Annotated[Path, typer.Argument(help="Where to write the PDF")],
    version: Annotated[int | None, typer.Option("--version", help="Version number")] = None,
    purpose: Annotated[
        str | None, typer.Option("--purpose", help="Why (kept in the access log)")
    ] = None,
) -> None:
    """Write a document's version (default: the latest), bit-identical and hash-checked."""
    services = _services()
    chosen = _guard(
        lambda: services.archive.get(
            document, target, version=version, actor=_actor(), purpose=purpose
        )
    )
    out.print(
        t(
            "archive.ingest.written",
            id=document,
            seq=chosen.seq,
            path=str(target),
            sha=chosen.sha256,
        )
    )


def _doc_row(doc: Document) -> dict[str, Any]:
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
    }


@archive_app.command("search")
def search_command(
    query: Annotated[
        str | None, typer.Argument(help="Words of the subject (accents optional)")
    ] = None,
    number: Annotated[str | None, typer.Option("--number", help="Số")] = None,
    symbol: Annotated[str | None, typer.Option("--symbol", help="Ký hiệu")] = None,
    agency: Annotated[str | None, typer.Option("--agency", help="Issuing agency code")] = None,
    type_name: Annotated[str | None, typer.Option("--type", help="Document type")] = None,
    date_from: Annotated[str | None, typer.Option("--from", help="Issued on or after")] = None,
    date_to: Annotated[str | None, typer.Option("--to", help="Issued on or before")] = None,
    signer: Annotated[str | None, typer.Option("--signer", help="Signer's name (part)")] = None,
    case: Annotated[str | None, typer.Option("--case", help="Case file code")] = None,
    page: Annotated[int, typer.Option("--page", help="Page of results", min=1)] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Search the catalogue; newest first, 20 per page."""
    services = _services()

    def run() -> Any:
        return services.catalog.search(
            query,
            number=number,
            symbol=symbol,
            agency=agency,
            type=type_name,
            date_from=_date(date_from, "--from") if date_from else None,
            date_to=_date(date_to, "--to") if date_to else None,
            signer=signer,
            case=case,
            page=page,
        )

    result = _guard(run)
    rows = [_doc_row(d) for d in result.items]
    if as_json:
        data = {
            "total": result.total,
            "total_exact": result.total_exact,
            "page": result.page,
            "pages": result.pages,
            "has_next": result.has_next,
            "items": rows,
        }
        out.print(json.dumps(data, ensure_ascii=False, indent=2))
        return

    def more_than(count: int) -> str:  # counting stopped at a cap: "more than N"
        return str(count) if result.total_exact else t("archive.search.more_than", count=count)

    table = Table(title=t("archive.ingest.search.title", total=more_than(result.total)))
    for col in ("id", "number", "date", "agency", "type", "subject", "signer"):
        table.add_column(t(f"archive.ingest.col.{col}"))
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["number"] or "-",
            r["issued_date"] or "-",
            r["organ_id"],
            r["type_name"],
            r["subject"],
            r["signer"] or "",
        )
    Console(soft_wrap=True, emoji=False, highlight=False, markup=False).print(table)
    out.print(t("archive.ingest.search.page", page=result.page, pages=more_than(result.pages)))


def _show_data(services: Services, document: int) -> dict[str, Any]:
    catalog = services.catalog
    doc = catalog.get(document, actor=_actor(), purpose="show")
    data = _doc_row(doc)
    data["case_file"] = doc.case_file.file_code if doc.case_file else None
    data["versions"] = [
        {
            "seq": v.seq,
            "kind": v.kind,
            "sha256": v.sha256,
            "size": v.size,
            "object_key": v.object_key,
            "legal_hold": _hold_state(services.store, v.object_key),
            "created_at": v.created_at.isoformat(),
            "created_by": v.created_by,
            "reports": [
                {
                    "indication": r.indication,
                    "sub_indication": r.sub_indication,
                    "report_object_key": r.report_object_key,
                    "created_at": r.created_at.isoformat(),
                }
                for r in v.reports
            ],
        }
        for v in doc.versions
    ]
    data["access"] = [
        {
            "at": a.at.isoformat(),
            "actor": a.actor,
            "action": a.action,
            "purpose": a.purpose,
            "version_id": a.version_id,
        }
        for a in catalog.access_history(document)
    ]
    with catalog.session() as s:
        subject = f"document:{document}"
        events = s.scalars(
            sa.select(AuditEvent)
            .where(sa.or_(AuditEvent.subject == subject, AuditEvent.subject.like(subject + "/%")))
            .order_by(AuditEvent.seq)
        )
        data["history"] = [
            {"seq": e.seq, "at": e.at, "actor": e.actor, "action": e.action, "subject": e.subject}
            for e in events
        ]
    return data


@archive_app.command("show")
def show_command(
    document: Annotated[int, typer.Argument(help="Document id")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """A document: metadata, versions with their verification reports, history, access."""
    services = _services()
    data = _guard(lambda: _show_data(services, document))
    if as_json:
        out.print(json.dumps(data, ensure_ascii=False, indent=2))
        return
    for key in (
        "id",
        "number",
        "issued_date",
        "organ_id",
        "organ_name",
        "type_name",
        "subject",
        "signer",
        "case_file",
    ):
        out.print(f"{t('archive.ingest.field.' + key) + ':':24} {data[key] or '-'}")
    out.print(t("archive.ingest.show.versions"))
    for v in data["versions"]:
        verdicts = ", ".join(
            t(f"verify.indication.{r['indication']}")
            + (f" ({r['sub_indication']})" if r["sub_indication"] else "")
            for r in v["reports"]
        )
        hold = f"  [{t('archive.cli.hold.marker')}]" if v["legal_hold"] else ""
        out.print(f"  {v['seq']}. {v['kind']:14} {v['sha256']} {v['size']} B  {verdicts}{hold}")
    out.print(t("archive.ingest.show.history"))
    for e in data["history"]:
        out.print(f"  #{e['seq']} {e['at']} {e['actor']} {e['action']} {e['subject']}")
    out.print(t("archive.ingest.show.access"))
    for a in data["access"]:
        out.print(f"  {a['at']} {a['actor']} {a['action']} {a['purpose'] or ''}")


# -- legal hold ----------------------------------------------------------------------------------

MAX_REASON = 500


@dataclasses.dataclass(frozen=True)
class HoldChange:
    """One object whose legal hold was asked for."""

    document_id: int
    version_seq: int
    what: str
    """``version`` (the document's bytes) or ``report`` (its verification report's JSON)."""
    object_key: str
    changed: bool
    """False when the object already was in the state asked for (nothing written)."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _hold_state(store: ObjectStore, key: str) -> bool | None:
    """The object's legal hold; None when the store cannot tell (missing, unreachable)."""
    try:
        return store.stat(key).legal_hold
    except KysoError:
        return None


def set_legal_hold(
    catalog: Catalog,
    store: ObjectStore,
    document: int,
    *,
    on: bool,
    reason: str,
    actor: str,
    version: int | None = None,
) -> list[HoldChange]:
    """Turn the legal hold of a document's objects on or off: every version (or only
    ``version``) and their verification reports' JSON.  While a hold is on, the store refuses
    to delete the object, whatever its retention (LocalStore enforces it itself; S3 needs a
    bucket with object lock).  Each change is one audit event (``legal_hold.on`` /
    ``legal_hold.off``, with the reason), written in the same transaction as the store call
    that made it: an object the store refused leaves no event; objects already in the state
    asked for are left alone (no event)."""
    reason = reason.strip()
    if not reason:
        raise MetadataError("archive.cli.hold.reason_required")
    if len(reason) > MAX_REASON:
        raise MetadataError("archive.cli.hold.reason_long", max=MAX_REASON)
    from kyso.archive import audit

    with catalog.session() as s:
        if s.get(Document, document) is None:
            raise NotFoundError("archive.catalog.document.not_found", id=document)
        query = sa.select(DocumentVersion).where(DocumentVersion.document_id == document)
        if version is not None:
            query = query.where(DocumentVersion.seq == version)
        versions = list(
            s.scalars(
                query.order_by(DocumentVersion.seq).options(
                    sa.orm.selectinload(DocumentVersion.reports)
                )
            )
        )
    if not versions:
        if version is not None:
            raise NotFoundError("archive.ingest.no_such_version", id=document, seq=version)
        raise NotFoundError("archive.ingest.no_versions", id=document)
    targets: list[tuple[int, str, str]] = []
    for v in versions:
        targets.append((v.seq, "version", v.object_key))
        targets.extend(
            (v.seq, "report", r.report_object_key) for r in v.reports if r.report_object_key
        )
    changes: list[HoldChange] = []
    action = "legal_hold.on" if on else "legal_hold.off"
    for seq, what, key in targets:
        if store.stat(key).legal_hold == on:
            changes.append(HoldChange(document, seq, what, key, changed=False))
            continue
        with catalog.session() as s:
            store.set_legal_hold(key, on)
            audit.append(
                s,
                actor,
                action,
                f"document:{document}/version:{seq}",
                {"object_key": key, "what": what, "reason": reason},
            )
        changes.append(HoldChange(document, seq, what, key, changed=True))
    return changes


@archive_app.command("hold")
def hold_command(
    document: Annotated[int, typer.Argument(help="Document id")],
    switch: Annotated[
        bool | None,
        typer.Option("--on/--off", help="Put the legal hold on, or lift it", show_default=False),
    ] = None,
    reason: Annotated[
        str, typer.Option("--reason", help="Why (required; kept in the audit log)")
    ] = "",
    version: Annotated[
        int | None, typer.Option("--version", help="Only this version (default: every one)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Legal hold: while it is on, the archived objects cannot be deleted, whatever their
    retention. Applies to every version of the document (or one) and its reports; audited."""
    if switch is None:
        err.print(f"{t('cli.error')} {t('archive.cli.hold.switch_required')}")
        raise typer.Exit(EXIT_BAD_INPUT)
    services = _services()
    changes = _guard(
        lambda: set_legal_hold(
            services.catalog,
            services.store,
            document,
            on=switch,
            reason=reason,
            actor=_actor(),
            version=version,
        )
    )
    if as_json:
        data = {"document_id": document, "on": switch, "objects": [c.as_dict() for c in changes]}
        out.print(json.dumps(data, ensure_ascii=False, indent=2))
        return
    state = "on" if switch else "off"
    for c in changes:
        key = f"archive.cli.hold.{state}" if c.changed else f"archive.cli.hold.already_{state}"
        out.print(
            t(key, id=c.document_id, seq=c.version_seq, what=t(f"archive.cli.hold.{c.what}"))
            + f" ({c.object_key})"
        )


@archive_app.command("reconcile")
def reconcile_command(
    repair: Annotated[
        bool, typer.Option("--repair", help="Record every finding in the audit log")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Objects without catalogue rows (orphans) and rows whose object is missing."""
    services = _services()
    report = _guard(lambda: services.archive.reconcile(repair=repair, actor=_actor()))
    if as_json:
        out.print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        out.print(
            t(
                "archive.ingest.reconcile.summary",
                objects=report.objects,
                keys=report.keys,
                orphans=len(report.orphans),
                missing=len(report.missing),
            )
        )
        for orphan in report.orphans:
            out.print(f"  {t('archive.ingest.reconcile.orphan', obj=orphan.key, size=orphan.size)}")
        for miss in report.missing:
            out.print(
                "  "
                + t(
                    "archive.ingest.reconcile.missing",
                    obj=miss.key,
                    id=miss.document_id,
                    seq=miss.version_seq,
                )
            )
        if report.recorded:
            out.print(t("archive.ingest.reconcile.recorded", count=report.recorded))
        elif not report.ok:
            out.print(t("archive.ingest.reconcile.hint"))
    raise typer.Exit(0 if report.ok else 1)


@archive_app.command("fixity")
def fixity_command(
    sample: Annotated[
        int | None, typer.Option("--sample", help="Check only N objects, chosen at random", min=0)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Re-read and re-hash every archived object (or a sample); exit 1 if any is missing or
    corrupt."""
    services = _services()
    progress = progress_bar(err)
    with progress:
        task = progress.add_task(t("archive.ingest.fixity.progress"), total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        report = _guard(
            lambda: services.archive.fixity(sample=sample, progress=advance, actor=_actor())
        )
    if as_json:
        out.print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        out.print(
            t(
                "archive.ingest.fixity.summary",
                checked=report.checked,
                total=report.total,
                ok=report.ok,
                missing=len(report.missing),
                corrupt=len(report.corrupt),
                errors=len(report.errors),
            )
        )
        for key in report.corrupt:
            out.print(f"  {t('archive.ingest.fixity.corrupt', obj=key)}")
        for key in report.missing:
            out.print(f"  {t('archive.ingest.fixity.missing', obj=key)}")
        for key, reason in report.errors:
            out.print(f"  {t('archive.ingest.fixity.error', obj=key, reason=reason)}")
    raise typer.Exit(0 if report.passed else 1)


# -- case files, export and renewal -----------------------------------------------------------


@archive_app.command("case")
def case_command(
    agency: Annotated[str, typer.Argument(help="Agency code (OrganId), e.g. 000.00.00.G22")],
    year: Annotated[int, typer.Argument(help="Year of the file list (FileCatalog)")],
    notation: Annotated[str, typer.Argument(help="File number in the list (FileNotation)")],
    title: Annotated[str, typer.Option("--title", help="Title of the case file")],
    maintenance: Annotated[
        str, typer.Option("--maintenance", help="Retention: 'Vĩnh viễn' or e.g. '10 năm'")
    ] = "Vĩnh viễn",
    rights: Annotated[str, typer.Option("--rights", help="Access regime")] = "Hạn chế",
) -> None:
    """Open a case file (hồ sơ); prints its FileCode for ``archive put --case``."""
    from kyso.archive.metadata import CaseFileMetadata

    services = _services()
    meta = CaseFileMetadata(
        organ_id=agency,
        file_catalog=year,
        file_notation=notation,
        title=title,
        maintenance=maintenance,
        rights=rights,
    )
    _guard(lambda: services.catalog.add_case(meta, actor=_actor()))
    out.print(meta.file_code)


class PackageFormat(enum.StrEnum):
    bagit = "bagit"
    zip = "zip"


@archive_app.command("export")
def export_command(
    case: Annotated[str, typer.Argument(help="Case file code (hồ sơ) or id")],
    out_dir: Annotated[Path, typer.Argument(help="Folder to write into")],
    package: Annotated[
        PackageFormat | None,
        typer.Option("--package", help="Also an archival package: bagit (folder) or zip"),
    ] = None,
) -> None:
    """A case file as its listing PDF and Appendix VI XML, and optionally as a BagIt/ZIP
    package (documents, metadata, reports, audit excerpt, SHA-256 manifests)."""
    from kyso.archive.export import export_case_file, export_package

    services = _services()
    out_dir.mkdir(parents=True, exist_ok=True)
    selection: int | str = int(case) if case.isdigit() else case
    pdf, xml = _guard(
        lambda: export_case_file(
            services.catalog, services.store, selection, out_dir, actor=_actor()
        )
    )
    out.print(t("archive.cli.export.done", pdf=str(pdf), xml=str(xml)))
    if package is not None:
        name = f"{pdf.stem}-bag" + (".zip" if package is PackageFormat.zip else "")
        summary = _guard(
            lambda: export_package(
                services.catalog,
                services.store,
                selection,
                out_dir / name,
                fmt=package.value,
                actor=_actor(),
            )
        )
        out.print(
            t(
                "archive.cli.export.package",
                path=str(summary.path),
                documents=summary.documents,
                versions=summary.versions,
            )
        )


_DURATION = re.compile(r"^\s*(\d+)\s*([dwy]?)\s*$")


def parse_duration(text: str) -> dt.timedelta:
    """``180d``, ``26w``, ``1y`` or a plain number of days."""
    match = _DURATION.match(text)
    if match is None:
        raise MetadataError("archive.cli.renew.bad_window", value=text)
    amount, unit = int(match.group(1)), match.group(2) or "d"
    return dt.timedelta(days=amount * {"d": 1, "w": 7, "y": 365}[unit])


@archive_app.command("renew")
def renew_command(
    within: Annotated[
        str,
        typer.Option("--within", help="Renew what expires within: 180d, 26w, 1y"),
    ] = "180d",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what is due, change nothing")
    ] = False,
) -> None:
    """Add a new document timestamp (B-LTA) as a new version of every record whose last
    archive timestamp (or the certificates it relies on) expires within the window, or whose
    algorithms became weak. Objects are never rewritten."""
    from kyso.archive import renew as renew_mod
    from kyso.signer.verify import VerifyPolicy

    services = _services()
    window = _guard(lambda: parse_duration(within))
    policy = VerifyPolicy.from_services(services, offline=services.settings.archive_verify_offline)
    due = _guard(
        lambda: renew_mod.due_for_renewal(services.catalog, services.store, window, policy=policy)
    )
    for candidate in due:
        horizon = candidate.horizon.isoformat() if candidate.horizon else "-"
        out.print(
            t(
                "archive.cli.renew.due",
                document=candidate.document_id,
                reason=candidate.reason_text(),
                horizon=horizon,
            )
        )
    if dry_run or not due:
        out.print(t("archive.cli.renew.count", count=len(due)))
        return
    progress = progress_bar(err)
    with progress:
        task = progress.add_task(t("archive.cli.renew.progress"), total=len(due))
        result = _guard(
            lambda: renew_mod.renew(
                services.catalog,
                services.store,
                services,
                due,
                actor=_actor(),
                policy=policy,
                retention=services.archive.retention_for_document,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        )
    out.print(result.summary())
    for failure in result.failed:
        err.print(f"{failure.document_id}: {failure.message()}")
    raise typer.Exit(0 if result.ok else 1)


# -- audit ---------------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify_command(
    require_anchor: Annotated[
        bool, typer.Option("--require-anchor", help="Fail when the chain was never anchored")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Check the audit chain and its timestamp anchors offline; name the first broken link."""
    services = _services()

    def run() -> Any:
        roots = services.trust_store(*PRESETS).certificates
        return services.catalog.verify_audit(roots, require_anchor=require_anchor)

    result = _guard(run)
    first = result.first_broken
    if as_json:
        data = {
            "ok": result.ok,
            "events": result.events,
            "anchors": result.anchors,
            "head_seq": result.head_seq,
            "last_anchor_time": (
                result.last_anchor_time.isoformat() if result.last_anchor_time else None
            ),
            "first_broken": (
                {"seq": first.seq, "kind": first.kind, "message": first.message()}
                if first
                else None
            ),
            "problems": [
                {"seq": p.seq, "kind": p.kind, "message": p.message()} for p in result.problems
            ],
        }
        out.print(json.dumps(data, ensure_ascii=False, indent=2))
    elif first is None:
        when = result.last_anchor_time.isoformat() if result.last_anchor_time else "-"
        out.print(
            t(
                "archive.ingest.audit.ok",
                events=result.events,
                anchors=result.anchors,
                when=when,
            )
        )
    else:
        out.print(t("archive.ingest.audit.broken", seq=first.seq, reason=first.message()))
        for problem in result.problems[1:]:
            out.print(f"  #{problem.seq}: {problem.message()}")
    raise typer.Exit(0 if result.ok else 1)


@audit_app.command("anchor")
def audit_anchor_command() -> None:
    """Timestamp the audit chain's head (the configured TSAs, else the built-in TSA)."""
    services = _services()
    seq = _guard(lambda: services.catalog.anchor_audit(services.audit_timestamper()))
    if seq is None:
        out.print(t("archive.ingest.audit.empty"))
    else:
        out.print(t("archive.ingest.audit.anchored", seq=seq))


def register(app: typer.Typer) -> None:
    app.add_typer(archive_app, name="archive")
    app.add_typer(audit_app, name="audit")


__all__ = [
    "HoldChange",
    "build_metadata",
    "parse_meta",
    "register",
    "register_values",
    "set_legal_hold",
]
